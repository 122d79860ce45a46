//! Progress on standard error for work that can take more than a second: loading weights,
//! compiling, benchmark runs, linking. indicatif draws only when standard error is a terminal,
//! so pipes, files and tests see nothing.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps labelled `what`.
pub fn bar(len: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>18} [{bar:32}] {pos}/{len} {elapsed_precise}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

/// Runs `work` with a spinner labelled `what`.
pub fn spin<T>(what: &str, work: impl FnOnce() -> T) -> T {
    let pb = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed_precise}") {
        pb.set_style(style);
    }
    pb.set_message(what.to_string());
    pb.enable_steady_tick(Duration::from_millis(100));
    let result = work();
    pb.finish_and_clear();
    result
}

/// A prepared executor of the same model and the weight buffers to share with it: (buffer of
/// the new plan, buffer of the donor's), from `archc_compiler::lower::same_weights`.
pub type Donor<'a, 'd> = (&'a mut archc_runtime::Executor<'d>, &'a [(usize, usize)]);

/// Loads a plan's weights into an executor, with a bar of one step per weight; with a donor,
/// the weights it holds alike are shared (see `Executor::sharing`).
pub fn load_weights<'p>(
    plan: &'p archc_runtime::Plan,
    weights: &'p archc_runtime::WeightSource,
    donor: Option<Donor<'_, '_>>,
) -> Result<archc_runtime::Executor<'p>, String> {
    let bar = bar(plan.weights.len(), "loading weights");
    let source = |n: &str, d, s: &[usize]| {
        bar.inc(1);
        weights.weight(n, d, s)
    };
    let exec = match donor {
        None => archc_runtime::Executor::new(plan, source),
        Some((other, pairs)) => archc_runtime::Executor::sharing(plan, source, other, pairs),
    }
    .map_err(|e| e.to_string());
    bar.finish_and_clear();
    exec
}
