//! The tensor-core matmul for GPUs: `mma.sync` m16n8k16 on f16 or bf16 operands with f32
//! accumulation (sm_80 and later), for a matmul whose `a` and `b` are stored in one of those
//! types (`--dtype bf16`).
//!
//! A block of four warps computes a 64 × 64 tile of the output, each warp a 32 × 32 quarter
//! of it as 2 × 4 tensor-core tiles of 16 × 8, whose accumulators stay in the warp's
//! registers for the whole reduced axis:
//!
//! ```text
//! grid for tile in 0..batches · ⌈M/64⌉ · ⌈N/64⌉ {
//!   thread for t in 0..128 { acc = 0 }
//!   serial for slice in 0..⌈K/32⌉ {     (pipelined: see staging.rs)
//!     thread for t in 0..128 { wait for the slice's a (64 × 32) and b (32 × 64) in shared memory }
//!     barrier
//!     thread for t in 0..128 { cp.async of the slice two ahead (0 past the edges) }
//!     ldmatrix × 2 k-steps × (2 row tiles of A + 2 pairs of column tiles of B, transposed)
//!     mma × 2 k-steps × 2 row tiles × 4 column tiles
//!   }
//!   thread for t in 0..128 { the epilogue on each accumulator inside the output }
//! }
//! ```
//!
//! The fragments are placed as the PTX ISA lays them out (`archc_kernels::fragment`), which
//! the interpreter's GPU semantics model, so `--device cuda-sim` checks the placement. The
//! shared tiles' rows are padded by 8 elements so that a warp's fragment reads spread over
//! the banks (and every row of 8 elements an `ldmatrix` points at starts on 16 bytes). The
//! fragments come from shared memory by `ldmatrix`, four 8 × 8 matrices per instruction
//! where plain loads took one 16-bit element each; the tiles arrive by `cp.async`
//! (`staging.rs`).

use archc_kernels::ir::build::{add, load, mul, var};
use archc_kernels::ir::{Elem, Expr, Local, Stmt};

use super::staging::{Arrangement, Stage, Staging, STAGES};
use super::tile_grid::{arrays, kernel, Block, Buffers, TILE};
use super::{finish, Epilogue, Layout};
use crate::graph::TensorType;
use crate::lower::fragments::{
    and, div, int, load_matrices, lt, mma, rem, unroll, when, Lane, PAD, THREADS,
};
use crate::lower::index::Ctx;

/// The reduced slice staged in shared memory.
const SLICE: i64 = 32;
/// What a stage holds: a slice for a 64 × 64 tile, rows padded.
const STAGE: Stage = Stage {
    tile: (TILE, TILE),
    slice: SLICE,
    arrangement: Arrangement::Padded,
    stages: STAGES,
};
/// A stage's tiles of `a` and `b` in shared memory.
const A_STAGE: i64 = STAGE.lengths().0;
const B_STAGE: i64 = STAGE.lengths().1;
/// A warp's quarter of the tile: rows and columns.
const QUARTER: i64 = TILE / 2;
/// Row tiles (16 rows) and column tiles (8 columns) of a warp's quarter.
const ROW_TILES: i64 = QUARTER / 16;
const COL_TILES: i64 = QUARTER / 8;
/// k16 steps per slice.
const STEPS: i64 = SLICE / 16;
/// Accumulators per thread: four per 16 × 8 tile.
const ACCUMULATORS: i64 = ROW_TILES * COL_TILES * 4;

/// Whether the tensor-core template computes a matmul of `a` (in buffer `abuf`) and `b`: the
/// target has `mma.sync` m16n8k16, blocks of four warps, and both operands are stored in one
/// 16-bit float type, neither block-quantized.
pub(super) fn applies(
    cx: &Ctx,
    (a, abuf): (&TensorType, usize),
    (b, bbuf): (&TensorType, usize),
) -> bool {
    let elem = crate::lower::elem(a.dtype);
    cx.schedule.tensor_cores
        && cx.schedule.gpu_block == Some(THREADS as u32)
        && matches!(elem, Elem::F16 | Elem::BF16)
        && crate::lower::elem(b.dtype) == elem
        && !cx.blocks.contains(&abuf)
        && !cx.blocks.contains(&bbuf)
}

/// The variables of one tile of the output.
struct Tile {
    /// Where the block is.
    at: Block,
    /// The thread's place in its warp.
    lane: Lane,
}

impl Tile {
    /// The first row and column of the thread's warp's quarter of the tile.
    fn quarter(&self) -> (Expr, Expr) {
        quarter(&var(self.lane.warp))
    }
}

/// The first row and column of warp `w`'s quarter of the tile.
fn quarter(w: &Expr) -> (Expr, Expr) {
    (
        mul(div(w.clone(), 2), int(QUARTER)),
        mul(rem(w.clone(), 2), int(QUARTER)),
    )
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
        (first, 3, ACCUMULATORS),
        |cx, (l, m), at, bufs| {
            let tile = Tile {
                at,
                lane: Lane::new(cx),
            };
            let staging = Staging::new(l, m, STAGE, elem);
            let mut body = slices(cx, &tile, &staging, bufs);
            body.push(results(cx, (l, m), &tile, bufs, &mut epilogue));
            body
        },
    );
    let values = [ACCUMULATORS, STEPS * ROW_TILES * 8, STEPS * COL_TILES * 4];
    let (locals, shared) = arrays(elem, values, [STAGES * A_STAGE, STAGES * B_STAGE]);
    (grid, locals, shared)
}

/// `body` for every thread of the block.
fn threads(tile: &Tile, body: Vec<Stmt>) -> Stmt {
    tile.at.threads(body)
}

/// The loop over the reduced slices, pipelined over three stages (see `staging.rs`): each
/// slice's fragments loaded, multiplied.
fn slices(cx: &mut Ctx, tile: &Tile, staging: &Staging, bufs: &Buffers) -> Vec<Stmt> {
    let (ks, mi, ni) = (cx.var(), cx.var(), cx.var());
    let (a_values, b_values) = bufs.values();
    let products = mma(
        (
            a_values,
            mul(add(mul(var(ks), int(ROW_TILES)), var(mi)), int(8)),
        ),
        (
            b_values,
            mul(add(mul(var(ks), int(COL_TILES)), var(ni)), int(4)),
        ),
        (
            bufs.accumulators,
            mul(add(mul(var(mi), int(COL_TILES)), var(ni)), int(4)),
        ),
    );
    staging.pipeline(cx, (&tile.at, bufs), &mut |cx, s| {
        vec![
            fragments(cx, bufs, s),
            unroll(
                &[(ks, STEPS), (mi, ROW_TILES), (ni, COL_TILES)],
                vec![products.clone()],
            ),
        ]
    })
}

/// The thread's `A` and `B` fragments of both k16 steps of slice `s`, from its stage of the
/// shared tiles through `ldmatrix`: per step, one x4 for each 16-row tile of `A` and one
/// transposed x4 for each pair of 8-column tiles of `B` (staged k-major).
fn fragments(cx: &mut Ctx, bufs: &Buffers, s: Expr) -> Stmt {
    let stage = rem(s, STAGES);
    let (a_first, b_first) = (mul(stage.clone(), int(A_STAGE)), mul(stage, int(B_STAGE)));
    let (ks, mi, np) = (cx.var(), cx.var(), cx.var());
    let (a_values, b_values) = bufs.values();
    let a_at = mul(add(mul(var(ks), int(ROW_TILES)), var(mi)), int(8));
    let a = load_matrices(cx, (a_values, a_at), bufs.a_tile, (4, false), &|p| {
        let (r, c) = p.a_quarter();
        let row = add(add(quarter(&p.warp).0, mul(var(mi), int(16))), r);
        let at = add(mul(row, int(SLICE + PAD)), add(mul(var(ks), int(16)), c));
        add(a_first.clone(), at)
    });
    let first = add(mul(var(ks), int(COL_TILES)), mul(var(np), int(2)));
    let b_at = mul(first, int(4));
    let b = load_matrices(cx, (b_values, b_at), bufs.b_tile, (4, true), &|p| {
        // The matrix's 8 rows run along k; the fragment wants them transposed.
        let (pair, half) = p.b_pair();
        let k = add(add(mul(var(ks), int(16)), mul(half, int(8))), p.row.clone());
        let n = add(
            quarter(&p.warp).1,
            mul(add(mul(var(np), int(2)), pair), int(8)),
        );
        let at = add(mul(k, int(TILE + PAD)), n);
        add(b_first.clone(), at)
    });
    unroll(
        &[(ks, STEPS)],
        vec![
            unroll(&[(mi, ROW_TILES)], vec![a]),
            unroll(&[(np, COL_TILES / 2)], vec![b]),
        ],
    )
}

/// Each thread's accumulators inside the output, through the epilogue.
fn results(
    cx: &mut Ctx,
    (l, m): (&Layout, &Expr),
    tile: &Tile,
    bufs: &Buffers,
    epilogue: &mut Option<&mut dyn Epilogue>,
) -> Stmt {
    let (mi, ni, e, i, j) = (cx.var(), cx.var(), cx.var(), cx.var(), cx.var());
    let (row, col) = tile.quarter();
    let (cr, cc) = tile.lane.c(&var(e));
    let at = add(
        mul(add(mul(var(mi), int(COL_TILES)), var(ni)), int(4)),
        var(e),
    );
    let value = load(bufs.accumulators, at);
    let store = finish(cx, l, epilogue, value, var(i), var(j));
    let inside = and(lt(var(i), m.clone()), lt(var(j), l.n.clone()));
    let each = vec![
        Stmt::Set(
            i,
            add(var(tile.at.i0), add(add(row, mul(var(mi), int(16))), cr)),
        ),
        Stmt::Set(
            j,
            add(var(tile.at.j0), add(add(col, mul(var(ni), int(8))), cc)),
        ),
        when(cx, inside, store),
    ];
    let mut s = tile.lane.of(tile.at.t);
    s.push(unroll(&[(mi, ROW_TILES), (ni, COL_TILES), (e, 4)], each));
    threads(tile, s)
}
