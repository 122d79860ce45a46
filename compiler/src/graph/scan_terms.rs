//! What a scan backward's kernel adds up (`fused.scan_grad`, see `grad/scan_region.rs` and
//! `lower/scan_grad.rs`), and the conditions under which its one pass over each channel's
//! steps computes the body exactly.
//!
//! Each input's gradient in the body is a sum of *terms*: a value (a pointwise expression of
//! λ, the states and the inputs) placed into the gradient by sums, zero pads and reshapes. The
//! kernel visits every point (task, channel, step, state element) once and adds each term's
//! element there into the gradient; a value that does not vary along the state axes is added
//! once per step instead. Values may read *sums over the state* (`Σₙ λ·B`), which the kernel
//! accumulates in the state loop before the step's other terms read them. [`check`] holds
//! the body to what that computes:
//!
//! - every term's value lines up with the state and varies along each axis the kernel visits
//!   it on (else the kernel would add it more than once);
//! - every other sum a value reads is over exactly the state axes, of a value with no sum in
//!   it, and is read by a value that does not vary along the state;
//! - the state's gradient from the read-out (the seed) has no sum in it.

use std::collections::HashSet;

use petgraph::graph::NodeIndex;

use super::{Dim, Graph, Op, ReduceOp, ScanFrames, ScanGradInfo};

/// One term added into the output: `value`'s element at a point, placed through `path` into
/// the gradient whose elements start at `offset` of the flat output.
pub struct Term {
    /// The value added.
    pub value: NodeIndex,
    /// The nodes from the value up to the gradient (sums, zero pads, reshapes), innermost
    /// first: they place the value's element in the gradient.
    pub path: Vec<NodeIndex>,
    /// Where the gradient starts in the output.
    pub offset: Dim,
    /// Whether the value varies along the state axes (added in the state loop).
    pub per_state: bool,
}

/// The terms of a backward body and the sums over the state they read.
pub struct Terms {
    /// The terms, gradient by gradient.
    pub terms: Vec<Term>,
    /// The sums over the state the terms' values read, in node order.
    pub sums: Vec<NodeIndex>,
}

/// The frames of `info`'s body (the state's shape from its scan node).
pub fn frames<'a>(body: &'a Graph, info: &'a ScanGradInfo) -> ScanFrames<'a> {
    ScanFrames {
        h: &body.ty(info.scan).shape,
        state: &info.state,
        keepdim: info.keepdim,
    }
}

/// The terms of `info`'s gradients.
pub fn terms(body: &Graph, info: &ScanGradInfo) -> Terms {
    let frames = frames(body, info);
    let mut out = Vec::new();
    let mut offset = Dim::constant(0);
    for &g in &info.grads {
        collect(body, g, &[], &offset, &mut out);
        let size = Dim::product(&body.ty(g).shape).unwrap_or_default();
        offset = offset.add(&size).unwrap_or_default();
    }
    let one = Dim::constant(1);
    for t in &mut out {
        let shape = &body.ty(t.value).shape;
        t.per_state = frames.axes_of(shape).is_some_and(|(_, axes)| {
            axes.iter()
                .zip(shape)
                .any(|(a, d)| info.state.contains(a) && *d != one)
        });
    }
    let mut sums: Vec<NodeIndex> = out
        .iter()
        .flat_map(|t| sums_in(body, info, t.value))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    sums.sort();
    Terms { terms: out, sums }
}

/// The sums `n`'s value reads, not looking past the values the kernel binds (the states, λ).
fn sums_in(body: &Graph, info: &ScanGradInfo, n: NodeIndex) -> Vec<NodeIndex> {
    let bound = [Some(info.scan), Some(info.lambda), info.h_prev];
    let mut sums = Vec::new();
    let mut stack = vec![n];
    let mut seen = HashSet::new();
    while let Some(n) = stack.pop() {
        if !seen.insert(n) || bound.contains(&Some(n)) {
            continue;
        }
        if matches!(body.dag[n].op, Op::Reduce { .. }) {
            sums.push(n);
            continue;
        }
        stack.extend(body.operands(n));
    }
    sums
}

/// The terms of gradient node `n` (reached through `path`, outermost first), whose elements
/// start at `offset` of the output.
fn collect(body: &Graph, n: NodeIndex, path: &[NodeIndex], offset: &Dim, out: &mut Vec<Term>) {
    let ops = body.operands(n);
    let same = ops.iter().all(|o| body.ty(*o) == body.ty(n));
    let mut inner = path.to_vec();
    inner.push(n);
    let mut term = |value: NodeIndex, path: Vec<NodeIndex>| {
        out.push(Term {
            value,
            path: path.into_iter().rev().collect(),
            offset: offset.clone(),
            per_state: false,
        })
    };
    match &body.dag[n].op {
        Op::Binary(super::BinaryOp::Add) if same => {
            for o in ops {
                collect(body, o, path, offset, out);
            }
        }
        Op::Reshape => collect(body, ops[0], &inner, offset, out),
        Op::Pad { value, .. } if value.value() == 0.0 => collect(body, ops[0], &inner, offset, out),
        Op::Const(v) if v.value() == 0.0 => {}
        Op::Reduce {
            op: ReduceOp::Sum, ..
        } => term(ops[0], inner),
        _ => term(n, path.to_vec()),
    }
}

/// Whether the kernel computes `info`'s body exactly (see the module doc), or why not.
pub fn check(body: &Graph, info: &ScanGradInfo) -> Result<(), String> {
    let frames = frames(body, info);
    let h = frames.h;
    let one = Dim::constant(1);
    let spans = |n: NodeIndex, axes: &[usize]| {
        let shape = &body.ty(n).shape;
        frames.axes_of(shape).is_some_and(|(_, of)| {
            axes.iter()
                .all(|&x| h[x] == one || of.iter().zip(shape).any(|(a, d)| *a == x && *d != one))
        })
    };
    let Terms { terms, sums } = terms(body, info);
    for t in &terms {
        let visited: Vec<usize> = (0..h.len())
            .filter(|x| t.per_state || !info.state.contains(x))
            .collect();
        if !spans(t.value, &visited) {
            return Err(format!(
                "a gradient term `{}` does not vary along every axis the kernel visits it on",
                body.dag[t.value].op
            ));
        }
        if t.per_state && !sums_in(body, info, t.value).is_empty() {
            return Err("a term along the state reads a sum".into());
        }
    }
    for &s in &sums {
        let Op::Reduce {
            op: ReduceOp::Sum,
            axes,
            ..
        } = &body.dag[s].op
        else {
            return Err(format!("a gradient reads a `{}`", body.dag[s].op));
        };
        let o = body.operands(s)[0];
        let mut sorted = axes.clone();
        sorted.sort_unstable();
        if body.ty(o).rank() != h.len()
            || sorted != info.state
            || frames.axes_of(&body.ty(o).shape).is_none()
        {
            return Err("a gradient reads a sum that is not over the state axes".into());
        }
        if !sums_in(body, info, o).is_empty() {
            return Err("a sum over the state reads another sum".into());
        }
    }
    if !sums_in(body, info, info.seed).is_empty() {
        return Err("the read-out's gradient reads a sum".into());
    }
    Ok(())
}
