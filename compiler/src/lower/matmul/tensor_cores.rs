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
//!   serial for slice in 0..⌈K/32⌉ {
//!     thread for t in 0..128 { a's 64 × 32 and b's 32 × 64 of the slice → shared (0 past the edges) }
//!     barrier
//!     thread for t in 0..128 { its A and B fragments of both k16 steps ← shared }
//!     mma × 2 k-steps × 2 row tiles × 4 column tiles
//!     barrier
//!   }
//!   thread for t in 0..128 { the epilogue on each accumulator inside the output }
//! }
//! ```
//!
//! The fragments are placed as the PTX ISA lays them out (`archc_kernels::fragment`), which
//! the interpreter's GPU semantics model, so `--device cuda-sim` checks the placement. The
//! shared tiles' rows are padded by 8 elements so that a warp's fragment reads spread over
//! the banks. Loads through `ldmatrix` and `cp.async`'s copies are still to come.

use archc_kernels::ir::build::{add, axis, bin, f32, load, mul, serial, var};
use archc_kernels::ir::{Axis, Bin, Elem, Expr, Local, Scope, Stmt, Var};

use super::{finish, Epilogue, Layout};
use crate::graph::{Dim, TensorType};
use crate::lower::body::delinearize;
use crate::lower::fragments::{
    and, div, int, lt, mma, rem, stage, unroll, when, Lane, PAD, THREADS,
};
use crate::lower::index::{div_up, Ctx};

/// Rows and columns of a block's output tile.
const TILE: i64 = 64;
/// The reduced slice staged in shared memory.
const SLICE: i64 = 32;
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

/// The buffers of one kernel: the operands, then its arrays.
struct Buffers {
    a: usize,
    b: usize,
    a_fragments: usize,
    b_fragments: usize,
    accumulators: usize,
    a_tile: usize,
    b_tile: usize,
}

/// The variables of one tile of the output.
struct Tile {
    /// The tile's first row and column, and the reduced slice's first element.
    i0: Var,
    j0: Var,
    k0: Var,
    /// The thread in the block, and its place in its warp.
    t: Var,
    lane: Lane,
}

impl Tile {
    /// The first row and column of the thread's warp's quarter of the tile.
    fn quarter(&self) -> (Expr, Expr) {
        let w = var(self.lane.warp);
        (
            mul(div(w.clone(), 2), int(QUARTER)),
            mul(rem(w, 2), int(QUARTER)),
        )
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
    let (l, batch_shape, rows) = Layout::new(cx, [out, a, b], flat, None);
    let bufs = Buffers {
        a: abuf,
        b: bbuf,
        a_fragments: first,
        b_fragments: first + 1,
        accumulators: first + 2,
        a_tile: first + 3,
        b_tile: first + 4,
    };
    let elem = crate::lower::elem(a.dtype);
    let m = cx.dim(&rows);
    let (tiles_m, tiles_n) = (div_up(m.clone(), int(TILE)), div_up(l.n.clone(), int(TILE)));
    let batches = cx.dim(&Dim::product(&batch_shape).unwrap_or_default());
    let (task, bi) = (cx.var(), cx.var());
    let tile = Tile {
        i0: cx.var(),
        j0: cx.var(),
        k0: cx.var(),
        t: cx.var(),
        lane: Lane::new(cx),
    };
    let mut body = vec![Stmt::Set(
        bi,
        bin(Bin::Div, var(task), mul(tiles_m.clone(), tiles_n.clone())),
    )];
    for (v, x) in l.batch.iter().zip(delinearize(cx, var(bi), &batch_shape)) {
        body.push(Stmt::Set(*v, x));
    }
    let row_tile = bin(
        Bin::Rem,
        bin(Bin::Div, var(task), tiles_n.clone()),
        tiles_m.clone(),
    );
    body.push(Stmt::Set(tile.i0, mul(row_tile, int(TILE))));
    let column_tile = bin(Bin::Rem, var(task), tiles_n.clone());
    body.push(Stmt::Set(tile.j0, mul(column_tile, int(TILE))));
    let e = cx.var();
    let zero = Stmt::Store(bufs.accumulators, var(e), f32(0.0));
    body.push(threads(
        &tile,
        vec![unroll(&[(e, ACCUMULATORS)], vec![zero])],
    ));
    body.push(slices(cx, &l, &m, &tile, &bufs));
    body.push(results(cx, (&l, &m), &tile, &bufs, &mut epilogue));
    let grid = vec![axis(
        Axis::Grid,
        task,
        mul(batches, mul(tiles_m, tiles_n)),
        body,
    )];
    let array = |name: &str, elem, len: i64| Local {
        name: name.into(),
        elem,
        len: len as usize,
    };
    let locals = vec![
        array("a_fragments", elem, STEPS * ROW_TILES * 8),
        array("b_fragments", elem, STEPS * COL_TILES * 4),
        array("accumulators", Elem::F32, ACCUMULATORS),
    ];
    let shared = vec![
        array("a_tile", elem, TILE * (SLICE + PAD)),
        array("b_tile", elem, SLICE * (TILE + PAD)),
    ];
    (grid, locals, shared)
}

/// `body` for every thread of the block.
fn threads(tile: &Tile, body: Vec<Stmt>) -> Stmt {
    axis(Axis::Thread, tile.t, int(THREADS), body)
}

/// The loop over the reduced slices: stage the slice's tiles in shared memory, load each
/// thread's fragments, multiply.
fn slices(cx: &mut Ctx, l: &Layout, m: &Expr, tile: &Tile, bufs: &Buffers) -> Stmt {
    let (k, n) = (&l.k, &l.n);
    let a_at = |cx: &Ctx, r: Expr, c: Expr| {
        let (i, p) = (add(var(tile.i0), r), add(var(tile.k0), c));
        let inside = and(lt(i.clone(), m.clone()), lt(p.clone(), k.clone()));
        (inside, l.a(cx, i, p))
    };
    let b_at = |cx: &Ctx, r: Expr, c: Expr| {
        let (p, j) = (add(var(tile.k0), r), add(var(tile.j0), c));
        let inside = and(lt(p.clone(), k.clone()), lt(j.clone(), n.clone()));
        (inside, l.b(cx, p, j))
    };
    let copy_a = stage(cx, tile.t, (bufs.a, bufs.a_tile), (TILE, SLICE), &a_at);
    let copy_b = stage(cx, tile.t, (bufs.b, bufs.b_tile), (SLICE, TILE), &b_at);
    let (ks, mi, ni) = (cx.var(), cx.var(), cx.var());
    let products = mma(
        (
            bufs.a_fragments,
            mul(add(mul(var(ks), int(ROW_TILES)), var(mi)), int(8)),
        ),
        (
            bufs.b_fragments,
            mul(add(mul(var(ks), int(COL_TILES)), var(ni)), int(4)),
        ),
        (
            bufs.accumulators,
            mul(add(mul(var(mi), int(COL_TILES)), var(ni)), int(4)),
        ),
    );
    let slice = cx.var();
    serial(
        slice,
        div_up(k.clone(), int(SLICE)),
        vec![
            Stmt::Set(tile.k0, mul(var(slice), int(SLICE))),
            threads(tile, vec![copy_a, copy_b]),
            Stmt::Barrier(Scope::Block),
            threads(tile, fragments(cx, tile, bufs)),
            unroll(
                &[(ks, STEPS), (mi, ROW_TILES), (ni, COL_TILES)],
                vec![products],
            ),
            Stmt::Barrier(Scope::Block),
        ],
    )
}

/// A thread's `A` and `B` fragments of both k16 steps of the slice, from the shared tiles.
fn fragments(cx: &mut Ctx, tile: &Tile, bufs: &Buffers) -> Vec<Stmt> {
    let (ks, mi, ni, e) = (cx.var(), cx.var(), cx.var(), cx.var());
    let (row, col) = tile.quarter();
    let (ar, ac) = tile.lane.a(&var(e));
    let a_row = add(add(row, mul(var(mi), int(16))), ar);
    let a_col = add(mul(var(ks), int(16)), ac);
    let (br, bc) = tile.lane.b(&var(e));
    let b_row = add(mul(var(ks), int(16)), br);
    let b_col = add(add(col, mul(var(ni), int(8))), bc);
    let a_at = add(
        mul(add(mul(var(ks), int(ROW_TILES)), var(mi)), int(8)),
        var(e),
    );
    let b_at = add(
        mul(add(mul(var(ks), int(COL_TILES)), var(ni)), int(4)),
        var(e),
    );
    let a = load(bufs.a_tile, add(mul(a_row, int(SLICE + PAD)), a_col));
    let b = load(bufs.b_tile, add(mul(b_row, int(TILE + PAD)), b_col));
    let mut s = tile.lane.of(tile.t);
    s.push(unroll(
        &[(ks, STEPS)],
        vec![
            unroll(
                &[(mi, ROW_TILES), (e, 8)],
                vec![Stmt::Store(bufs.a_fragments, a_at, a)],
            ),
            unroll(
                &[(ni, COL_TILES), (e, 4)],
                vec![Stmt::Store(bufs.b_fragments, b_at, b)],
            ),
        ],
    ));
    s
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
            add(var(tile.i0), add(add(row, mul(var(mi), int(16))), cr)),
        ),
        Stmt::Set(
            j,
            add(var(tile.j0), add(add(col, mul(var(ni), int(8))), cc)),
        ),
        when(cx, inside, store),
    ];
    let mut s = tile.lane.of(tile.t);
    s.push(unroll(&[(mi, ROW_TILES), (ni, COL_TILES), (e, 4)], each));
    threads(tile, s)
}
