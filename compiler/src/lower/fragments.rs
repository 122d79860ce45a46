//! Tensor-core fragments in templates: where each element of a thread's share of an
//! `mma.m16n8k16` operand lies, as Kernel IR expressions of the thread's lane. These are the
//! PTX ISA's layouts; `archc_kernels::fragment` states them numerically for the interpreter,
//! which gathers a warp's matrices by them, so a template whose placement is wrong computes a
//! wrong product under `--device cuda-sim` as it would on a GPU.

use archc_kernels::ir::build::{add, axis, bin, f32, load, mul, serial, var};
use archc_kernels::ir::{Axis, Bin, Expr, Fragment, Stmt, Var};

use super::index::Ctx;

/// Threads in a warp.
pub const WARP: i64 = 32;

/// Threads of a block of the tensor-core templates: four warps.
pub const THREADS: i64 = 4 * WARP;

/// Padding of the rows of tiles staged in shared memory, in elements: a warp's fragment
/// reads down a column then spread over the banks.
pub const PAD: i64 = 8;

/// A thread's place in its warp, set from its thread index by [`Lane::of`].
pub struct Lane {
    /// The warp in the block.
    pub warp: Var,
    /// The lane's group, `lane / 4`.
    g: Var,
    /// The lane's place in its group, `lane % 4`.
    q: Var,
}

impl Lane {
    /// Fresh variables for a lane.
    pub fn new(cx: &mut Ctx) -> Lane {
        Lane {
            warp: cx.var(),
            g: cx.var(),
            q: cx.var(),
        }
    }

    /// Sets the place of thread `t` of the block.
    pub fn of(&self, t: Var) -> Vec<Stmt> {
        let lane = rem(var(t), WARP);
        vec![
            Stmt::Set(self.warp, div(var(t), WARP)),
            Stmt::Set(self.g, div(lane.clone(), 4)),
            Stmt::Set(self.q, rem(lane, 4)),
        ]
    }

    /// `(row, column)` in the 16 × 16 `A` of the thread's `A` element `e` (`0..8`):
    /// `(g + 8·((e/2) mod 2), 2q + e mod 2 + 8·(e/4))`.
    pub fn a(&self, e: &Expr) -> (Expr, Expr) {
        let row = add(var(self.g), mul(rem(div(e.clone(), 2), 2), int(8)));
        (row, add(self.pair(e), mul(div(e.clone(), 4), int(8))))
    }

    /// `(row, column)` in the 16 × 8 `B` of the thread's `B` element `e` (`0..4`):
    /// `(2q + e mod 2 + 8·(e/2), g)`.
    pub fn b(&self, e: &Expr) -> (Expr, Expr) {
        (
            add(self.pair(e), mul(div(e.clone(), 2), int(8))),
            var(self.g),
        )
    }

    /// `(row, column)` in the 16 × 8 `C` of the thread's accumulator `e` (`0..4`):
    /// `(g + 8·(e/2), 2q + e mod 2)`.
    pub fn c(&self, e: &Expr) -> (Expr, Expr) {
        (
            add(var(self.g), mul(div(e.clone(), 2), int(8))),
            self.pair(e),
        )
    }

    /// `2q + e mod 2`: the element's place in its lane's pair.
    fn pair(&self, e: &Expr) -> Expr {
        add(mul(var(self.q), int(2)), rem(e.clone(), 2))
    }
}

/// Thread `t`'s share of a `height × width` tile copied into shared array `tile` (rows padded
/// by [`PAD`]) from buffer `buf`, at the index `at` gives for a row and column of the tile,
/// with the condition that the element lies inside the operand (0 where it does not).
pub fn stage(
    cx: &mut Ctx,
    t: Var,
    (buf, tile): (usize, usize),
    (height, width): (i64, i64),
    at: &dyn Fn(&Ctx, Expr, Expr) -> (Expr, Expr),
) -> Stmt {
    let (e, x, r, c) = (cx.var(), cx.var(), cx.var(), cx.var());
    let slot = add(mul(var(r), int(width + PAD)), var(c));
    let (inside, index) = at(cx, var(r), var(c));
    let copy = Stmt::Store(tile, slot.clone(), load(buf, index));
    serial(
        e,
        int(height * width / THREADS),
        vec![
            Stmt::Set(x, add(mul(var(e), int(THREADS)), var(t))),
            Stmt::Set(r, div(var(x), width)),
            Stmt::Set(c, rem(var(x), width)),
            Stmt::Store(tile, slot, f32(0.0)),
            when(cx, inside, vec![copy]),
        ],
    )
}

/// `C ← A·B + C` on fragments at `(buffer, first element)`.
pub fn mma(a: (usize, Expr), b: (usize, Expr), c: (usize, Expr)) -> Stmt {
    let f = |(buf, at): (usize, Expr)| Fragment { buf, at };
    Stmt::Mma {
        a: f(a),
        b: f(b),
        c: f(c),
    }
}

/// `body` in Unroll loops over `loops` (variable, extent), the first outermost.
pub fn unroll(loops: &[(Var, i64)], body: Vec<Stmt>) -> Stmt {
    let mut body = body;
    for &(v, n) in loops.iter().rev() {
        body = vec![axis(Axis::Unroll, v, int(n), body)];
    }
    body.remove(0)
}

/// `body` only when `cond` holds.
pub fn when(cx: &mut Ctx, cond: Expr, body: Vec<Stmt>) -> Stmt {
    let once = Expr::Select(Box::new(cond), Box::new(int(1)), Box::new(int(0)));
    serial(cx.var(), once, body)
}

/// `body` on every thread of a block of [`THREADS`], as thread `tid`.
pub fn threads(tid: Var, body: Vec<Stmt>) -> Stmt {
    axis(Axis::Thread, tid, int(THREADS), body)
}

/// An integer constant.
pub fn int(n: i64) -> Expr {
    Expr::Int(n)
}

/// `e / d` for a constant `d`.
pub fn div(e: Expr, d: i64) -> Expr {
    bin(Bin::Div, e, int(d))
}

/// `e mod d` for a constant `d`.
pub fn rem(e: Expr, d: i64) -> Expr {
    bin(Bin::Rem, e, int(d))
}

/// `a < b`.
pub fn lt(a: Expr, b: Expr) -> Expr {
    bin(Bin::Lt, a, b)
}

/// `a && b`.
pub fn and(a: Expr, b: Expr) -> Expr {
    bin(Bin::And, a, b)
}
