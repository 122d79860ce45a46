//! How the tensor-core matmul ([`super::tensor_cores`]) brings its slices of `a` and `b` into
//! shared memory: two stages, so that while the warps multiply one slice, the next is on its
//! way. Each thread issues its share of the next slice as `cp.async` copies of 8 elements
//! (16 bytes), which land while it computes, and waits for them only before the barrier
//! that precedes their use:
//!
//! ```text
//! thread for t { if slices > 0: copies of slice 0 → stage 0; commit }
//! serial for s in 0..slices {
//!   thread for t { if s + 1 < slices: copies of slice s + 1 → stage (s + 1) mod 2; commit;
//!                  wait until slice s's copies have landed }
//!   barrier
//!   ldmatrix and mma on stage s mod 2
//!   barrier          (stage s mod 2 is overwritten by slice s + 2)
//! }
//! ```
//!
//! A copy needs both addresses 16-byte aligned: every chunk of 8 starts at a multiple of 8
//! elements when the reduced length and the column count are multiples of 8. That is known only at run time (the dims are symbolic), so each thread
//! tests it, the same way in every thread, and otherwise stages the slice with plain loads
//! and stores, which need no waiting. A chunk that runs past an operand's edge reads only
//! what lies inside (the copy's source size) and fills the rest with zeros.

use archc_kernels::ir::build::{add, mul, sub, var};
use archc_kernels::ir::{Bin, Expr, Stmt, Un};

use super::tile_grid::{Block, Buffers, TILE};
use super::Layout;
use crate::lower::fragments::{and, copy_chunks, int, lt, rem, stage_from, when, PAD};
use crate::lower::index::Ctx;

/// The reduced slice staged at a time.
pub(super) const SLICE: i64 = 32;
/// The slices in shared memory at once.
pub(super) const STAGES: i64 = 2;
/// Elements of one asynchronous copy: 16 bytes of a 16-bit type.
const CHUNK: i64 = 8;
/// The elements of one stage of `a`'s tile (`TILE` rows of `SLICE`) and of `b`'s (`SLICE`
/// rows of `TILE`), rows padded by `PAD`.
pub(super) const A_STAGE: i64 = TILE * (SLICE + PAD);
pub(super) const B_STAGE: i64 = SLICE * (TILE + PAD);

/// The staging of one matmul's slices.
pub(super) struct Staging<'l> {
    l: &'l Layout<'l>,
    /// The output's rows.
    m: Expr,
}

/// One operand's tile of a slice, as staged: its shape in shared memory, and for a row `r` and
/// column `c` of it, whether the row lies inside the operand, how many elements from `c` on
/// lie inside its row, and the index of element `(r, c)`.
struct Tile<'a> {
    rows: i64,
    columns: i64,
    at: Place<'a>,
}

/// For a row and column of a staged tile: whether the row lies inside the operand, how many
/// elements from the column on lie inside the row, and the element's index.
type Place<'a> = &'a dyn Fn(&Ctx, Expr, Expr) -> (Expr, Expr, Expr);

impl<'l> Staging<'l> {
    /// The staging of the matmul laid out as `l` with `m` rows.
    pub fn new(l: &'l Layout<'l>, m: &Expr) -> Staging<'l> {
        Staging { l, m: m.clone() }
    }

    /// Thread `block.t`'s share of staging slice `s` into stage `s mod STAGES`: asynchronous
    /// copies when every chunk is aligned, plain loads and stores when not.
    pub fn slice(&self, cx: &mut Ctx, block: &Block, bufs: &Buffers, s: Expr) -> Vec<Stmt> {
        let (l, m) = (self.l, &self.m);
        let (i0, j0, t) = (block.i0, block.j0, block.t);
        let k0 = mul(s.clone(), int(SLICE));
        let stage = rem(s, STAGES);
        let (k, n) = (l.k.clone(), l.n.clone());
        let ka = k0.clone();
        let a_at = move |cx: &Ctx, r: Expr, c: Expr| {
            let (i, p) = (add(var(i0), r), add(ka.clone(), c));
            (
                lt(i.clone(), m.clone()),
                sub(l.k.clone(), p.clone()),
                l.a(cx, i, p),
            )
        };
        let b_at = move |cx: &Ctx, r: Expr, c: Expr| {
            let (p, j) = (add(k0.clone(), r), add(var(j0), c));
            (
                lt(p.clone(), l.k.clone()),
                sub(l.n.clone(), j.clone()),
                l.b(cx, p, j),
            )
        };
        let a = Tile {
            rows: TILE,
            columns: SLICE,
            at: &a_at,
        };
        let b = Tile {
            rows: SLICE,
            columns: TILE,
            at: &b_at,
        };
        let from = [
            (bufs.a, bufs.a_tile, mul(stage.clone(), int(A_STAGE)), &a),
            (bufs.b, bufs.b_tile, mul(stage, int(B_STAGE)), &b),
        ];
        let mut copies = Vec::new();
        let mut plain = Vec::new();
        for (src, dst, first, tile) in from {
            let shape = (tile.rows, tile.columns, CHUNK);
            copies.push(copy_chunks(
                cx,
                t,
                (src, dst, first.clone()),
                shape,
                &|cx, r, c| {
                    let (row, left, index) = (tile.at)(cx, r, c);
                    (
                        Expr::Select(Box::new(row), Box::new(left), Box::new(int(0))),
                        index,
                    )
                },
            ));
            plain.push(stage_from(
                cx,
                t,
                (src, dst, first),
                (tile.rows, tile.columns),
                &|cx, r, c| {
                    let (row, left, index) = (tile.at)(cx, r, c);
                    (and(row, lt(int(0), left)), index)
                },
            ));
        }
        let eighths = |x: Expr| Expr::Bin(Bin::Eq, Box::new(rem(x, CHUNK)), Box::new(int(0)));
        let aligned = and(eighths(k), eighths(n));
        let not = Expr::Un(Un::Not, Box::new(aligned.clone()));
        vec![when(cx, aligned, copies), when(cx, not, plain)]
    }
}
