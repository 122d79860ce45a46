//! The warpgroup matmul for Hopper (sm_90a): `wgmma.mma_async` m64n64k16 on f16 or bf16
//! operands read straight from shared memory, with f32 accumulation, for a matmul whose `a`
//! and `b` are stored in one of those types (`--dtype bf16`).
//!
//! A block is one warpgroup (four warps, 128 threads). It computes a 64 × 64 tile of the
//! output, whose accumulators stay in its threads' registers (32 each, as `wgmma` places
//! them) for the whole reduced axis:
//!
//! ```text
//! grid for tile in 0..batches · ⌈M/64⌉ · ⌈N/64⌉ {
//!   thread for t in 0..128 { acc = 0 }
//!   serial for slice in 0..⌈K/64⌉ {     (pipelined as the mma.sync template: see staging.rs)
//!     thread for t in 0..128 { wait for the slice's a (64 × 64) and b (64 × 64) in shared memory }
//!     barrier
//!     thread for t in 0..128 { cp.async of the slice two ahead (0 past the edges) }
//!     wgmma m64n64k64 acc += a · b      (four instructions, complete when it ends)
//!   }
//!   thread for t in 0..128 { the epilogue on each accumulator inside the output }
//! }
//! ```
//!
//! No thread loads a fragment: the tensor cores read the staged tiles through their
//! descriptors, so the tiles lie as those describe ([`archc_kernels::warpgroup`]):
//! - `a`'s tile is K-major with the 32-byte swizzle: each k16 slab is a 64 × 16 block of
//!   1024 elements, rows of 16 elements (32 bytes), the two halves of rows 4–7 of every 8
//!   swapped. (K-major with no swizzle is the one layout whose descriptor the sources
//!   disagree on.)
//! - `b`'s tile is MN-major with no swizzle: 8 × 8 core matrices of 8 consecutive columns in
//!   each of 8 consecutive k, side by side along n (64 elements apart), the next 8 k after
//!   (512 apart).
//!
//! `cp.async` copies 8 consecutive elements of a row of `a` (along k) or of `b` (along n) at
//! a time, and both layouts keep such 8 together, 16-byte aligned.

use archc_kernels::ir::build::{add, mul, var};
use archc_kernels::ir::{Expr, Fragment, Local, SharedTile, Stmt, WarpgroupMma};

use super::staging::{Arrangement, Staging, STAGES};
use super::tile_grid::{self, arrays, kernel, Block, Buffers, TILE};
use super::{finish, Epilogue, Layout};
use crate::graph::TensorType;
use crate::lower::fragments::{and, div, int, lt, rem, unroll, when, Lane};
use crate::lower::index::Ctx;

/// The reduced slice staged in shared memory: four k16 steps.
const SLICE: i64 = 64;
/// A stage's tiles of `a` and `b` in shared memory.
const A_STAGE: i64 = Arrangement::Warpgroup.lengths(SLICE).0;
const B_STAGE: i64 = Arrangement::Warpgroup.lengths(SLICE).1;
/// Accumulators per thread: the 64 × 64 tile over 128 threads.
const ACCUMULATORS: i64 = TILE * TILE / 128;
/// Elements of one k16 slab of `a`'s tile (64 rows of 16).
const A_SLAB: i64 = TILE * 16;
/// Elements between `b`'s core matrices adjacent along k: a row of 8 of them along n.
const B_LEAD: i64 = 8 * TILE;

/// Whether the warpgroup template computes a matmul of `a` (in buffer `abuf`) and `b`: the
/// target has warpgroup products, and the tensor-core template would otherwise (blocks of
/// four warps, both operands in one 16-bit float type, neither block-quantized).
pub(super) fn applies(
    cx: &Ctx,
    (a, abuf): (&TensorType, usize),
    (b, bbuf): (&TensorType, usize),
) -> bool {
    cx.schedule.warpgroup_mma && super::tensor_cores::applies(cx, (a, abuf), (b, bbuf))
}

/// Where element `(r, c)` of `a`'s tile (row `r`, k `c`) lies in a stage starting at `first`.
pub(super) fn a_slot(first: Expr) -> impl Fn(Expr, Expr) -> Expr {
    move |r, c| {
        let slab = mul(div(c.clone(), 16), int(A_SLAB));
        let row = add(
            mul(div(r.clone(), 8), int(128)),
            mul(rem(r.clone(), 8), int(16)),
        );
        // Rows 4–7 of each 8 have their halves of 8 swapped: bit 4 of the byte address
        // flipped where bit 7 is set.
        let half = rem(add(div(rem(c.clone(), 16), 8), div(rem(r, 8), 4)), 2);
        let within = add(mul(half, int(8)), rem(c, 8));
        add(first.clone(), add(slab, add(row, within)))
    }
}

/// Where element `(r, c)` of `b`'s tile (k `r`, column `c`) lies in a stage starting at
/// `first`.
pub(super) fn b_slot(first: Expr) -> impl Fn(Expr, Expr) -> Expr {
    move |r, c| {
        let core = add(
            mul(div(r.clone(), 8), int(B_LEAD)),
            mul(div(c.clone(), 8), int(64)),
        );
        let within = add(mul(rem(r, 8), int(8)), rem(c, 8));
        add(first.clone(), add(core, within))
    }
}

/// The kernel body and its locals and shared arrays (see the module doc) for a matmul whose
/// rows are merged batch rows when `flat`: `a` and `b` from buffers `abuf` and `bbuf`, the
/// output through `epilogue`; its arrays are buffers `first..`.
pub(super) fn matmul(
    cx: &mut Ctx,
    (out, flat): (&TensorType, bool),
    [(a, abuf), (b, bbuf)]: [(&TensorType, usize); 2],
    first: usize,
    mut epilogue: Option<&mut dyn Epilogue>,
) -> (Vec<Stmt>, Vec<Local>, Vec<Local>) {
    let elem = crate::lower::elem(a.dtype);
    let operands = [(a, abuf), (b, bbuf)];
    let grid = kernel(
        cx,
        (out, flat),
        operands,
        (first, 1, ACCUMULATORS),
        |cx, (l, m), at, bufs| {
            let staging = Staging::new(l, m, (SLICE, Arrangement::Warpgroup), elem);
            let mut body = staging.pipeline(cx, (&at, bufs), &mut |_, s| vec![product(bufs, s)]);
            body.push(results(cx, (l, m), &at, bufs, &mut epilogue));
            body
        },
    );
    let (locals, shared) = arrays(
        elem,
        [ACCUMULATORS, 0, 0],
        [STAGES * A_STAGE, STAGES * B_STAGE],
    );
    (grid, locals, shared)
}

/// The warpgroup's product of slice `s`'s stage.
fn product(bufs: &Buffers, s: Expr) -> Stmt {
    let stage = rem(s, STAGES);
    Stmt::WarpgroupMma(WarpgroupMma {
        a: SharedTile::swizzled(
            bufs.a_tile,
            mul(stage.clone(), int(A_STAGE)),
            128,
            A_SLAB as u32,
        ),
        b: SharedTile::mn_major(
            bufs.b_tile,
            mul(stage, int(B_STAGE)),
            (B_LEAD as u32, 64),
            2 * B_LEAD as u32,
        ),
        c: Fragment {
            buf: bufs.accumulators,
            at: int(0),
        },
        n: TILE as u16,
        k: SLICE as u16,
    })
}

/// Each thread's accumulators inside the output, through the epilogue: accumulator
/// `4·j + e` is element `e` of the `mma.m16n8k16` `C` layout in columns `8j..8j + 8` of its
/// warp's 16 rows.
fn results(
    cx: &mut Ctx,
    (l, m): (&Layout, &Expr),
    at: &Block,
    bufs: &Buffers,
    epilogue: &mut Option<&mut dyn Epilogue>,
) -> Stmt {
    let lane = Lane::new(cx);
    let (nj, e, i, j) = (cx.var(), cx.var(), cx.var(), cx.var());
    let (cr, cc) = lane.c(&var(e));
    let value =
        archc_kernels::ir::build::load(bufs.accumulators, add(mul(var(nj), int(4)), var(e)));
    let store = finish(cx, l, epilogue, value, var(i), var(j));
    let inside = and(lt(var(i), m.clone()), lt(var(j), l.n.clone()));
    let each = vec![
        Stmt::Set(i, add(var(at.i0), add(mul(var(lane.warp), int(16)), cr))),
        Stmt::Set(j, add(var(at.j0), add(mul(var(nj), int(8)), cc))),
        when(cx, inside, store),
    ];
    let mut s = lane.of(at.t);
    s.push(unroll(&[(nj, TILE / 8), (e, 4)], each));
    tile_grid::threads(at.t, s)
}
