//! The register micro-kernel of the blocked matmul: a `rows` × `vectors·4` block of outputs
//! held in f32x4 accumulators (`Set` variables, so they live in registers) through one slice of
//! the reduced axis.
//!
//! Per step it loads the packed panel's `vectors` vectors of `b` and broadcasts one element of
//! `a` per row, for `rows · vectors` FMAs. With Cranelift's 16 registers, 4 rows × 2 vectors
//! take 8 accumulators: Cranelift schedules the next step's loads early, and 6 rows (12
//! accumulators) spilled on every step, 1.3× slower.

use archc_kernels::ir::build::{add, axis, serial, sub, var};
use archc_kernels::ir::{Axis, Expr, Ieee32, Stmt, Var};

/// Lanes of the IR's vectors, as a count of elements.
use super::index::Ctx;
use super::matmul::{finish, Epilogue, Layout};

/// Where a micro-kernel reads `a`.
#[derive(Clone, Copy)]
pub enum Rows {
    /// In place: each row's elements are contiguous, `k` apart.
    Direct,
    /// A packed panel in local `buf` starting at `at`: per step of the slice, the block's
    /// rows' elements side by side, so one running index serves every row.
    Packed {
        /// The local.
        buf: usize,
        /// The panel's first element.
        at: Var,
    },
}

/// Where one micro-kernel call works and which slice it is in.
pub struct Block {
    /// Where `a` comes from.
    pub a: Rows,
    /// Rows of outputs (accumulators per column vector).
    pub rows: usize,
    /// Vectors across.
    pub vectors: usize,
    /// Lanes of each vector (the target's width).
    pub lanes: usize,
    /// The first row.
    pub i: Var,
    /// The first column.
    pub j: Var,
    /// Where the block's packed panel starts in the local.
    pub panel: Var,
    /// The slice's first element of the reduced axis.
    pub k_lo: Var,
    /// The slice's length.
    pub kc: Var,
    /// 1 after the first slice (the partial sums are loaded back), else 0.
    pub later: Var,
    /// 1 on the last slice (the epilogue runs), else 0.
    pub last: Var,
}

/// One block: load (or zero) the accumulators, the slice's steps, then store the partial sums
/// or, on the last slice, finish them.
pub fn micro(
    cx: &mut Ctx,
    l: &Layout,
    (abuf, packed): (usize, usize),
    blk: &Block,
    epilogue: &mut Option<&mut dyn Epilogue>,
) -> Vec<Stmt> {
    let p = cx.var();
    let bs: Vec<Var> = (0..blk.vectors).map(|_| cx.var()).collect();
    let accs: Vec<Vec<Var>> = (0..blk.rows).map(|_| cx.vars(blk.vectors)).collect();
    let row = |r: usize| add(var(blk.i), Expr::Int(r as i64));
    let (lanes, width) = (blk.lanes, blk.lanes as u8);
    let col = |q: usize| add(var(blk.j), Expr::Int((q * lanes) as i64));
    let nr = (blk.vectors * lanes) as i64;
    // Running indices of this step's elements: element p of each row of `a`, row p of the
    // panel. They advance by one step per iteration (Cranelift would otherwise recompute each
    // from the row number, every iteration).
    // A packed panel needs one running index for all rows.
    let (abuf, rows_at, a_step) = match blk.a {
        Rows::Direct => ((abuf), (0..blk.rows).map(|_| cx.var()).collect(), 1),
        Rows::Packed { buf, .. } => (buf, vec![cx.var()], blk.rows as i64),
    };
    let a_at = |r: usize| match blk.a {
        Rows::Direct => var(rows_at[r]),
        Rows::Packed { .. } => add(var(rows_at[0]), Expr::Int(r as i64)),
    };
    let b_at = cx.var();
    let mut out: Vec<Stmt> = match blk.a {
        Rows::Direct => rows_at
            .iter()
            .enumerate()
            .map(|(r, v)| Stmt::Set(*v, l.a(cx, row(r), var(blk.k_lo))))
            .collect(),
        Rows::Packed { at, .. } => vec![Stmt::Set(rows_at[0], var(at))],
    };
    out.push(Stmt::Set(b_at, var(blk.panel)));
    let mut step: Vec<Stmt> = bs
        .iter()
        .enumerate()
        .map(|(q, b)| {
            let at = add(var(b_at), Expr::Int((q * blk.lanes) as i64));
            Stmt::Set(*b, Expr::VLoad(packed, Box::new(at), width))
        })
        .collect();
    for (r, acc) in accs.iter().enumerate() {
        let av = cx.var();
        step.push(Stmt::Set(
            av,
            Expr::Splat(Box::new(Expr::Load(abuf, Box::new(a_at(r)))), width),
        ));
        for (q, b) in bs.iter().enumerate() {
            step.push(Stmt::Set(
                acc[q],
                Expr::Fma(Box::new(var(av)), Box::new(var(*b)), Box::new(var(acc[q]))),
            ));
        }
    }
    for v in &rows_at {
        step.push(Stmt::Set(*v, add(var(*v), Expr::Int(a_step))));
    }
    step.push(Stmt::Set(b_at, add(var(b_at), Expr::Int(nr))));
    out.extend(accs.iter().flatten().map(|v| {
        Stmt::Set(
            *v,
            Expr::Splat(Box::new(Expr::F32(Ieee32::new(0.0))), width),
        )
    }));
    // After the first slice the accumulators start from the partial sums stored so far.
    let mut reload = Vec::new();
    for (r, acc) in accs.iter().enumerate() {
        for (q, v) in acc.iter().enumerate() {
            let at = l.out(cx, row(r), col(q));
            reload.push(Stmt::Set(*v, Expr::VLoad(0, Box::new(at), width)));
        }
    }
    out.push(serial(cx.var(), var(blk.later), reload));
    out.push(axis(Axis::Reduce, p, var(blk.kc), step));
    let stores: Vec<Stmt> = accs
        .iter()
        .enumerate()
        .flat_map(|(r, acc)| {
            acc.iter()
                .enumerate()
                .map(|(q, v)| Stmt::VStore(0, l.out(cx, row(r), col(q)), var(*v), width))
                .collect::<Vec<_>>()
        })
        .collect();
    if epilogue.is_none() {
        out.extend(stores);
        return out;
    }
    out.push(serial(
        cx.var(),
        sub(Expr::Int(1), var(blk.last)),
        stores.clone(),
    ));
    let done = finished(cx, l, blk, &accs, stores, epilogue);
    out.push(serial(cx.var(), var(blk.last), done));
    out
}

/// The last slice's block, finished through the epilogue: in registers, four at a time, when
/// it has a vector form; otherwise stored and each element finished in place (it is in L1).
fn finished(
    cx: &mut Ctx,
    l: &Layout,
    blk: &Block,
    accs: &[Vec<Var>],
    stores: Vec<Stmt>,
    epilogue: &mut Option<&mut dyn Epilogue>,
) -> Vec<Stmt> {
    let mut out = Vec::new();
    // Epilogues have a vector form for four lanes; wider accumulators finish element-wise.
    if let Some(epi) = epilogue.as_deref_mut().filter(|_| blk.lanes == 4) {
        let mut vectors = true;
        for (r, acc) in accs.iter().enumerate() {
            for (q, v) in acc.iter().enumerate() {
                let col = cx.var();
                out.push(Stmt::Set(
                    col,
                    add(var(blk.j), Expr::Int((q * blk.lanes) as i64)),
                ));
                let at = l.coords(cx, add(var(blk.i), Expr::Int(r as i64)), var(col));
                match epi.vector(cx, var(*v), at, col) {
                    Some(s) => out.extend(s),
                    None => vectors = false,
                }
            }
        }
        if vectors {
            return out;
        }
    }
    out = stores;
    for r in 0..blk.rows {
        let c = cx.var();
        let row = add(var(blk.i), Expr::Int(r as i64));
        let col = add(var(blk.j), var(c));
        let stored = Expr::Load(0, Box::new(l.out(cx, row.clone(), col.clone())));
        let body = finish(cx, l, epilogue, stored, row, col);
        out.push(serial(c, Expr::Int((blk.vectors * blk.lanes) as i64), body));
    }
    out
}
