//! The LLVM backend: Kernel IR → LLVM IR text → optimised machine code, JIT-compiled in
//! process or written as an object file for `archc build`.
//!
//! The IR is written as text (`text.rs`, what `archc dump --stage llvm` prints) and parsed
//! by LLVM, then optimised with the `default<O3>` pipeline for the target CPU. In process the
//! functions are compiled for the host CPU itself; object files are compiled for an x86-64
//! microarchitecture level and record its features, which a built binary checks before it
//! runs a kernel.

mod ops;
mod text;

use std::mem::ManuallyDrop;

use archc_kernels::ir::Kernel;
use archc_kernels::target::Target;
use archc_runtime::{CpuKernels, KernelFn};
use inkwell::context::Context;
use inkwell::execution_engine::ExecutionEngine;
use inkwell::memory_buffer::MemoryBuffer;
use inkwell::module::Module;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{
    CodeModel, FileType, InitializationConfig, RelocMode, Target as LlvmTarget, TargetMachine,
};
use inkwell::OptimizationLevel;

pub use text::CpuAttributes;

use super::cranelift::CodegenError;

fn llvm_error(what: &str, e: impl std::fmt::Display) -> CodegenError {
    CodegenError::Llvm(format!("{what}: {e}"))
}

/// The CPU attributes for `target`; `host` compiles for this very CPU (its name and every
/// feature it has), as a JIT may.
fn attributes(target: &Target, host: bool) -> CpuAttributes {
    if host {
        return CpuAttributes {
            cpu: TargetMachine::get_host_cpu_name().to_string(),
            features: TargetMachine::get_host_cpu_features().to_string(),
        };
    }
    CpuAttributes {
        cpu: target.cpu.clone(),
        features: String::new(),
    }
}

/// The LLVM IR text of every kernel, before optimisation (`archc dump --stage llvm`).
pub fn llvm_text(kernels: &[Kernel], symbols: usize, target: &Target) -> String {
    text::module(kernels, symbols, &attributes(target, false))
}

fn machine(cpu: &CpuAttributes, reloc: RelocMode) -> Result<TargetMachine, CodegenError> {
    LlvmTarget::initialize_native(&InitializationConfig::default())
        .map_err(|e| llvm_error("cannot initialise LLVM for this CPU", e))?;
    let triple = TargetMachine::get_default_triple();
    let t = LlvmTarget::from_triple(&triple).map_err(|e| llvm_error("no LLVM target", e))?;
    t.create_target_machine(
        &triple,
        &cpu.cpu,
        &cpu.features,
        OptimizationLevel::Aggressive,
        reloc,
        CodeModel::Default,
    )
    .ok_or_else(|| CodegenError::Llvm(format!("LLVM cannot compile for CPU `{}`", cpu.cpu)))
}

/// Parses `text` into a module of `context`, checks it and optimises it for `machine`.
fn optimised<'c>(
    context: &'c Context,
    text: &str,
    machine: &TargetMachine,
) -> Result<Module<'c>, CodegenError> {
    let buffer = MemoryBuffer::create_from_memory_range_copy(text.as_bytes(), "archc");
    let module = context
        .create_module_from_ir(buffer)
        .map_err(|e| llvm_error("LLVM rejected the generated IR", e))?;
    module
        .verify()
        .map_err(|e| llvm_error("the generated IR is invalid", e))?;
    module.set_triple(&machine.get_triple());
    module.set_data_layout(&machine.get_target_data().get_data_layout());
    module
        .run_passes("default<O3>", machine, PassBuilderOptions::create())
        .map_err(|e| llvm_error("LLVM's optimiser failed", e))?;
    Ok(module)
}

/// The machine code LLVM compiled into this process: the JIT engine and the context its
/// module lives in.
pub struct LlvmCode {
    /// Owns the machine code; dropped before the context it borrows.
    engine: ManuallyDrop<ExecutionEngine<'static>>,
    /// The LLVM context the engine's module lives in (boxed so its address is stable).
    context: *mut Context,
}

impl Drop for LlvmCode {
    fn drop(&mut self) {
        // SAFETY: the engine is dropped exactly once, here, before the context it borrows;
        // the context was made by `Box::into_raw` in `compile` and is freed once.
        unsafe {
            ManuallyDrop::drop(&mut self.engine);
            drop(Box::from_raw(self.context));
        }
    }
}

/// Kernels compiled by LLVM into this process.
pub type LlvmJit = super::Loaded<LlvmCode>;

/// Compiles kernels for a plan with `symbols` symbolic dims, for this CPU.
pub fn compile(kernels: &[Kernel], symbols: usize) -> Result<LlvmJit, CodegenError> {
    for k in kernels {
        super::check_locals(k)?;
    }
    let cpu = attributes(&Target::host(), true);
    let text = text::module(kernels, symbols, &cpu);
    let context = Box::into_raw(Box::new(Context::create()));
    // SAFETY: `context` stays allocated until `LlvmCode::drop` (or the error path below)
    // frees it, after the engine and module borrowing it are gone.
    let ctx: &'static Context = unsafe { &*context };
    let code = match jit_engine(ctx, &text, &cpu) {
        Ok(engine) => LlvmCode {
            engine: ManuallyDrop::new(engine),
            context,
        },
        Err(e) => {
            // SAFETY: nothing borrows the context any more: the engine was never made.
            drop(unsafe { Box::from_raw(context) });
            return Err(e);
        }
    };
    let mut fns = Vec::with_capacity(kernels.len());
    for k in kernels {
        let address = code
            .engine
            .get_function_address(&k.name)
            .map_err(|e| llvm_error("a compiled kernel is missing", e))?;
        // SAFETY: every kernel is defined with the KernelFn ABI (text.rs).
        fns.push(unsafe { std::mem::transmute::<usize, KernelFn>(address) });
    }
    let stack = kernels.iter().map(Kernel::local_bytes).max().unwrap_or(0);
    // SAFETY: the pointers are this engine's kernels, which `code` keeps alive.
    let kernels = unsafe { CpuKernels::new(fns, stack) }?;
    Ok(super::Loaded::new(kernels, code))
}

/// The optimised module of `text` in a JIT engine, with the libcalls bound.
fn jit_engine<'c>(
    context: &'c Context,
    text: &str,
    cpu: &CpuAttributes,
) -> Result<ExecutionEngine<'c>, CodegenError> {
    let machine = machine(cpu, RelocMode::Default)?;
    let module = optimised(context, text, &machine)?;
    let engine = module
        .create_jit_execution_engine(OptimizationLevel::Aggressive)
        .map_err(|e| llvm_error("cannot start LLVM's JIT", e))?;
    for (name, _, f) in archc_kernels::math::LIBCALLS {
        if let Some(decl) = module.get_function(name) {
            engine.add_global_mapping(&decl, f.address() as usize);
        }
    }
    Ok(engine)
}

/// Escapes bytes as an LLVM `c"…"` string.
fn c_string(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() + 3);
    s.push_str("c\"");
    for &b in bytes {
        if b.is_ascii_graphic() && b != b'"' && b != b'\\' || b == b' ' {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\{b:02X}"));
        }
    }
    s.push('"');
    s
}

/// The object file for a plan's kernels compiled for `target`, with the symbols the runner
/// library reads (see `codegen::object`): the kernel table, the plan as JSON and the CPU
/// features the code needs.
pub fn build_object(
    kernels: &[Kernel],
    symbols: usize,
    plan_json: &str,
    target: &Target,
) -> Result<Vec<u8>, CodegenError> {
    use super::object::{COUNT, FEATURES, PLAN, PLAN_LEN, TABLE};
    for k in kernels {
        super::check_locals(k)?;
    }
    let cpu = attributes(target, false);
    let mut text = text::module(kernels, symbols, &cpu);
    let table: Vec<String> = kernels
        .iter()
        .map(|k| format!("ptr @\"{}\"", k.name))
        .collect();
    let features = target.features.join(",");
    let mut features_z = features.into_bytes();
    features_z.push(0);
    text.push_str(&format!(
        "\n@{TABLE} = constant [{} x ptr] [{}], align 8\n@{COUNT} = constant i64 {}, align 8\n@{PLAN} = constant [{} x i8] {}, align 8\n@{PLAN_LEN} = constant i64 {}, align 8\n@{FEATURES} = constant [{} x i8] {}, align 8\n",
        kernels.len(),
        table.join(", "),
        kernels.len(),
        plan_json.len(),
        c_string(plan_json.as_bytes()),
        plan_json.len(),
        features_z.len(),
        c_string(&features_z),
    ));
    let context = Context::create();
    let machine = machine(&cpu, RelocMode::PIC)?;
    let module = optimised(&context, &text, &machine)?;
    let buffer = machine
        .write_to_memory_buffer(&module, FileType::Object)
        .map_err(|e| llvm_error("LLVM cannot write the object file", e))?;
    Ok(buffer.as_slice().to_vec())
}
