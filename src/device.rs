//! `--device`: where a model's kernels run, and the launcher that runs them there.

use archc_compiler::codegen::backend::BackendKind;
use archc_compiler::codegen::kernel_interp::GpuSim;
use archc_compiler::lower::Lowered;
use archc_kernels::target::{GpuArch, Target};
use archc_runtime::Launcher;

use crate::run::Engine;

/// An NVIDIA GPU, opened (cargo feature `cuda`).
pub struct Gpu {
    #[cfg(feature = "cuda")]
    ctx: std::sync::Arc<archc_runtime::cuda::CudaContext>,
    /// The PTX architecture its kernels are compiled for.
    pub arch: GpuArch,
    /// The device's name, for the summary.
    pub name: String,
}

/// GPU 0 of this machine, its kernels compiled for `choice` or else its own architecture, or
/// why there is none (no `cuda` feature, no driver, no GPU) or why it cannot run `choice`.
pub fn open_gpu(choice: Option<GpuArch>) -> Result<Gpu, String> {
    #[cfg(feature = "cuda")]
    {
        use archc_runtime::cuda::{open, PtxArch};
        let (ctx, arch, name) = open().map_err(|e| e.to_string())?;
        let own = match arch {
            PtxArch::Sm80 => GpuArch::Sm80,
            PtxArch::Sm90a => GpuArch::Sm90a,
        };
        let arch = match choice {
            Some(c) if !c.runs_on(own) => {
                return Err(format!(
                "--arch {} needs a Hopper GPU (H100, H200); {name} runs {} PTX (leave out --arch)",
                c.name(),
                own.name()
            ))
            }
            Some(c) => c,
            None => own,
        };
        Ok(Gpu { ctx, arch, name })
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = choice;
        Err(archc_compiler::codegen::cranelift::CodegenError::NoCuda.to_string())
    }
}

/// The machine `engine`'s kernels are scheduled for (`gpu`: the opened GPU of `Engine::Cuda`).
pub fn target(engine: Engine, gpu: Option<&Gpu>) -> Target {
    match (engine, gpu) {
        (Engine::Native(kind), _) => kind.target(),
        (Engine::GpuSim(arch), _) => Target::cuda(arch),
        (Engine::Cuda(_), Some(g)) => Target::cuda(g.arch),
        (Engine::Cuda(a), None) => Target::cuda(a.unwrap_or(GpuArch::Sm80)),
        // The interpreter runs the graph; its plan only binds the inputs, so any target does.
        (Engine::Interp, _) => BackendKind::Cranelift.target(),
    }
}

/// The launcher that runs `lowered`'s kernels for `engine` (not the graph interpreter):
/// native code on `threads` CPU threads, the GPU simulator, or the GPU.
pub fn launcher(
    engine: Engine,
    lowered: &Lowered,
    threads: usize,
    gpu: Option<&Gpu>,
) -> Result<Box<dyn Launcher>, String> {
    match engine {
        Engine::Native(kind) => kind.jit(lowered, threads).map_err(|e| e.to_string()),
        Engine::GpuSim(_) => Ok(Box::new(GpuSim::new(lowered.kernels.clone()))),
        Engine::Cuda(_) => cuda_launcher(lowered, gpu),
        Engine::Interp => Err("the graph interpreter launches no kernels".into()),
    }
}

#[cfg(feature = "cuda")]
fn cuda_launcher(lowered: &Lowered, gpu: Option<&Gpu>) -> Result<Box<dyn Launcher>, String> {
    use archc_compiler::codegen::ptx;
    use archc_runtime::cuda::CudaLauncher;
    let gpu = match gpu {
        Some(g) => g,
        None => return Err("no GPU was opened".into()),
    };
    let ptx =
        ptx(&lowered.kernels, lowered.plan.symbols.len(), gpu.arch).map_err(|e| e.to_string())?;
    let launcher = CudaLauncher::new(&gpu.ctx, &ptx, &lowered.plan).map_err(|e| e.to_string())?;
    Ok(Box::new(launcher))
}

#[cfg(not(feature = "cuda"))]
fn cuda_launcher(_: &Lowered, _: Option<&Gpu>) -> Result<Box<dyn Launcher>, String> {
    Err(archc_compiler::codegen::cranelift::CodegenError::NoCuda.to_string())
}
