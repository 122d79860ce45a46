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

/// A step of a log: its line as written, its step and its scalars.
pub(super) struct Logged {
    pub line: String,
    pub step: u64,
    pub scalars: Vec<(String, f64)>,
}

/// A resumed run's log before it: the lines of the log at `path` (if there is one) up to the
/// checkpoint's step `upto` (a run that went on past its last checkpoint left lines the
/// resumed run takes again), with each line's scalars, so that the log and the plot cover the
/// whole run. A line `archc train` did not write is an error naming it; the file is not
/// touched before every line is read.
pub(super) fn earlier_steps(path: &std::path::Path, upto: u64) -> Result<Vec<Logged>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut kept = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let bad = || {
            format!(
                "{}:{}: not a line of an `archc train` log (a JSON object with a step): give --log another file",
                path.display(),
                i + 1
            )
        };
        let value: serde_json::Value = serde_json::from_str(line).map_err(|_| bad())?;
        let object = value.as_object().ok_or_else(bad)?;
        let step = object
            .get("step")
            .and_then(|s| s.as_u64())
            .ok_or_else(bad)?;
        if step > upto {
            continue;
        }
        let scalars = object
            .iter()
            .filter(|(k, _)| *k != "step" && *k != "seconds")
            .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
            .collect();
        kept.push(Logged {
            line: line.to_string(),
            step,
            scalars,
        });
    }
    Ok(kept)
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
