//! The grid of the GPU matmul templates ([`super::tensor_cores`], [`super::thread_tiles`]): a
//! block of [`THREADS`] threads per [`TILE`] × [`TILE`] tile of the output, the tiles of one
//! batch in row-major order, batches after one another.

use archc_kernels::ir::build::{axis, bin, f32, mul, var};
use archc_kernels::ir::{Axis, Bin, Elem, Expr, Local, Stmt, Var};

use super::Layout;
use crate::graph::{Dim, TensorType};
use crate::lower::body::delinearize;
use crate::lower::fragments::{int, unroll, THREADS};
use crate::lower::index::{div_up, Ctx};

/// Rows and columns of a block's output tile.
pub(super) const TILE: i64 = 64;

/// The buffers of a GPU matmul kernel: the operands, then its arrays, numbered in this order.
pub(super) struct Buffers {
    pub a: usize,
    pub b: usize,
    /// The thread's values of `a` and of `b` for the current step (tensor-core fragments, or
    /// plain registers).
    pub a_values: usize,
    pub b_values: usize,
    /// The thread's accumulators.
    pub accumulators: usize,
    /// The slice's tiles of `a` and `b` in shared memory.
    pub a_tile: usize,
    pub b_tile: usize,
}

impl Buffers {
    /// The operands in buffers `a` and `b`, the arrays from buffer `first`.
    pub fn new(a: usize, b: usize, first: usize) -> Buffers {
        Buffers {
            a,
            b,
            a_values: first,
            b_values: first + 1,
            accumulators: first + 2,
            a_tile: first + 3,
            b_tile: first + 4,
        }
    }
}

/// Where a block is: its tile's first row and column, and the thread in the block.
pub(super) struct Block {
    pub i0: Var,
    pub j0: Var,
    pub t: Var,
}

/// The kernel body of a matmul `out = a · b` (batch rows merged into the rows when `flat`;
/// the operands in buffers `abuf` and `bbuf`, the kernel's arrays from buffer `first`): the
/// grid over the output's tiles, each block zeroing its threads' `accumulators` and then
/// running what `body` makes from the layout, the row count and the block's variables.
pub(super) fn kernel(
    cx: &mut Ctx,
    (out, flat): (&TensorType, bool),
    [(a, abuf), (b, bbuf)]: [(&TensorType, usize); 2],
    (first, accumulators): (usize, i64),
    body: impl FnOnce(&mut Ctx, (&Layout, &Expr), Block, &Buffers) -> Vec<Stmt>,
) -> Vec<Stmt> {
    let (l, batch_shape, rows) = Layout::new(cx, [out, a, b], flat, None);
    let m = cx.dim(&rows);
    let bufs = Buffers::new(abuf, bbuf, first);
    let block = Block {
        i0: cx.var(),
        j0: cx.var(),
        t: cx.var(),
    };
    let (i0, j0, t, e) = (block.i0, block.j0, block.t, cx.var());
    let zero = Stmt::Store(bufs.accumulators, var(e), f32(0.0));
    let mut each = vec![threads(t, vec![unroll(&[(e, accumulators)], vec![zero])])];
    each.extend(body(cx, (&l, &m), block, &bufs));
    vec![grid(cx, (&l, &batch_shape, &m), (i0, j0), each)]
}

/// The kernel's arrays, in [`Buffers`]' order: the thread's values of `a` and `b` (`values`
/// elements each, of type `elem`) and its f32 accumulators (locals), and the shared tiles of
/// `a` and `b`, `tiles` elements each.
pub(super) fn arrays(elem: Elem, values: [i64; 3], tiles: [i64; 2]) -> (Vec<Local>, Vec<Local>) {
    let array = |name: &str, elem, len: i64| Local {
        name: name.into(),
        elem,
        len: len as usize,
    };
    let locals = vec![
        array("a_values", elem, values[0]),
        array("b_values", elem, values[1]),
        array("accumulators", Elem::F32, values[2]),
    ];
    let shared = vec![
        array("a_tile", elem, tiles[0]),
        array("b_tile", elem, tiles[1]),
    ];
    (locals, shared)
}

/// The grid loop over the output's tiles of a matmul laid out as `l` (`batch_shape` batches of
/// `m` rows): each block sets `l`'s batch coordinates and its tile's first row `i0` and first
/// column `j0`, then runs `body`.
fn grid(
    cx: &mut Ctx,
    (l, batch_shape, m): (&Layout, &[Dim], &Expr),
    (i0, j0): (Var, Var),
    body: Vec<Stmt>,
) -> Stmt {
    let (tiles_m, tiles_n) = (div_up(m.clone(), int(TILE)), div_up(l.n.clone(), int(TILE)));
    let batches = cx.dim(&Dim::product(batch_shape).unwrap_or_default());
    let (task, bi) = (cx.var(), cx.var());
    let mut block = vec![Stmt::Set(
        bi,
        bin(Bin::Div, var(task), mul(tiles_m.clone(), tiles_n.clone())),
    )];
    for (v, x) in l.batch.iter().zip(delinearize(cx, var(bi), batch_shape)) {
        block.push(Stmt::Set(*v, x));
    }
    let row_tile = bin(
        Bin::Rem,
        bin(Bin::Div, var(task), tiles_n.clone()),
        tiles_m.clone(),
    );
    block.push(Stmt::Set(i0, mul(row_tile, int(TILE))));
    let column_tile = bin(Bin::Rem, var(task), tiles_n.clone());
    block.push(Stmt::Set(j0, mul(column_tile, int(TILE))));
    block.extend(body);
    axis(Axis::Grid, task, mul(batches, mul(tiles_m, tiles_n)), block)
}

/// `body` for every thread `t` of the block.
pub(super) fn threads(t: Var, body: Vec<Stmt>) -> Stmt {
    axis(Axis::Thread, t, int(THREADS), body)
}
