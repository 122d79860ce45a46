//! Launchers that run kernels on the Kernel IR interpreter: slow, checked, and the oracle
//! the generated code is compared with. [`GpuSim`] runs GPU-mapped kernels with a GPU's
//! semantics (`archc run --device cuda-sim`).

use archc_kernels::interp::{run, run_gpu, BufData, KernelError};
use archc_kernels::ir::{Elem, Kernel};
use std::cell::RefCell;

use archc_runtime::resident::{HostMemory, Resident};
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
/// CUDA launcher shares (`archc_runtime::resident`).
pub struct GpuSim {
    kernels: Vec<Kernel>,
    memory: RefCell<Resident<HostMemory>>,
}

impl GpuSim {
    /// Runs `kernels`, whose memory is empty yet.
    pub fn new(kernels: Vec<Kernel>) -> GpuSim {
        GpuSim {
            kernels,
            memory: RefCell::new(Resident::new(HostMemory)),
        }
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

    fn launch(
        &self,
        kernel: usize,
        args: &mut [Arg<'_>],
        dims: &[i64],
    ) -> Result<i64, LaunchError> {
        self.memory.borrow_mut().with_host_args(args, |device| {
            interpret(&self.kernels, (kernel, device, dims), run_gpu)
        })
    }

    fn copies(&self) -> Option<&dyn Copies> {
        Some(&self.memory)
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
