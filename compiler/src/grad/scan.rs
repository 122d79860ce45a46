//! The gradient of the linear recurrence `h[t] = a[t]·h[t−1] + b[t]` (`scan`), itself a scan
//! run backwards in time, so the fused-scan machinery that runs the forward runs it too:
//!
//! `λ[t] = g[t] + a[t+1]·λ[t+1]`, `db[t] = λ[t]`, `da[t] = λ[t]·h[t−1]`
//!
//! (λ[T] = 0, h[−1] = 0): flip the time axis, scan, flip back.

use archc_runtime::Dim;

use super::emit::Emit;
use super::GradError;
use crate::graph::{NodeIndex, Op};

/// The nodes of a scan's backward: the state's gradient λ, and h[t−1] when `a` needs one.
pub(super) struct Adjoint {
    /// λ, the state's total gradient.
    pub lambda: NodeIndex,
    /// h[t − 1], with 0 before the first step.
    pub h_prev: Option<NodeIndex>,
    /// The contributions to `a` and `b`, as (operand, gradient).
    pub contributions: Vec<(NodeIndex, NodeIndex)>,
}

/// The backward of `h = scan(a, b)` from its gradient `g`: λ, h[t − 1], and the
/// contributions to `a` and `b` for those `wants` names (`rules.rs` adds them;
/// `scan_region.rs` binds λ and h[t − 1] in its kernel).
pub(super) fn adjoint(
    e: &mut Emit<'_>,
    (a, b): (NodeIndex, NodeIndex),
    h: NodeIndex,
    axis: usize,
    g: NodeIndex,
    wants: &dyn Fn(NodeIndex) -> bool,
) -> Result<Adjoint, GradError> {
    let shape = e.ty(b).shape;
    let steps = shape[axis].clone();
    let one = Dim::constant(1);
    let before_last = steps.sub(&one).ok_or(GradError::Overflow)?;
    let single = steps == one;
    let a_full = e.expand(a, &shape)?;
    // a[t+1], with 0 after the last step: λ's decay (no empty slice for a single step).
    let a_next = if single {
        e.zeros(e.ty(a_full))
    } else {
        let next = e.slice(a_full, axis, one.clone(), steps.clone())?;
        e.pad_zeros(next, axis, Dim::constant(0), one.clone())?
    };
    let a_rev = e.flip(a_next, axis)?;
    let g_rev = e.flip(g, axis)?;
    let lam_rev = e.op(Op::Scan { axis }, &[a_rev, g_rev])?;
    let lambda = e.flip(lam_rev, axis)?;
    let mut out = Adjoint {
        lambda,
        h_prev: None,
        contributions: Vec::new(),
    };
    if wants(b) {
        out.contributions.push((b, lambda));
    }
    if wants(a) {
        // h[t−1], with 0 before the first step.
        let h_prev = if single {
            e.zeros(e.ty(h))
        } else {
            let prev = e.slice(h, axis, Dim::constant(0), before_last)?;
            e.pad_zeros(prev, axis, one, Dim::constant(0))?
        };
        out.h_prev = Some(h_prev);
        let da = e.mul(lambda, h_prev)?;
        out.contributions
            .push((a, e.unbroadcast(da, &e.ty(a).shape)?));
    }
    Ok(out)
}
