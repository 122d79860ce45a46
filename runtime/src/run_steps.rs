//! One run's walk of its frames: each kernel step's arguments made from the frame's buffers
//! and launched, a failed check turned into the run's error, the launches a launcher deferred
//! run at the end, and with `ARCHC_PROFILE` the time of each.

use std::collections::HashMap;

use crate::executor::RunError;
use crate::launcher::arguments;
use crate::{Device, Launcher, Plan, Step};

/// What one run needs while it walks the frames.
pub(crate) struct Run<'r> {
    launcher: &'r dyn Launcher,
    dim_values: &'r [i64],
    /// Steps launched so far (for error messages and the profile).
    count: usize,
    /// (seconds, kernel) per launch, with ARCHC_PROFILE.
    times: Option<Vec<(f64, usize, String)>>,
}

impl<'r> Run<'r> {
    pub(crate) fn new(
        launcher: &'r dyn Launcher,
        dim_values: &'r [i64],
    ) -> Result<Run<'r>, RunError> {
        // The arena and the weights are host memory.
        if launcher.device() != Device::Host {
            return Err(RunError::Device(launcher.device()));
        }
        // ARCHC_PROFILE=1 prints the slowest kernels of each run to stderr.
        let profile = std::env::var_os("ARCHC_PROFILE").is_some();
        Ok(Run {
            launcher,
            dim_values,
            count: 0,
            times: profile.then(Vec::new),
        })
    }

    /// Has the launcher run the launches it deferred ([`Launcher::finish`]): at the end of a
    /// run's steps, also after a failure, so that none is left for the next run.
    pub(crate) fn finish(&self) -> Result<(), RunError> {
        self.launcher.finish().map_err(|e| RunError::Launch {
            step: self.count.saturating_sub(1),
            kernel: "(the deferred launches)".into(),
            message: e.to_string(),
        })
    }

    /// Launches the kernel steps of one frame, whose buffers are at `ptrs`.
    ///
    /// # Safety
    /// `ptrs[b]` must be null or point to the bytes of buffer `b` (as many as its shape takes
    /// for these dims), which nothing else accesses meanwhile, writable for the buffers steps
    /// write.
    pub(crate) unsafe fn steps(
        &mut self,
        plan: &Plan,
        steps: &[Step],
        bytes: &[usize],
        ptrs: &[*mut u8],
    ) -> Result<(), RunError> {
        for step in steps {
            let Step::Kernel {
                kernel,
                args,
                origin,
                ..
            } = step
            else {
                unreachable!("calls are top-level steps");
            };
            let started = std::time::Instant::now();
            let i = self.count;
            self.count += 1;
            let name = || plan.kernels[*kernel].clone();
            let fail = |message: String| RunError::Launch {
                step: i,
                kernel: name(),
                message,
            };
            let sizes: Vec<usize> = args.iter().map(|&b| bytes[b]).collect();
            // SAFETY: the caller's contract on `ptrs`.
            let mut a =
                unsafe { arguments(args, &sizes, ptrs, &|i| step.writes(i)) }.map_err(fail)?;
            let status = self
                .launcher
                .launch(*kernel, &mut a, self.dim_values)
                .map_err(|e| fail(e.to_string()))?;
            if let Some(t) = &mut self.times {
                t.push((started.elapsed().as_secs_f64(), *kernel, origin.clone()));
            }
            if status != 0 {
                let message = usize::try_from(status - 1)
                    .ok()
                    .and_then(|c| plan.checks.get(c))
                    .cloned()
                    .unwrap_or_else(|| format!("check {status} failed"));
                return Err(RunError::Check {
                    step: i,
                    kernel: name(),
                    origin: origin.clone(),
                    message,
                });
            }
        }
        Ok(())
    }

    /// With ARCHC_PROFILE: the kernels that took the most time in this run, summed over their
    /// launches.
    pub(crate) fn report(&self, plan: &Plan) {
        let Some(times) = &self.times else {
            return;
        };
        // Rows by kernel and source: one kernel serves every layer of a kind, and the user
        // wants to know which line of their model the time goes to. ARCHC_PROFILE=kernels
        // sums each kernel over every source (an unrolled model's layers).
        let by_source = std::env::var("ARCHC_PROFILE").map_or(true, |v| v != "kernels");
        let mut by_kernel: HashMap<(usize, &str), (f64, usize)> = HashMap::new();
        for (t, k, origin) in times {
            let origin = if by_source { origin.as_str() } else { "" };
            let e = by_kernel.entry((*k, origin)).or_default();
            e.0 += t;
            e.1 += 1;
        }
        let mut rows: Vec<(f64, usize, (usize, &str))> =
            by_kernel.into_iter().map(|(k, (t, n))| (t, n, k)).collect();
        rows.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.2.cmp(&b.2)));
        let total: f64 = times.iter().map(|t| t.0).sum();
        eprintln!("profile: {} launches, {:.2} ms", times.len(), total * 1e3);
        for (t, n, (k, origin)) in rows.iter().take(12) {
            eprintln!(
                "  {:8.3} ms  {:4}×  {:<24} {}",
                t * 1e3,
                n,
                plan.kernels[*k],
                origin
            );
        }
    }
}
