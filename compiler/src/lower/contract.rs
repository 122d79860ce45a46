//! Templates that combine elements: reductions, matmul, the `scan` recurrence and
//! `svdvals`.

use archc_kernels::ir::build::{add, bin, mul};
use archc_kernels::ir::{Axis, Bin, Expr, Ieee32, Stmt, Ty};

use super::index::{exprs, Ctx};
use super::{elem, ty, Template};
use crate::graph::{Op, ReduceOp, TensorType};

/// The kernel body for a reduction, matmul or scan, or None for other ops.
pub fn lower(cx: &mut Ctx, op: &Op, out: &TensorType, ins: &[&TensorType]) -> Option<Template> {
    let body = match op {
        Op::Reduce { op, axes, keepdim } => reduce(cx, *op, axes, *keepdim, out, ins[0]),
        Op::MatMul => {
            // Buffers: the output, a, b, the status word, then the packed panels of b and a.
            let operands = [(ins[0], 1), (ins[1], 2)];
            let (body, locals, shared) =
                super::matmul::matmul(cx, (out, elem(out.dtype)), operands, 4, None);
            let mut t = Template::new(body, vec![]);
            t.locals.extend(locals);
            t.shared.extend(shared);
            return Some(t);
        }
        Op::Scan { axis } => scan(cx, *axis, ins[0], ins[1]),
        Op::SvdVals => return Some(super::svd::lower(cx, out, ins[0])),
        _ => return None,
    };
    Some(Template::new(body, vec![]))
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
        (ReduceOp::Sum, Ty::F32) => (
            Expr::F32(Ieee32::new(0.0)),
            bin(Bin::Add, Expr::Var(acc), load),
        ),
        (ReduceOp::Sum, _) => (Expr::Int(0), bin(Bin::Add, Expr::Var(acc), load)),
        (ReduceOp::Max, Ty::F32) => (
            Expr::F32(Ieee32::new(f32::NEG_INFINITY)),
            bin(Bin::Max, Expr::Var(acc), load),
        ),
        (ReduceOp::Max, _) => (Expr::Int(i64::MIN), bin(Bin::Max, Expr::Var(acc), load)),
    };
    let red_shape: Vec<_> = axes.iter().map(|&a| x.shape[a].clone()).collect();
    let red_vars: Vec<_> = axes.iter().map(|&a| vars[a]).collect();
    let mut inner = vec![Stmt::Set(acc, init)];
    inner.extend(cx.reduce_nest(&red_shape, &red_vars, vec![Stmt::Set(acc, step)]));
    inner.push(Stmt::Store(
        0,
        cx.index(&out.shape, &out_at),
        Expr::Var(acc),
    ));
    let kept_shape: Vec<_> = kept.iter().map(|&a| x.shape[a].clone()).collect();
    let kept_vars: Vec<_> = kept.iter().map(|&a| vars[a]).collect();
    cx.nest(&kept_shape, &kept_vars, inner)
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
        Stmt::Set(h, Expr::F32(Ieee32::new(0.0))),
        Stmt::For {
            var: vars[axis],
            extent: cx.dim(&b.shape[axis]),
            kind: Axis::Serial,
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
