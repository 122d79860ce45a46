//! How a matmul's output is cut into tasks, the parallel loop: row blocks sized so that the
//! threads have enough tasks to share, column blocks of whole micro-kernel panels, and batches.

use archc_kernels::ir::build::{add, bin, mul, sub, var};
use archc_kernels::ir::{Bin, Elem, Expr, Stmt, Var};

use super::{Layout, Shape};
use crate::graph::Dim;
use crate::lower::body::delinearize;
use crate::lower::index::{div_up, folded, Ctx};

/// The tasks a matmul is cut into at least, when its rows allow: enough for the threads to
/// share evenly (one task per thread leaves them idle whenever the tasks differ in size).
const TASKS: i64 = 16;

/// The fewest rows a task cut for the threads has: packing `b`'s panels costs each task about
/// `2 / rows` of its multiply-adds.
const MIN_TASK_ROWS: i64 = 32;

/// The parallel loop's variable and extent (every batch's row × column tasks), and the
/// statements that start a task: its batch coordinates, row and column ranges, and counts of
/// full panels and of whole vectors past them (none when partial sums are not f32).
pub(super) fn task_grid(
    cx: &mut Ctx,
    s: &Shape,
    l: &Layout,
    (rows, batch_shape): (&Dim, &[Dim]),
    out_elem: Elem,
) -> (Var, Expr, Vec<Stmt>, Tasks) {
    let m = cx.dim(rows);
    let nr = s.nr();
    let (task, i_lo, i_hi, j_lo, j_hi) = (cx.var(), cx.var(), cx.var(), cx.var(), cx.var());
    let (ic, jc, bi) = (cx.var(), cx.var(), cx.var());
    let tiles_n = div_up(l.n.clone(), Expr::Int(s.nt));
    let batches = cx.dim(&Dim::product(batch_shape).unwrap_or_default());
    let others = folded(Bin::Mul, batches.clone(), tiles_n.clone());
    let mc = task_rows(s, m.clone(), others);
    let tiles_m = div_up(m.clone(), mc.clone());
    let mut per_task = vec![
        Stmt::Set(jc, bin(Bin::Rem, var(task), tiles_n.clone())),
        Stmt::Set(
            ic,
            bin(
                Bin::Rem,
                bin(Bin::Div, var(task), tiles_n.clone()),
                tiles_m.clone(),
            ),
        ),
        Stmt::Set(
            bi,
            bin(Bin::Div, var(task), mul(tiles_n.clone(), tiles_m.clone())),
        ),
    ];
    for (v, e) in l.batch.iter().zip(delinearize(cx, var(bi), batch_shape)) {
        per_task.push(Stmt::Set(*v, e));
    }
    let clip = |lo: Var, size: i64, end: Expr| bin(Bin::Min, add(var(lo), Expr::Int(size)), end);
    per_task.extend([
        Stmt::Set(i_lo, mul(var(ic), mc.clone())),
        Stmt::Set(i_hi, bin(Bin::Min, add(var(i_lo), mc), m.clone())),
        Stmt::Set(j_lo, mul(var(jc), Expr::Int(s.nt))),
        Stmt::Set(j_hi, clip(j_lo, s.nt, l.n.clone())),
    ]);
    let panels = if out_elem == Elem::F32 {
        bin(Bin::Div, sub(var(j_hi), var(j_lo)), Expr::Int(nr))
    } else {
        Expr::Int(0)
    };
    let pv = cx.var();
    per_task.push(Stmt::Set(pv, panels));
    // Whole vectors of the columns past the last full panel.
    let vv = cx.var();
    let past = sub(sub(var(j_hi), var(j_lo)), mul(var(pv), Expr::Int(nr)));
    let vectors = if out_elem == Elem::F32 {
        bin(Bin::Div, past, Expr::Int(s.lanes as i64))
    } else {
        Expr::Int(0)
    };
    per_task.push(Stmt::Set(vv, vectors));
    let tasks = Tasks {
        i: (i_lo, i_hi),
        j: (j_lo, j_hi),
        panels: pv,
        vectors: vv,
    };
    let extent = mul(batches, mul(tiles_m, tiles_n));
    (task, extent, per_task, tasks)
}

/// Rows of one task: a multiple of `mr` that cuts the rows into enough tasks for the threads
/// to share (`TASKS` with the `others` tasks of the batches and column blocks), but no fewer than
/// `MIN_TASK_ROWS` rows, since every task packs its own panels of `b`, and no more than the
/// cache block `mc`. An expression of the dims: the parallel loop's extent depends on it.
fn task_rows(s: &Shape, m: Expr, others: Expr) -> Expr {
    let mr = Expr::Int(s.mr as i64);
    let row_tasks = div_up(Expr::Int(TASKS), folded(Bin::Max, others, Expr::Int(1)));
    let rows = folded(Bin::Mul, div_up(div_up(m, row_tasks), mr.clone()), mr);
    let mr = s.mr as i64;
    let least = ((MIN_TASK_ROWS + mr - 1) / mr * mr).min(s.mc);
    folded(
        Bin::Min,
        folded(Bin::Max, rows, Expr::Int(least)),
        Expr::Int(s.mc),
    )
}

/// The row and column range of the current task and its count of full panels.
pub(super) struct Tasks {
    pub(super) i: (Var, Var),
    pub(super) j: (Var, Var),
    pub(super) panels: Var,
    /// Whole vectors of columns past the last full panel.
    pub(super) vectors: Var,
}
