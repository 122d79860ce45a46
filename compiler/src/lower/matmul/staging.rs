//! How the GPU matmuls ([`super::tensor_cores`], [`super::thread_tiles`],
//! [`super::warpgroups`]) bring their slices of `a` and `b` into shared memory, each tile as
//! its template reads it ([`Stage`]): three stages, so that while the threads multiply one
//! slice, the next two are on their way (four for warpgroup products, one of which is still
//! being multiplied while the threads issue the next: see [`super::warpgroups`]). Each thread issues its share of a slice as `cp.async`
//! copies of 16 bytes (8 elements of a 16-bit type, 4 of f32), which land while it computes,
//! and waits for them only before the barrier that precedes their use. The barrier also
//! tells every thread that all are done with the slice before, whose stage the next copies
//! overwrite, so one barrier per slice suffices (as in CUTLASS's multistage GEMM):
//!
//! ```text
//! thread for t { copies of slices 0 and 1 → stages 0 and 1, a group each }
//! serial for s in 0..max(slices, 1) {
//!   thread for t { wait until slice s's group has landed }
//!   barrier
//!   thread for t { if s + 2 < slices: copies of slice s + 2 → stage (s + 2) mod 3; commit }
//!   the template's work on stage s mod 3
//! }
//! ```
//!
//! (A wait commits the copies issued since the last as a group, empty or not, so each
//! iteration's first wait adds an empty group, and waiting for slice s leaves two newer.)
//!
//! A copy needs both addresses 16-byte aligned: every chunk starts at a multiple of its
//! elements when the reduced length and the column count are multiples of a chunk. That is
//! known only at run time (the dims are symbolic), so each thread tests it, the same way in
//! every thread, and otherwise fills the same stages with plain loads and stores, which need
//! no waiting (as it does when an operand is stored in another type than the tiles). A chunk
//! that runs past an operand's edge reads only what lies inside (the copy's source size) and
//! fills the rest with zeros.

use archc_kernels::ir::build::{add, mul, serial, sub, var};
use archc_kernels::ir::{Bin, Elem, Expr, Scope, Stmt, Un};

use super::tile_grid::{Block, Buffers};
use super::Layout;
use crate::graph::TensorType;
use crate::lower::fragments::{and, copy_chunks, int, lt, padded, rem, stage_from, when, PAD};
use crate::lower::index::{div_up, Ctx};

/// The slices in shared memory at once when the threads' own work on a slice is over by the
/// next barrier.
pub(super) const STAGES: i64 = 3;
/// How many slices ahead of the one multiplied the copies run.
const AHEAD: i64 = 2;
/// A wait that waits for nothing: more groups than are ever in flight.
const IN_FLIGHT: u8 = 2 * AHEAD as u8 + 2;
/// The bytes of one asynchronous copy.
const CHUNK_BYTES: i64 = 16;

/// The staging of one matmul's slices.
pub(super) struct Staging<'l> {
    l: &'l Layout<'l>,
    /// The output's rows.
    m: Expr,
    /// What a stage holds, and how.
    stage: Stage,
    /// The elements of one copy.
    chunk: i64,
    /// Whether both operands are stored as the shared tiles are, which copies ask.
    copies: bool,
}

/// What one stage holds: a slice of the reduced axis for the block's tile of the output, `a`'s
/// rows of the tile and `b`'s columns, arranged in shared memory as `arrangement` says; and
/// how many stages there are.
#[derive(Clone, Copy)]
pub(super) struct Stage {
    /// The block's tile of the output: rows and columns.
    pub tile: (i64, i64),
    /// The reduced elements of a slice.
    pub slice: i64,
    /// How the tiles lie.
    pub arrangement: Arrangement,
    /// The stages in shared memory, slice `s` in stage `s mod stages`: at least
    /// [`AHEAD`]` + 1`, and one more for each slice whose product may still read its stage
    /// after the barrier that follows its own.
    pub stages: i64,
}

impl Stage {
    /// The elements of one stage of `a`'s tile (the tile's rows of a slice) and of `b`'s (a
    /// slice's rows of the tile's columns).
    pub const fn lengths(&self) -> (i64, i64) {
        let ((rows, columns), slice) = (self.tile, self.slice);
        match self.arrangement {
            Arrangement::Padded => (rows * (slice + PAD), slice * (columns + PAD)),
            Arrangement::Warpgroup => (rows * slice, slice * columns),
        }
    }

    /// How many rows of `a`'s tile and of `b`'s each chunk is copied for by consecutive
    /// threads before the next chunk ([`copy_chunks`]): 8 for `b`'s core matrices, whose 8
    /// rows of a chunk are 16 bytes apart where a row's chunks are 128 apart (one bank).
    fn together(&self) -> [i64; 2] {
        match self.arrangement {
            Arrangement::Padded => [1, 1],
            Arrangement::Warpgroup => [1, 8],
        }
    }

    /// Where element `(r, c)` of `a`'s tile and of `b`'s lie, for a stage whose tiles start
    /// at elements `a_first` and `b_first`.
    fn slots(&self, a_first: Expr, b_first: Expr) -> [Box<dyn Fn(Expr, Expr) -> Expr>; 2] {
        let ((rows, columns), slice) = (self.tile, self.slice);
        match self.arrangement {
            Arrangement::Padded => [
                Box::new(padded(a_first, slice)),
                Box::new(padded(b_first, columns)),
            ],
            Arrangement::Warpgroup => [
                Box::new(super::warpgroups::a_slot(a_first, rows)),
                Box::new(super::warpgroups::b_slot(b_first, columns)),
            ],
        }
    }
}

/// How a stage's tiles lie in shared memory.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Arrangement {
    /// Row after row, padded by `PAD`, as the templates that load fragments or registers
    /// read them.
    Padded,
    /// As warpgroup products read them ([`super::warpgroups`]).
    Warpgroup,
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
    /// The staging of the matmul laid out as `l` with `m` rows, a `stage` at a time, into
    /// shared tiles of `elem`.
    pub fn new(l: &'l Layout<'l>, m: &Expr, stage: Stage, elem: Elem) -> Staging<'l> {
        let stored = |t: &TensorType| crate::lower::elem(t.dtype) == elem;
        Staging {
            l,
            m: m.clone(),
            stage,
            chunk: CHUNK_BYTES / elem.size() as i64,
            copies: stored(l.a) && stored(l.b),
        }
    }

    /// The loop over the slices (see the module doc): `work` gives the statements that use
    /// a slice from the slice's index.
    pub fn pipeline(
        &self,
        cx: &mut Ctx,
        (block, bufs): (&Block, &Buffers),
        work: &mut dyn FnMut(&mut Ctx, Expr) -> Vec<Stmt>,
    ) -> Vec<Stmt> {
        // At least one slice, all zeros for an empty reduced axis: a template whose first
        // product overwrites its accumulators then leaves zeros in them.
        let slices = div_up(self.l.k.clone(), int(self.stage.slice));
        let count = Expr::Bin(Bin::Max, Box::new(slices), Box::new(int(1)));
        let mut prologue = Vec::new();
        for s in 0..AHEAD {
            let copies = self.slice_copies(cx, block, bufs, int(s));
            prologue.push(when(cx, lt(int(s), count.clone()), copies));
            prologue.push(Stmt::AsyncWait(IN_FLIGHT));
        }
        let slice = cx.var();
        let next = add(var(slice), int(AHEAD));
        let issue = self.slice_copies(cx, block, bufs, next.clone());
        let ahead = vec![
            when(cx, lt(next, count.clone()), issue),
            Stmt::AsyncWait(IN_FLIGHT),
        ];
        // At slice s's wait the groups in flight end ..., s, empty, s + 1, and the wait
        // commits one more empty group: waiting until two are left completes s (with two
        // slices ahead: the prologue's two groups, then per iteration an empty one and one
        // of copies).
        let mut each = vec![
            block.threads(vec![Stmt::AsyncWait(2)]),
            Stmt::Barrier(Scope::Block),
            block.threads(ahead),
        ];
        each.extend(work(cx, var(slice)));
        vec![block.threads(prologue), serial(slice, count, each)]
    }

    /// Thread `block.t`'s share of staging slice `s` into stage `s mod stages`: asynchronous
    /// copies when every chunk is aligned, plain loads and stores when not.
    fn slice_copies(&self, cx: &mut Ctx, block: &Block, bufs: &Buffers, s: Expr) -> Vec<Stmt> {
        let (l, m, slice, chunk) = (self.l, &self.m, self.stage.slice, self.chunk);
        let (rows, columns) = self.stage.tile;
        let (i0, j0, t) = (block.i0, block.j0, (block.t, block.threads));
        let (a_len, b_len) = self.stage.lengths();
        let k0 = mul(s.clone(), int(slice));
        let stage = rem(s, self.stage.stages);
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
            rows,
            columns: slice,
            at: &a_at,
        };
        let b = Tile {
            rows: slice,
            columns,
            at: &b_at,
        };
        let [a_slot, b_slot] = self
            .stage
            .slots(mul(stage.clone(), int(a_len)), mul(stage, int(b_len)));
        let [a_together, b_together] = self.stage.together();
        let from = [
            (bufs.a, bufs.a_tile, &a_slot, (&a, a_together)),
            (bufs.b, bufs.b_tile, &b_slot, (&b, b_together)),
        ];
        let mut copies = Vec::new();
        let mut plain = Vec::new();
        for (src, dst, slot, (tile, together)) in from {
            let shape = (tile.rows, tile.columns, chunk, together);
            copies.push(copy_chunks(
                cx,
                t,
                (src, dst, slot.as_ref()),
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
                (src, dst, slot.as_ref()),
                (tile.rows, tile.columns),
                &|cx, r, c| {
                    let (row, left, index) = (tile.at)(cx, r, c);
                    (and(row, lt(int(0), left)), index)
                },
            ));
        }
        if !self.copies {
            return plain;
        }
        let whole = |x: Expr| Expr::Bin(Bin::Eq, Box::new(rem(x, chunk)), Box::new(int(0)));
        let aligned = and(whole(k), whole(n));
        let not = Expr::Un(Un::Not, Box::new(aligned.clone()));
        vec![when(cx, aligned, copies), when(cx, not, plain)]
    }
}
