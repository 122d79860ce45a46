//! Running PTX kernels on an NVIDIA GPU through the CUDA driver (cudarc, loaded at run time:
//! archc builds and runs without CUDA, and says so when a GPU is asked for).
//!
//! [`CudaLauncher`] is a [`Launcher`] for the executor the CPU uses: each launch copies its
//! buffers to the device, runs the kernel on the grid and block the plan's launch geometry
//! gives, and copies the output and the status word back. The weights are copied once: the
//! executor names them (`Launcher::constants`) and their copies stay on the GPU
//! (`crate::constants`). Activations still cross at each launch; the arena in device memory
//! and CUDA graph capture are what would make it fast, and are not built yet.
//!
//! The PTX is the compiler's (`archc dump --stage ptx`): each kernel an `.entry` of the plan's
//! kernel name taking `(args, dims)`, device pointers to the buffers' addresses and to the
//! dims, whose top-level Grid loops stride over the grid, so any grid covers them.

use std::cell::RefCell;
use std::sync::Arc;

use crate::constants::ConstantCache;

use crate::{Arg, Device, LaunchError, Launcher, Plan, Signatures, Size, Step};
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
    stream: Arc<CudaStream>,
    functions: Vec<CudaFunction>,
    /// Each kernel's name, grid (blocks, expressions of the dims) and threads per block, from
    /// the plan's launch geometry.
    geometry: Vec<(String, Vec<Size>, u32)>,
    /// What each kernel reads and writes, checked at every launch as on the CPU.
    signatures: Signatures,
    /// The weights' copies on the GPU, made at their first launch (`Launcher::constants`).
    constants: RefCell<ConstantCache<CudaSlice<u8>>>,
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
            stream: ctx.default_stream(),
            functions,
            geometry,
            signatures,
            constants: RefCell::new(ConstantCache::default()),
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

/// A launch's device addresses, and the copies made for it (None where a kept copy serves).
type Copies = (Vec<u64>, Vec<Option<CudaSlice<u8>>>);

/// The device addresses of `args`' bytes, and the copies made for this launch (None where a
/// weight's kept copy serves).
fn copies(
    s: &Arc<CudaStream>,
    constants: &mut ConstantCache<CudaSlice<u8>>,
    args: &[Arg<'_>],
) -> Result<Copies, LaunchError> {
    let mut addresses: Vec<u64> = Vec::with_capacity(args.len() + 1);
    let mut buffers: Vec<Option<CudaSlice<u8>>> = Vec::with_capacity(args.len() + 1);
    for a in args {
        let bytes: &[u8] = match a {
            Arg::In(b) => b,
            Arg::Out(b) => b,
        };
        let kept = match a {
            Arg::In(b) => constants
                .get((b.as_ptr() as usize, b.len()), || s.clone_htod(bytes))
                .map_err(|e| failed(&format!("copying a {}-byte weight to the GPU", b.len()), e))?
                .map(|c| c.device_ptr(s).0),
            Arg::Out(_) => None,
        };
        if let Some(address) = kept {
            addresses.push(address);
            buffers.push(None);
            continue;
        }
        // A zero-length allocation has no address; kernels read nothing of it.
        let copy = match bytes.is_empty() {
            true => s.alloc_zeros::<u8>(1),
            false => s.clone_htod(bytes),
        }
        .map_err(|e| failed(&format!("copying {} bytes to the GPU", bytes.len()), e))?;
        addresses.push(copy.device_ptr(s).0);
        buffers.push(Some(copy));
    }
    Ok((addresses, buffers))
}

fn failed(what: &str, e: impl std::fmt::Display) -> LaunchError {
    LaunchError::Backend(format!("CUDA: {what}: {e}"))
}

impl Launcher for CudaLauncher {
    /// The buffers the executor passes are host memory; each launch copies them over (the
    /// weights once).
    fn device(&self) -> Device {
        Device::Host
    }

    fn constants(&self, ranges: &[(usize, usize)]) {
        self.constants.borrow_mut().set_constant(ranges);
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
        let s = &self.stream;
        // Held to the end of the launch: no kept copy is dropped while the kernel reads it.
        let mut constants = self.constants.borrow_mut();
        let (mut addresses, buffers) = copies(s, &mut constants, args)?;
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
        // SAFETY: every kernel of the module is `void(ptr args, ptr dims)` (the compiler's
        // PTX); `table` holds the device address of a copy of each argument (this launch's,
        // or a weight's kept one, which `constants` holds), as long as its signature asks
        // (checked above), and of the status word, and `dims_dev` the dims the kernel reads;
        // all of them live until the stream has synchronised below.
        unsafe { launch.launch(config) }.map_err(|e| failed(&format!("launching `{name}`"), e))?;
        for (a, d) in args.iter_mut().zip(&buffers) {
            if let (Arg::Out(out), Some(d)) = (a, d) {
                if !out.is_empty() {
                    s.memcpy_dtoh(d, &mut **out)
                        .map_err(|e| failed("copying an output back", e))?;
                }
            }
        }
        let mut word = [0u8; 8];
        s.memcpy_dtoh(&status, &mut word)
            .map_err(|e| failed("reading the status word", e))?;
        s.synchronize()
            .map_err(|e| failed(&format!("running `{name}`"), e))?;
        Ok(i64::from_le_bytes(word))
    }
}
