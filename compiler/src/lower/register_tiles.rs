//! A block's product spread over its threads as register tiles: thread `(g, c)` of
//! `row_groups × col_groups` holds the results at rows `g + r·row_groups` and columns
//! `c + j·col_groups` (`r < rows_each`, `j < cols_each`) in registers. Per step of the reduced
//! axis it loads `rows_each + cols_each` values and does `rows_each · cols_each` multiply-adds,
//! where a thread per result loads two values per multiply-add: on a GPU, shared memory's
//! bandwidth, not the arithmetic, bounds such products. A warp's threads take consecutive
//! columns (consecutive addresses in row-major operands) and few distinct rows (broadcasts).
//!
//! Rows and columns past the result's edges are computed on clamped (in-bounds) operands and
//! never stored.

use archc_kernels::ir::build::{add, bin, f32, load, mul, serial, var};
use archc_kernels::ir::{Bin, Expr, Local, Stmt, Var};

use super::fragments::{and, div, int, lt, rem, unroll, THREADS};
use super::index::Ctx;

/// Columns per thread where the columns allow.
const COLS_EACH: i64 = 4;

/// How a `rows × cols` result is spread over a block's [`THREADS`] threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiling {
    rows: i64,
    cols: i64,
    row_groups: i64,
    col_groups: i64,
    /// Rows per thread.
    pub rows_each: i64,
    /// Columns per thread.
    pub cols_each: i64,
}

impl Tiling {
    /// Up to four columns per thread, as many column groups as that takes (at most the
    /// block), the block's other threads over the rows.
    pub fn new(rows: i64, cols: i64) -> Tiling {
        let (rows, cols) = (rows.max(1), cols.max(1));
        let cols_each = COLS_EACH.min(cols).max((cols + THREADS - 1) / THREADS);
        let col_groups = (cols + cols_each - 1) / cols_each;
        let row_groups = (THREADS / col_groups).max(1);
        Tiling {
            rows,
            cols,
            row_groups,
            col_groups,
            rows_each: (rows + row_groups - 1) / row_groups,
            cols_each,
        }
    }

    /// Accumulators per thread.
    pub fn len(&self) -> i64 {
        self.rows_each * self.cols_each
    }
}

/// A thread's tile: its tiling, its row and column group (set by [`Tile::place`]) and its
/// thread-private arrays (buffer numbers): the accumulators and one step's operand values.
pub struct Tile {
    /// The tiling.
    pub tiling: Tiling,
    g: Var,
    c: Var,
    /// The accumulators, `[rows_each, cols_each]`.
    pub acc: usize,
    a: usize,
    b: usize,
}

/// The arrays [`Tile`] uses, for tiles of at most `len` accumulators, `rows` rows and `cols`
/// columns per thread.
pub fn locals(len: i64, rows: i64, cols: i64) -> Vec<Local> {
    super::f32_locals(&[("tile", len), ("tile_rows", rows), ("tile_cols", cols)])
}

impl Tile {
    /// A tile of `tiling` whose arrays are buffers `first..first + 3` (see [`locals`]).
    pub fn new(cx: &mut Ctx, tiling: Tiling, first: usize) -> Tile {
        Tile {
            tiling,
            g: cx.var(),
            c: cx.var(),
            acc: first,
            a: first + 1,
            b: first + 2,
        }
    }

    /// Sets the row and column group of thread `tid`.
    pub fn place(&self, tid: Var) -> Vec<Stmt> {
        let t = &self.tiling;
        vec![
            Stmt::Set(self.g, div(var(tid), t.col_groups)),
            Stmt::Set(self.c, rem(var(tid), t.col_groups)),
        ]
    }

    /// Whether thread `tid` has a tile (the threads past `row_groups · col_groups` have none).
    pub fn has_one(&self, tid: Var) -> Expr {
        lt(
            var(tid),
            int(self.tiling.row_groups * self.tiling.col_groups),
        )
    }

    /// The result row of the tile's row `r`.
    pub fn row(&self, r: &Expr) -> Expr {
        add(var(self.g), mul(r.clone(), int(self.tiling.row_groups)))
    }

    /// The result column of the tile's column `j`.
    pub fn col(&self, j: &Expr) -> Expr {
        add(var(self.c), mul(j.clone(), int(self.tiling.col_groups)))
    }

    /// The accumulator of the tile's row `r` and column `j`.
    pub fn at(&self, r: &Expr, j: &Expr) -> Expr {
        add(mul(r.clone(), int(self.tiling.cols_each)), j.clone())
    }

    /// `body` for each of the tile's results, row `r` and column `j` (unrolled).
    pub fn each(&self, (r, j): (Var, Var), body: Vec<Stmt>) -> Stmt {
        let t = &self.tiling;
        unroll(&[(r, t.rows_each), (j, t.cols_each)], body)
    }

    /// Whether the tile's row `r` and column `j` lie inside the result.
    pub fn inside(&self, r: &Expr, j: &Expr) -> Expr {
        and(
            lt(self.row(r), int(self.tiling.rows)),
            lt(self.col(j), int(self.tiling.cols)),
        )
    }

    /// The accumulators set to 0.
    pub fn zero(&self, cx: &mut Ctx) -> Stmt {
        let (r, j) = (cx.var(), cx.var());
        let slot = self.at(&var(r), &var(j));
        self.each((r, j), vec![Stmt::Store(self.acc, slot, f32(0.0))])
    }

    /// Adds `Σ_{k < len} a(row, k)·b(k, col)` into the accumulators. `a` and `b` see rows and
    /// columns clamped inside the result.
    pub fn add_product(
        &self,
        cx: &mut Ctx,
        len: Expr,
        a: impl Fn(Expr, Expr) -> Expr,
        b: impl Fn(Expr, Expr) -> Expr,
    ) -> Stmt {
        let t = self.tiling;
        let clamp = |e: Expr, n: i64| bin(Bin::Min, e, int(n - 1));
        let [k, r, j] = [(); 3].map(|_| cx.var());
        let rows = unroll(
            &[(r, t.rows_each)],
            vec![Stmt::Store(
                self.a,
                var(r),
                a(clamp(self.row(&var(r)), t.rows), var(k)),
            )],
        );
        let cols = unroll(
            &[(j, t.cols_each)],
            vec![Stmt::Store(
                self.b,
                var(j),
                b(var(k), clamp(self.col(&var(j)), t.cols)),
            )],
        );
        let slot = self.at(&var(r), &var(j));
        let fma = Stmt::Store(
            self.acc,
            slot.clone(),
            add(
                load(self.acc, slot),
                mul(load(self.a, var(r)), load(self.b, var(j))),
            ),
        );
        let products = unroll(&[(r, t.rows_each), (j, t.cols_each)], vec![fma]);
        serial(k, len, vec![rows, cols, products])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tilings_cover_the_result_with_the_block() {
        // Mamba-2's outputs per chunk (32 steps × 64 channels) and its state pass (128 × 64).
        let t = Tiling::new(32, 64);
        assert_eq!(
            (t.col_groups, t.row_groups, t.rows_each, t.cols_each),
            (16, 8, 4, 4)
        );
        let t = Tiling::new(128, 64);
        assert_eq!((t.rows_each, t.cols_each, t.len()), (16, 4, 64));
        // Few columns: every thread a column group of its own is not needed.
        let t = Tiling::new(64, 6);
        assert_eq!(
            (t.col_groups, t.row_groups, t.rows_each, t.cols_each),
            (2, 64, 1, 4)
        );
        // Very wide: more columns per thread, at most a block of column groups.
        let t = Tiling::new(8, 1000);
        assert!(t.col_groups <= THREADS && t.col_groups * t.cols_each >= 1000);
        assert_eq!(t.row_groups, 1);
        assert_eq!(t.rows_each, 8);
    }
}
