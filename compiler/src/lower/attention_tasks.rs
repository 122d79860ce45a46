//! The tasks of the tiled attention kernels, forward ([`super::attention_tiles`]) and
//! backward ([`super::attention_grad_tiles`]): a task takes a block of rows (queries, or keys
//! in the backward) of one batch row and head, packs them transposed for the micro-kernel, and
//! is one iteration of the kernel's parallel loop.

use archc_kernels::ir::build::{add, bin, mul, serial, sub, var};
use archc_kernels::ir::{Bin, Expr, Ieee32, Stmt, Var};

use super::body::delinearize;
use super::index::Ctx;
use crate::graph::{Dim, TensorType};

/// The parallel loop over the tasks `tv` of `out`'s batch rows, each running `per_task`.
pub(super) fn over_tasks(cx: &Ctx, out: &TensorType, tv: &Task, per_task: Vec<Stmt>) -> Vec<Stmt> {
    let rows = Dim::product(&out.shape[..out.rank() - 2]).expect("row counts fit in i64");
    vec![Stmt::For {
        var: tv.task,
        extent: mul(cx.dim(&rows), tv.qblocks.clone()),
        kind: archc_kernels::ir::Axis::Grid,
        body: per_task,
    }]
}

/// Rows per task: the schedule's, in whole panels of `nr`, or fewer when a constant `len`
/// (a ViT's 16 patches) fills fewer panels, so a short sequence is not padded to the tile.
pub(super) fn task_rows(cx: &Ctx, len: &Dim, nr: i64) -> i64 {
    let rows = (cx.schedule.attention_rows as u64).div_ceil(nr as u64) as i64 * nr;
    match len.as_const() {
        Some(n) if n > 0 => rows.min((n + nr - 1) / nr * nr),
        _ => rows,
    }
}

/// The distance between consecutive indices of `t`'s axis `axis`.
pub(super) fn row_stride(cx: &Ctx, t: &TensorType, axis: usize) -> Expr {
    cx.strides(&t.shape)[axis].clone()
}

/// The variables of one task: its index, its batch row `bt` (and that row's coordinates), its
/// first query and query count; and the count of query blocks per batch row.
pub(super) struct Task {
    /// The parallel loop's variable.
    pub task: Var,
    /// The batch row.
    pub bt: Var,
    /// The task's first row.
    pub i0: Var,
    /// Its row count (fewer in the last task of a batch row).
    pub qn: Var,
    /// The batch row's coordinates.
    pub coords: Vec<Var>,
    /// Tasks per batch row.
    pub qblocks: Expr,
}

/// The statements that place a task: `qrows` queries of one batch row of the output `out`,
/// whose query axis has `s_len` positions.
pub(super) fn task(cx: &mut Ctx, out: &TensorType, s_len: Expr, qrows: i64) -> (Vec<Stmt>, Task) {
    let rank = out.rank();
    let (task, bt, i0, qn) = (cx.var(), cx.var(), cx.var(), cx.var());
    let coords = cx.vars(rank - 2);
    let qblocks = bin(
        Bin::Div,
        add(s_len.clone(), Expr::Int(qrows - 1)),
        Expr::Int(qrows),
    );
    let mut per_task = vec![
        Stmt::Set(bt, bin(Bin::Div, var(task), qblocks.clone())),
        Stmt::Set(
            i0,
            mul(bin(Bin::Rem, var(task), qblocks.clone()), Expr::Int(qrows)),
        ),
        Stmt::Set(
            qn,
            bin(Bin::Min, Expr::Int(qrows), sub(s_len.clone(), var(i0))),
        ),
    ];
    for (v, e) in coords
        .iter()
        .zip(delinearize(cx, var(bt), &out.shape[..rank - 2]))
    {
        per_task.push(Stmt::Set(*v, e));
    }
    let t = Task {
        task,
        bt,
        i0,
        qn,
        coords,
        qblocks,
    };
    (per_task, t)
}

/// Packs a task's `qn` rows of width `d` (row `q` at `row0 + q·stride`; queries, or keys in
/// the backward) transposed into local `panels`, in panels of `nr` rows: element `p` of row
/// `q` at `(q / nr)·d·nr + p·nr + q mod nr`. The panel's rows past `qn` are zeros.
pub(super) fn pack_rows(
    cx: &mut Ctx,
    panels: usize,
    (qb, row0, stride): (usize, Expr, Expr),
    (qn, qrows, nr): (Var, i64, i64),
    d: i64,
) -> Vec<Stmt> {
    let (q, p, z) = (cx.var(), cx.var(), cx.var());
    let dst = |q: Expr| {
        add(
            add(
                mul(bin(Bin::Div, q.clone(), Expr::Int(nr)), Expr::Int(d * nr)),
                mul(var(p), Expr::Int(nr)),
            ),
            bin(Bin::Rem, q, Expr::Int(nr)),
        )
    };
    let src = add(add(row0, mul(var(q), stride)), var(p));
    let pad = add(var(qn), var(z));
    vec![
        serial(
            q,
            var(qn),
            vec![serial(
                p,
                Expr::Int(d),
                vec![Stmt::Store(
                    panels,
                    dst(var(q)),
                    Expr::Load(qb, Box::new(src)),
                )],
            )],
        ),
        serial(
            z,
            sub(Expr::Int(qrows), var(qn)),
            vec![serial(
                p,
                Expr::Int(d),
                vec![Stmt::Store(panels, dst(pad), Expr::F32(Ieee32::new(0.0)))],
            )],
        ),
    ]
}
