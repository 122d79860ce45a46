//! Launchers that run kernels on the Kernel IR interpreter: slow, checked, and the oracle
//! the generated code is compared with. [`GpuSim`] runs GPU-mapped kernels with a GPU's
//! semantics (`archc run --device cuda-sim`).

use archc_kernels::interp::{run, run_gpu, BufData, KernelError};
use archc_kernels::ir::{Elem, Kernel};
use std::cell::RefCell;

use archc_runtime::resident::{host_args, HostArg, HostMemory, Resident};
use archc_runtime::{Arg, Copies, Device, LaunchError, Launcher};

/// Runs each kernel with the Kernel IR interpreter.
pub struct KernelInterp<'a>(pub &'a [Kernel]);

/// Runs each kernel with the Kernel IR interpreter's GPU semantics
/// ([`archc_kernels::interp::run_gpu`]): a block's shared arrays are its own, and two threads
/// touching one element unordered, one writing, is an error. Kernels lowered for a GPU target
/// are split into blocks of threads, so this runs the GPU schedule itself.
///
/// Its kernels address a memory of their own ([`HostMemory`]): the arena's mirror, copies of
/// the weights, and so on, as a GPU's do. So the suite's simulated runs check the staging the
/// CUDA launcher shares (`archc_runtime::resident`). And it defers launches as the CUDA
/// launcher does (`archc_runtime::cuda_graphs`): a launch that cannot fail a check and has no
/// copies of its own is queued, and the queue runs at the next launch that can or has, at
/// [`Launcher::finish`], and before any copy; so the suite's simulated runs check the
/// executor's side of that too (a copy or a finish that came too early gives wrong outputs).
pub struct GpuSim {
    kernels: Vec<Kernel>,
    memory: RefCell<Resident<HostMemory>>,
    /// Queued launches.
    queue: RefCell<Vec<Queued>>,
    /// With `ARCHC_PROFILE`, every launch runs at once, as on the GPU.
    eager: bool,
}

/// A launch queued by [`GpuSim`]: its kernel, its arguments and the dims.
type Queued = (usize, Vec<HostArg>, Vec<i64>);

impl GpuSim {
    /// Runs `kernels`, whose memory is empty yet.
    pub fn new(kernels: Vec<Kernel>) -> GpuSim {
        GpuSim {
            kernels,
            memory: RefCell::new(Resident::new(HostMemory)),
            queue: RefCell::new(Vec::new()),
            eager: std::env::var_os("ARCHC_PROFILE").is_some(),
        }
    }

    /// Runs the queued launches, in order.
    fn run_queued(&self, memory: &mut Resident<HostMemory>) -> Result<(), LaunchError> {
        for (kernel, device, dims) in self.queue.take() {
            // SAFETY: each was queued from a staging without temporaries by `memory`, and
            // every call that changes its buffers (a copy's: `Copies`) runs the queue first.
            let status = unsafe {
                memory.run_queued(&device, |a| {
                    interpret(&self.kernels, (kernel, a, &dims), run_gpu)
                })
            }?;
            if status != 0 {
                return Err(LaunchError::Backend(format!(
                    "kernel {kernel} has no checks but set its status word to {status}"
                )));
            }
        }
        Ok(())
    }

    /// [`GpuSim::run_queued`], as a copy needs.
    fn before_copy(&self) -> Result<&RefCell<Resident<HostMemory>>, LaunchError> {
        self.run_queued(&mut self.memory.borrow_mut())?;
        Ok(&self.memory)
    }
}

/// A kernel interpreter: one of `run` and `run_gpu`.
type Interpret = fn(&Kernel, &mut [BufData], &[i64]) -> Result<(), KernelError>;

/// A copy of a buffer's elements of type `elem` (a trailing partial element is dropped).
fn read(bytes: &[u8], elem: Elem) -> BufData {
    fn words<const N: usize>(b: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        b.chunks_exact(N)
            .map(|c| <[u8; N]>::try_from(c).unwrap_or([0; N]))
    }
    match elem {
        Elem::F32 => BufData::F32(words(bytes).map(f32::from_le_bytes).collect()),
        Elem::F16 => BufData::F16(words(bytes).map(u16::from_le_bytes).collect()),
        Elem::BF16 => BufData::BF16(words(bytes).map(u16::from_le_bytes).collect()),
        Elem::I64 => BufData::I64(words(bytes).map(i64::from_le_bytes).collect()),
        Elem::Bool => BufData::Bool(bytes.to_vec()),
        q => {
            let whole = bytes.len() / q.size() * q.size();
            BufData::Blocks(q, bytes[..whole].to_vec())
        }
    }
}

/// Writes `data` back into `out`'s leading bytes.
fn write(out: &mut [u8], data: &BufData) {
    fn put<const N: usize>(out: &mut [u8], v: impl Iterator<Item = [u8; N]>) {
        for (c, x) in out.chunks_exact_mut(N).zip(v) {
            c.copy_from_slice(&x);
        }
    }
    match data {
        BufData::F32(v) => put(out, v.iter().map(|x| x.to_le_bytes())),
        BufData::F16(v) | BufData::BF16(v) => put(out, v.iter().map(|x| x.to_le_bytes())),
        BufData::I64(v) => put(out, v.iter().map(|x| x.to_le_bytes())),
        BufData::Bool(v) | BufData::Blocks(_, v) => put(out, v.iter().map(|&x| [x])),
    }
}

impl Launcher for KernelInterp<'_> {
    fn device(&self) -> Device {
        Device::Host
    }

    /// Runs on copies of the buffers, with every index checked, so it needs no signature.
    fn launch(
        &self,
        kernel: usize,
        args: &mut [Arg<'_>],
        dims: &[i64],
    ) -> Result<i64, LaunchError> {
        interpret(self.0, (kernel, args, dims), run)
    }
}

impl Launcher for GpuSim {
    /// The executor's buffers are the host's; the simulated kernels get copies.
    fn device(&self) -> Device {
        Device::Host
    }

    /// Queues the launch, or runs the queue and then it when it may fail a check (returning
    /// its status word) or has copies of its own.
    fn launch(
        &self,
        kernel: usize,
        args: &mut [Arg<'_>],
        dims: &[i64],
    ) -> Result<i64, LaunchError> {
        let k = self
            .kernels
            .get(kernel)
            .ok_or(LaunchError::NoKernel(kernel))?;
        super::check_args(k, args)?;
        let mut memory = self.memory.borrow_mut();
        let staged = memory.stage(args)?;
        if !k.has_checks() && !staged.has_copies() && !self.eager {
            let device = host_args(args, &staged);
            self.queue
                .borrow_mut()
                .push((kernel, device, dims.to_vec()));
            return Ok(0);
        }
        self.run_queued(&mut memory)?;
        memory.run_staged(args, staged, |device| {
            interpret(&self.kernels, (kernel, device, dims), run_gpu)
        })
    }

    fn copies(&self) -> Option<&dyn Copies> {
        Some(self)
    }

    fn finish(&self) -> Result<(), LaunchError> {
        self.run_queued(&mut self.memory.borrow_mut())
    }
}

/// The copies, each after the queued launches have run.
impl Copies for GpuSim {
    fn constants(&self, ranges: &[(usize, usize)]) -> Result<(), LaunchError> {
        self.before_copy()?.constants(ranges)
    }

    fn arena(&self, arena: Option<&[u8]>) -> Result<(), LaunchError> {
        self.before_copy()?.arena(arena)
    }

    fn stored(&self, bytes: &[u8]) -> Result<(), LaunchError> {
        self.before_copy()?.stored(bytes)
    }

    fn fetch(&self, bytes: &mut [u8]) -> Result<(), LaunchError> {
        self.before_copy()?.fetch(bytes)
    }
}

/// Runs kernel `kernel` of `kernels` with `how` on copies of `args`, then copies its outputs
/// back; a failed check gives its code.
fn interpret(
    kernels: &[Kernel],
    (kernel, args, dims): (usize, &mut [Arg<'_>], &[i64]),
    how: Interpret,
) -> Result<i64, LaunchError> {
    let k = kernels.get(kernel).ok_or(LaunchError::NoKernel(kernel))?;
    super::check_args(k, args)?;
    let mut bufs: Vec<BufData> = k
        .params
        .iter()
        .zip(args.iter())
        .map(|(p, a)| match a {
            Arg::In(b) => read(b, p.elem),
            Arg::Out(b) => read(b, p.elem),
        })
        .collect();
    bufs.push(BufData::I64(vec![0]));
    match how(k, &mut bufs, dims) {
        Ok(()) => {}
        Err(KernelError::Check(code)) => return Ok(i64::from(code)),
        Err(e) => return Err(LaunchError::Backend(e.to_string())),
    }
    for (p, (a, data)) in k.params.iter().zip(args.iter_mut().zip(&bufs)) {
        if let (true, Arg::Out(out)) = (p.output, a) {
            write(out, data);
        }
    }
    Ok(0)
}
