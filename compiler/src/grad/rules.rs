//! One vector-Jacobian product per primitive op: given the gradient `g` of a node's value,
//! the gradient each operand receives from it. Rules only build what is asked for (`wants`:
//! the operands on a path from a trained weight), and every contribution has its operand's
//! exact type, broadcasting undone ([`Emit::unbroadcast`]).

use archc_runtime::{DType, Dim};

use super::emit::Emit;
use super::GradError;
use crate::graph::{BinaryOp, NodeIndex, Op, ReduceOp, UnaryOp};

/// The contributions of node `v`'s gradient `g` to its operands, as (operand, gradient).
pub(super) fn vjp(
    e: &mut Emit<'_>,
    v: NodeIndex,
    g: NodeIndex,
    wants: &dyn Fn(NodeIndex) -> bool,
) -> Result<Vec<(NodeIndex, NodeIndex)>, GradError> {
    e.at_node(v);
    let xs = e.g.operands(v);
    let op = e.g.dag[v].op.clone();
    let mut out = Vec::new();
    match op {
        Op::Input(_) | Op::Param(_) | Op::Const(_) | Op::Iota | Op::Size(_) => {}
        Op::Unary(u) => {
            if let Some(d) = unary(e, u, xs[0], v, g)? {
                out.push((xs[0], d));
            }
        }
        Op::Binary(b) => {
            for (i, d) in binary(e, b, (xs[0], xs[1]), v, g, wants)? {
                let d = e.unbroadcast(d, &e.ty(xs[i]).shape)?;
                out.push((xs[i], d));
            }
        }
        Op::Select => {
            let zero = e.scalar(0.0, e.ty(v).dtype);
            for (i, picked) in [(1, true), (2, false)] {
                if wants(xs[i]) {
                    let (a, b) = if picked { (g, zero) } else { (zero, g) };
                    let d = e.op(Op::Select, &[xs[0], a, b])?;
                    out.push((xs[i], e.unbroadcast(d, &e.ty(xs[i]).shape)?));
                }
            }
        }
        Op::Reduce { op, axes, keepdim } => {
            out.push((xs[0], reduce(e, op, &axes, keepdim, xs[0], v, g)?));
        }
        Op::MatMul => {
            let (a, b) = (xs[0], xs[1]);
            if wants(a) {
                let bt = e.transpose(b)?;
                let d = e.op(Op::MatMul, &[g, bt])?;
                out.push((a, e.unbroadcast(d, &e.ty(a).shape)?));
            }
            if wants(b) {
                let d = if e.ty(b).rank() == 2 && e.ty(a).rank() > 2 {
                    // A weight shared by every row of a batch (`linear`): the batch folds
                    // into the contraction, one [K, L·M] × [L·M, N] product rather than L
                    // small ones and a sum of L partial gradients.
                    let (a, g) = (e.flatten_leading(a)?, e.flatten_leading(g)?);
                    let at = e.transpose(a)?;
                    e.op(Op::MatMul, &[at, g])?
                } else {
                    let at = e.transpose(a)?;
                    let d = e.op(Op::MatMul, &[at, g])?;
                    e.unbroadcast(d, &e.ty(b).shape)?
                };
                out.push((b, d));
            }
        }
        Op::Reshape => out.push((xs[0], e.reshape(g, e.ty(xs[0]).shape))),
        Op::Permute(perm) => {
            let mut inverse = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inverse[p] = i;
            }
            out.push((xs[0], e.permute(g, inverse)?));
        }
        Op::Slice { axis, start, end } => {
            let size = e.ty(xs[0]).shape[axis].clone();
            let after = size.sub(&end).ok_or(GradError::Overflow)?;
            out.push((xs[0], e.pad_zeros(g, axis, start, after)?));
        }
        Op::Concat { axis } => {
            let mut offset = Dim::constant(0);
            for &x in &xs {
                let end = offset
                    .add(&e.ty(x).shape[axis])
                    .ok_or(GradError::Overflow)?;
                if wants(x) {
                    out.push((x, e.slice(g, axis, offset.clone(), end.clone())?));
                }
                offset = end;
            }
        }
        Op::Flip { axis } => out.push((xs[0], e.flip(g, axis)?)),
        Op::Pad { axis, before, .. } => {
            let start = Dim::constant(before);
            let end = start
                .add(&e.ty(xs[0]).shape[axis])
                .ok_or(GradError::Overflow)?;
            out.push((xs[0], e.slice(g, axis, start, end)?));
        }
        Op::Gather { axis } => {
            out.push((xs[0], super::gather::vjp(e, xs[0], xs[1], axis, g)?));
        }
        Op::Cast => {
            let dtype = e.ty(xs[0]).dtype;
            if dtype.is_float() {
                out.push((xs[0], e.cast(g, dtype)));
            }
        }
        Op::Scan { axis } => {
            let adjoint = super::scan::adjoint(e, (xs[0], xs[1]), v, axis, g, wants)?;
            out.extend(adjoint.contributions);
        }
        Op::SvdVals => {
            return Err(GradError::Unsupported(
                "`svdvals` has no gradient here: read it behind `stop_grad` (a metric)".into(),
            ))
        }
        Op::Fused(r) => match &r.kind {
            crate::graph::RegionKind::Attention(a) => {
                return super::attention::vjp(e, v, &r, a, g, wants);
            }
            crate::graph::RegionKind::Scan(s) if s.readout.is_some() => {
                return super::scan_region::vjp(e, v, &r, s, g, wants);
            }
            crate::graph::RegionKind::AttentionGrad(_) | crate::graph::RegionKind::ScanGrad(_) => {
                return Err(GradError::Unsupported(format!(
                    "`{}`: a gradient graph is not differentiated again",
                    r.kind.name()
                )))
            }
            _ => {
                return Err(GradError::Unsupported(format!(
                    "`{}`: gradients are taken of the elaborated graph, before the passes",
                    r.kind
                )))
            }
        },
        Op::Call(_) => {
            return Err(GradError::Unsupported(format!(
                "`{op}`: gradients are taken of the elaborated graph, before the passes"
            )))
        }
    }
    Ok(out.into_iter().filter(|(x, _)| wants(*x)).collect())
}

/// d(u(x)) for `y = u(x)`, or None where no gradient flows (`not`, `stop_grad`).
fn unary(
    e: &mut Emit<'_>,
    u: UnaryOp,
    x: NodeIndex,
    y: NodeIndex,
    g: NodeIndex,
) -> Result<Option<NodeIndex>, GradError> {
    let dtype = e.ty(x).dtype;
    let d = match u {
        UnaryOp::Not | UnaryOp::StopGrad => return Ok(None),
        UnaryOp::Neg => e.unary(UnaryOp::Neg, g)?,
        UnaryOp::Exp => e.mul(g, y)?,
        UnaryOp::Log => e.div(g, x)?,
        // d√x = 1 / (2√x)
        UnaryOp::Sqrt => {
            let half = e.scale(g, 0.5)?;
            e.div(half, y)?
        }
        // d(x^−½) = −½ x^−3/2 = −½ y³
        UnaryOp::Rsqrt => {
            let y2 = e.mul(y, y)?;
            let y3 = e.mul(y2, y)?;
            let s = e.scale(y3, -0.5)?;
            e.mul(g, s)?
        }
        // d tanh = 1 − y²
        UnaryOp::Tanh => {
            let y2 = e.mul(y, y)?;
            let one = e.scalar(1.0, dtype);
            let d = e.binary(BinaryOp::Sub, one, y2)?;
            e.mul(g, d)?
        }
        // d erf = 2/√π · e^(−x²)
        UnaryOp::Erf => {
            let x2 = e.mul(x, x)?;
            let nx2 = e.unary(UnaryOp::Neg, x2)?;
            let ex = e.unary(UnaryOp::Exp, nx2)?;
            let d = e.scale(ex, std::f64::consts::FRAC_2_SQRT_PI)?;
            e.mul(g, d)?
        }
        UnaryOp::Sin => {
            let c = e.unary(UnaryOp::Cos, x)?;
            e.mul(g, c)?
        }
        UnaryOp::Cos => {
            let s = e.unary(UnaryOp::Sin, x)?;
            let d = e.mul(g, s)?;
            e.unary(UnaryOp::Neg, d)?
        }
        // sign(x), 0 at 0 (as torch)
        UnaryOp::Abs => {
            let zero = e.scalar(0.0, dtype);
            let pos = e.binary(BinaryOp::Gt, x, zero)?;
            let neg = e.binary(BinaryOp::Lt, x, zero)?;
            let p = e.choose(pos, 1.0, 0.0, dtype)?;
            let n = e.choose(neg, 1.0, 0.0, dtype)?;
            let sign = e.binary(BinaryOp::Sub, p, n)?;
            e.mul(g, sign)?
        }
    };
    Ok(Some(d))
}

/// The gradients of `y = a ∘ b` for the operands that want one, before unbroadcasting, as
/// (operand slot, gradient).
fn binary(
    e: &mut Emit<'_>,
    op: BinaryOp,
    (a, b): (NodeIndex, NodeIndex),
    y: NodeIndex,
    g: NodeIndex,
    wants: &dyn Fn(NodeIndex) -> bool,
) -> Result<Vec<(usize, NodeIndex)>, GradError> {
    let (wa, wb) = (wants(a), wants(b));
    let dtype = e.ty(y).dtype;
    let mut out = Vec::new();
    match op {
        BinaryOp::Add => out.extend([(0, g), (1, g)]),
        BinaryOp::Sub => {
            out.push((0, g));
            if wb {
                out.push((1, e.unary(UnaryOp::Neg, g)?));
            }
        }
        BinaryOp::Mul => {
            if wa {
                out.push((0, e.mul(g, b)?));
            }
            if wb {
                out.push((1, e.mul(g, a)?));
            }
        }
        // d(a/b)/db = −a/b² = −y/b
        BinaryOp::Div => {
            if wa {
                out.push((0, e.div(g, b)?));
            }
            if wb {
                let gy = e.mul(g, y)?;
                let d = e.div(gy, b)?;
                out.push((1, e.unary(UnaryOp::Neg, d)?));
            }
        }
        // d(aᵇ)/da = b·aᵇ⁻¹; d(aᵇ)/db = aᵇ·ln a
        BinaryOp::Pow => {
            if wa {
                let one = e.scalar(1.0, dtype);
                let bm1 = e.binary(BinaryOp::Sub, b, one)?;
                let p = e.binary(BinaryOp::Pow, a, bm1)?;
                let d = e.mul(p, b)?;
                out.push((0, e.mul(g, d)?));
            }
            if wb {
                let ln = e.unary(UnaryOp::Log, a)?;
                let d = e.mul(y, ln)?;
                out.push((1, e.mul(g, d)?));
            }
        }
        // The larger (smaller) operand takes the gradient; ties split it, as torch.maximum.
        BinaryOp::Max | BinaryOp::Min => {
            let wins = if op == BinaryOp::Max {
                BinaryOp::Gt
            } else {
                BinaryOp::Lt
            };
            let a_wins = e.binary(wins, a, b)?;
            let tie = e.binary(BinaryOp::Eq, a, b)?;
            let wa_mask = e.choose(a_wins, 1.0, 0.0, dtype)?;
            let tie_mask = e.choose(tie, 0.5, 0.0, dtype)?;
            let share_a = e.add(wa_mask, tie_mask)?;
            if wa {
                out.push((0, e.mul(g, share_a)?));
            }
            if wb {
                let one = e.scalar(1.0, dtype);
                let share_b = e.binary(BinaryOp::Sub, one, share_a)?;
                out.push((1, e.mul(g, share_b)?));
            }
        }
        // Comparisons, logic and integer remainders carry no gradient.
        _ => {}
    }
    let slots = [a, b];
    Ok(out.into_iter().filter(|(i, _)| wants(slots[*i])).collect())
}

/// The gradient of a reduction: the sum's spreads `g` over the reduced axes; the max's goes
/// to the elements equal to the maximum, split among ties (as torch's `amax`).
fn reduce(
    e: &mut Emit<'_>,
    op: ReduceOp,
    axes: &[usize],
    keepdim: bool,
    x: NodeIndex,
    y: NodeIndex,
    g: NodeIndex,
) -> Result<NodeIndex, GradError> {
    let shape = e.ty(x).shape;
    let mut kept = shape.clone();
    for &a in axes {
        kept[a] = Dim::constant(1);
    }
    let gk = if keepdim {
        g
    } else {
        e.reshape(g, kept.clone())
    };
    match op {
        ReduceOp::Sum => e.expand(gk, &shape),
        ReduceOp::Max => {
            let yk = if keepdim { y } else { e.reshape(y, kept) };
            let at_max = e.binary(BinaryOp::Eq, x, yk)?;
            let mask = e.choose(at_max, 1.0, 0.0, e.ty(x).dtype)?;
            let count = e.sum(mask, axes.to_vec(), true)?;
            let share = e.div(gk, count)?;
            e.mul(mask, share)
        }
    }
}

/// Whether values of `dtype` carry gradients.
pub(super) fn differentiable(dtype: DType) -> bool {
    dtype.is_float()
}
