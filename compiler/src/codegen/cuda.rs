//! Running PTX kernels on an NVIDIA GPU through the CUDA driver (cudarc, loaded at run time:
//! archc builds and runs without CUDA, and says so when a GPU is asked for).
//!
//! [`CudaLauncher`] is a [`Launcher`] for the executor the CPU uses: each launch copies its
//! buffers to the device, runs the kernel on the plan's grid and the kernel's block, and copies
//! the output and the status word back. That is correct for every plan and keeps one
//! executor, but moves every buffer twice per launch. Device-resident buffers (weights
//! uploaded once, the arena in device memory) and CUDA graph capture are what make it fast,
//! and are not built yet.

use std::sync::Arc;

use archc_kernels::ir::{Expr, Kernel};
use archc_kernels::target::GpuArch;
use archc_runtime::{Arg, Device, LaunchError, Launcher};
pub use cudarc::driver::CudaContext;
use cudarc::driver::{CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg};

/// Why the GPU cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// libcuda is not installed (no NVIDIA driver).
    #[error("no CUDA driver found (libcuda.so): `--device cuda` needs an NVIDIA GPU and its driver; `--device cuda-sim` runs the same GPU kernels in the interpreter")]
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

/// GPU 0 of this machine: its context, the PTX architecture for it (`sm_90a` on Hopper,
/// `sm_80` on Ampere and later, which the driver compiles for newer GPUs) and its name.
pub fn open() -> Result<(Arc<CudaContext>, GpuArch, String), CudaError> {
    // SAFETY: this only tries to load the driver library and reports whether it could; no
    // driver function is called.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(CudaError::NoDriver);
    }
    let ctx = CudaContext::new(0).map_err(driver)?;
    let name = ctx.name().map_err(driver)?;
    let (major, minor) = ctx.compute_capability().map_err(driver)?;
    let arch = match (major, minor) {
        (9, 0) => GpuArch::Sm90a,
        (8.., _) => GpuArch::Sm80,
        _ => return Err(CudaError::TooOld { name, major, minor }),
    };
    Ok((ctx, arch, name))
}

/// Kernels loaded on a GPU from their PTX.
pub struct CudaLauncher {
    stream: Arc<CudaStream>,
    functions: Vec<CudaFunction>,
    /// The GPU-mapped kernels: their grids are evaluated at each launch.
    kernels: Vec<Kernel>,
}

impl CudaLauncher {
    /// Loads `ptx`, the PTX of GPU-mapped `kernels`, into `ctx`.
    pub fn new(
        ctx: &Arc<CudaContext>,
        ptx: &str,
        kernels: &[Kernel],
    ) -> Result<CudaLauncher, CudaError> {
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
            .map_err(driver)?;
        let functions = kernels
            .iter()
            .map(|k| module.load_function(&k.name).map_err(driver))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CudaLauncher {
            stream: ctx.default_stream(),
            functions,
            kernels: kernels.to_vec(),
        })
    }
}

/// Threads per block of a GPU-mapped kernel: its Thread loops' constant extents.
fn block_threads(k: &Kernel) -> u32 {
    archc_kernels::launch::geometry(k)
        .block
        .iter()
        .map(|e| match e {
            Expr::Int(n) => u32::try_from(*n).unwrap_or(1),
            _ => 1,
        })
        .product::<u32>()
        .clamp(1, 1024)
}

fn failed(what: &str, e: impl std::fmt::Display) -> LaunchError {
    LaunchError::Backend(format!("CUDA: {what}: {e}"))
}

impl Launcher for CudaLauncher {
    /// The buffers the executor passes are host memory; each launch copies them over.
    fn device(&self) -> Device {
        Device::Host
    }

    fn launch(
        &self,
        kernel: usize,
        args: &mut [Arg<'_>],
        dims: &[i64],
    ) -> Result<i64, LaunchError> {
        let (k, function) = self
            .kernels
            .get(kernel)
            .zip(self.functions.get(kernel))
            .ok_or(LaunchError::NoKernel(kernel))?;
        super::check_args(k, args)?;
        let s = &self.stream;
        let mut buffers: Vec<CudaSlice<u8>> = Vec::with_capacity(args.len() + 1);
        for a in args.iter() {
            let bytes: &[u8] = match a {
                Arg::In(b) => b,
                Arg::Out(b) => b,
            };
            // A zero-length allocation has no address; kernels read nothing of it.
            let copy = match bytes.is_empty() {
                true => s.alloc_zeros::<u8>(1),
                false => s.clone_htod(bytes),
            };
            buffers.push(
                copy.map_err(|e| failed(&format!("copying {} bytes to the GPU", bytes.len()), e))?,
            );
        }
        buffers.push(
            s.alloc_zeros::<u8>(8)
                .map_err(|e| failed("allocating the status word", e))?,
        );
        let addresses: Vec<u64> = buffers.iter().map(|b| b.device_ptr(s).0).collect();
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
        let blocks = archc_kernels::launch::blocks(k, dims).ok_or_else(|| {
            LaunchError::Backend(format!(
                "kernel `{}`: its grid is not a size of the dims",
                k.name
            ))
        })?;
        // Grid-stride loops cover any iterations past the largest grid.
        let grid = blocks.clamp(1, i64::from(i32::MAX)) as u32;
        let config = LaunchConfig {
            grid_dim: (grid, 1, 1),
            block_dim: (block_threads(k), 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = s.launch_builder(function);
        launch.arg(&table).arg(&dims_dev);
        // SAFETY: every kernel of the module is `void(ptr args, ptr dims)` (nvptx.rs); `table`
        // holds the device address of a copy of each argument, as long as the executor's
        // buffer, and of the status word, and `dims_dev` the dims the kernel reads; all of
        // them live until the stream has synchronised below.
        unsafe { launch.launch(config) }
            .map_err(|e| failed(&format!("launching `{}`", k.name), e))?;
        for (a, d) in args.iter_mut().zip(&buffers) {
            if let Arg::Out(out) = a {
                if !out.is_empty() {
                    s.memcpy_dtoh(d, &mut **out)
                        .map_err(|e| failed("copying an output back", e))?;
                }
            }
        }
        let mut status = [0u8; 8];
        if let Some(word) = buffers.last() {
            s.memcpy_dtoh(word, &mut status)
                .map_err(|e| failed("reading the status word", e))?;
        }
        s.synchronize()
            .map_err(|e| failed(&format!("running `{}`", k.name), e))?;
        Ok(i64::from_le_bytes(status))
    }
}
