//! Running PTX kernels on an NVIDIA GPU through the CUDA driver (cudarc, loaded at run time:
//! archc builds and runs without CUDA, and says so when a GPU is asked for).
//!
//! [`CudaLauncher`] is a [`Launcher`] for the executor the CPU uses: each launch runs the
//! kernel on the grid and block the plan's launch geometry gives, on the buffers' copies in
//! the GPU's memory (`crate::resident`), and reads the status word back. The run's arena has
//! a mirror there, so activations stay on the GPU from one kernel to the next; only the inputs
//! the executor stores and the outputs it fetches cross. The weights are copied once. CUDA
//! graph capture, which would make a run one launch, is not built yet.
//!
//! The PTX is the compiler's (`archc dump --stage ptx`): each kernel an `.entry` of the plan's
//! kernel name taking `(args, dims)`, device pointers to the buffers' addresses and to the
//! dims, whose top-level Grid loops stride over the grid, so any grid covers them.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use crate::resident::{DeviceMemory, Resident};

use crate::{Arg, Copies, Device, LaunchError, Launcher, Plan, Signatures, Size, Step};
use cudarc::driver::sys::CUevent_flags;
pub use cudarc::driver::CudaContext;
use cudarc::driver::{CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg};

/// Why the GPU cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// libcuda is not installed (no NVIDIA driver).
    #[error("no CUDA driver found (libcuda.so): PTX kernels need an NVIDIA GPU and its driver (`archc run --device cuda-sim` runs them in the interpreter instead)")]
    NoDriver,
    /// The driver found no usable GPU, or failed.
    #[error("CUDA: {0}")]
    Driver(String),
    /// The GPU is older than the PTX archc generates needs.
    #[error(
        "{name} has compute capability {major}.{minor}; archc's PTX needs 8.0 (Ampere) or newer"
    )]
    TooOld {
        /// The device's name.
        name: String,
        /// Compute capability, major.
        major: i32,
        /// Compute capability, minor.
        minor: i32,
    },
}

fn driver(e: impl std::fmt::Display) -> CudaError {
    CudaError::Driver(e.to_string())
}

/// The PTX architectures archc generates (`archc_kernels::target::GpuArch`, without the
/// dependency on the compiler's crates).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PtxArch {
    /// Ampere and later (the driver compiles it for newer GPUs).
    Sm80,
    /// Hopper only.
    Sm90a,
}

/// GPU 0 of this machine: its context, the PTX architecture for it (`sm_90a` on Hopper,
/// `sm_80` on Ampere and later, which the driver compiles for newer GPUs) and its name.
pub fn open() -> Result<(Arc<CudaContext>, PtxArch, String), CudaError> {
    // SAFETY: this only tries to load the driver library and reports whether it could; no
    // driver function is called.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(CudaError::NoDriver);
    }
    let ctx = CudaContext::new(0).map_err(driver)?;
    let name = ctx.name().map_err(driver)?;
    let (major, minor) = ctx.compute_capability().map_err(driver)?;
    let arch = match (major, minor) {
        (9, 0) => PtxArch::Sm90a,
        (8.., _) => PtxArch::Sm80,
        _ => return Err(CudaError::TooOld { name, major, minor }),
    };
    Ok((ctx, arch, name))
}

/// Kernels loaded on a GPU from their PTX.
pub struct CudaLauncher {
    functions: Vec<CudaFunction>,
    /// Each kernel's name, grid (blocks, expressions of the dims) and threads per block, from
    /// the plan's launch geometry.
    geometry: Vec<(String, Vec<Size>, u32)>,
    /// What each kernel reads and writes, checked at every launch as on the CPU.
    signatures: Signatures,
    /// The arena's mirror and the weights' copies on the GPU (`crate::resident`).
    memory: RefCell<Resident<CudaMemory>>,
    /// Milliseconds the kernels ran since `Launcher::kernel_seconds` last read them, once it
    /// has been called (timing costs two events per launch).
    kernel_ms: Cell<Option<f64>>,
}

impl CudaLauncher {
    /// Loads `ptx`, the PTX of `plan`'s GPU-mapped kernels, into `ctx`.
    pub fn new(ctx: &Arc<CudaContext>, ptx: &str, plan: &Plan) -> Result<CudaLauncher, CudaError> {
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
            .map_err(driver)?;
        let geometry = geometry(plan);
        let functions = geometry
            .iter()
            .map(|(name, ..)| module.load_function(name).map_err(driver))
            .collect::<Result<Vec<_>, _>>()?;
        let signatures = plan
            .signatures()
            .map_err(|e| CudaError::Driver(format!("the plan's kernel signatures: {e}")))?;
        Ok(CudaLauncher {
            memory: RefCell::new(Resident::new(CudaMemory(ctx.default_stream()))),
            kernel_ms: Cell::new(None),
            functions,
            geometry,
            signatures,
        })
    }
}

/// Blocks and threads per block for a kernel the plan gives no geometry (a Grid loop whose
/// extent reads a buffer: MoE's routed rows), or no step launches: its loops stride over grid
/// and block, so any launch covers them.
const FALLBACK: (i64, u32) = (1024, 128);

/// Each kernel's name, grid and block, from the first step that launches it (every step of a
/// kernel has its geometry: it is the kernel's).
fn geometry(plan: &Plan) -> Vec<(String, Vec<Size>, u32)> {
    let mut out: Vec<Option<(Vec<Size>, u32)>> = vec![None; plan.kernels.len()];
    let kinds = plan.kinds.iter().flat_map(|k| &k.steps);
    for step in plan.prepare.iter().chain(&plan.steps).chain(kinds) {
        if let Step::Kernel {
            kernel,
            launch: Some(l),
            ..
        } = step
        {
            let block = l
                .block
                .iter()
                .map(|s| s.eval(&[]).clamp(1, 1024))
                .product::<i64>();
            if let Some(slot @ None) = out.get_mut(*kernel) {
                *slot = Some((l.grid.clone(), block.clamp(1, 1024) as u32));
            }
        }
    }
    plan.kernels
        .iter()
        .zip(out)
        .map(|(name, g)| {
            let (grid, block) = g.unwrap_or((vec![Size::Const(FALLBACK.0)], FALLBACK.1));
            (name.clone(), grid, block)
        })
        .collect()
}

/// The GPU's memory, as `crate::resident` stages launch arguments in it.
pub struct CudaMemory(Arc<CudaStream>);

fn outside(at: usize, len: usize) -> LaunchError {
    LaunchError::Backend(format!(
        "a copy of {len} bytes at byte {at}, past a device buffer"
    ))
}

impl DeviceMemory for CudaMemory {
    type Buffer = CudaSlice<u8>;

    fn alloc(&self, bytes: usize) -> Result<CudaSlice<u8>, LaunchError> {
        self.0
            .alloc_zeros::<u8>(bytes.max(1))
            .map_err(|e| failed(&format!("allocating {bytes} bytes of GPU memory"), e))
    }

    fn upload(&self, dst: &mut CudaSlice<u8>, at: usize, src: &[u8]) -> Result<(), LaunchError> {
        let end = at
            .checked_add(src.len())
            .ok_or_else(|| outside(at, src.len()))?;
        let mut view = dst
            .try_slice_mut(at..end)
            .ok_or_else(|| outside(at, src.len()))?;
        // Pageable host memory: the driver has taken the bytes when this returns.
        self.0
            .memcpy_htod(src, &mut view)
            .map_err(|e| failed(&format!("copying {} bytes to the GPU", src.len()), e))
    }

    fn download(&self, src: &CudaSlice<u8>, at: usize, dst: &mut [u8]) -> Result<(), LaunchError> {
        let end = at
            .checked_add(dst.len())
            .ok_or_else(|| outside(at, dst.len()))?;
        let view = src
            .try_slice(at..end)
            .ok_or_else(|| outside(at, dst.len()))?;
        self.0
            .memcpy_dtoh(&view, dst)
            .and_then(|()| self.0.synchronize())
            .map_err(|e| failed(&format!("copying {} bytes from the GPU", dst.len()), e))
    }

    fn address(&self, b: &CudaSlice<u8>) -> u64 {
        b.device_ptr(&self.0).0
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> LaunchError {
    LaunchError::Backend(format!("CUDA: {what}: {e}"))
}

impl Launcher for CudaLauncher {
    /// The buffers the executor passes are host memory; the kernels get their copies on the
    /// GPU (`crate::resident`).
    fn device(&self) -> Device {
        Device::Host
    }

    fn copies(&self) -> Option<&dyn Copies> {
        Some(&self.memory)
    }

    /// The first call starts the timing (and returns 0).
    fn kernel_seconds(&self) -> Option<f64> {
        Some(self.kernel_ms.replace(Some(0.0)).unwrap_or(0.0) / 1e3)
    }

    fn launch(
        &self,
        kernel: usize,
        args: &mut [Arg<'_>],
        dims: &[i64],
    ) -> Result<i64, LaunchError> {
        let ((name, grid, block), function) = self
            .geometry
            .get(kernel)
            .zip(self.functions.get(kernel))
            .ok_or(LaunchError::NoKernel(kernel))?;
        self.signatures.check(kernel, args, dims)?;
        let mut memory = self.memory.borrow_mut();
        let s = &memory.memory().0.clone();
        // Held to the end of the launch: no copy is dropped while the kernel reads it.
        let staged = memory.stage(args)?;
        let mut addresses = staged.addresses.clone();
        let status = s
            .alloc_zeros::<u8>(8)
            .map_err(|e| failed("allocating the status word", e))?;
        addresses.push(status.device_ptr(s).0);
        let table = s
            .clone_htod(&addresses)
            .map_err(|e| failed("copying the argument table", e))?;
        let dims_copy: Vec<i64> = if dims.is_empty() {
            vec![0]
        } else {
            dims.to_vec()
        };
        let dims_dev = s
            .clone_htod(&dims_copy)
            .map_err(|e| failed("copying the dims", e))?;
        // The kernel's grid-stride loops cover iterations past the grid: clamping is safe.
        let blocks: i64 = grid.iter().map(|g| g.eval(dims).max(1)).product();
        let config = LaunchConfig {
            grid_dim: (blocks.clamp(1, i64::from(i32::MAX)) as u32, 1, 1),
            block_dim: (*block, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = s.launch_builder(function);
        launch.arg(&table).arg(&dims_dev);
        if self.kernel_ms.get().is_some() {
            launch.record_kernel_launch(CUevent_flags::CU_EVENT_DEFAULT);
        }
        // SAFETY: every kernel of the module is `void(ptr args, ptr dims)` (the compiler's
        // PTX); `table` holds the device address of each argument's bytes on the GPU (the
        // arena's mirror at the argument's offset, a kept copy, or this launch's), as many as
        // its signature asks (checked above: the mirror is as long as the host's arena), and
        // of the status word, and `dims_dev` the dims the kernel reads. `memory`, borrowed to
        // the end, holds the kept copies and `staged` this launch's until the stream has
        // synchronised below.
        let events = unsafe { launch.launch(config) }
            .map_err(|e| failed(&format!("launching `{name}`"), e))?;
        let mut word = [0u8; 8];
        s.memcpy_dtoh(&status, &mut word)
            .map_err(|e| failed("reading the status word", e))?;
        s.synchronize()
            .map_err(|e| failed(&format!("running `{name}`"), e))?;
        memory.finish(args, staged)?;
        // Best effort: a kernel that ran is not failed for want of its time.
        if let (Some((start, end)), Some(sum)) = (events, self.kernel_ms.get()) {
            if let Ok(ms) = start.elapsed_ms(&end) {
                self.kernel_ms.set(Some(sum + f64::from(ms)));
            }
        }
        Ok(i64::from_le_bytes(word))
    }
}
