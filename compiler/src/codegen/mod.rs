//! Backends: the Kernel IR interpreter (the oracle), Cranelift for the CPU, LLVM for the
//! CPU's full-width vectors (cargo feature `llvm`) and for NVIDIA GPUs' PTX (feature `cuda`).

pub mod backend;
pub mod cranelift;
mod half_float;
mod int_div;
pub mod jit;
pub mod kernel_interp;
#[cfg(feature = "llvm")]
pub mod llvm;
pub mod object;
pub mod ptxas;

/// Whether this archc generates PTX and runs it (the cargo feature `cuda`).
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

/// The PTX of GPU-mapped `kernels` (lowered for `Target::cuda(arch)`) whose plan has `symbols`
/// dims: LLVM's NVPTX backend, with the cargo feature `cuda`.
pub fn ptx(
    kernels: &[Kernel],
    symbols: usize,
    arch: archc_kernels::target::GpuArch,
) -> Result<String, CodegenError> {
    #[cfg(feature = "cuda")]
    return llvm::nvptx::ptx(kernels, symbols, arch);
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (kernels, symbols, arch);
        Err(CodegenError::NoCuda)
    }
}

use archc_kernels::ir::{Kernel, MAX_LOCAL_BYTES};
use archc_runtime::{Arg, CpuKernels, Device, LaunchError, Launcher};
use cranelift::CodegenError;

/// Native kernels compiled into this process, with what keeps their machine code alive
/// (a JIT module): the one launcher of every in-process code generator.
pub struct Loaded<Code> {
    /// The kernels' function pointers on the CPU executor. Declared first, so dropped before
    /// the code they point into.
    kernels: CpuKernels,
    _code: Code,
}

impl<Code> Loaded<Code> {
    /// Kernels whose code `code` owns.
    pub(crate) fn new(kernels: CpuKernels, code: Code) -> Loaded<Code> {
        Loaded {
            kernels,
            _code: code,
        }
    }

    /// Uses `n` threads.
    pub fn with_threads(mut self, n: usize) -> Result<Loaded<Code>, archc_runtime::CpuError> {
        self.kernels.set_threads(n)?;
        Ok(self)
    }
}

impl<Code> Launcher for Loaded<Code> {
    fn device(&self) -> Device {
        self.kernels.device()
    }

    fn launch(
        &self,
        kernel: usize,
        args: &mut [Arg<'_>],
        dims: &[i64],
    ) -> Result<i64, LaunchError> {
        self.kernels.launch(kernel, args, dims)
    }
}

/// Checks a launch's buffers against kernel `k`'s parameters: one per parameter but the
/// status word, and none that the kernel writes passed read-only.
pub(crate) fn check_args(k: &Kernel, args: &[Arg<'_>]) -> Result<(), LaunchError> {
    if args.len() + 1 != k.params.len() {
        return Err(LaunchError::Arity {
            want: k.params.len() - 1,
            got: args.len(),
        });
    }
    match (0..args.len()).find(|&i| k.params[i].output && matches!(args[i], Arg::In(_))) {
        Some(param) => Err(LaunchError::ReadOnly(param)),
        None => Ok(()),
    }
}

/// Refuses a kernel a CPU cannot run: one whose thread-private arrays a thread's stack cannot
/// hold, or one with a warp's collective work (lowered for a GPU).
pub(crate) fn check_for_cpu(k: &Kernel) -> Result<(), CodegenError> {
    if archc_kernels::launch::has_warp_work(&k.body) {
        return Err(CodegenError::WarpWork(k.name.clone()));
    }
    if k.local_bytes() > MAX_LOCAL_BYTES {
        return Err(CodegenError::TooMuchLocal {
            kernel: k.name.clone(),
            bytes: k.local_bytes(),
            limit: MAX_LOCAL_BYTES,
        });
    }
    Ok(())
}
