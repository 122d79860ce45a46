//! Templates that combine elements: reductions, matmul and the `scan` recurrence.

use archc_kernels::ir::build::{add, bin, mul, sub};
use archc_kernels::ir::{Bin, Expr, LoopKind, Stmt, Ty, Var, LANES};

use super::index::{exprs, Ctx};
use super::{ty, Template};
use crate::graph::{Dim, Op, ReduceOp, TensorType};

/// The kernel body for a reduction, matmul or scan, or None for other ops.
pub fn lower(cx: &mut Ctx, op: &Op, out: &TensorType, ins: &[&TensorType]) -> Option<Template> {
    let body = match op {
        Op::Reduce { op, axes, keepdim } => reduce(cx, *op, axes, *keepdim, out, ins[0]),
        Op::MatMul => matmul(cx, out, [(ins[0], 1), (ins[1], 2)], None),
        Op::Scan { axis } => scan(cx, *axis, ins[0], ins[1]),
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
    inner.extend(cx.serial_nest(&red_shape, &red_vars, vec![Stmt::Set(acc, step)]));
    inner.push(Stmt::Store(
        0,
        cx.index(&out.shape, &out_at),
        Expr::Var(acc),
    ));
    let kept_shape: Vec<_> = kept.iter().map(|&a| x.shape[a].clone()).collect();
    let kept_vars: Vec<_> = kept.iter().map(|&a| vars[a]).collect();
    cx.nest(&kept_shape, &kept_vars, inner)
}

/// Output columns per register block: four f32x4 accumulators.
const BLOCK: usize = 4;

/// Stores the value of one output element: the plain store, or a fused epilogue that computes
/// the final value from the matmul's and stores it. Arguments: the value and the element's
/// coordinates in the output.
pub type Epilogue<'e> = dyn FnMut(&mut Ctx, Expr, Vec<Expr>) -> Vec<Stmt> + 'e;

/// Matmul in register blocks of 16 output columns (four f32x4 accumulators fed by FMA,
/// `a[i, p]` splat across lanes), then a scalar loop for the remaining columns.
///
/// When `b` has no batch axes and `a`'s batch axes are the output's, the rows of every batch
/// are one long row axis, so the parallel loop (over column blocks) never runs on a batch of 1.
/// With an `epilogue`, each block is stored, then read back (it is in L1) and finished.
pub fn matmul(
    cx: &mut Ctx,
    out: &TensorType,
    [(a, abuf), (b, bbuf)]: [(&TensorType, usize); 2],
    epilogue: Option<&mut Epilogue<'_>>,
) -> Vec<Stmt> {
    let r = out.rank();
    let flat = b.rank() == 2 && a.shape[..a.rank() - 1] == out.shape[..r - 1];
    // The nest: batch axes (none when flat), rows, then columns.
    let (batch_shape, rows_dim): (Vec<Dim>, Dim) = if flat {
        let rows = Dim::product(&out.shape[..r - 1]).unwrap_or_default();
        (Vec::new(), rows)
    } else {
        (out.shape[..r - 2].to_vec(), out.shape[r - 2].clone())
    };
    let bvars = cx.vars(batch_shape.len());
    let (i, j, p, av, jb, acc) = (cx.var(), cx.var(), cx.var(), cx.var(), cx.var(), cx.var());
    let accs: Vec<Var> = (0..BLOCK).map(|_| cx.var()).collect();
    let width = (BLOCK * LANES) as i64;
    let n = cx.dim(&out.shape[r - 1]);
    let k = cx.dim(&a.shape[a.rank() - 1]);
    // Linear indices: flat operands are [rows, k] and [k, n]; otherwise operand axes align on
    // the right with the output's batch axes.
    let batch_at = |t: &TensorType| -> Vec<Expr> {
        let nb = t.rank() - 2;
        bvars[bvars.len() - nb.min(bvars.len())..]
            .iter()
            .map(|v| Expr::Var(*v))
            .collect()
    };
    let a_index = |cx: &Ctx| {
        if flat {
            return add(mul(Expr::Var(i), k.clone()), Expr::Var(p));
        }
        let mut at = batch_at(a);
        at.extend([Expr::Var(i), Expr::Var(p)]);
        cx.index(&a.shape, &at)
    };
    let b_index = |cx: &Ctx, col: Expr| {
        let mut at = if flat { vec![] } else { batch_at(b) };
        at.extend([Expr::Var(p), col]);
        cx.index(&b.shape, &at)
    };
    // The output element's coordinates: when flat, the row is split back into the batch
    // axes once per row, into `row_at`.
    let row_at = cx.vars(if flat { r - 1 } else { 0 });
    let split_row: Vec<Stmt> = super::body::delinearize(cx, Expr::Var(i), &out.shape[..r - 1])
        .into_iter()
        .zip(&row_at)
        .map(|(e, v)| Stmt::Set(*v, e))
        .collect();
    let out_at = |col: Expr| -> Vec<Expr> {
        let mut at: Vec<Expr> = if flat {
            row_at.iter().map(|v| Expr::Var(*v)).collect()
        } else {
            bvars
                .iter()
                .map(|v| Expr::Var(*v))
                .chain([Expr::Var(i)])
                .collect()
        };
        at.push(col);
        at
    };
    let out_index = |cx: &Ctx, col: Expr| {
        if flat {
            add(mul(Expr::Var(i), n.clone()), col)
        } else {
            cx.index(&out.shape, &out_at(col))
        }
    };
    let blocks = bin(Bin::Div, n.clone(), Expr::Int(width));
    let col = |q: usize| {
        add(
            mul(Expr::Var(jb), Expr::Int(width)),
            Expr::Int((q * LANES) as i64),
        )
    };
    let mut inner = vec![Stmt::Set(
        av,
        Expr::Splat(Box::new(Expr::Load(abuf, Box::new(a_index(cx))))),
    )];
    for (q, v) in accs.iter().enumerate() {
        let bq = Expr::VLoad(bbuf, Box::new(b_index(cx, col(q))));
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
    let mut epilogue = epilogue;
    if let Some(epi) = epilogue.as_deref_mut() {
        // Finish the block's 16 elements in place.
        let c = cx.var();
        let cc = add(mul(Expr::Var(jb), Expr::Int(width)), Expr::Var(c));
        let stored = Expr::Load(0, Box::new(out_index(cx, cc.clone())));
        let at = out_at(cc);
        block.push(Stmt::For {
            var: c,
            extent: Expr::Int(width),
            kind: LoopKind::Serial,
            body: epi(cx, stored, at),
        });
    }
    // The columns past the last full block, one at a time.
    let jt = add(mul(blocks.clone(), Expr::Int(width)), Expr::Var(j));
    let dot = add(
        Expr::Var(acc),
        mul(
            Expr::Load(abuf, Box::new(a_index(cx))),
            Expr::Load(bbuf, Box::new(b_index(cx, jt.clone()))),
        ),
    );
    let mut tail = vec![
        Stmt::Set(acc, Expr::F32(0.0)),
        Stmt::For {
            var: p,
            extent: k,
            kind: LoopKind::Serial,
            body: vec![Stmt::Set(acc, dot)],
        },
    ];
    let stored = out_index(cx, jt.clone());
    let at = out_at(jt);
    let with_epilogue = epilogue.is_some();
    tail.extend(match epilogue {
        Some(epi) => epi(cx, Expr::Var(acc), at),
        None => vec![Stmt::Store(0, stored, Expr::Var(acc))],
    });
    // Column blocks outside, rows inside: a block of `b` (k × 16 floats) stays in cache while
    // every row of `a` streams past it. Without batch axes the block loop is the parallel one.
    let top = if batch_shape.is_empty() {
        LoopKind::Parallel
    } else {
        LoopKind::Serial
    };
    let m = cx.dim(&rows_dim);
    let rows = |body: Vec<Stmt>| Stmt::For {
        var: i,
        extent: m.clone(),
        kind: LoopKind::Serial,
        body: if flat && with_epilogue {
            split_row.iter().cloned().chain(body).collect()
        } else {
            body
        },
    };
    let per_batch = vec![
        Stmt::For {
            var: jb,
            extent: blocks.clone(),
            kind: top,
            body: vec![rows(block)],
        },
        Stmt::For {
            var: j,
            extent: sub(n, mul(blocks, Expr::Int(width))),
            kind: top,
            body: vec![rows(tail)],
        },
    ];
    cx.nest(&batch_shape, &bvars, per_batch)
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
