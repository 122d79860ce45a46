//! The threads a launch's shares run on. A decoding step launches hundreds of kernels of a
//! few microseconds each, back to back; waking a sleeping thread for each costs more than
//! many of them take. So after a job a worker spins (for [`SPIN`]) watching for the next one,
//! and only then sleeps on a condition variable until a launch wakes it.
//!
//! One job at a time: [`SpinPool::run`] publishes it, runs share 0 on the calling thread and
//! returns once every worker has finished (or skipped) its share, so the job's borrow never
//! outlives the call.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker watches for the next job before it sleeps.
const SPIN: Duration = Duration::from_micros(300);

/// A job: share `i` of a launch, for `i` in `1..shares` on the workers.
type Job<'a> = dyn Fn(usize) + Sync + 'a;

/// A job's address with its lifetime erased, so that workers can hold it.
#[derive(Clone, Copy)]
struct JobRef(*const Job<'static>);
// SAFETY: the job is `Sync`, and `run` keeps it alive until every worker is done with it.
unsafe impl Send for JobRef {}

/// What the caller and the workers share.
struct Shared {
    /// Bumped for each job (and to stop): a worker runs one share per new value.
    epoch: AtomicU64,
    /// The current job and how many shares it has.
    job: Mutex<Option<(JobRef, usize)>>,
    /// Workers yet to finish the current job.
    pending: AtomicUsize,
    /// Workers asleep, or about to be.
    sleeping: AtomicUsize,
    /// Whether a share of the current job panicked.
    panicked: AtomicBool,
    stop: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

/// Worker threads that run the shares of one job at a time.
pub(crate) struct SpinPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

/// Why a job did not complete.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// A worker thread could not be started.
    #[error("cannot start a kernel thread: {0}")]
    Spawn(#[from] std::io::Error),
    /// A share panicked.
    #[error("a kernel thread panicked")]
    Panicked,
}

impl SpinPool {
    /// `workers` threads (besides the caller's), each with `stack` bytes of stack.
    pub(crate) fn new(workers: usize, stack: usize) -> Result<SpinPool, PoolError> {
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: Mutex::new(None),
            pending: AtomicUsize::new(0),
            sleeping: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut pool = SpinPool {
            shared,
            workers: Vec::new(),
        };
        for w in 1..=workers {
            let shared = pool.shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("archc-kernels-{w}"))
                .stack_size(stack)
                .spawn(move || work(&shared, w))?;
            pool.workers.push(handle);
        }
        Ok(pool)
    }

    /// How many threads run a job: the workers and the caller.
    pub(crate) fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `job(i)` for every share `i < shares` (at most [`SpinPool::threads`]): share 0
    /// on this thread, the others on the workers; returns when all are done.
    pub(crate) fn run(&self, shares: usize, job: &Job<'_>) -> Result<(), PoolError> {
        let s = &*self.shared;
        if self.workers.is_empty() || shares <= 1 {
            return catch_unwind(AssertUnwindSafe(|| job(0))).map_err(|_| PoolError::Panicked);
        }
        // SAFETY (of the erased lifetime): this call waits below until `pending` is 0, that is
        // until every worker has returned from the job, before it returns and `job` ends.
        let erased: JobRef = JobRef(unsafe {
            std::mem::transmute::<*const Job<'_>, *const Job<'static>>(std::ptr::from_ref(job))
        });
        *s.job.lock().unwrap_or_else(PoisonError::into_inner) = Some((erased, shares));
        s.panicked.store(false, Ordering::Relaxed);
        s.pending.store(self.workers.len(), Ordering::SeqCst);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        if s.sleeping.load(Ordering::SeqCst) > 0 {
            let _guard = s.lock.lock().unwrap_or_else(PoisonError::into_inner);
            s.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| job(0)));
        let mut spins = 0u32;
        while s.pending.load(Ordering::Acquire) != 0 {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) {
                // A worker was descheduled: give it the core.
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        *s.job.lock().unwrap_or_else(PoisonError::into_inner) = None;
        if mine.is_err() || s.panicked.load(Ordering::Relaxed) {
            return Err(PoolError::Panicked);
        }
        Ok(())
    }
}

impl Drop for SpinPool {
    fn drop(&mut self) {
        let s = &*self.shared;
        s.stop.store(true, Ordering::SeqCst);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        {
            let _guard = s.lock.lock().unwrap_or_else(PoisonError::into_inner);
            s.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Worker `w`'s loop: wait for a new epoch (spinning, then asleep), run its share, report.
fn work(s: &Shared, w: usize) {
    let mut seen = 0u64;
    loop {
        seen = wait(s, seen);
        if s.stop.load(Ordering::SeqCst) {
            return;
        }
        let job = *s.job.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((JobRef(job), shares)) = job {
            if w < shares {
                // SAFETY: `run` published the job and waits for this worker's report below
                // before the job's borrow ends.
                let job = unsafe { &*job };
                if catch_unwind(AssertUnwindSafe(|| job(w))).is_err() {
                    s.panicked.store(true, Ordering::Relaxed);
                }
            }
        }
        s.pending.fetch_sub(1, Ordering::Release);
    }
}

/// Waits until the epoch differs from `seen`; returns it.
fn wait(s: &Shared, seen: u64) -> u64 {
    let mut started = Instant::now();
    let mut spins = 0u32;
    loop {
        let e = s.epoch.load(Ordering::Acquire);
        if e != seen {
            return e;
        }
        spins = spins.wrapping_add(1);
        if !spins.is_multiple_of(256) || started.elapsed() < SPIN {
            std::hint::spin_loop();
            continue;
        }
        let guard = s.lock.lock().unwrap_or_else(PoisonError::into_inner);
        s.sleeping.fetch_add(1, Ordering::SeqCst);
        // Checked again under the lock: a job published since then finds us counted as
        // sleeping and notifies after we wait.
        let guard = if s.epoch.load(Ordering::SeqCst) == seen {
            s.wake.wait(guard).unwrap_or_else(PoisonError::into_inner)
        } else {
            guard
        };
        s.sleeping.fetch_sub(1, Ordering::SeqCst);
        drop(guard);
        started = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_share_runs_once_per_job_even_after_the_workers_sleep() {
        let pool = SpinPool::new(3, 1 << 20).expect("threads start");
        assert_eq!(pool.threads(), 4);
        for round in 0..50 {
            let hits: Vec<AtomicUsize> = (0..4).map(|_| AtomicUsize::new(0)).collect();
            let shares = 1 + round % 4;
            pool.run(shares, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            })
            .expect("no share panics");
            let counts: Vec<usize> = hits.iter().map(|h| h.load(Ordering::Relaxed)).collect();
            let want: Vec<usize> = (0..4).map(|i| usize::from(i < shares)).collect();
            assert_eq!(counts, want, "round {round}");
            if round == 25 {
                std::thread::sleep(SPIN * 4);
            }
        }
        let e = pool.run(2, &|i| assert_eq!(i, 0, "share 1 panics"));
        assert!(matches!(e, Err(PoolError::Panicked)));
        assert!(pool.run(2, &|_| {}).is_ok(), "the pool survives a panic");
    }
}
