//! The CPU executor's kernels: native function pointers, run on all cores.

use crate::spin_pool::{PoolError, SpinPool};
use crate::{Arg, Device, LaunchError, Launcher, Signatures};

/// The one kernel ABI: buffer pointers (status word last) and dims (symbols, then the thread
/// index and the thread count).
pub type KernelFn = unsafe extern "C" fn(args: *const *mut u8, dims: *const i64);

/// Native kernels, launched on a pool of spinning threads (see `spin_pool`): each thread runs
/// its share of every parallel loop.
pub struct CpuKernels {
    fns: Vec<KernelFn>,
    /// What each kernel may touch, which every launch is checked against.
    signatures: Signatures,
    threads: usize,
    /// The most stack any kernel's thread-private arrays take.
    local_bytes: usize,
    /// The threads kernels run on besides the caller's, with stacks large enough for their
    /// thread-private arrays.
    pool: SpinPool,
}

/// Why the kernel threads cannot run.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// The threads could not be created.
    #[error("{0}")]
    Pool(#[from] PoolError),
}

/// Stack each kernel thread has besides its kernels' thread-private arrays.
const BASE_STACK_BYTES: usize = 4 << 20;

/// Stack a one-thread launch needs left on the calling thread, besides the kernel's arrays, to
/// run the kernel there (a kernel's own frame is a few KiB).
const DIRECT_MARGIN_BYTES: usize = 1 << 20;

/// Below this many bytes of buffers a launch runs on one thread (see `launch`).
const SMALL_LAUNCH_BYTES: usize = 32 << 10;

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
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pool = SpinPool::new(threads - 1, BASE_STACK_BYTES.saturating_add(local_bytes))?;
        Ok(CpuKernels {
            fns,
            signatures,
            threads,
            local_bytes,
            pool,
        })
    }

    /// Uses at most `n` threads (1 runs everything on the calling thread).
    pub fn with_threads(mut self, n: usize) -> Result<CpuKernels, CpuError> {
        self.set_threads(n)?;
        Ok(self)
    }

    /// Uses `n` threads from now on (workers idle beyond `n` are stopped; more are started).
    pub fn set_threads(&mut self, n: usize) -> Result<(), CpuError> {
        self.threads = n.max(1);
        if self.pool.threads() != self.threads {
            let stack = BASE_STACK_BYTES.saturating_add(self.local_bytes);
            // The old workers stop before the new ones start: never both sets at once.
            self.pool = SpinPool::new(0, stack)?;
            self.pool = SpinPool::new(self.threads - 1, stack)?;
        }
        Ok(())
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
        let threads = if bytes < SMALL_LAUNCH_BYTES {
            1
        } else {
            self.threads
        };
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
        let job = |t: usize| run(&shares[t]);
        // Share 0 runs on this thread when its stack holds the kernel's arrays; otherwise on
        // a thread started with a stack like the workers' (kernels with huge arrays, rarely).
        let room = stacker::remaining_stack().unwrap_or(0);
        let result = if room >= self.local_bytes.saturating_add(DIRECT_MARGIN_BYTES) {
            self.pool.run(threads, &job)
        } else {
            let stack = BASE_STACK_BYTES.saturating_add(self.local_bytes);
            std::thread::scope(|scope| {
                std::thread::Builder::new()
                    .stack_size(stack)
                    .spawn_scoped(scope, || self.pool.run(threads, &job))
                    .map_err(PoolError::from)?
                    .join()
                    .unwrap_or(Err(PoolError::Panicked))
            })
        };
        result.map_err(|e| LaunchError::Backend(e.to_string()))?;
        drop(shares);
        Ok(status.into_iter().find(|&w| w != 0).unwrap_or(0))
    }
}
