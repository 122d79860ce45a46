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
}

struct Shared(*const *mut u8);
// SAFETY: kernels write disjoint parts of their outputs from different threads (parallel loop
// iterations are independent by construction), and the arguments outlive the launch.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl CpuKernels {
    /// Kernels from function pointers, using every core.
    ///
    /// # Safety
    /// Each pointer must be a kernel compiled for this plan with the ABI above.
    pub unsafe fn new(fns: Vec<KernelFn>) -> CpuKernels {
        let threads = rayon::current_num_threads();
        CpuKernels { fns, threads }
    }

    /// Uses at most `n` threads (1 runs everything on the calling thread).
    pub fn with_threads(mut self, n: usize) -> CpuKernels {
        self.threads = n.max(1);
        self
    }
}

impl Launcher for CpuKernels {
    fn launch(
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
        if self.threads == 1 {
            let d = with_thread(0);
            // SAFETY: the executor passes valid buffers sized for these dims.
            unsafe { f(args.as_ptr(), d.as_ptr()) };
            return Ok(());
        }
        let shared = Shared(args.as_ptr());
        // rayon's pool is reused across launches, so a launch costs microseconds, not a spawn.
        rayon::scope(|s| {
            for t in 0..self.threads {
                let d = with_thread(t);
                let a = &shared;
                s.spawn(move |_| {
                    // SAFETY: as above; each thread runs a disjoint share of the parallel loops.
                    unsafe { f(a.0, d.as_ptr()) }
                });
            }
        });
        Ok(())
    }
}
