//! `plan_memory`: arena offsets by liveness.
//!
//! For every arena buffer of every frame (the top level and each layer kind) it records the
//! steps from the one that writes it to the last one that reads it; the runtime's arena layout
//! (`archc_runtime::layout`) then lets buffers whose lifetimes do not overlap share memory,
//! largest first. Offsets depend on the dims, so they are placed when the dims are known; the
//! lifetimes do not. Inputs are live from the start, outputs to the end.

use archc_runtime::{root, Buffer, Plan, Step, Storage};

/// Runs the pass on a lowered plan.
pub fn run(plan: &mut Plan) {
    let inputs: Vec<usize> = plan.inputs.iter().map(|b| plan.root(b.buffer)).collect();
    let outputs: Vec<usize> = plan.outputs.iter().map(|b| plan.root(b.buffer)).collect();
    lifetimes(&mut plan.buffers, &plan.steps, &inputs, &outputs);
    for k in &mut plan.kinds {
        lifetimes(&mut k.buffers, &k.steps, &[], &[]);
    }
}

/// Sets the lifetimes of one frame's arena buffers.
fn lifetimes(buffers: &mut [Buffer], steps: &[Step], inputs: &[usize], outputs: &[usize]) {
    let mut span: Vec<Option<(usize, usize)>> = vec![None; buffers.len()];
    for (i, s) in steps.iter().enumerate() {
        for &b in s.args() {
            let r = root(buffers, b);
            span[r] = Some(span[r].map_or((i, i), |(a, _)| (a, i)));
        }
    }
    let end = steps.len();
    for (r, b) in buffers.iter_mut().enumerate() {
        if b.storage != Storage::Arena {
            continue;
        }
        let (mut first, mut last) = span[r].unwrap_or((0, 0));
        if inputs.contains(&r) {
            first = 0;
        }
        if outputs.contains(&r) {
            last = end;
        }
        b.live = Some((first, last));
    }
}
