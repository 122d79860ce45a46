//! Tensor-core fragments in templates: where each accumulator of a thread's share of an
//! `mma.m16n8k16` result lies, as Kernel IR expressions of the thread's lane, and the
//! `ldmatrix` statements that bring `A` and `B` fragments from shared memory, each thread
//! pointing at a row of an 8 × 8 matrix. These are the PTX ISA's layouts; `archc_kernels::fragment` states them numerically for the interpreter,
//! which gathers a warp's matrices by them, so a template whose placement is wrong computes a
//! wrong product under `--device cuda-sim` as it would on a GPU.

use archc_kernels::ir::build::{add, axis, bin, f32, load, mul, serial, var};
use archc_kernels::ir::{AsyncCopy, Axis, Bin, Expr, Fragment, Matrices, Stmt, Var};

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
    let slot = padded(int(0), width);
    stage_from(cx, (t, THREADS), (buf, tile, &slot), (height, width), at)
}

/// Where a tile's element `(r, c)` lies in shared memory when its rows of `width` elements
/// follow each other from element `first` on, padded by [`PAD`].
pub fn padded(first: Expr, width: i64) -> impl Fn(Expr, Expr) -> Expr {
    move |r, c| add(first.clone(), add(mul(r, int(width + PAD)), c))
}

/// Where a tile's element `(r, c)` lies in a shared array.
pub type Slot<'a> = &'a dyn Fn(Expr, Expr) -> Expr;

/// [`stage`] into shared array `tile`, element `(r, c)` of the tile where `slot` puts it, as
/// thread `t` of a block of `threads` (which divides the tile's elements).
pub fn stage_from(
    cx: &mut Ctx,
    (t, threads): (Var, i64),
    (buf, tile, slot): (usize, usize, Slot),
    (height, width): (i64, i64),
    at: &dyn Fn(&Ctx, Expr, Expr) -> (Expr, Expr),
) -> Stmt {
    let (e, x, r, c) = (cx.var(), cx.var(), cx.var(), cx.var());
    let slot = slot(var(r), var(c));
    let (inside, index) = at(cx, var(r), var(c));
    let copy = Stmt::Store(tile, slot.clone(), load(buf, index));
    serial(
        e,
        int(height * width / threads),
        vec![
            Stmt::Set(x, add(mul(var(e), int(threads)), var(t))),
            Stmt::Set(r, div(var(x), width)),
            Stmt::Set(c, rem(var(x), width)),
            Stmt::Store(tile, slot, f32(0.0)),
            when(cx, inside, vec![copy]),
        ],
    )
}

/// Thread `t`'s (of a block of `threads`) share of copying a `height × width` tile into
/// shared array `tile` (element
/// `(r, c)` where `slot` puts it, which keeps each chunk contiguous and aligned) from
/// buffer `buf`, asynchronously: `cp.async`
/// copies of `chunk` elements, each reading the count `at` gives for a row and a column of the
/// tile (zeros after) from the index it gives. The caller waits for them.
///
/// Consecutive threads copy consecutive chunks of a row, or, with `together` rows (more than
/// 1, dividing `height`; else it is taken as 1), the same chunk of that many consecutive rows
/// first: a layout
/// whose rows of a chunk are 16 bytes apart (core matrices) then spreads a warp's copies over
/// the banks, where a row's chunks would all land on the same ones.
pub fn copy_chunks(
    cx: &mut Ctx,
    (t, threads): (Var, i64),
    (buf, tile, slot): (usize, usize, Slot),
    (height, width, chunk, together): (i64, i64, i64, i64),
    at: &dyn Fn(&Ctx, Expr, Expr) -> (Expr, Expr),
) -> Stmt {
    let (e, x, r, c) = (cx.var(), cx.var(), cx.var(), cx.var());
    let per_row = width / chunk;
    let (valid, index) = at(cx, var(r), var(c));
    let copy = Stmt::CopyAsync(AsyncCopy {
        dst: tile,
        dst_at: slot(var(r), var(c)),
        src: buf,
        src_at: index,
        width: chunk as u8,
        valid,
    });
    let chunks = height * per_row;
    // The last round's threads past the tile's end copy nothing.
    let copy = match chunks % threads {
        0 => copy,
        _ => when(cx, lt(var(r), int(height)), vec![copy]),
    };
    let x_at = add(mul(var(e), int(threads)), var(t));
    let together = if height % together.max(1) == 0 {
        together
    } else {
        1
    };
    let place = match together {
        ..=1 => vec![
            Stmt::Set(x, x_at),
            Stmt::Set(r, div(var(x), per_row)),
            Stmt::Set(c, mul(rem(var(x), per_row), int(chunk))),
        ],
        g => {
            // x = ((group of rows · per_row) + chunk) · g + row in the group.
            let (rest, group) = (div(var(x), g), div(div(var(x), g), per_row));
            vec![
                Stmt::Set(x, x_at),
                Stmt::Set(r, add(mul(group, int(g)), rem(var(x), g))),
                Stmt::Set(c, mul(rem(rest, per_row), int(chunk))),
            ]
        }
    };
    serial(
        e,
        int((chunks + threads - 1) / threads),
        [place, vec![copy]].concat(),
    )
}

/// A thread of a block as an `ldmatrix` sees it: lanes `8i..8i + 8` of each warp point at the
/// rows of matrix `i`. These are expressions of the thread index the statement binds.
pub struct Pointer {
    /// The thread's warp in the block.
    pub warp: Expr,
    /// The matrix (`0..4`) whose row the thread points at.
    pub matrix: Expr,
    /// The row (`0..8`) of that matrix.
    pub row: Expr,
}

impl Pointer {
    /// For an `A` fragment's four 8 × 8 quarters (registers 0–3: rows 0–7 then 8–15 of
    /// columns 0–7, then the same of columns 8–15), the row `(0..16)` and first column
    /// (0 or 8) of the 16 × 16 `A` the thread points at.
    pub fn a_quarter(&self) -> (Expr, Expr) {
        let row = add(mul(rem(self.matrix.clone(), 2), int(8)), self.row.clone());
        (row, mul(div(self.matrix.clone(), 2), int(8)))
    }

    /// For two `B` fragments side by side (registers 0–1 of the first 8 columns, 2–3 of the
    /// next 8), which of the two (0 or 1) and which half of the 16 rows of `B` (0: rows
    /// 0–7, 1: rows 8–15) the thread's matrix is.
    pub fn b_pair(&self) -> (Expr, Expr) {
        (div(self.matrix.clone(), 2), rem(self.matrix.clone(), 2))
    }
}

/// `ldmatrix` of `count` 8 × 8 matrices (transposed when `trans`) from shared array `src`
/// into local `dst` from element `at`: each thread points at the element `row_at` gives for
/// its [`Pointer`].
pub fn load_matrices(
    cx: &mut Ctx,
    (dst, at): (usize, Expr),
    src: usize,
    (count, trans): (u8, bool),
    row_at: &dyn Fn(&Pointer) -> Expr,
) -> Stmt {
    let t = cx.var();
    let lane = rem(var(t), WARP);
    let p = Pointer {
        warp: div(var(t), WARP),
        matrix: div(lane.clone(), 8),
        row: rem(lane, 8),
    };
    Stmt::LoadMatrix(Matrices {
        dst: Fragment { buf: dst, at },
        src,
        thread: t,
        row: row_at(&p),
        count,
        trans,
    })
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
