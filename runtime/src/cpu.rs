//! The CPU executor's kernels: native function pointers, run on all cores.

use crate::Launcher;

/// The one kernel ABI: buffer pointers (status word last) and dims (symbols, then the thread
/// index and the thread count).
pub type KernelFn = unsafe extern "C" fn(args: *const *mut u8, dims: *const i64);

/// Native kernels, launched on a thread pool: each thread runs its share of every parallel
/// loop.
pub struct CpuKernels {
    fns: Vec<KernelFn>,
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

struct Shared(*const *mut u8);
// SAFETY: kernels write disjoint parts of their outputs from different threads (parallel loop
// iterations are independent by construction), and the arguments outlive the launch.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl CpuKernels {
    /// Kernels from function pointers, using every core, on threads whose stacks hold
    /// `local_bytes` of thread-private arrays (the most any kernel declares) besides their own
    /// frames.
    ///
    /// # Safety
    /// Each pointer must be a kernel compiled for this plan with the ABI above.
    pub unsafe fn new(fns: Vec<KernelFn>, local_bytes: usize) -> Result<CpuKernels, CpuError> {
        let threads = rayon::current_num_threads();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .stack_size(BASE_STACK_BYTES.saturating_add(local_bytes))
            .build()?;
        Ok(CpuKernels {
            fns,
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
    unsafe fn launch(
        &self,
        kernel: usize,
        args: &[*mut u8],
        _lens: &[usize],
        dims: &[i64],
    ) -> Result<(), String> {
        let f = self.fns[kernel];
        let with_thread = |t: usize| {
            let mut d = dims.to_vec();
            d.push(t as i64);
            d.push(self.threads as i64);
            d
        };
        let shared = Shared(args.as_ptr());
        // Share 0 runs on this thread when its stack holds the kernel's arrays: handing a
        // small kernel to a pool thread costs more than running it (some 15 µs a launch).
        let room = stacker::remaining_stack().unwrap_or(0);
        let here = room >= self.local_bytes.saturating_add(DIRECT_MARGIN_BYTES);
        if self.threads == 1 && here {
            let d = with_thread(0);
            // SAFETY: the executor passes valid buffers sized for these dims, and the stack
            // has room for the kernel's arrays.
            unsafe { f(args.as_ptr(), d.as_ptr()) };
            return Ok(());
        }
        // The pool is reused across launches, so a launch costs microseconds, not a spawn.
        self.pool.in_place_scope(|s| {
            for t in usize::from(here)..self.threads {
                let d = with_thread(t);
                let a = &shared;
                // On a pool thread, whose stack is sized for the kernels' arrays.
                s.spawn(move |_| {
                    // SAFETY: as above; each thread runs a disjoint share of the parallel loops.
                    unsafe { f(a.0, d.as_ptr()) }
                });
            }
            if here {
                let d = with_thread(0);
                // SAFETY: as above, on this thread's stack, which has room.
                unsafe { f(shared.0, d.as_ptr()) };
            }
        });
        Ok(())
    }
}
