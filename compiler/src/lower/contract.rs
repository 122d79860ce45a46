//! Templates that combine elements: reductions, matmul and the `scan` recurrence.

use archc_kernels::ir::build::{add, bin, mul};
use archc_kernels::ir::{Bin, Expr, LoopKind, Stmt, Ty};

use super::index::{exprs, Ctx};
use super::{ty, Template};
use crate::graph::{Op, ReduceOp, TensorType};

/// The kernel body for a reduction, matmul or scan, or None for other ops.
pub fn lower(cx: &mut Ctx, op: &Op, out: &TensorType, ins: &[&TensorType]) -> Option<Template> {
    let body = match op {
        Op::Reduce { op, axes, keepdim } => reduce(cx, *op, axes, *keepdim, out, ins[0]),
        Op::MatMul => matmul(cx, out, ins[0], ins[1]),
        Op::Scan { axis } => scan(cx, *axis, ins[0], ins[1]),
        _ => return None,
    };
    Some(Template {
        body,
        checks: vec![],
    })
}

fn reduce(
    cx: &mut Ctx,
    op: ReduceOp,
    axes: &[usize],
    keepdim: bool,
    out: &TensorType,
    x: &TensorType,
) -> Vec<Stmt> {
    let vars = cx.vars(x.rank());
    let acc = cx.var();
    let kept: Vec<usize> = (0..x.rank()).filter(|a| !axes.contains(a)).collect();
    let out_at: Vec<Expr> = if keepdim {
        (0..x.rank())
            .map(|a| {
                if axes.contains(&a) {
                    Expr::Int(0)
                } else {
                    Expr::Var(vars[a])
                }
            })
            .collect()
    } else {
        kept.iter().map(|&a| Expr::Var(vars[a])).collect()
    };
    let load = Expr::Load(1, Box::new(cx.index(&x.shape, &exprs(&vars))));
    let (init, step) = match (op, ty(x.dtype)) {
        (ReduceOp::Sum, Ty::F32) => (Expr::F32(0.0), bin(Bin::Add, Expr::Var(acc), load)),
        (ReduceOp::Sum, _) => (Expr::Int(0), bin(Bin::Add, Expr::Var(acc), load)),
        (ReduceOp::Max, Ty::F32) => (
            Expr::F32(f32::NEG_INFINITY),
            bin(Bin::Max, Expr::Var(acc), load),
        ),
        (ReduceOp::Max, _) => (Expr::Int(i64::MIN), bin(Bin::Max, Expr::Var(acc), load)),
    };
    let red_shape: Vec<_> = axes.iter().map(|&a| x.shape[a].clone()).collect();
    let red_vars: Vec<_> = axes.iter().map(|&a| vars[a]).collect();
    let mut inner = vec![Stmt::Set(acc, init)];
    inner.extend(serial(cx.nest(
        &red_shape,
        &red_vars,
        vec![Stmt::Set(acc, step)],
    )));
    inner.push(Stmt::Store(
        0,
        cx.index(&out.shape, &out_at),
        Expr::Var(acc),
    ));
    let kept_shape: Vec<_> = kept.iter().map(|&a| x.shape[a].clone()).collect();
    let kept_vars: Vec<_> = kept.iter().map(|&a| vars[a]).collect();
    cx.nest(&kept_shape, &kept_vars, inner)
}

/// Marks the outermost loop of a nest serial (it runs inside another parallel loop).
fn serial(mut nest: Vec<Stmt>) -> Vec<Stmt> {
    if let Some(Stmt::For { kind, .. }) = nest.first_mut() {
        *kind = LoopKind::Serial;
    }
    nest
}

/// Row-oriented matmul: for each output row, accumulate `a[i, p] · b[p, :]` into it, so the
/// innermost loop walks `b` and the output contiguously.
fn matmul(cx: &mut Ctx, out: &TensorType, a: &TensorType, b: &TensorType) -> Vec<Stmt> {
    let r = out.rank();
    let vars = cx.vars(r);
    let (i, j) = (Expr::Var(vars[r - 2]), Expr::Var(vars[r - 1]));
    let p = cx.var();
    let av = cx.var();
    // Operand axes align on the right with the output's batch axes.
    let batch = |t: &TensorType| -> Vec<Expr> {
        let nb = t.rank() - 2;
        vars[r - 2 - nb..r - 2]
            .iter()
            .map(|v| Expr::Var(*v))
            .collect()
    };
    let mut a_at = batch(a);
    a_at.extend([i, Expr::Var(p)]);
    let mut b_at = batch(b);
    b_at.extend([Expr::Var(p), j]);
    let o = cx.index(&out.shape, &exprs(&vars));
    let n = cx.dim(&out.shape[r - 1]);
    let k = cx.dim(&a.shape[a.rank() - 1]);
    let row = vec![
        Stmt::For {
            var: vars[r - 1],
            extent: n.clone(),
            kind: LoopKind::Serial,
            body: vec![Stmt::Store(0, o.clone(), Expr::F32(0.0))],
        },
        Stmt::For {
            var: p,
            extent: k,
            kind: LoopKind::Serial,
            body: vec![
                Stmt::Set(av, Expr::Load(1, Box::new(cx.index(&a.shape, &a_at)))),
                Stmt::For {
                    var: vars[r - 1],
                    extent: n,
                    kind: LoopKind::Serial,
                    body: vec![Stmt::Store(
                        0,
                        o.clone(),
                        add(
                            Expr::Load(0, Box::new(o)),
                            mul(
                                Expr::Var(av),
                                Expr::Load(2, Box::new(cx.index(&b.shape, &b_at))),
                            ),
                        ),
                    )],
                },
            ],
        },
    ];
    cx.nest(&out.shape[..r - 1], &vars[..r - 1], row)
}

fn scan(cx: &mut Ctx, axis: usize, a: &TensorType, b: &TensorType) -> Vec<Stmt> {
    let vars = cx.vars(b.rank());
    let h = cx.var();
    let at = exprs(&vars);
    let step = add(
        mul(
            Expr::Load(1, Box::new(cx.broadcast_index(&a.shape, &vars))),
            Expr::Var(h),
        ),
        Expr::Load(2, Box::new(cx.index(&b.shape, &at))),
    );
    let recurrence = vec![
        Stmt::Set(h, Expr::F32(0.0)),
        Stmt::For {
            var: vars[axis],
            extent: cx.dim(&b.shape[axis]),
            kind: LoopKind::Serial,
            body: vec![
                Stmt::Set(h, step),
                Stmt::Store(0, cx.index(&b.shape, &at), Expr::Var(h)),
            ],
        },
    ];
    let outer: Vec<usize> = (0..b.rank()).filter(|&x| x != axis).collect();
    let shape: Vec<_> = outer.iter().map(|&x| b.shape[x].clone()).collect();
    let outer_vars: Vec<_> = outer.iter().map(|&x| vars[x]).collect();
    cx.nest(&shape, &outer_vars, recurrence)
}
