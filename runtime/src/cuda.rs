//! Running PTX kernels on an NVIDIA GPU through the CUDA driver (cudarc, loaded at run time:
//! archc builds and runs without CUDA, and says so when a GPU is asked for).
//!
//! [`CudaLauncher`] is a [`Launcher`] for the executor the CPU uses: each launch runs the
//! kernel on the grid and block the plan's launch geometry gives, on the buffers' copies in
//! the GPU's memory (`crate::resident`). The run's arena has a mirror there, so activations
//! stay on the GPU from one kernel to the next; only the inputs the executor stores and the
//! outputs it fetches cross. The weights are copied once. Launches are queued and run in
//! batches, their status words read back once per batch ([`Launcher::finish`]); a batch seen
//! before is replayed as a CUDA graph (`crate::cuda_graphs`).
//!
//! The PTX is the compiler's (`archc dump --stage ptx`): each kernel an `.entry` of the plan's
//! kernel name taking `(args, dims)`, device pointers to the buffers' addresses and to the
//! dims, whose top-level Grid loops stride over the grid, so any grid covers them.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use crate::cuda_graphs::{Batches, Queued};
use crate::resident::{DeviceMemory, Resident};

use crate::{Arg, Copies, Device, LaunchError, Launcher, Plan, Signatures, Size, Step};
pub use cudarc::driver::CudaContext;
use cudarc::driver::{CudaFunction, CudaSlice, CudaStream, DevicePtr};

/// Why the GPU cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// libcuda is not installed (no NVIDIA driver).
    #[error("no CUDA driver found (libcuda.so): PTX kernels need an NVIDIA GPU and its driver (`archc run --device cuda-sim` runs them in the interpreter instead)")]
    NoDriver,
    /// The driver found no usable GPU, or failed.
    #[error("CUDA: {0}")]
    Driver(String),
    /// A kernel needs more shared memory per block than the GPU gives one.
    #[error("kernel {kernel} needs {bytes} bytes of shared memory per block; {name} gives a block at most {limit}")]
    SharedMemory {
        /// The kernel's name.
        kernel: String,
        /// The bytes it needs.
        bytes: u32,
        /// The device's name.
        name: String,
        /// The most a block may have (opted in).
        limit: i32,
    },
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
    // SAFETY: every buffer archc allocates on this context is used on one stream only, its
    // launcher's (`CudaLauncher::stream`), which orders its uses and frees; what crosses
    // between launchers goes through the host, after a synchronisation. cudarc's events,
    // which would order uses across streams, then only cost driver calls at every launch.
    unsafe { ctx.disable_event_tracking() };
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
    /// The launches not run yet, and the graphs of batches seen before: dropped before the
    /// module their kernels are in.
    batches: RefCell<Batches>,
    functions: Vec<CudaFunction>,
    /// Each kernel's launch, from the plan's launch geometry.
    geometry: Vec<Geometry>,
    /// What each kernel reads and writes, checked at every launch as on the CPU.
    signatures: Signatures,
    /// The arena's mirror and the weights' copies on the GPU (`crate::resident`).
    memory: RefCell<Resident<CudaMemory>>,
    /// The stream everything runs on: not the context's default one, which cannot be
    /// captured.
    stream: Arc<CudaStream>,
    /// Whether each kernel has checks (`Plan::fallible`): a batch ends at a launch of one,
    /// whose status word [`Launcher::launch`] then returns.
    fallible: Vec<bool>,
    /// With `ARCHC_PROFILE`, every launch runs at once, so that the executor's time for it
    /// is its own.
    eager: bool,
    /// Milliseconds the kernels ran since `Launcher::kernel_seconds` last read them, once it
    /// has been called (timing costs two events per batch).
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
            .map(|g| module.load_function(&g.name).map_err(driver))
            .collect::<Result<Vec<_>, _>>()?;
        allow_shared(ctx, &functions, &geometry)?;
        let signatures = plan
            .signatures()
            .map_err(|e| CudaError::Driver(format!("the plan's kernel signatures: {e}")))?;
        let stream = ctx.new_stream().map_err(driver)?;
        Ok(CudaLauncher {
            memory: RefCell::new(Resident::new(CudaMemory(stream.clone()))),
            stream,
            batches: RefCell::new(Batches::default()),
            // A plan written before it said has checks everywhere.
            fallible: (0..plan.kernels.len())
                .map(|k| plan.fallible.get(k).copied().unwrap_or(true))
                .collect(),
            eager: std::env::var_os("ARCHC_PROFILE").is_some(),
            kernel_ms: Cell::new(None),
            functions,
            geometry,
            signatures,
        })
    }

    /// Runs the queued launches; returns the status word of the first that failed, or 0.
    fn flush(&self) -> Result<i64, LaunchError> {
        let timing = self.kernel_ms.get();
        let (failed, ms) =
            self.batches
                .borrow_mut()
                .flush(&self.stream, &self.functions, timing.is_some())?;
        if let (Some(sum), Some(ms)) = (timing, ms) {
            self.kernel_ms.set(Some(sum + ms));
        }
        Ok(failed.unwrap_or(0))
    }

    /// Runs the queued launches, which cannot fail a check (a batch ends at the first that
    /// can).
    fn run_queued(&self) -> Result<(), LaunchError> {
        match self.flush()? {
            0 => Ok(()),
            word => Err(LaunchError::Backend(format!(
                "a kernel without checks set its status word to {word}"
            ))),
        }
    }
}

/// A kernel's launch: its name, grid (blocks, expressions of the dims), threads per block
/// and bytes of dynamic shared memory per block (`Plan::dynamic_shared`).
struct Geometry {
    name: String,
    grid: Vec<Size>,
    threads: u32,
    shared: u32,
}

/// Allows each kernel that takes dynamic shared memory the bytes it asks for (a launch of
/// more than 48 KiB fails without), or says which one needs more than the GPU gives a block.
fn allow_shared(
    ctx: &Arc<CudaContext>,
    functions: &[CudaFunction],
    geometry: &[Geometry],
) -> Result<(), CudaError> {
    use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
    let mut limit = None;
    for (f, g) in functions.iter().zip(geometry).filter(|(_, g)| g.shared > 0) {
        let most = match limit {
            Some(most) => most,
            None => {
                let attribute =
                    CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN;
                *limit.insert(ctx.attribute(attribute).map_err(driver)?)
            }
        };
        let bytes = i32::try_from(g.shared).unwrap_or(i32::MAX);
        if bytes > most {
            return Err(CudaError::SharedMemory {
                kernel: g.name.clone(),
                bytes: g.shared,
                name: ctx.name().map_err(driver)?,
                limit: most,
            });
        }
        let attribute = CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
        f.set_attribute(attribute, bytes).map_err(driver)?;
    }
    Ok(())
}

/// Blocks and threads per block for a kernel the plan gives no geometry (a Grid loop whose
/// extent reads a buffer: MoE's routed rows), or no step launches: its loops stride over grid
/// and block, so any launch covers them.
const FALLBACK: (i64, u32) = (1024, 128);

/// Each kernel's launch, from the first step that launches it (every step of a kernel has its
/// geometry: it is the kernel's).
fn geometry(plan: &Plan) -> Vec<Geometry> {
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
        .zip(plan.dynamic_shared.iter().chain(std::iter::repeat(&0)))
        .map(|((name, g), &shared)| {
            let (grid, threads) = g.unwrap_or((vec![Size::Const(FALLBACK.0)], FALLBACK.1));
            Geometry {
                name: name.clone(),
                grid,
                threads,
                shared,
            }
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
        Some(self)
    }

    /// The first call starts the timing (and returns 0).
    fn kernel_seconds(&self) -> Option<f64> {
        Some(self.kernel_ms.replace(Some(0.0)).unwrap_or(0.0) / 1e3)
    }

    /// Queues the launch, and runs the queue when the launch may fail a check (returning its
    /// status word) or has copies of its own (an argument outside the arena and the kept
    /// copies, which must outlive it and go back after it). Other launches run at the next
    /// such launch, [`Launcher::finish`] or copy, and get 0.
    fn launch(
        &self,
        kernel: usize,
        args: &mut [Arg<'_>],
        dims: &[i64],
    ) -> Result<i64, LaunchError> {
        let (g, fallible) = self
            .geometry
            .get(kernel)
            .zip(self.fallible.get(kernel))
            .ok_or(LaunchError::NoKernel(kernel))?;
        self.signatures.check(kernel, args, dims)?;
        let mut memory = self.memory.borrow_mut();
        let staged = memory.stage(args)?;
        // The kernel's grid-stride loops cover iterations past the grid: clamping is safe.
        let blocks: i64 = g.grid.iter().map(|s| s.eval(dims).max(1)).product();
        self.batches.borrow_mut().push(Queued {
            kernel,
            blocks: blocks.clamp(1, i64::from(i32::MAX)) as u32,
            threads: g.threads,
            shared: g.shared,
            addresses: staged.addresses.clone(),
            dims: if dims.is_empty() {
                vec![0]
            } else {
                dims.to_vec()
            },
        });
        if !fallible && !staged.has_copies() && !self.eager {
            return Ok(0);
        }
        // The batch's other launches have no checks: a failure is this one's.
        let status = self.flush()?;
        memory.finish(args, staged)?;
        Ok(status)
    }

    fn finish(&self) -> Result<(), LaunchError> {
        self.run_queued()
    }
}

/// The executor's copies, each after the queued launches have run: a store must not overtake
/// the launches queued before it, nor a fetch or a new run miss them.
impl Copies for CudaLauncher {
    fn constants(&self, ranges: &[(usize, usize)]) -> Result<(), LaunchError> {
        // Kept copies may be replaced: the queued launches read the current ones first.
        self.run_queued()?;
        self.memory.constants(ranges)
    }

    fn arena(&self, arena: Option<&[u8]>) -> Result<(), LaunchError> {
        self.run_queued()?;
        self.memory.arena(arena)
    }

    fn stored(&self, bytes: &[u8]) -> Result<(), LaunchError> {
        self.run_queued()?;
        self.memory.stored(bytes)
    }

    fn fetch(&self, bytes: &mut [u8]) -> Result<(), LaunchError> {
        self.run_queued()?;
        self.memory.fetch(bytes)
    }
}
