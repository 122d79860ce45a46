//! Templates that combine elements: reductions, matmul and the `scan` recurrence.

use archc_kernels::ir::build::{add, bin, mul, sub};
use archc_kernels::ir::{Bin, Expr, LoopKind, Stmt, Ty, Var, LANES};

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

/// Output columns per register block: four f32x4 accumulators.
const BLOCK: usize = 4;

/// Matmul in register blocks of 16 output columns (four f32x4 accumulators fed by FMA,
/// `a[i, p]` splat across lanes), then a scalar loop for the remaining columns. Batches are
/// the parallel loop, or the column blocks when there are none.
fn matmul(cx: &mut Ctx, out: &TensorType, a: &TensorType, b: &TensorType) -> Vec<Stmt> {
    let r = out.rank();
    let vars = cx.vars(r);
    let (p, av, jb, acc) = (cx.var(), cx.var(), cx.var(), cx.var());
    let accs: Vec<Var> = (0..BLOCK).map(|_| cx.var()).collect();
    let width = (BLOCK * LANES) as i64;
    // Operand axes align on the right with the output's batch axes.
    let batch = |t: &TensorType| -> Vec<Expr> {
        let nb = t.rank() - 2;
        vars[r - 2 - nb..r - 2]
            .iter()
            .map(|v| Expr::Var(*v))
            .collect()
    };
    let i = Expr::Var(vars[r - 2]);
    let a_index = |cx: &Ctx| {
        let mut at = batch(a);
        at.extend([i.clone(), Expr::Var(p)]);
        cx.index(&a.shape, &at)
    };
    let b_index = |cx: &Ctx, col: Expr| {
        let mut at = batch(b);
        at.extend([Expr::Var(p), col]);
        cx.index(&b.shape, &at)
    };
    let out_index = |cx: &Ctx, col: Expr| {
        let mut at: Vec<Expr> = vars[..r - 1].iter().map(|v| Expr::Var(*v)).collect();
        at.push(col);
        cx.index(&out.shape, &at)
    };
    let n = cx.dim(&out.shape[r - 1]);
    let k = cx.dim(&a.shape[a.rank() - 1]);
    let blocks = bin(Bin::Div, n.clone(), Expr::Int(width));
    let col = |q: usize| {
        add(
            mul(Expr::Var(jb), Expr::Int(width)),
            Expr::Int((q * LANES) as i64),
        )
    };
    let mut inner = vec![Stmt::Set(
        av,
        Expr::Splat(Box::new(Expr::Load(1, Box::new(a_index(cx))))),
    )];
    for (q, v) in accs.iter().enumerate() {
        let bq = Expr::VLoad(2, Box::new(b_index(cx, col(q))));
        inner.push(Stmt::Set(
            *v,
            Expr::Fma(
                Box::new(Expr::Var(av)),
                Box::new(bq),
                Box::new(Expr::Var(*v)),
            ),
        ));
    }
    let mut block = accs
        .iter()
        .map(|v| Stmt::Set(*v, Expr::Splat(Box::new(Expr::F32(0.0)))))
        .collect::<Vec<_>>();
    block.push(Stmt::For {
        var: p,
        extent: k.clone(),
        kind: LoopKind::Serial,
        body: inner,
    });
    for (q, v) in accs.iter().enumerate() {
        block.push(Stmt::VStore(0, out_index(cx, col(q)), Expr::Var(*v)));
    }
    // The columns past the last full block, one at a time.
    let j = add(
        mul(blocks.clone(), Expr::Int(width)),
        Expr::Var(vars[r - 1]),
    );
    let tail = vec![
        Stmt::Set(acc, Expr::F32(0.0)),
        Stmt::For {
            var: p,
            extent: k,
            kind: LoopKind::Serial,
            body: vec![Stmt::Set(
                acc,
                add(
                    Expr::Var(acc),
                    mul(
                        Expr::Load(1, Box::new(a_index(cx))),
                        Expr::Load(2, Box::new(b_index(cx, j.clone()))),
                    ),
                ),
            )],
        },
        Stmt::Store(0, out_index(cx, j), Expr::Var(acc)),
    ];
    // Column blocks outside, rows inside: a block of `b` (k × 16 floats) stays in cache while
    // every row of `a` streams past it. Without batch axes the block loop is the parallel one.
    let top = if r == 2 {
        LoopKind::Parallel
    } else {
        LoopKind::Serial
    };
    let m = cx.dim(&out.shape[r - 2]);
    let rows = |body: Vec<Stmt>| Stmt::For {
        var: vars[r - 2],
        extent: m.clone(),
        kind: LoopKind::Serial,
        body,
    };
    let per_batch = vec![
        Stmt::For {
            var: jb,
            extent: blocks.clone(),
            kind: top,
            body: vec![rows(block)],
        },
        Stmt::For {
            var: vars[r - 1],
            extent: sub(n, mul(blocks, Expr::Int(width))),
            kind: top,
            body: vec![rows(tail)],
        },
    ];
    cx.nest(&out.shape[..r - 2], &vars[..r - 2], per_batch)
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
