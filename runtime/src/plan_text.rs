//! The deterministic text form of a plan (`archc dump --stage plan`), for some dims.

use std::collections::HashMap;
use std::fmt::Write;

use crate::{Plan, Storage};

/// Prints a plan with its arena laid out for `dims`. The first two lines are
/// `arena_bytes: N` and `kernels: K`.
pub fn print_plan(plan: &Plan, dims: &HashMap<String, i64>) -> String {
    let (offsets, arena) = plan.layout(dims);
    let mut out = String::new();
    let _ = writeln!(out, "arena_bytes: {arena}");
    let _ = writeln!(out, "kernels: {}", plan.kernels.len());
    let _ = writeln!(out, "model: {}", plan.model);
    let bound: Vec<String> = plan
        .symbols
        .iter()
        .map(|s| format!("{s}={}", dims.get(s).copied().unwrap_or(0)))
        .collect();
    let _ = writeln!(out, "dims: {}", bound.join(", "));
    let role = |b: usize| -> String {
        if let Some(i) = plan.inputs.iter().find(|i| i.buffer == b) {
            return format!("input {}", i.name);
        }
        if let Some(w) = plan.weights.iter().find(|w| w.buffer == b) {
            return format!("weight {}", w.name);
        }
        String::new()
    };
    let _ = writeln!(out, "buffers:");
    for (i, b) in plan.buffers.iter().enumerate() {
        let shape: Vec<String> = b.shape.iter().map(|d| d.to_string()).collect();
        let place = match (&b.storage, offsets[i]) {
            (Storage::Arena, Some(o)) => format!("arena@{o}"),
            (Storage::Alias(of), _) => format!("alias b{of}"),
            (Storage::Weight, _) => "weights".to_string(),
            (Storage::Arena, None) => "arena".to_string(),
        };
        let _ = writeln!(
            out,
            "  b{i} {} {}[{}] {place} {}",
            b.name,
            b.dtype,
            shape.join(", "),
            role(i)
        );
    }
    let _ = writeln!(out, "steps:");
    for (i, s) in plan.steps.iter().enumerate() {
        let args: Vec<String> = s.args.iter().map(|a| format!("b{a}")).collect();
        let _ = writeln!(out, "  {i} {}({})", plan.kernels[s.kernel], args.join(", "));
    }
    let _ = writeln!(out, "outputs:");
    for o in &plan.outputs {
        let _ = writeln!(out, "  {} = b{}", o.name, o.buffer);
    }
    out
}
