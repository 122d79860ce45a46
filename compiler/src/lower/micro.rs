//! The register micro-kernel: a `rows` × `vectors·lanes` block of outputs held in vector
//! accumulators (`Set` variables, so they live in registers) through one slice of the reduced
//! axis. The blocked matmul runs it on packed panels; tiled attention runs it for `Q·Kᵀ` (on a
//! packed panel of `Kᵀ`) and `P·V` (on the rows of `v` in place).
//!
//! Per step it loads the packed panel's `vectors` vectors of `b` and broadcasts one element of
//! `a` per row, for `rows · vectors` FMAs. With Cranelift's 16 registers, 4 rows × 2 vectors
//! take 8 accumulators: Cranelift schedules the next step's loads early, and 6 rows (12
//! accumulators) spilled on every step, 1.3× slower.

use archc_kernels::ir::build::{add, axis, mul, serial, sub, var};
use archc_kernels::ir::{Axis, Expr, Ieee32, Stmt, Var};

use super::index::Ctx;
use super::matmul::{finish, Epilogue};

/// The index arithmetic of the operand a micro-kernel reads rows of and the output it writes.
pub trait Operands {
    /// The index of `a[i, p]` (for [`Rows::Direct`]).
    fn a(&self, cx: &Ctx, i: Expr, p: Expr) -> Expr;
    /// The index of output element `[i, j]`.
    fn out(&self, cx: &Ctx, i: Expr, j: Expr) -> Expr;
    /// The output element's coordinates, for an epilogue.
    fn coords(&self, cx: &Ctx, i: Expr, j: Expr) -> Vec<Expr>;
}

/// Where a micro-kernel reads `a`.
#[derive(Clone)]
pub enum Rows {
    /// In buffer `buf` at [`Operands::a`]: each row's elements are contiguous, a running index
    /// per row.
    Direct(usize),
    /// In `buf` from `at`: row `r`'s element of a step at `at + r·stride`, the next step's
    /// `step` further, so one running index serves every row. A packed panel has the block's
    /// rows side by side (`stride` 1, `step` the rows); a row-major tile has `stride` its row
    /// length and `step` 1.
    Panel {
        /// The buffer.
        buf: usize,
        /// Row 0's first element.
        at: Var,
        /// From one row's element to the next row's.
        stride: Expr,
        /// From one step's elements to the next step's.
        step: i64,
    },
}

/// Where one micro-kernel call works and which slice it is in.
pub struct Block {
    /// Where `a` comes from.
    pub a: Rows,
    /// The buffer holding `b`'s rows: `vectors·lanes` contiguous columns per step.
    pub b: usize,
    /// From one step's row of `b` to the next.
    pub b_step: Expr,
    /// The output buffer.
    pub out: usize,
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
    pub later: Expr,
    /// 1 on the last slice (the epilogue runs), else 0.
    pub last: Expr,
}

/// One block: load (or zero) the accumulators, the slice's steps, then store the partial sums
/// or, on the last slice, finish them.
pub fn micro(
    cx: &mut Ctx,
    l: &dyn Operands,
    blk: &Block,
    epilogue: &mut Option<&mut dyn Epilogue>,
) -> Vec<Stmt> {
    let p = cx.var();
    let bs: Vec<Var> = (0..blk.vectors).map(|_| cx.var()).collect();
    let accs: Vec<Vec<Var>> = (0..blk.rows).map(|_| cx.vars(blk.vectors)).collect();
    let row = |r: usize| add(var(blk.i), Expr::Int(r as i64));
    let (lanes, width) = (blk.lanes, blk.lanes as u8);
    let col = |q: usize| add(var(blk.j), Expr::Int((q * lanes) as i64));
    // Running indices of this step's elements: element p of each row of `a`, row p of the
    // panel. They advance by one step per iteration (Cranelift would otherwise recompute each
    // from the row number, every iteration).
    // A panel needs one running index for all rows.
    let (abuf, rows_at, a_step) = match &blk.a {
        Rows::Direct(buf) => (*buf, (0..blk.rows).map(|_| cx.var()).collect(), 1),
        Rows::Panel { buf, step, .. } => (*buf, vec![cx.var()], *step),
    };
    let a_at = |r: usize| match &blk.a {
        Rows::Direct(_) => var(rows_at[r]),
        Rows::Panel { stride, .. } => add(
            var(rows_at[0]),
            match stride {
                Expr::Int(s) => Expr::Int(r as i64 * s),
                e => mul(Expr::Int(r as i64), e.clone()),
            },
        ),
    };
    let b_at = cx.var();
    let mut out: Vec<Stmt> = match &blk.a {
        Rows::Direct(_) => rows_at
            .iter()
            .enumerate()
            .map(|(r, v)| Stmt::Set(*v, l.a(cx, row(r), var(blk.k_lo))))
            .collect(),
        Rows::Panel { at, .. } => vec![Stmt::Set(rows_at[0], var(*at))],
    };
    out.push(Stmt::Set(b_at, var(blk.panel)));
    let mut step: Vec<Stmt> = bs
        .iter()
        .enumerate()
        .map(|(q, b)| {
            let at = add(var(b_at), Expr::Int((q * blk.lanes) as i64));
            Stmt::Set(*b, Expr::VLoad(blk.b, Box::new(at), width))
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
    step.push(Stmt::Set(b_at, add(var(b_at), blk.b_step.clone())));
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
            reload.push(Stmt::Set(*v, Expr::VLoad(blk.out, Box::new(at), width)));
        }
    }
    if blk.later != Expr::Int(0) {
        out.push(serial(cx.var(), blk.later.clone(), reload));
    }
    out.push(axis(Axis::Reduce, p, var(blk.kc), step));
    let stores: Vec<Stmt> = accs
        .iter()
        .enumerate()
        .flat_map(|(r, acc)| {
            acc.iter()
                .enumerate()
                .map(|(q, v)| Stmt::VStore(blk.out, l.out(cx, row(r), col(q)), var(*v), width))
                .collect::<Vec<_>>()
        })
        .collect();
    if epilogue.is_none() {
        out.extend(stores);
        return out;
    }
    out.push(serial(
        cx.var(),
        sub(Expr::Int(1), blk.last.clone()),
        stores.clone(),
    ));
    let done = finished(cx, l, blk, &accs, stores, epilogue);
    out.push(serial(cx.var(), blk.last.clone(), done));
    out
}

/// The last slice's block, finished through the epilogue: in registers, a vector at a time,
/// when it has a vector form; otherwise stored and each element finished in place (it is in
/// L1).
fn finished(
    cx: &mut Ctx,
    l: &dyn Operands,
    blk: &Block,
    accs: &[Vec<Var>],
    stores: Vec<Stmt>,
    epilogue: &mut Option<&mut dyn Epilogue>,
) -> Vec<Stmt> {
    let mut out = Vec::new();
    if let Some(epi) = epilogue.as_deref_mut() {
        let mut vectors = true;
        for (r, acc) in accs.iter().enumerate() {
            for (q, v) in acc.iter().enumerate() {
                let col = cx.var();
                out.push(Stmt::Set(
                    col,
                    add(var(blk.j), Expr::Int((q * blk.lanes) as i64)),
                ));
                let at = l.coords(cx, add(var(blk.i), Expr::Int(r as i64)), var(col));
                match epi.vector(cx, (var(*v), blk.lanes as u8), at, col) {
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
        let stored = Expr::Load(blk.out, Box::new(l.out(cx, row.clone(), col.clone())));
        let body = finish(cx, l, epilogue, stored, row, col);
        out.push(serial(c, Expr::Int((blk.vectors * blk.lanes) as i64), body));
    }
    out
}
