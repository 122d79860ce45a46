//! Ahead-of-time compilation for `archc build`: kernels, their table and the serialised plan
//! in one relocatable object file, which the linker joins with the runner library.

use archc_kernels::ir::Kernel;
use cranelift_module::{DataDescription, Linkage, Module};
use cranelift_object::{ObjectBuilder, ObjectModule};

use super::cranelift::{define_kernels, CodegenError};
use super::jit::host_isa;

/// Symbols the runner library reads (see runner/src/lib.rs).
pub const TABLE: &str = "archc_kernel_table";
/// The number of kernels, a u64.
pub const COUNT: &str = "archc_kernel_count";
/// The plan as JSON bytes.
pub const PLAN: &str = "archc_plan_json";
/// The length of the plan JSON, a u64.
pub const PLAN_LEN: &str = "archc_plan_len";
/// The CPU features the kernels need, comma-separated `cpuid` names and a NUL (empty for
/// Cranelift's baseline code).
pub const FEATURES: &str = "archc_cpu_features";
/// The PTX of a binary built for an NVIDIA GPU (`archc build --device cuda`), then a NUL;
/// just the NUL in one built for the CPU.
pub const PTX: &str = "archc_ptx";
/// The length of the PTX, a u64 (0: the kernels are the CPU's, in the table).
pub const PTX_LEN: &str = "archc_ptx_len";

fn data<M: Module>(m: &mut M, name: &str, bytes: Vec<u8>) -> Result<(), CodegenError> {
    let id = m
        .declare_data(name, Linkage::Export, false, false)
        .map_err(Box::new)?;
    let mut d = DataDescription::new();
    d.define(bytes.into_boxed_slice());
    d.set_align(8);
    m.define_data(id, &d).map_err(Box::new)?;
    Ok(())
}

/// The object file for a plan's kernels, with the plan embedded as JSON; `ptx` is the PTX of
/// a plan for a GPU (whose CPU kernel table is then empty), or empty.
pub fn build_object(
    kernels: &[Kernel],
    symbols: usize,
    plan_json: &str,
    ptx: &str,
) -> Result<Vec<u8>, CodegenError> {
    let builder = ObjectBuilder::new(
        host_isa(true)?,
        "archc_model",
        cranelift_module::default_libcall_names(),
    )
    .map_err(Box::new)?;
    let mut module = ObjectModule::new(builder);
    let ids = define_kernels(&mut module, kernels, symbols, None)?;
    let table = module
        .declare_data(TABLE, Linkage::Export, false, false)
        .map_err(Box::new)?;
    let mut d = DataDescription::new();
    d.define(vec![0u8; 8 * ids.len().max(1)].into_boxed_slice());
    d.set_align(8);
    for (i, id) in ids.iter().enumerate() {
        let f = module.declare_func_in_data(*id, &mut d);
        d.write_function_addr((8 * i) as u32, f);
    }
    module.define_data(table, &d).map_err(Box::new)?;
    data(
        &mut module,
        COUNT,
        (ids.len() as u64).to_le_bytes().to_vec(),
    )?;
    data(&mut module, PLAN, plan_json.as_bytes().to_vec())?;
    data(
        &mut module,
        PLAN_LEN,
        (plan_json.len() as u64).to_le_bytes().to_vec(),
    )?;
    data(&mut module, FEATURES, vec![0])?;
    let mut ptx_z = ptx.as_bytes().to_vec();
    ptx_z.push(0);
    data(&mut module, PTX, ptx_z)?;
    data(
        &mut module,
        PTX_LEN,
        (ptx.len() as u64).to_le_bytes().to_vec(),
    )?;
    module
        .finish()
        .emit()
        .map_err(|e| CodegenError::Host(format!("cannot write the object file: {e}")))
}

/// The Cranelift IR text of every kernel (`archc dump --stage clif`).
pub fn clif_text(kernels: &[Kernel], symbols: usize) -> Result<String, CodegenError> {
    let builder = ObjectBuilder::new(
        host_isa(true)?,
        "archc_model",
        cranelift_module::default_libcall_names(),
    )
    .map_err(Box::new)?;
    let mut module = ObjectModule::new(builder);
    let mut text = String::new();
    define_kernels(&mut module, kernels, symbols, Some(&mut text))?;
    Ok(text)
}
