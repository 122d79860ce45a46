//! The deterministic text form of a plan (`archc dump --stage plan`), for some dims.

use std::collections::HashMap;
use std::fmt::Write;

use crate::{ArenaLayout, Buffer, Plan, Step, Storage};

/// Prints a plan with its arena laid out for `dims`. The first two lines are
/// `arena_bytes: N` and `kernels: K`.
pub fn print_plan(plan: &Plan, dims: &HashMap<String, i64>) -> String {
    let layout = plan.layout(dims);
    let mut out = String::new();
    let _ = writeln!(out, "arena_bytes: {}", layout.bytes);
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
    buffers(&mut out, &plan.buffers, &layout.top, 0, role);
    if !plan.prepare.is_empty() {
        let _ = writeln!(out, "prepare (once, after the weights load):");
        steps(&mut out, plan, &layout, &plan.prepare, "  ");
    }
    let _ = writeln!(out, "steps:");
    steps(&mut out, plan, &layout, &plan.steps, "  ");
    for (i, k) in plan.kinds.iter().enumerate() {
        let _ = writeln!(out, "kind{i} {} (offsets from its call's region):", k.name);
        buffers(&mut out, &k.buffers, &layout.kinds[i], 0, |_| String::new());
        steps(&mut out, plan, &layout, &k.steps, "    ");
    }
    let _ = writeln!(out, "outputs:");
    for o in &plan.outputs {
        let _ = writeln!(out, "  {} = b{}", o.name, o.buffer);
    }
    out
}

fn buffers(
    out: &mut String,
    buffers: &[Buffer],
    offsets: &[Option<usize>],
    base: usize,
    role: impl Fn(usize) -> String,
) {
    for (i, b) in buffers.iter().enumerate() {
        let shape: Vec<String> = b.shape.iter().map(|d| d.to_string()).collect();
        let place = match (&b.storage, offsets[i]) {
            (Storage::Arena, Some(o)) => format!("arena@{}", base + o),
            (Storage::Alias(of), _) => format!("alias b{of}"),
            (Storage::Weight, _) => "weights".to_string(),
            (Storage::Slot(s), _) => format!("slot {s}"),
            (Storage::Arena, None) => "arena".to_string(),
        };
        let live = b
            .live
            .map_or(String::new(), |(a, z)| format!(" live {a}..={z}"));
        let _ = writeln!(
            out,
            "  b{i} {} {}[{}] {place}{live} {}",
            b.name,
            b.dtype,
            shape.join(", "),
            role(i)
        );
    }
}

fn steps(out: &mut String, plan: &Plan, layout: &ArenaLayout, steps: &[Step], pad: &str) {
    for (i, s) in steps.iter().enumerate() {
        let args: Vec<String> = s.args().iter().map(|a| format!("b{a}")).collect();
        let (what, launch) = match s {
            Step::Kernel { kernel, launch, .. } => {
                let mut geometry = launch
                    .as_ref()
                    .map_or(String::new(), |l| format!(" {}", l.show(&plan.symbols)));
                if let Some(&bytes @ 1..) = plan.dynamic_shared.get(*kernel) {
                    let _ = write!(geometry, " shared={bytes}");
                }
                (plan.kernels[*kernel].clone(), geometry)
            }
            Step::Call { kind, .. } => (
                format!("call kind{kind} region@{}", layout.calls[i]),
                String::new(),
            ),
        };
        let _ = writeln!(out, "{pad}{i} {what}({}){launch}", args.join(", "));
    }
}
