//! The warpgroup matmul for Hopper (sm_90a): `wgmma.mma_async` m64n128k16 on f16 or bf16
//! operands read straight from shared memory, with f32 accumulation, for a matmul whose `a`
//! and `b` are stored in one of those types (`--dtype bf16`).
//!
//! A block is two warpgroups (eight warps, 256 threads), as CUTLASS's cooperative Hopper
//! GEMM: it computes a 128 × 128 tile of the output, warpgroup `g` its rows `64g..64g + 64`,
//! whose accumulators stay in its threads' registers (64 each, as `wgmma` places them) for
//! the whole reduced axis. The two share each slice's tile of `b`, so a block brings in
//! 32 KiB from memory per 1 Mi multiply-adds where a 64-row tile brought 24 KiB per 0.5 Mi
//! (two thirds of the traffic per multiply-add); each
//! `wgmma` reads 6 KiB of shared memory for 128 K multiply-adds, under the tensor cores'
//! pace. (One warpgroup with both bands, 128 accumulators each, left a thread too few
//! registers for the copies' addresses: ptxas spilled.)
//!
//! ```text
//! grid for tile in 0..batches · ⌈M/128⌉ · ⌈N/128⌉ {
//!   serial for slice in 0..max(⌈K/64⌉, 1) {     (pipelined as the mma.sync template: see staging.rs)
//!     thread for t in 0..256 { wait for the slice's a (128 × 64) and b (64 × 128) in shared memory }
//!     barrier
//!     thread for t in 0..256 { cp.async of the slice two ahead (0 past the edges) }
//!     wgmma m64n128k64 acc += a[64g..] · b  (each warpgroup g: four k16 steps issued as one
//!                                            group; acc = a · b at slice 0)
//!     wgmma.wait until ≤ 1 in flight    (the previous slice's group is complete)
//!   }
//!   wgmma.wait until ≤ 0 in flight
//!   thread for t in 0..256 { the epilogue on each accumulator inside the output }
//! }
//! ```
//!
//! The products run asynchronously, as CUTLASS's Hopper mainloop keeps one in flight: while
//! the tensor cores multiply slice `s`, the threads wait for slice `s + 1`'s copies, pass the
//! barrier and issue the copies of slice `s + 3`, then queue slice `s + 1`'s product behind
//! `s`'s, so that the tensor cores are not idle between slices. Slice `s`'s stage is read
//! until the wait in the iteration of `s + 1`, after that iteration's copies were issued:
//! those copies (of slice `s + 3`) must go to another stage, so there are four stages
//! (staging's three, and one for the product in flight).
//!
//! A slice is 64 long, as CUTLASS's Hopper GEMMs take 16-bit operands: per barrier the tensor
//! cores get four k16 steps (256 cycles of a multiprocessor's tensor cores at m64n128k16),
//! against which a barrier, a wait and a slice's copies weigh half what they did at 32.
//! Four stages of 32 KiB take 128 KiB of shared memory, more than a kernel may declare
//! statically: they are the launch's dynamic shared memory ([`archc_kernels::shared`]), and
//! one block fits a multiprocessor (its eight warps keep the tensor cores fed, as in
//! CUTLASS's kernels of this shape).
//!
//! No instruction but a `wgmma` writes the accumulators: the first slice's product ignores
//! their old values (its scale-d is 0) instead of the threads zeroing them. ptxas serialises
//! the products of a pipeline into whose accumulators another instruction writes on a path
//! that joins it (zeros before the loop, when LLVM does not peel its first iteration), and
//! an empty reduced axis still takes one slice, all zeros past the edges, so that the
//! output is 0.
//!
//! No thread loads a fragment: the tensor cores read the staged tiles through their
//! descriptors, so the tiles lie as those describe ([`archc_kernels::warpgroup`]):
//! - `a`'s tile is K-major with the 32-byte swizzle: each k16 slab is a 128 × 16 block (warpgroup `g`'s rows from its row `64g`),
//!   rows of 16 elements (32 bytes), the two halves of rows 4–7 of every 8 swapped. (K-major
//!   with no swizzle is the one layout whose descriptor the sources disagree on.)
//! - `b`'s tile is MN-major with no swizzle: 8 × 8 core matrices of 8 consecutive columns in
//!   each of 8 consecutive k, side by side along n (64 elements apart), the next 8 k after.
//!
//! `cp.async` copies 8 consecutive elements of a row of `a` (along k) or of `b` (along n) at
//! a time, and both layouts keep such 8 together, 16-byte aligned.

use archc_kernels::ir::build::{add, load, mul, var};
use archc_kernels::ir::{Expr, Fragment, Local, SharedTile, Stmt, WarpgroupMma, WarpgroupWait};
use archc_kernels::warpgroup::{ROWS, WARPGROUP};

use super::staging::{Arrangement, Stage, Staging};
use super::tile_grid::{arrays, kernel, Block, Buffers};
use super::{finish, Epilogue, Layout};
use crate::graph::TensorType;
use crate::lower::fragments::{and, div, int, lt, rem, unroll, when, Lane};
use crate::lower::index::Ctx;

/// The block's warpgroups, and its threads.
const WARPGROUPS: i64 = 2;
const THREADS: i64 = WARPGROUPS * WARPGROUP as i64;
/// The block's tile of the output: one band of 64 rows per warpgroup, 128 columns.
const TILE_ROWS: i64 = WARPGROUPS * ROWS as i64;
const TILE_COLUMNS: i64 = 128;
/// What a stage holds: a slice of 64 (four k16 steps) for the tile, as the descriptors read it.
const STAGE: Stage = Stage {
    tile: (TILE_ROWS, TILE_COLUMNS),
    slice: 64,
    arrangement: Arrangement::Warpgroup,
    stages: 4,
};
/// A stage's tiles of `a` and `b` in shared memory.
const A_STAGE: i64 = STAGE.lengths().0;
const B_STAGE: i64 = STAGE.lengths().1;
/// Accumulators per thread: the tile over the block's threads.
const ACCUMULATORS: i64 = TILE_ROWS * TILE_COLUMNS / THREADS;

/// Whether the warpgroup template computes a matmul of `a` (in buffer `abuf`) and `b`: the
/// target has warpgroup products, and the tensor-core template would otherwise (the
/// schedule's blocks of four warps, which this template doubles; both operands in one 16-bit
/// float type, neither block-quantized).
pub(super) fn applies(
    cx: &Ctx,
    (a, abuf): (&TensorType, usize),
    (b, bbuf): (&TensorType, usize),
) -> bool {
    cx.schedule.warpgroup_mma && super::tensor_cores::applies(cx, (a, abuf), (b, bbuf))
}

/// Where element `(r, c)` of `a`'s tile of `rows` rows (row `r`, k `c`) lies in a stage
/// starting at `first`: k16 slabs of `16 · rows` elements, atoms of 8 rows 128 apart.
pub(super) fn a_slot(first: Expr, rows: i64) -> impl Fn(Expr, Expr) -> Expr {
    move |r, c| {
        let slab = mul(div(c.clone(), 16), int(16 * rows));
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

/// Where element `(r, c)` of `b`'s tile of `columns` columns (k `r`, column `c`) lies in a
/// stage starting at `first`: core matrices 64 elements apart along n, `8 · columns` along k.
pub(super) fn b_slot(first: Expr, columns: i64) -> impl Fn(Expr, Expr) -> Expr {
    move |r, c| {
        let core = add(
            mul(div(r.clone(), 8), int(8 * columns)),
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
        (out, flat, STAGE.tile, THREADS),
        operands,
        // The first slice's product overwrites the accumulators: none is zeroed.
        (first, 1, 0),
        |cx, (l, m), at, bufs| {
            let staging = Staging::new(l, m, STAGE, elem);
            let mut body = staging.pipeline(cx, (&at, bufs), &mut |_, s| {
                vec![product(bufs, s), wait(bufs, 1)]
            });
            body.push(wait(bufs, 0));
            body.push(results(cx, (l, m), &at, bufs, &mut epilogue));
            body
        },
    );
    let (locals, shared) = arrays(
        elem,
        [ACCUMULATORS, 0, 0],
        [STAGE.stages * A_STAGE, STAGE.stages * B_STAGE],
    );
    (grid, locals, shared)
}

/// The warpgroups' products of slice `s`'s stage, laid out as [`a_slot`] and [`b_slot`] put
/// it, issued: each warpgroup's of its band of rows.
fn product(bufs: &Buffers, s: Expr) -> Stmt {
    let accumulate = lt(int(0), s.clone());
    let stage = rem(s, STAGE.stages);
    let b_lead = 8 * TILE_COLUMNS as u32;
    Stmt::WarpgroupMma(WarpgroupMma {
        a: SharedTile::swizzled(
            bufs.a_tile,
            mul(stage.clone(), int(A_STAGE)),
            128,
            16 * TILE_ROWS as u32,
        ),
        b: SharedTile::mn_major(
            bufs.b_tile,
            mul(stage, int(B_STAGE)),
            (b_lead, 64),
            2 * b_lead,
        ),
        c: Fragment {
            buf: bufs.accumulators,
            at: int(0),
        },
        accumulate,
        m: (TILE_ROWS / WARPGROUPS) as u16,
        n: TILE_COLUMNS as u16,
        k: STAGE.slice as u16,
    })
}

/// The wait until at most `pending` of the warpgroup's products are in flight.
fn wait(bufs: &Buffers, pending: u8) -> Stmt {
    Stmt::WarpgroupWait(WarpgroupWait {
        c: Fragment {
            buf: bufs.accumulators,
            at: int(0),
        },
        len: ACCUMULATORS as u16,
        pending,
    })
}

/// Each thread's accumulators inside the output, through the epilogue: accumulator
/// `64·h + 4·j + e` is element `e` of the `mma.m16n8k16` `C` layout in columns `8j..8j + 8`
/// of its warp's 16 rows of band `h` of its warpgroup's rows.
fn results(
    cx: &mut Ctx,
    (l, m): (&Layout, &Expr),
    at: &Block,
    bufs: &Buffers,
    epilogue: &mut Option<&mut dyn Epilogue>,
) -> Stmt {
    let lane = Lane::new(cx);
    let (h, nj, e, i, j) = (cx.var(), cx.var(), cx.var(), cx.var(), cx.var());
    let (cr, cc) = lane.c(&var(e));
    let band = TILE_COLUMNS / 2;
    let group_rows = TILE_ROWS / WARPGROUPS;
    let warps = WARPGROUP as i64 / 32;
    let at_band = add(mul(var(h), int(band)), add(mul(var(nj), int(4)), var(e)));
    let value = load(bufs.accumulators, at_band);
    let store = finish(cx, l, epilogue, value, var(i), var(j));
    let inside = and(lt(var(i), m.clone()), lt(var(j), l.n.clone()));
    let each = vec![
        Stmt::Set(
            i,
            add(
                add(var(at.i0), mul(div(var(lane.warp), warps), int(group_rows))),
                add(
                    mul(var(h), int(ROWS as i64)),
                    add(mul(rem(var(lane.warp), warps), int(16)), cr),
                ),
            ),
        ),
        Stmt::Set(j, add(var(at.j0), add(mul(var(nj), int(8)), cc))),
        when(cx, inside, store),
    ];
    let mut s = lane.of(at.t);
    s.push(unroll(
        &[
            (h, group_rows / ROWS as i64),
            (nj, TILE_COLUMNS / 8),
            (e, 4),
        ],
        each,
    ));
    at.threads(s)
}
