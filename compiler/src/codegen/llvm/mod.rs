//! The LLVM backend: Kernel IR → LLVM IR text → optimised machine code, JIT-compiled in
//! process or written as an object file for `archc build`.
//!
//! The IR is written as text (`text.rs`, what `archc dump --stage llvm` prints) and parsed
//! by LLVM, then optimised with the `default<O3>` pipeline for the target CPU. In process the
//! functions are compiled for the host CPU itself, in shares on every core at once, to
//! relocatable objects that ORC's LLJIT links into the process (`orc.rs`); object files for
//! `archc build` are compiled for an x86-64 microarchitecture level and record its features,
//! which a built binary checks before it runs a kernel.

mod copies;
// The GPU math library: compiled into PTX, and tested on the CPU.
#[cfg(any(feature = "cuda", test))]
mod gpu_math;
mod gpu_threads;
#[cfg(feature = "cuda")]
pub mod nvptx;
mod ops;
mod orc;
mod quant;
mod text;
mod warpgroups;
mod warps;

use archc_kernels::ir::Kernel;
use archc_kernels::target::Target;
use archc_runtime::{CpuKernels, KernelFn, Signatures};
use inkwell::context::Context;
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

/// The machine code LLVM compiled into this process: the JIT that linked it.
pub struct LlvmCode {
    _jit: orc::Jit,
}

/// Kernels compiled by LLVM into this process.
pub type LlvmJit = super::Loaded<LlvmCode>;

/// The relocatable object of `text`, optimised and compiled for `cpu`.
fn object(text: &str, cpu: &CpuAttributes) -> Result<MemoryBuffer<'static>, CodegenError> {
    let context = Context::create();
    let machine = machine(cpu, RelocMode::PIC)?;
    let module = optimised(&context, text, &machine)?;
    machine
        .write_to_memory_buffer(&module, FileType::Object)
        .map_err(|e| llvm_error("LLVM cannot write the object file", e))
}

/// Deals kernels into `n` shares of about equal IR size (largest first, each to the lightest
/// share), so that the shares compile in about the same time.
fn shares(sizes: &[usize], n: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sizes[i]));
    let mut shares = vec![(0usize, Vec::new()); n.max(1)];
    for i in order {
        if let Some(lightest) = shares.iter_mut().min_by_key(|s| s.0) {
            lightest.0 += sizes[i];
            lightest.1.push(i);
        }
    }
    shares
        .into_iter()
        .map(|s| s.1)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Compiles kernels with these signatures (see [`archc_runtime::Signatures`]), for this CPU,
/// one share of the kernels per core at once (LLVM's optimiser is most of the compile time).
pub fn compile(kernels: &[Kernel], signatures: Signatures) -> Result<LlvmJit, CodegenError> {
    let symbols = signatures.symbols;
    for k in kernels {
        super::check_for_cpu(k)?;
    }
    let cpu = attributes(&Target::host(), true);
    // Made once before the threads start: LLVM's target registry is global.
    machine(&cpu, RelocMode::Default)?;
    let sizes: Vec<usize> = kernels.iter().map(|k| k.body.len() + 1).collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shares = shares(&sizes, cores.min(kernels.len()).min(8));
    let built: Vec<Result<orc::Object, CodegenError>> = std::thread::scope(|s| {
        let handles: Vec<_> = shares
            .iter()
            .map(|share| {
                let cpu = &cpu;
                s.spawn(move || {
                    let mine: Vec<Kernel> = share.iter().map(|&i| kernels[i].clone()).collect();
                    object(&text::module(&mine, symbols, cpu), cpu).map(orc::Object::new)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(CodegenError::Llvm("a compile thread panicked".into())))
            })
            .collect()
    });
    let jit = orc::Jit::new()?;
    let libcalls: Vec<(&str, usize)> = archc_kernels::math::LIBCALLS
        .iter()
        .map(|(name, _, f)| (*name, f.address() as usize))
        .collect();
    jit.define(&libcalls)?;
    for object in built {
        jit.add(object?)?;
    }
    let mut fns: Vec<Option<KernelFn>> = vec![None; kernels.len()];
    for (k, f) in kernels.iter().zip(&mut fns) {
        let address = jit.lookup(&k.name)?;
        // SAFETY: every kernel is defined with the KernelFn ABI (text.rs), and the JIT that
        // holds its code lives in the `LlvmCode` beside the pointers.
        *f = Some(unsafe { std::mem::transmute::<usize, KernelFn>(address) });
    }
    let fns: Vec<KernelFn> = fns.into_iter().flatten().collect();
    let stack = kernels.iter().map(Kernel::local_bytes).max().unwrap_or(0);
    // SAFETY: the pointers are kernels of this JIT, which `LlvmCode` keeps alive, compiled
    // from Kernel IR that stays within its signatures (the lowering's invariant).
    let kernels = unsafe { CpuKernels::new(fns, signatures, stack) }?;
    Ok(super::Loaded::new(kernels, LlvmCode { _jit: jit }))
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
    use super::object::{COUNT, FEATURES, PLAN, PLAN_LEN, PTX, PTX_LEN, TABLE};
    for k in kernels {
        super::check_for_cpu(k)?;
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
        "\n@{TABLE} = constant [{} x ptr] [{}], align 8\n@{COUNT} = constant i64 {}, align 8\n@{PLAN} = constant [{} x i8] {}, align 8\n@{PLAN_LEN} = constant i64 {}, align 8\n@{FEATURES} = constant [{} x i8] {}, align 8\n@{PTX} = constant [1 x i8] zeroinitializer, align 8\n@{PTX_LEN} = constant i64 0, align 8\n",
        kernels.len(),
        table.join(", "),
        kernels.len(),
        plan_json.len(),
        c_string(plan_json.as_bytes()),
        plan_json.len(),
        features_z.len(),
        c_string(&features_z),
    ));
    Ok(object(&text, &cpu)?.as_slice().to_vec())
}
