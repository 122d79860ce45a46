//! The matmul `x · wᵀ` of a weight kept in groups of 16 rows ([`Elem::Q8_0x16`] and kin):
//! one element of 16 rows of `w` (16 output columns) is one run of bytes, so the kernel
//! vectorizes across output columns, where the plain blocks' kernel (`blocks.rs`) vectorizes
//! along `k` and sums each column's lanes at the end.
//!
//! - Up to `DOT_ROWS` rows (decoding), [`dot`]: a task owns a few groups of columns. For
//!   every block of 32 along `k` and every row of `x`, it takes the 16 columns' dot products
//!   with the block's integers, element by element, broadcasting `x`'s value:
//!   `Σ_j x_j·q_j` (two chains, the block's low and high halves). Each is scaled once,
//!   `d·Σ x·q + m·Σ x`, into the column's accumulator: no sum across lanes, and the 16
//!   columns' scales are one vector.
//! - More rows (a prompt), [`pack`]: the blocked matmul's tasks pack their panels from the
//!   groups, a row of a panel being one element of its columns, dequantized (`q·d + m`, as
//!   ggml does) and stored as vectors.

use archc_kernels::ir::build::{add, axis, bin, mul, serial, var};
use archc_kernels::ir::{Axis, Bin, BlockPart, Expr, Ieee32, Stmt, Var, GROUP_ROWS, QUANT_BLOCK};

use super::blocks::{fma, set, zeroed};
use super::{Epilogue, Layout, Slice};
use crate::lower::index::Ctx;

/// Rows of `x` that share each vector of integers.
const ROWS: i64 = 4;

/// How many blocks ahead along `k` the dot products prefetch each group's.
const PREFETCH_BLOCKS: i64 = 8;

/// Elements along `k` of a block, taken as pairs `j`, `j + HALF` (a 4-bit block's byte).
const HALF: u8 = (QUANT_BLOCK / 2) as u8;

/// The dot-product path for `rows` rows of `x` (buffer `abuf`) against grouped `wbuf`
/// (`min`: `Q4_1x16`, with minimums): a Grid loop over tasks of `groups` groups of columns.
pub(super) fn dot(
    cx: &mut Ctx,
    (l, m): (&Layout, Expr),
    (abuf, wbuf, min): (usize, usize, bool),
    epilogue: &mut Option<&mut dyn Epilogue>,
) -> Vec<Stmt> {
    let n = l.b.shape[1].as_const().unwrap_or(0);
    let width = cx.schedule.lanes.clamp(1, 16) as i64;
    let group = GROUP_ROWS as i64;
    // Two vectors of columns a task at least, for two independent chains per half.
    let groups = if width == group && n % (2 * group) == 0 {
        2
    } else {
        1
    };
    let t = cx.var();
    let full = bin(Bin::Div, m.clone(), Expr::Int(ROWS));
    let (ib, it) = (cx.var(), cx.var());
    let mut tile = |cx: &mut Ctx, first: Expr, rows: i64| {
        let at = Tile {
            l,
            t,
            groups,
            width,
            first,
            rows,
            buffers: (abuf, wbuf, min),
        };
        at.body(cx, epilogue)
    };
    let blocks = tile(cx, mul(var(ib), Expr::Int(ROWS)), ROWS);
    let start = mul(full.clone(), Expr::Int(ROWS));
    let rest = tile(cx, add(start.clone(), var(it)), 1);
    vec![axis(
        Axis::Grid,
        t,
        Expr::Int(n / (groups * group)),
        vec![
            axis(Axis::Serial, ib, full, blocks),
            axis(Axis::Serial, it, bin(Bin::Sub, m, start), rest),
        ],
    )]
}

/// `pack_b` from grouped `bbuf` holding `bᵀ`: for each block of the slice (whose starts
/// are multiples of the blocks) and each run of a panel's columns, the run's scales (and
/// minimums), then per element of the block its dequantized values stored as one vector.
pub(super) fn pack(cx: &mut Ctx, at: &Slice, (bbuf, packed): (usize, usize), min: bool) -> Stmt {
    let Slice { s, l, t, k_lo, kc } = *at;
    let (nr, w) = (s.nr(), (s.lanes as i64).clamp(1, 16));
    let w8 = w as u8;
    let block = QUANT_BLOCK as i64;
    let (jp, kb) = (cx.var(), cx.var());
    let per_row = bin(Bin::Div, l.k.clone(), Expr::Int(block));
    let first = bin(Bin::Div, var(k_lo), Expr::Int(block));
    let mut copy = Vec::new();
    for c in (0..nr).step_by(w as usize) {
        let col = add(add(var(t.j.0), mul(var(jp), Expr::Int(nr))), Expr::Int(c));
        let b = Box::new(block_of(&col, add(first.clone(), var(kb)), &per_row));
        let d = set(
            cx,
            &mut copy,
            Expr::Block(bbuf, b.clone(), BlockPart::Scales { width: w8 }),
        );
        let m = min.then(|| {
            set(
                cx,
                &mut copy,
                Expr::Block(bbuf, b.clone(), BlockPart::Mins { width: w8 }),
            )
        });
        for j in 0..QUANT_BLOCK as u8 {
            let q = Expr::Block(bbuf, b.clone(), BlockPart::Column { j, width: w8 });
            // ggml's arithmetic: a multiply, then an add, never fused.
            let x = bin(Bin::Mul, q, d.clone());
            let x = m.clone().map_or(x.clone(), |m| bin(Bin::Add, x, m));
            let row = add(
                mul(var(jp), Expr::Int(s.kc)),
                add(mul(var(kb), Expr::Int(block)), Expr::Int(i64::from(j))),
            );
            let to = add(mul(row, Expr::Int(nr)), Expr::Int(c));
            copy.push(Stmt::VStore(packed, to, x, w8));
        }
    }
    let blocks = bin(Bin::Div, var(kc), Expr::Int(block));
    serial(jp, var(t.panels), vec![serial(kb, blocks, copy)])
}

/// The block number, in a grouped buffer of `per_row` blocks a row, of column `col`'s (a
/// row of `w`) block `kb`: row `col mod 16` of group `(col / 16)·per_row + kb`.
fn block_of(col: &Expr, kb: Expr, per_row: &Expr) -> Expr {
    let g = Expr::Int(GROUP_ROWS as i64);
    let group = add(
        mul(bin(Bin::Div, col.clone(), g.clone()), per_row.clone()),
        kb,
    );
    add(mul(group, g.clone()), bin(Bin::Rem, col.clone(), g))
}

/// `rows` rows of `x` from row `first` against the task's `groups` groups of columns.
struct Tile<'l, 'a> {
    l: &'l Layout<'a>,
    t: Var,
    groups: i64,
    width: i64,
    first: Expr,
    rows: i64,
    /// `x`'s buffer, `w`'s, and whether `w` has minimums (`Q4_1x16`).
    buffers: (usize, usize, bool),
}

impl Tile<'_, '_> {
    /// Vectors of columns of the task.
    fn vectors(&self) -> i64 {
        self.groups * GROUP_ROWS as i64 / self.width
    }

    /// The first column of the task's vector `v`.
    fn col(&self, v: i64) -> Expr {
        let first = mul(var(self.t), Expr::Int(self.groups * GROUP_ROWS as i64));
        add(first, Expr::Int(v * self.width))
    }

    /// The tile's statements: its accumulators zeroed, the reduction over the blocks along
    /// `k`, then the epilogue.
    fn body(&self, cx: &mut Ctx, epilogue: &mut Option<&mut dyn Epilogue>) -> Vec<Stmt> {
        let (abuf, wbuf, min) = self.buffers;
        let w8 = self.width as u8;
        let acc = self.vars(cx);
        let mut body = zeroed(&acc, w8);
        let kb = cx.var();
        let per_row = bin(Bin::Div, self.l.k.clone(), Expr::Int(QUANT_BLOCK as i64));
        // Each vector's first block, once per tile; its block `kb` is `16·kb` past it.
        let firsts: Vec<Expr> = (0..self.vectors())
            .map(|v| {
                let first = block_of(&self.col(v), Expr::Int(0), &per_row);
                set(cx, &mut body, first)
            })
            .collect();
        let at = |kb: Expr, first: &Expr| add(first.clone(), mul(kb, Expr::Int(GROUP_ROWS as i64)));
        // Decoding streams every weight from memory once: ask for each group's blocks a few
        // steps ahead, so that more of them are in flight than the hardware's prefetcher keeps.
        let per_group = (GROUP_ROWS as i64 / self.width) as usize;
        let mut step: Vec<Stmt> = firsts
            .iter()
            .step_by(per_group)
            .map(|first| {
                let ahead = add(var(kb), Expr::Int(PREFETCH_BLOCKS));
                Stmt::Prefetch(wbuf, at(ahead, first))
            })
            .collect();
        let blocks: Vec<Expr> = firsts
            .iter()
            .map(|first| set(cx, &mut step, at(var(kb), first)))
            .collect();
        let part = |b: &Expr, p| Expr::Block(wbuf, Box::new(b.clone()), p);
        let d: Vec<Expr> = blocks
            .iter()
            .map(|b| set(cx, &mut step, part(b, BlockPart::Scales { width: w8 })))
            .collect();
        let halves = [self.vars(cx), self.vars(cx)];
        for j in 0..QUANT_BLOCK as u8 {
            let q: Vec<Expr> = blocks
                .iter()
                .map(|b| set(cx, &mut step, part(b, BlockPart::Column { j, width: w8 })))
                .collect();
            let chains = &halves[usize::from(j / HALF)];
            step.extend(self.products(cx, (abuf, kb, j), &q, chains));
        }
        // Q4_1: Σ x·(q·d + m) = d·Σ x·q + m·Σ x.
        let mins = min.then(|| {
            let m: Vec<Expr> = blocks
                .iter()
                .map(|b| set(cx, &mut step, part(b, BlockPart::Mins { width: w8 })))
                .collect();
            (m, self.sums(cx, &mut step, (abuf, kb)))
        });
        for (r, accs) in acc.iter().enumerate() {
            for (v, a) in accs.iter().enumerate() {
                let dot = add(var(halves[0][r][v]), var(halves[1][r][v]));
                let mut next = fma(dot, d[v].clone(), var(*a));
                if let Some((m, sums)) = &mins {
                    next = fma(m[v].clone(), sums[r].clone(), next);
                }
                step.push(Stmt::Set(*a, next));
            }
        }
        body.push(axis(Axis::Reduce, kb, per_row, step));
        body.extend(self.finish(cx, &acc, epilogue));
        body
    }

    /// A fresh vector variable per row and vector of columns.
    fn vars(&self, cx: &mut Ctx) -> Vec<Vec<Var>> {
        (0..self.rows)
            .map(|_| (0..self.vectors()).map(|_| cx.var()).collect())
            .collect()
    }

    /// Element `j` of block `kb` of every row against the columns' integers `q` (a vector
    /// each), into `chains` (per row and vector): set by the first element of a half,
    /// multiply-added by the others.
    fn products(
        &self,
        cx: &mut Ctx,
        (abuf, kb, j): (usize, Var, u8),
        q: &[Expr],
        chains: &[Vec<Var>],
    ) -> Vec<Stmt> {
        let mut out = Vec::new();
        for (r, accs) in chains.iter().enumerate() {
            let row = add(self.first.clone(), Expr::Int(r as i64));
            let p = add(
                mul(var(kb), Expr::Int(QUANT_BLOCK as i64)),
                Expr::Int(i64::from(j)),
            );
            let x = Expr::Load(abuf, Box::new(self.l.a(cx, row, p)));
            let x = Expr::Splat(Box::new(set(cx, &mut out, x)), self.width as u8);
            for (v, q) in accs.iter().zip(q) {
                let next = match j % HALF {
                    0 => bin(Bin::Mul, q.clone(), x.clone()),
                    _ => fma(q.clone(), x.clone(), var(*v)),
                };
                out.push(Stmt::Set(*v, next));
            }
        }
        out
    }

    /// Per row, the sum of `x` over block `kb`, splat: its vectors added, then their lanes
    /// (pairwise), appended to `step`.
    fn sums(&self, cx: &mut Ctx, step: &mut Vec<Stmt>, (abuf, kb): (usize, Var)) -> Vec<Expr> {
        let w8 = self.width as u8;
        (0..self.rows)
            .map(|r| {
                let row = add(self.first.clone(), Expr::Int(r));
                let v = (0..QUANT_BLOCK as i64 / self.width)
                    .map(|u| {
                        let p = add(
                            mul(var(kb), Expr::Int(QUANT_BLOCK as i64)),
                            Expr::Int(u * self.width),
                        );
                        Expr::VLoad(abuf, Box::new(self.l.a(cx, row.clone(), p)), w8)
                    })
                    .reduce(add)
                    .map(|v| set(cx, step, v));
                let mut lanes: Vec<Expr> = (0..w8)
                    .filter_map(|l| Some(Expr::Lane(Box::new(v.clone()?), l)))
                    .collect();
                while lanes.len() > 1 {
                    lanes = lanes
                        .chunks(2)
                        .filter_map(|p| p.iter().cloned().reduce(add))
                        .collect();
                }
                let sum = lanes.pop().unwrap_or(Expr::F32(Ieee32::new(0.0)));
                set(cx, step, Expr::Splat(Box::new(sum), w8))
            })
            .collect()
    }

    /// Finishes the accumulators (row by row, a vector of consecutive columns each): through
    /// the epilogue's vector form when it has one, else element by element; or stored.
    fn finish(
        &self,
        cx: &mut Ctx,
        acc: &[Vec<Var>],
        epilogue: &mut Option<&mut dyn Epilogue>,
    ) -> Vec<Stmt> {
        let w8 = self.width as u8;
        let mut out = Vec::new();
        for (r, accs) in acc.iter().enumerate() {
            let i = add(self.first.clone(), Expr::Int(r as i64));
            for (v, a) in accs.iter().enumerate() {
                let j = cx.var();
                out.push(Stmt::Set(j, self.col(v as i64)));
                let Some(e) = epilogue.as_deref_mut() else {
                    let at = self.l.out(cx, i.clone(), var(j));
                    out.push(Stmt::VStore(0, at, var(*a), w8));
                    continue;
                };
                let at = self.l.coords(cx, i.clone(), var(j));
                match e.vector(cx, (var(*a), w8), at, j) {
                    Some(s) => out.extend(s),
                    None => return self.finish_lanes(cx, acc, e),
                }
            }
        }
        out
    }

    /// Finishes the accumulators lane by lane through the epilogue's scalar form.
    fn finish_lanes(&self, cx: &mut Ctx, acc: &[Vec<Var>], e: &mut dyn Epilogue) -> Vec<Stmt> {
        let mut out = Vec::new();
        for (r, accs) in acc.iter().enumerate() {
            let i = add(self.first.clone(), Expr::Int(r as i64));
            for (v, a) in accs.iter().enumerate() {
                let col = self.col(v as i64);
                for lane in 0..self.width as u8 {
                    let x = Expr::Lane(Box::new(var(*a)), lane);
                    let j = add(col.clone(), Expr::Int(i64::from(lane)));
                    out.extend(e.scalar(cx, x, self.l.coords(cx, i.clone(), j)));
                }
            }
        }
        out
    }
}
