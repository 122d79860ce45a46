//! The grid of the GPU matmul templates ([`super::tensor_cores`], [`super::thread_tiles`],
//! [`super::warpgroups`]): a block of [`THREADS`] threads (or the template's own count) per
//! tile of the output ([`TILE`] × [`TILE`], or the template's own), the tiles of one batch in
//! groups of a few rows, column by column within a group (for L2's sake: [`GROUP_ROWS`]),
//! batches after one another.
//!
//! [`THREADS`]: crate::lower::fragments::THREADS

use archc_kernels::ir::build::{axis, bin, f32, mul, var};
use archc_kernels::ir::{Axis, Bin, Elem, Expr, Local, Stmt, Var};

use super::Layout;
use crate::graph::{Dim, TensorType};
use crate::lower::body::delinearize;
use crate::lower::fragments::{int, unroll};
use crate::lower::index::{div_up, Ctx};

/// Rows and columns of a block's output tile, unless the template says otherwise.
pub(super) const TILE: i64 = 64;

/// The buffers of a GPU matmul kernel: the operands, then its arrays: the thread's
/// accumulators and any other locals, then the shared tiles.
pub(super) struct Buffers {
    pub a: usize,
    pub b: usize,
    /// The thread's accumulators.
    pub accumulators: usize,
    /// The slice's tiles of `a` and `b` in shared memory.
    pub a_tile: usize,
    pub b_tile: usize,
}

impl Buffers {
    /// The operands in buffers `a` and `b`, the arrays from buffer `first`, of which
    /// `locals` are locals.
    pub fn new(a: usize, b: usize, first: usize, locals: usize) -> Buffers {
        Buffers {
            a,
            b,
            accumulators: first,
            a_tile: first + locals,
            b_tile: first + locals + 1,
        }
    }

    /// The locals of the templates that load `a`'s and `b`'s values for the current step
    /// (tensor-core fragments, or plain registers) before they multiply: the two after the
    /// accumulators ([`arrays`]).
    pub fn values(&self) -> (usize, usize) {
        (self.accumulators + 1, self.accumulators + 2)
    }
}

/// Where a block is: its tile's first row and column, and the thread in the block of
/// `threads`.
pub(super) struct Block {
    pub i0: Var,
    pub j0: Var,
    pub t: Var,
    pub threads: i64,
}

impl Block {
    /// `body` for every thread `t` of the block.
    pub fn threads(&self, body: Vec<Stmt>) -> Stmt {
        axis(Axis::Thread, self.t, int(self.threads), body)
    }
}

/// The kernel body of a matmul `out = a · b` (batch rows merged into the rows when `flat`;
/// the operands in buffers `abuf` and `bbuf`, the kernel's arrays from buffer `first`, of
/// which `locals` are locals): the grid over the output's tiles of `tile` rows and columns,
/// a block of `threads` each, each block zeroing its threads' first `accumulators` (none if 0) and then running what
/// `body` makes from the layout, the row count and the block's variables.
pub(super) fn kernel(
    cx: &mut Ctx,
    (out, flat, tile, threads): (&TensorType, bool, (i64, i64), i64),
    [(a, abuf), (b, bbuf)]: [(&TensorType, usize); 2],
    (first, locals, accumulators): (usize, usize, i64),
    body: impl FnOnce(&mut Ctx, (&Layout, &Expr), Block, &Buffers) -> Vec<Stmt>,
) -> Vec<Stmt> {
    let (l, batch_shape, rows) = Layout::new(cx, [out, a, b], flat, None);
    let m = cx.dim(&rows);
    let bufs = Buffers::new(abuf, bbuf, first, locals);
    let block = Block {
        i0: cx.var(),
        j0: cx.var(),
        t: cx.var(),
        threads,
    };
    let (i0, j0, e) = (block.i0, block.j0, cx.var());
    let zero = Stmt::Store(bufs.accumulators, var(e), f32(0.0));
    let mut each = Vec::new();
    if accumulators > 0 {
        each.push(block.threads(vec![unroll(&[(e, accumulators)], vec![zero])]));
    }
    each.extend(body(cx, (&l, &m), block, &bufs));
    vec![grid(cx, (&l, &batch_shape, &m), (i0, j0, tile), each)]
}

/// The kernel's arrays, in [`Buffers`]' order: the thread's f32 accumulators (`values[0]`),
/// its values of `a` and `b` (`values[1]` and `values[2]` elements of type `elem`; none when
/// both are 0), and the shared tiles of `a` and `b`, `tiles` elements each.
pub(super) fn arrays(elem: Elem, values: [i64; 3], tiles: [i64; 2]) -> (Vec<Local>, Vec<Local>) {
    let array = |name: &str, elem, len: i64| Local {
        name: name.into(),
        elem,
        len: len as usize,
    };
    let mut locals = vec![array("accumulators", Elem::F32, values[0])];
    if values[1..] != [0, 0] {
        locals.push(array("a_values", elem, values[1]));
        locals.push(array("b_values", elem, values[2]));
    }
    let shared = vec![
        array("a_tile", elem, tiles[0]),
        array("b_tile", elem, tiles[1]),
    ];
    (locals, shared)
}

/// The grid loop over the output's tiles (`rows` × `columns`) of a matmul laid out as `l`
/// (`batch_shape` batches of `m` rows): each block sets `l`'s batch coordinates and its tile's
/// first row `i0` and first column `j0`, then runs `body`.
fn grid(
    cx: &mut Ctx,
    (l, batch_shape, m): (&Layout, &[Dim], &Expr),
    (i0, j0, (rows, columns)): (Var, Var, (i64, i64)),
    body: Vec<Stmt>,
) -> Stmt {
    let (tiles_m, tiles_n) = (
        div_up(m.clone(), int(rows)),
        div_up(l.n.clone(), int(columns)),
    );
    let batches = cx.dim(&Dim::product(batch_shape).unwrap_or_default());
    let (task, bi) = (cx.var(), cx.var());
    let mut block = vec![Stmt::Set(
        bi,
        bin(Bin::Div, var(task), mul(tiles_m.clone(), tiles_n.clone())),
    )];
    for (v, x) in l.batch.iter().zip(delinearize(cx, var(bi), batch_shape)) {
        block.push(Stmt::Set(*v, x));
    }
    let (row_tile, column_tile) = (cx.var(), cx.var());
    block.extend(grouped(
        cx,
        var(task),
        (&tiles_m, &tiles_n),
        (row_tile, column_tile),
    ));
    block.push(Stmt::Set(i0, mul(var(row_tile), int(rows))));
    block.push(Stmt::Set(j0, mul(var(column_tile), int(columns))));
    block.extend(body);
    axis(Axis::Grid, task, mul(batches, mul(tiles_m, tiles_n)), block)
}

/// Row tiles of a group: the blocks running at once cover a few groups' worth of rows,
/// whose columns they share.
const GROUP_ROWS: i64 = 8;

/// Sets `row` and `column` to the tile that block `task` computes, in a batch of
/// `tiles_m` × `tiles_n` tiles: column by column within each group of [`GROUP_ROWS`] row
/// tiles (Triton's grouped order), so that the blocks resident at once read a few rows' and
/// a few columns' operands, which stay in L2, where row by row they would sweep all of `b`
/// for each few rows of `a`.
fn grouped(
    cx: &mut Ctx,
    task: Expr,
    (tiles_m, tiles_n): (&Expr, &Expr),
    (row, column): (Var, Var),
) -> Vec<Stmt> {
    let (t, first, within) = (cx.var(), cx.var(), cx.var());
    let per_group = mul(int(GROUP_ROWS), tiles_n.clone());
    let rows_here = bin(
        Bin::Min,
        bin(Bin::Sub, tiles_m.clone(), var(first)),
        int(GROUP_ROWS),
    );
    vec![
        Stmt::Set(
            t,
            bin(Bin::Rem, task, mul(tiles_m.clone(), tiles_n.clone())),
        ),
        Stmt::Set(
            first,
            mul(bin(Bin::Div, var(t), per_group.clone()), int(GROUP_ROWS)),
        ),
        Stmt::Set(within, bin(Bin::Rem, var(t), per_group)),
        Stmt::Set(
            row,
            bin(
                Bin::Add,
                var(first),
                bin(Bin::Rem, var(within), rows_here.clone()),
            ),
        ),
        Stmt::Set(column, bin(Bin::Div, var(within), rows_here)),
    ]
}
