//! The CPU executor's kernels: native function pointers, run on all cores.

use crate::{Arg, Device, LaunchError, Launcher, Signatures};

/// The one kernel ABI: buffer pointers (status word last) and dims (symbols, then the thread
/// index and the thread count).
pub type KernelFn = unsafe extern "C" fn(args: *const *mut u8, dims: *const i64);

/// Native kernels, launched on a thread pool: each thread runs its share of every parallel
/// loop.
pub struct CpuKernels {
    fns: Vec<KernelFn>,
    /// What each kernel may touch, which every launch is checked against.
    signatures: Signatures,
    threads: usize,
    /// The most stack any kernel's thread-private arrays take.
    local_bytes: usize,
    /// The threads kernels run on, with stacks large enough for their thread-private arrays.
    pool: rayon::ThreadPool,
}

/// Why the kernel threads cannot run.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// The threads could not be created.
    #[error("{0}")]
    Pool(#[from] rayon::ThreadPoolBuildError),
}

/// Stack each kernel thread has besides its kernels' thread-private arrays.
const BASE_STACK_BYTES: usize = 4 << 20;

/// Stack a one-thread launch needs left on the calling thread, besides the kernel's arrays, to
/// run the kernel there (a kernel's own frame is a few KiB).
const DIRECT_MARGIN_BYTES: usize = 1 << 20;

/// Below this many bytes of buffers a launch runs on one thread (see `launch`).
const SMALL_LAUNCH_BYTES: usize = 128 << 10;

/// A kernel's argument list for one thread: buffer pointers, then that thread's status word.
struct Shared(Vec<*mut u8>);
// SAFETY: kernels write disjoint parts of their outputs from different threads (parallel loop
// iterations are independent by construction), each thread its own status word, and the
// buffers outlive the launch.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl CpuKernels {
    /// Kernels from function pointers, using every core, on threads whose stacks hold
    /// `local_bytes` of thread-private arrays (the most any kernel declares) besides their own
    /// frames. Launches are checked against `signatures`.
    ///
    /// # Safety
    /// Each pointer must be a kernel compiled with the ABI above that, run with dims `d`,
    /// touches each parameter only below the length its signature gives for `d`.
    pub unsafe fn new(
        fns: Vec<KernelFn>,
        signatures: Signatures,
        local_bytes: usize,
    ) -> Result<CpuKernels, CpuError> {
        let threads = rayon::current_num_threads();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .stack_size(BASE_STACK_BYTES.saturating_add(local_bytes))
            .build()?;
        Ok(CpuKernels {
            fns,
            signatures,
            threads,
            local_bytes,
            pool,
        })
    }

    /// Uses at most `n` threads (1 runs everything on the calling thread).
    pub fn with_threads(mut self, n: usize) -> CpuKernels {
        self.set_threads(n);
        self
    }

    /// Uses at most `n` threads from now on.
    pub fn set_threads(&mut self, n: usize) {
        self.threads = n.max(1);
    }
}

impl Launcher for CpuKernels {
    fn device(&self) -> Device {
        Device::Host
    }

    fn launch(
        &self,
        kernel: usize,
        args: &mut [Arg<'_>],
        dims: &[i64],
    ) -> Result<i64, LaunchError> {
        self.signatures.check(kernel, args, dims)?;
        let f = *self.fns.get(kernel).ok_or(LaunchError::NoKernel(kernel))?;
        let buffers: Vec<*mut u8> = args
            .iter_mut()
            .map(|a| match a {
                Arg::In(b) => b.as_ptr().cast_mut(),
                Arg::Out(b) => b.as_mut_ptr(),
            })
            .collect();
        // A launch on little memory (a decoding step's element-wise kernels, its smaller
        // matmuls) takes less time than waking a pool thread: it runs on this thread alone.
        let bytes: usize = args.iter().map(Arg::len).sum();
        let threads = if bytes < SMALL_LAUNCH_BYTES { 1 } else { self.threads };
        // One status word per thread, so no two threads write one word.
        let mut status = vec![0i64; threads];
        let shares: Vec<(Shared, Vec<i64>)> = status
            .iter_mut()
            .enumerate()
            .map(|(t, word)| {
                let mut a = buffers.clone();
                a.push(std::ptr::from_mut(word).cast());
                let mut d = dims.to_vec();
                d.extend([t as i64, threads as i64]);
                (Shared(a), d)
            })
            .collect();
        // SAFETY: `check` proved every buffer long enough, aligned and, for the outputs,
        // writable (borrowed exclusively by `args`) for these dims, which `new`'s contract
        // says bounds what the kernel touches.
        let run = |(a, d): &(Shared, Vec<i64>)| unsafe { f(a.0.as_ptr(), d.as_ptr()) };
        // Share 0 runs on this thread when its stack holds the kernel's arrays: handing a
        // small kernel to a pool thread costs more than running it (some 15 µs a launch).
        let room = stacker::remaining_stack().unwrap_or(0);
        let here = room >= self.local_bytes.saturating_add(DIRECT_MARGIN_BYTES);
        if threads == 1 && here {
            run(&shares[0]);
        } else {
            // The pool is reused across launches, so a launch costs microseconds, not a spawn.
            self.pool.in_place_scope(|s| {
                for share in &shares[usize::from(here)..] {
                    // On a pool thread, whose stack is sized for the kernels' arrays.
                    s.spawn(move |_| run(share));
                }
                if here {
                    run(&shares[0]);
                }
            });
        }
        drop(shares);
        Ok(status.into_iter().find(|&w| w != 0).unwrap_or(0))
    }
}
