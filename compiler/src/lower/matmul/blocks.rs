//! The matmul `x · wᵀ` of a weight `w` kept block-quantized in memory (a GGUF tensor's
//! `Q8_0`, `Q4_0` or `Q4_1` blocks), read in place: decoding reads every weight once per
//! token, so it is bound by their bytes, and blocks of 4.5 bits read 7× fewer than f32.
//!
//! `w` is `[n, k]` row-major with its blocks along `k`. The kernel has two paths, which the
//! row count picks at run time:
//!
//! - Up to `DOT_ROWS` rows (decoding), dot products along `k`: each task owns `COLS` rows of
//!   `w` (output columns) and, for every `ROWS` rows of `x`, keeps `ROWS × COLS` vector
//!   accumulators. Block by block it loads each column's integers once (widened to f32 lanes
//!   in registers) for all the rows, takes their dot product with the rows' values and scales
//!   it once: `Σ x·(q·d + m) = d·Σ x·q + m·Σ x` (the minimum only for `Q4_1`). The rows left
//!   over get a one-row pass; the accumulators' lanes are summed in order at the end, then the
//!   epilogue (or a store) finishes each element.
//! - More rows (a prompt), the blocked matmul of `matmul.rs`, whose tasks pack their slices of
//!   `w` transposed, dequantized once per task ([`pack_transposed`]), where `n` is whole
//!   panels.

use archc_kernels::ir::build::{add, axis, bin, mul, serial, var};
use archc_kernels::ir::{
    Axis, Bin, BlockPart, Elem, Expr, Ieee32, Local, Stmt, Var, GROUP_ROWS, QUANT_BLOCK,
};
use petgraph::graph::NodeIndex;

use super::{Epilogue, Layout, Slice};
use crate::graph::{Dim, Graph, Op, RegionKind};
use crate::lower::index::Ctx;

/// Rows of `x` that share each dequantized vector of `w`.
const ROWS: i64 = 4;
/// The most rows of `w` one task owns.
const COLS: i64 = 4;

/// Products of at most this many rows take the dot products on the blocks (see `matmul`).
const DOT_ROWS: i64 = 16;

/// The transposes of weight `w` of `g` (a param whose rows are whole groups of
/// [`GROUP_ROWS`]) that only matmuls read, each reading `w` in place through it
/// ([`transposed_weight`]): those matmuls can read `w` in groups of rows ([`Elem::Q8_0x16`]).
/// When they are all of `w`'s users, no kernel reads `w` element by element.
pub fn group_readers(g: &Graph, w: NodeIndex) -> Vec<NodeIndex> {
    let rows = g.ty(w).shape.first().and_then(Dim::as_const);
    if !rows.is_some_and(|r| r > 0 && r % GROUP_ROWS as i64 == 0) {
        return Vec::new();
    }
    let mut users = g.users(w);
    users.dedup();
    users.retain(|&t| {
        let readers = g.users(t);
        transposed(g, t) == Some(w)
            && !readers.is_empty()
            && readers.iter().all(|&m| {
                transposed_weight(g, m)
                    .is_some_and(|(slot, x)| x == w && g.operands(m).get(slot) == Some(&t))
            })
    });
    users
}

/// For node `n` of `g` (a matmul, or a region anchored on one) whose `b` is `permute[1, 0]`
/// of a param with rows of whole blocks: which operand `b` is, and the param. When the
/// param is kept block-quantized, the matmul reads it in place ([`Ctx::transposed`]).
pub fn transposed_weight(g: &Graph, n: NodeIndex) -> Option<(usize, NodeIndex)> {
    let operands = g.operands(n);
    let slot = match &g.dag[n].op {
        Op::MatMul => 1,
        Op::Fused(r) => {
            let RegionKind::MatMul { anchor } = r.kind else {
                return None;
            };
            let ab = r.body.operands(anchor);
            let slot_of = |m: NodeIndex| {
                r.body
                    .inputs
                    .iter()
                    .find(|(_, x)| **x == m)
                    .and_then(|(s, _)| s.parse::<usize>().ok())
            };
            let (sa, sb) = (slot_of(ab[0])?, slot_of(ab[1])?);
            // The epilogue must not read `b` too: it reads it as it is.
            if sa == sb || r.body.users(ab[1]) != [anchor] {
                return None;
            }
            sb
        }
        _ => return None,
    };
    let b = *operands.get(slot)?;
    if g.dag[n].ty.dtype != archc_runtime::DType::F32 {
        return None;
    }
    let w = transposed(g, b)?;
    let k = g.ty(w).shape.get(1).and_then(Dim::as_const)?;
    let whole = k > 0 && k % QUANT_BLOCK as i64 == 0;
    (matches!(g.dag[w].op, Op::Param(_)) && whole).then_some((slot, w))
}

/// The node that node `b` of `g` transposes: `b` is `permute[1, 0]` of it, or a region of
/// just that.
fn transposed(g: &Graph, b: NodeIndex) -> Option<NodeIndex> {
    let swap = |op: &Op| matches!(op, Op::Permute(p) if p == &[1, 0]);
    match &g.dag[b].op {
        op if swap(op) => Some(g.operands(b)[0]),
        Op::Fused(r) if r.kind == RegionKind::Elementwise => {
            let out = r.output();
            let only = r.body.dag.node_count() == 2 && swap(&r.body.dag[out].op);
            (only && r.body.operands(out) == [r.input(0)]).then(|| g.operands(b)[0])
        }
        _ => None,
    }
}

/// The kernel body and its locals: output buffer 0 gets `a · wᵀ` for `rows` rows, `a` and
/// `w` in buffers `abuf` and `wbuf` (`l.b` is `wᵀ`'s type `[k, n]`, a constant `n`). Up to
/// [`DOT_ROWS`] rows (decoding) take dot products on the blocks; more (a prompt) take `gemm`,
/// the blocked kernel packing `w`'s slices (of whole blocks) transposed and dequantized once
/// per task, where `n` is whole panels. The kernel holds both; the row count picks.
pub(super) fn matmul(
    cx: &mut Ctx,
    (l, rows): (&Layout, &Dim),
    (abuf, wbuf, elem): (usize, usize, Elem),
    mut epilogue: Option<&mut dyn Epilogue>,
    gemm: impl FnOnce(&mut Ctx, Option<&mut dyn Epilogue>) -> (Vec<Stmt>, Vec<Local>),
) -> (Vec<Stmt>, Vec<Local>) {
    let n = l.b.shape[1].as_const().unwrap_or(0);
    let m = cx.dim(rows);
    if elem.is_grouped() {
        let min = elem.block() == Elem::Q4_1;
        let dot = super::groups::dot(cx, (l, m.clone()), (abuf, wbuf, min), &mut epilogue);
        return both(cx, (dot, m, n), epilogue, gemm);
    }
    let cols = (1..=COLS).rev().find(|c| n % c == 0).unwrap_or(1);
    // A width of at most 16 that divides the blocks: lanes never straddle two.
    let width = cx.schedule.lanes.clamp(1, 16) as i64;
    let t = cx.var();
    let full = bin(Bin::Div, m.clone(), Expr::Int(ROWS));
    let (ib, it) = (cx.var(), cx.var());
    let tile = |cx: &mut Ctx, first: Expr, r: i64, epi: &mut Option<&mut dyn Epilogue>| {
        let at = Tile {
            l,
            t,
            cols,
            width,
            first,
            rows: r,
        };
        at.body(cx, (abuf, wbuf, elem == Elem::Q4_1), epi)
    };
    let blocks = tile(cx, mul(var(ib), Expr::Int(ROWS)), ROWS, &mut epilogue);
    let start = mul(full.clone(), Expr::Int(ROWS));
    let rest = tile(cx, add(start.clone(), var(it)), 1, &mut epilogue);
    let dot = vec![axis(
        Axis::Grid,
        t,
        Expr::Int(n / cols),
        vec![
            axis(Axis::Serial, ib, full, blocks),
            axis(Axis::Serial, it, bin(Bin::Sub, m.clone(), start), rest),
        ],
    )];
    both(cx, (dot, m, n), epilogue, gemm)
}

/// The kernel holding `dot` for up to [`DOT_ROWS`] rows (`m`) and `gemm`'s blocked matmul for
/// more, where the `n` columns are whole panels; `dot` alone otherwise.
fn both(
    cx: &mut Ctx,
    (dot, m, n): (Vec<Stmt>, Expr, i64),
    epilogue: Option<&mut dyn Epilogue>,
    gemm: impl FnOnce(&mut Ctx, Option<&mut dyn Epilogue>) -> (Vec<Stmt>, Vec<Local>),
) -> (Vec<Stmt>, Vec<Local>) {
    let s = super::Shape::of(cx);
    let whole = n % s.nr() == 0 && s.lanes <= 16;
    if !whole {
        return (dot, Vec::new());
    }
    let (panels, locals) = gemm(cx, epilogue);
    let few = bin(Bin::Le, m, Expr::Int(DOT_ROWS));
    let mut body = crate::lower::grids_when(dot, &few, true);
    body.extend(crate::lower::grids_when(panels, &few, false));
    (body, locals)
}

/// `pack_b` from a `b` whose buffer holds `bᵀ` block-quantized: each column of the slice is
/// a run of a row of `bᵀ`, loaded (dequantized) a vector at a time and stored lane by lane
/// into its panel. The slices start at multiples of `kc`, which `blocks` makes a multiple of
/// the blocks, so the vectors lie in whole blocks.
pub(super) fn pack_transposed(cx: &mut Ctx, at: &Slice, (bbuf, packed): (usize, usize)) -> Stmt {
    if let Some((_, elem)) = cx.transposed.filter(|t| t.1.is_grouped()) {
        let min = elem.block() == Elem::Q4_1;
        return super::groups::pack(cx, at, (bbuf, packed), min);
    }
    let Slice { s, l, t, k_lo, kc } = *at;
    let (nr, w) = (s.nr(), s.lanes as i64);
    let (jp, c, kv, v) = (cx.var(), cx.var(), cx.var(), cx.var());
    let col = add(add(var(t.j.0), mul(var(jp), Expr::Int(nr))), var(c));
    let p = mul(var(kv), Expr::Int(w));
    let mut copy = vec![Stmt::Set(
        v,
        Expr::VLoad(
            bbuf,
            Box::new(l.b(cx, add(var(k_lo), p.clone()), col)),
            w as u8,
        ),
    )];
    for lane in 0..w {
        let row = add(
            mul(var(jp), Expr::Int(s.kc)),
            add(p.clone(), Expr::Int(lane)),
        );
        let to = add(mul(row, Expr::Int(nr)), var(c));
        copy.push(Stmt::Store(
            packed,
            to,
            Expr::Lane(Box::new(var(v)), lane as u8),
        ));
    }
    let vectors = bin(Bin::Div, var(kc), Expr::Int(w));
    serial(
        jp,
        var(t.panels),
        vec![serial(c, Expr::Int(nr), vec![serial(kv, vectors, copy)])],
    )
}

/// One block of `rows` rows from row `first`, against the task's `cols` rows of `w`.
struct Tile<'l, 'a> {
    l: &'l Layout<'a>,
    t: Var,
    cols: i64,
    width: i64,
    first: Expr,
    rows: i64,
}

impl Tile<'_, '_> {
    fn body(
        &self,
        cx: &mut Ctx,
        (abuf, wbuf, min): (usize, usize, bool),
        epilogue: &mut Option<&mut dyn Epilogue>,
    ) -> Vec<Stmt> {
        let w8 = self.width as u8;
        let block = QUANT_BLOCK as i64;
        let runs = block / self.width;
        let zero = Expr::Splat(Box::new(Expr::F32(Ieee32::new(0.0))), w8);
        let acc: Vec<Vec<Var>> = (0..self.rows)
            .map(|_| (0..self.cols).map(|_| cx.var()).collect())
            .collect();
        let mut body = zeroed(&acc, w8);
        let kb = cx.var();
        let per_row = bin(Bin::Div, self.l.k.clone(), Expr::Int(block));
        let col = |c: i64| add(mul(var(self.t), Expr::Int(self.cols)), Expr::Int(c));
        let mut step = Vec::new();
        // Per column: its block's scale (and minimum) and integers, shared by the rows.
        let mut cols = Vec::new();
        for c in 0..self.cols {
            let at = Box::new(add(mul(col(c), per_row.clone()), var(kb)));
            let part = |p| Expr::Block(wbuf, at.clone(), p);
            let d = set(
                cx,
                &mut step,
                Expr::Splat(Box::new(part(BlockPart::Scale)), w8),
            );
            let m = min.then(|| {
                set(
                    cx,
                    &mut step,
                    Expr::Splat(Box::new(part(BlockPart::Min)), w8),
                )
            });
            let q: Vec<Expr> = (0..runs)
                .map(|u| {
                    let (at, width) = ((u * self.width) as u8, w8);
                    set(cx, &mut step, part(BlockPart::Quants { at, width }))
                })
                .collect();
            cols.push((d, m, q));
        }
        for (r, accs) in acc.iter().enumerate() {
            let row = add(self.first.clone(), Expr::Int(r as i64));
            let a: Vec<Expr> = (0..runs)
                .map(|u| {
                    let p = add(mul(var(kb), Expr::Int(block)), Expr::Int(u * self.width));
                    let at = self.l.a(cx, row.clone(), p);
                    set(cx, &mut step, Expr::VLoad(abuf, Box::new(at), w8))
                })
                .collect();
            // Q4_1: Σ a·(q·d + m) = d·Σ a·q + m·Σ a.
            let sum = min.then(|| {
                let s = a.iter().cloned().reduce(|x, y| bin(Bin::Add, x, y));
                set(cx, &mut step, s.unwrap_or(zero.clone()))
            });
            for (v, (d, m, q)) in accs.iter().zip(&cols) {
                let dot = a.iter().zip(q).fold(None, |acc, (a, q)| {
                    Some(match acc {
                        None => mul(a.clone(), q.clone()),
                        Some(acc) => fma(a.clone(), q.clone(), acc),
                    })
                });
                let dot = dot.unwrap_or(zero.clone());
                let mut next = fma(dot, d.clone(), var(*v));
                if let (Some(m), Some(sum)) = (m, &sum) {
                    next = fma(sum.clone(), m.clone(), next);
                }
                step.push(Stmt::Set(*v, next));
            }
        }
        body.push(axis(Axis::Reduce, kb, per_row, step));
        for (r, accs) in acc.iter().enumerate() {
            for (c, a) in accs.iter().enumerate() {
                let sum = (1..w8).fold(Expr::Lane(Box::new(var(*a)), 0), |s, lane| {
                    add(s, Expr::Lane(Box::new(var(*a)), lane))
                });
                let i = add(self.first.clone(), Expr::Int(r as i64));
                let j = col(c as i64);
                body.extend(match epilogue {
                    Some(e) => e.scalar(cx, sum, self.l.coords(cx, i, j)),
                    None => vec![Stmt::Store(0, self.l.out(cx, i, j), sum)],
                });
            }
        }
        body
    }
}

/// Sets every accumulator of `acc` to a zero vector of `width` lanes.
pub(super) fn zeroed(acc: &[Vec<Var>], width: u8) -> Vec<Stmt> {
    let zero = Expr::Splat(Box::new(Expr::F32(Ieee32::new(0.0))), width);
    acc.iter()
        .flatten()
        .map(|v| Stmt::Set(*v, zero.clone()))
        .collect()
}

/// Sets a fresh variable to `e` at the end of `body`; its value.
pub(super) fn set(cx: &mut Ctx, body: &mut Vec<Stmt>, e: Expr) -> Expr {
    let v = cx.var();
    body.push(Stmt::Set(v, e));
    var(v)
}

/// `a · b + c`, lane by lane.
pub(super) fn fma(a: Expr, b: Expr, c: Expr) -> Expr {
    Expr::Fma(Box::new(a), Box::new(b), Box::new(c))
}
