//! What `archc train` reports: each step's scalars (the log's JSON lines and the plot's
//! curves) and the summary printed at the end.

use std::collections::HashMap;

use archc_compiler::grad::GRAD_PREFIX;
use archc_runtime::Tensor;

use super::{checkpoint, recipe, TrainArgs};

/// A step's scalars: the loss, the model's other scalar outputs by name, the gradient norm
/// before clipping and the learning rate.
pub(super) fn scalars(
    out: &HashMap<String, Tensor>,
    (loss, lr, norm): (f64, f64, f32),
    loss_name: &str,
) -> Vec<(String, f64)> {
    let mut values = vec![("loss".to_string(), loss)];
    let mut names: Vec<&String> = out.keys().collect();
    names.sort();
    for name in names {
        let t = &out[name];
        if name != loss_name && !name.starts_with(GRAD_PREFIX) && t.numel() == 1 {
            values.push((name.clone(), f64::from(t.to_f32()[0])));
        }
    }
    values.push(("grad_norm".to_string(), f64::from(norm)));
    values.push(("lr".to_string(), lr));
    values
}

/// One step's JSON line: step, seconds and the step's scalars.
pub(super) fn log_line(step: u64, seconds: f64, values: &[(String, f64)]) -> String {
    let mut line = serde_json::json!({ "step": step, "seconds": seconds });
    for (name, v) in values {
        line[name.as_str()] = serde_json::json!(v);
    }
    line.to_string()
}

/// The summary: steps and speed, the first and last loss, the recipe, peak memory and what
/// was written; `(samples, first, last)` counts the data's samples and the steps taken.
pub(super) fn summary(
    a: &TrainArgs,
    recipe: &recipe::Recipe,
    (samples, first, last): (usize, u64, u64),
    losses: &[f64],
    secs: f64,
) -> String {
    let mut text = format!(
        "trained {} steps ({} to {}) of {} samples, batch {}: {:.2} steps/s\n",
        a.steps,
        first,
        last,
        samples,
        a.batch,
        a.steps as f64 / secs.max(1e-9)
    );
    if let (Some(l0), Some(l1)) = (losses.first(), losses.last()) {
        text.push_str(&format!(
            "  {}: {l0:.6} at the first step, {l1:.6} at the last\n",
            recipe.loss
        ));
    }
    text.push_str(&format!("  {}\n", recipe.describe()));
    if let Some(peak) = crate::bench::peak_memory() {
        text.push_str(&format!(
            "  peak resident memory {:.0} MiB\n",
            peak as f64 / (1u64 << 20) as f64
        ));
    }
    match &a.checkpoint {
        Some(p) => text.push_str(&format!(
            "  wrote {} and {}\n",
            p.display(),
            checkpoint::state_path(p).display()
        )),
        None => text.push_str("  (no --checkpoint: the weights were not saved)\n"),
    }
    text
}
