//! Products of row-major tiles on the register micro-kernel ([`super::micro`]), for the
//! templates that multiply small blocks in thread-private arrays (tiled attention, SSD's
//! chunks): `out (+)= a·b` with `a`'s rows and `b`'s rows at strides, and the shape of the
//! micro-kernel for a count of columns.

use archc_kernels::ir::build::{add, bin, mul, serial, var};
use archc_kernels::ir::{Bin, Expr, Stmt, Var};

use super::index::Ctx;
use super::lanes::widest;
use super::micro::{micro, Block, Operands, Rows};
use super::schedule::Schedule;

/// `a` and the output of one product, both row-major: row `i` of `a` at `at + i·stride`,
/// its step `p` at `+ p·step`; output element `[i, j]` at `i·row + j`.
struct RowMajor {
    at: Var,
    stride: Expr,
    step: i64,
    row: i64,
}

impl Operands for RowMajor {
    fn a(&self, _: &Ctx, i: Expr, p: Expr) -> Expr {
        add(
            add(var(self.at), mul(i, self.stride.clone())),
            mul(p, Expr::Int(self.step)),
        )
    }

    fn out(&self, _: &Ctx, i: Expr, j: Expr) -> Expr {
        add(mul(i, Expr::Int(self.row)), j)
    }

    fn coords(&self, _: &Ctx, i: Expr, j: Expr) -> Vec<Expr> {
        vec![i, j]
    }
}

/// One product `out[i, j] (+)= Σₚ a[i, p]·b[p, j]` on the micro-kernel, over `rows` rows and
/// `panels` panels of `vectors · lanes` columns.
pub struct Product {
    /// `a`'s buffer, row 0's first element, and its row stride and step.
    pub a: (usize, Expr, Expr, i64),
    /// `b`'s buffer, panel 0's first element, from one panel to the next, and the step.
    pub b: (usize, Expr, Expr, Expr),
    /// The output buffer (a local) and its row length.
    pub out: (usize, i64),
    /// Rows of the output.
    pub rows: Expr,
    /// Panels of columns.
    pub panels: Expr,
    /// The reduced extent.
    pub kc: Expr,
    /// Whether the output's values are added to (else overwritten).
    pub accumulate: bool,
    /// Rows of the full micro-kernel, vectors across and lanes per vector.
    pub shape: (usize, usize, usize),
}

/// The statements of product `p`: every panel, its full row blocks, then its leftover rows
/// one at a time.
pub fn product(cx: &mut Ctx, p: &Product) -> Vec<Stmt> {
    let (mr, vectors, lanes) = p.shape;
    let (cb, ib, it) = (cx.var(), cx.var(), cx.var());
    let (i, j, panel, at, k_lo, kc) = (cx.var(), cx.var(), cx.var(), cx.var(), cx.var(), cx.var());
    let ops = RowMajor {
        at,
        stride: p.a.2.clone(),
        step: p.a.3,
        row: p.out.1,
    };
    let block = |rows: usize| Block {
        a: Rows::Panel {
            buf: p.a.0,
            at,
            stride: p.a.2.clone(),
            step: p.a.3,
        },
        b: p.b.0,
        b_step: p.b.3.clone(),
        out: p.out.0,
        rows,
        vectors,
        lanes,
        i,
        j,
        panel,
        k_lo,
        kc,
        later: Expr::Int(i64::from(p.accumulate)),
        last: Expr::Int(1),
    };
    let a_at = || Stmt::Set(at, add(p.a.1.clone(), mul(var(i), p.a.2.clone())));
    let mr_e = Expr::Int(mr as i64);
    let full = bin(Bin::Div, p.rows.clone(), mr_e.clone());
    let mut main = vec![Stmt::Set(i, mul(var(ib), mr_e.clone())), a_at()];
    main.extend(micro(cx, &ops, &block(mr), &mut None));
    let mut rest = vec![
        Stmt::Set(i, add(mul(full.clone(), mr_e.clone()), var(it))),
        a_at(),
    ];
    rest.extend(micro(cx, &ops, &block(1), &mut None));
    let per_panel = vec![
        Stmt::Set(j, mul(var(cb), Expr::Int((vectors * lanes) as i64))),
        Stmt::Set(panel, add(p.b.1.clone(), mul(var(cb), p.b.2.clone()))),
        serial(ib, full, main),
        serial(it, bin(Bin::Rem, p.rows.clone(), mr_e), rest),
    ];
    vec![
        Stmt::Set(k_lo, Expr::Int(0)),
        Stmt::Set(kc, p.kc.clone()),
        serial(cb, p.panels.clone(), per_panel),
    ]
}

/// The micro-kernel for a product with `n` output columns (a multiple of 4): the widest
/// vector (at most the target's) dividing `n`, as many of them across as divide `n`'s vectors
/// up to 4, and as many rows as the target's accumulator budget then allows. Returns
/// `(rows, vectors across, lanes)`.
pub fn columns(schedule: &Schedule, n: i64) -> (usize, usize, usize) {
    let lanes = usize::from(widest(schedule.lanes, n).unwrap_or(4));
    let vectors = (n / lanes as i64).max(1) as usize;
    let across = (1..=vectors.min(4))
        .rev()
        .find(|c| vectors.is_multiple_of(*c))
        .unwrap_or(1);
    let b = &schedule.blocking;
    let budget = b.mr * (b.nr / schedule.lanes.max(1)).max(1);
    ((budget / across).max(1), across, lanes)
}
