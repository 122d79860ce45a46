//! In-process compilation: Cranelift JIT → native kernels for the CPU executor.

use archc_kernels::ir::Kernel;
use archc_runtime::{CpuKernels, KernelFn, Signatures};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};

use super::cranelift::{define_kernels, CodegenError};

/// Kernels compiled into this process by Cranelift. The module owns the code, so it lives as
/// long as they.
pub type Jit = super::Loaded<JITModule>;

/// The Cranelift settings for the host: optimised, with the CPU's own features (FMA, SSE4);
/// position-independent for object files that are linked into executables.
pub fn host_isa(pic: bool) -> Result<cranelift_codegen::isa::OwnedTargetIsa, CodegenError> {
    let mut flags = settings::builder();
    let set = |f: &mut settings::Builder, k: &str, v: &str| {
        f.set(k, v).map_err(|e| CodegenError::Host(e.to_string()))
    };
    set(&mut flags, "opt_level", "speed")?;
    set(&mut flags, "is_pic", if pic { "true" } else { "false" })?;
    // Frames with large thread-private arrays touch the stack page by page, so running past a
    // thread's stack always hits its guard page instead of memory beyond it.
    set(&mut flags, "enable_probestack", "true")?;
    set(&mut flags, "probestack_strategy", "inline")?;
    let isa = cranelift_native::builder().map_err(|e| CodegenError::Host(e.to_string()))?;
    isa.finish(settings::Flags::new(flags))
        .map_err(|e| CodegenError::Host(e.to_string()))
}

/// Compiles kernels with these signatures (see [`archc_runtime::Signatures`]).
pub fn compile(kernels: &[Kernel], signatures: Signatures) -> Result<Jit, CodegenError> {
    let symbols = signatures.symbols;
    let mut builder =
        JITBuilder::with_isa(host_isa(false)?, cranelift_module::default_libcall_names());
    for (name, f) in archc_kernels::math::symbols() {
        builder.symbol(name, f);
    }
    let mut module = JITModule::new(builder);
    let ids = define_kernels(&mut module, kernels, symbols, None)?;
    module.finalize_definitions().map_err(Box::new)?;
    let fns: Vec<KernelFn> = ids
        .into_iter()
        .map(|id| {
            let p = module.get_finalized_function(id);
            // SAFETY: every kernel was defined with the KernelFn signature.
            unsafe { std::mem::transmute::<*const u8, KernelFn>(p) }
        })
        .collect();
    let stack = kernels.iter().map(Kernel::local_bytes).max().unwrap_or(0);
    // SAFETY: the pointers are this module's kernels, which the result keeps alive, compiled
    // from Kernel IR that stays within its signatures (the lowering's invariant).
    let kernels = unsafe { CpuKernels::new(fns, signatures, stack) }?;
    Ok(super::Loaded::new(kernels, module))
}
