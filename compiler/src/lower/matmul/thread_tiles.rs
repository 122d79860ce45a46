//! The matmul for GPUs where tensor cores do not apply (f32 operands: `mma.sync` on tf32 would
//! round them to 10 bits, far outside f32 parity): the classic shared-memory GEMM of CUDA
//! cores.
//!
//! A block of four warps computes a 64 × 64 tile of the output ([`super::tile_grid`]). Thread
//! `t` holds a 4 × 8 tile of accumulators in registers: rows `ty + 16·r` and columns
//! `tx + 8·c` of the block's tile, `ty = t / 8`, `tx = t mod 8`. The strides are what keep
//! shared memory fast: a warp's 32 threads read 4 rows of `a` (in distinct banks) and 8
//! consecutive columns of `b`, each value broadcast to the threads that share it.
//!
//! ```text
//! grid for tile in 0..batches · ⌈M/64⌉ · ⌈N/64⌉ {
//!   thread for t in 0..128 { acc = 0 }
//!   serial for slice in 0..⌈K/16⌉ {     (pipelined: see staging.rs)
//!     thread for t in 0..128 { wait for the slice's a (64 × 16) and b (16 × 64) in shared memory }
//!     barrier
//!     thread for t in 0..128 { cp.async of the slice two ahead }
//!     thread for t in 0..128 {
//!       per k of the slice: its 4 values of a and 8 of b → registers, 32 multiply-adds
//!     }
//!   }
//!   thread for t in 0..128 { the epilogue on each accumulator inside the output }
//! }
//! ```
//!
//! Each row of `a` and `b` in the slice is read from global memory once per block, by
//! consecutive threads (coalesced), instead of once per thread's micro-tile as the CPU's
//! template mapped onto threads would.

use archc_kernels::ir::build::{add, bin, load, mul, var};
use archc_kernels::ir::{Bin, Elem, Expr, Local, Stmt, Var};

use super::staging::{Arrangement, Stage, Staging, STAGES};
use super::tile_grid::{arrays, kernel, Block, Buffers, TILE};
use super::{finish, Epilogue, Layout};
use crate::graph::TensorType;
use crate::lower::fragments::{div, int, lt, rem, unroll, when, PAD, THREADS};
use crate::lower::index::Ctx;

/// The reduced slice staged in shared memory.
const SLICE: i64 = 16;
/// What a stage holds: a slice for a 64 × 64 tile, rows padded.
const STAGE: Stage = Stage {
    tile: (TILE, TILE),
    slice: SLICE,
    arrangement: Arrangement::Padded,
    stages: STAGES,
};
/// A thread's rows and columns of the tile.
const ROWS: i64 = 4;
const COLUMNS: i64 = 8;
/// Threads across a row of the tile (`TILE / COLUMNS`) and down a column (`TILE / ROWS`).
const ACROSS: i64 = TILE / COLUMNS;
const DOWN: i64 = TILE / ROWS;

/// Whether this template computes a matmul of `a` (in buffer `abuf`) and `b`: on a GPU whose
/// blocks are [`THREADS`] threads, neither operand block-quantized (nor read transposed).
pub(super) fn applies(cx: &Ctx, abuf: usize, bbuf: usize) -> bool {
    cx.schedule.gpu_block == Some(THREADS as u32)
        && !cx.blocks.contains(&abuf)
        && !cx.blocks.contains(&bbuf)
        && cx.transposed.is_none_or(|(t, _)| t != bbuf)
}

/// The variables of one block: its tile's first row and column, the slice's first element,
/// the thread and its place in the tile.
struct Tile {
    /// Where the block is.
    at: Block,
    /// The thread's place in the tile.
    ty: Var,
    tx: Var,
}

impl Tile {
    /// `body` for every thread of the block, its place set first.
    fn threads(&self, body: Vec<Stmt>) -> Stmt {
        let mut s = vec![
            Stmt::Set(self.ty, div(var(self.at.t), ACROSS)),
            Stmt::Set(self.tx, rem(var(self.at.t), ACROSS)),
        ];
        s.extend(body);
        self.at.threads(s)
    }

    /// Row `r` of the thread's rows, in the block's tile.
    fn row(&self, r: Expr) -> Expr {
        add(var(self.ty), mul(r, int(DOWN)))
    }

    /// Column `c` of the thread's columns, in the block's tile.
    fn column(&self, c: Expr) -> Expr {
        add(var(self.tx), mul(c, int(ACROSS)))
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
    let operands = [(a, abuf), (b, bbuf)];
    let count = ROWS * COLUMNS;
    let grid = kernel(
        cx,
        (out, flat, STAGE.tile, THREADS),
        operands,
        (first, 3, count),
        |cx, (l, m), at, bufs| {
            let tile = Tile {
                at,
                ty: cx.var(),
                tx: cx.var(),
            };
            let mut body = slices(cx, (l, m), &tile, bufs);
            body.push(results(cx, (l, m), &tile, bufs, &mut epilogue));
            body
        },
    );
    let (a_len, b_len) = STAGE.lengths();
    let tiles = [STAGES * a_len, STAGES * b_len];
    let (locals, shared) = arrays(Elem::F32, [count, ROWS, COLUMNS], tiles);
    (grid, locals, shared)
}

/// The loop over the reduced slices, pipelined over three stages (see `staging.rs`): each
/// thread's multiply-adds on a slice.
fn slices(cx: &mut Ctx, (l, m): (&Layout, &Expr), tile: &Tile, bufs: &Buffers) -> Vec<Stmt> {
    let (a_len, b_len) = STAGE.lengths();
    let (p, r, c) = (cx.var(), cx.var(), cx.var());
    let (a_values, b_values) = bufs.values();
    let staging = Staging::new(l, m, STAGE, Elem::F32);
    staging.pipeline(cx, (&tile.at, bufs), &mut |_, s| {
        let stage = rem(s, STAGES);
        let a_at = add(mul(tile.row(var(r)), int(SLICE + PAD)), var(p));
        let a = load(bufs.a_tile, add(mul(stage.clone(), int(a_len)), a_at));
        let b_at = add(mul(var(p), int(TILE + PAD)), tile.column(var(c)));
        let b = load(bufs.b_tile, add(mul(stage, int(b_len)), b_at));
        let at = add(mul(var(r), int(COLUMNS)), var(c));
        let product = Expr::Fma(
            Box::new(load(a_values, var(r))),
            Box::new(load(b_values, var(c))),
            Box::new(load(bufs.accumulators, at.clone())),
        );
        let step = vec![
            unroll(&[(r, ROWS)], vec![Stmt::Store(a_values, var(r), a)]),
            unroll(&[(c, COLUMNS)], vec![Stmt::Store(b_values, var(c), b)]),
            unroll(
                &[(r, ROWS), (c, COLUMNS)],
                vec![Stmt::Store(bufs.accumulators, at, product)],
            ),
        ];
        vec![tile.threads(vec![unroll(&[(p, SLICE)], step)])]
    })
}

/// Each thread's accumulators inside the output, through the epilogue.
fn results(
    cx: &mut Ctx,
    (l, m): (&Layout, &Expr),
    tile: &Tile,
    bufs: &Buffers,
    epilogue: &mut Option<&mut dyn Epilogue>,
) -> Stmt {
    let (r, c, i, j) = (cx.var(), cx.var(), cx.var(), cx.var());
    let value = load(bufs.accumulators, add(mul(var(r), int(COLUMNS)), var(c)));
    let store = finish(cx, l, epilogue, value, var(i), var(j));
    let inside = bin(Bin::And, lt(var(i), m.clone()), lt(var(j), l.n.clone()));
    let each = vec![
        Stmt::Set(i, add(var(tile.at.i0), tile.row(var(r)))),
        Stmt::Set(j, add(var(tile.at.j0), tile.column(var(c)))),
        when(cx, inside, store),
    ];
    tile.threads(vec![unroll(&[(r, ROWS), (c, COLUMNS)], each)])
}
