//! The attention kernel. Constant head widths whose value width is a multiple of 4 (every
//! model's) take the tiles of [`super::attention_tiles`] (on a GPU, [`super::attention_mma`]'s
//! tensor cores or [`super::attention_lanes`]' four threads per row); other shapes, and a few
//! query rows (a decoding step's one), take [`super::attention_rows`]: a row at a time.

use archc_kernels::ir::build::{add, bin, mul, sub, var};
use archc_kernels::ir::{Axis, Bin, Expr, Stmt, Var};

use super::attention_rows::Walk;
use super::body::broadcast_at;
use super::index::{plus, Ctx};
use super::lanes::{lane_sum, splat, LANES};
use super::{Template, Templates};
use crate::graph::{AttentionInfo, KeyRange, Region, TensorType};

/// Attentions of at most this many query rows run a row per parallel iteration (see `lower`).
const ROW_QUERIES: i64 = 4;

/// Dot products whose length is a multiple of 4 up to this are unrolled into f32x4 FMAs.
const MAX_UNROLLED_DOT: i64 = 256;

fn f32(v: f32) -> Expr {
    archc_kernels::ir::build::f32(v)
}

/// The kernels for an attention region whose node has type `out` and operand types `ins`:
/// one, or on a GPU over a symbolic number of queries two (see the comment below).
pub fn lower(
    cx: &mut Ctx,
    r: &Region,
    a: &AttentionInfo,
    out: &TensorType,
    ins: &[&TensorType],
) -> Templates {
    let [qs, _, vs] = a.qkv;
    let (qt, vt) = (ins[qs], ins[vs]);
    let width = |t: &TensorType| t.shape[t.rank() - 1].as_const();
    // Buffers: the output, the inputs, the status word, then the locals.
    let first_local = ins.len() + 2;
    let rows_alone = |cx: &mut Ctx| {
        let dv = width(vt).expect("the pass admits constant value widths");
        let walk = Walk::for_rows(cx, (width(qt), dv));
        super::attention_rows::lower(cx, r, a, (out, ins), (first_local, walk))
    };
    let (Some(d), Some(dv)) = (width(qt), width(vt)) else {
        return vec![("", rows_alone(cx))];
    };
    if dv % 4 != 0 {
        return vec![("", rows_alone(cx))];
    }
    let w = super::attention_tiles::Widths { d, dv };
    let queries = &out.shape[out.rank() - 2];
    // A GPU's own templates (tensor cores, else four threads per query row) declare their
    // locals first and their shared arrays after every local.
    let mma = super::attention_mma::applies(cx, a, ins, &w);
    let lanes = !mma && super::attention_lanes::applies(cx, &w);
    let own_locals = match (mma, lanes) {
        (true, _) => super::attention_mma::LOCALS,
        (false, true) => super::attention_lanes::LOCALS,
        (false, false) => 0,
    };
    let tiles = |cx: &mut Ctx| {
        let places = (&w, first_local, first_local + own_locals);
        match (mma, lanes) {
            (true, _) => super::attention_mma::lower(cx, r, a, (out, ins), places),
            (false, true) => super::attention_lanes::lower(cx, r, a, (out, ins), places),
            (false, false) => super::attention_tiles::lower(cx, r, a, (out, ins), &w),
        }
    };
    match queries.as_const() {
        Some(n) if n <= ROW_QUERIES => return vec![("", rows_alone(cx))],
        Some(_) => return vec![("", tiles(cx))],
        None => {}
    }
    // A few query rows (a decoding step's one) would fill the tiles' query panels with
    // padding: they take a row each instead, the row count picking which grid has
    // iterations. On a GPU these are two kernels, so that the rows' (split across a block's
    // threads) keep registers of their own; a kernel whose blocks hold thread loops is not
    // mapped onto threads again (`gpu::map`), so the CPU's tiles, which need that, share a
    // kernel with rows walked by one thread.
    let few = bin(Bin::Le, cx.dim(queries), Expr::Int(ROW_QUERIES));
    if mma || lanes {
        let tiled = tiles(cx);
        let rows = rows_alone(cx);
        let (tiled_body, rows_body) = (
            super::grids_when(tiled.body, &few, false),
            super::grids_when(rows.body, &few, true),
        );
        return vec![
            (
                "",
                Template {
                    body: tiled_body,
                    ..tiled
                },
            ),
            (
                "_rows",
                Template {
                    body: rows_body,
                    ..rows
                },
            ),
        ];
    }
    let tiled = tiles(cx);
    let at = (first_local + tiled.locals.len(), Walk::Serial);
    let rows = super::attention_rows::lower(cx, r, a, (out, ins), at);
    let base = tiled.checks.len() as u32;
    let mut body = super::grids_when(tiled.body, &few, false);
    let rows_body = super::frame::renumber_checks(rows.body, base);
    body.extend(super::grids_when(rows_body, &few, true));
    let mut checks = tiled.checks;
    checks.extend(rows.checks);
    let mut locals = tiled.locals;
    locals.extend(rows.locals);
    vec![(
        "",
        Template {
            body,
            checks,
            locals,
            shared: tiled.shared,
            scratch: None,
            occupancy: tiled.occupancy,
        },
    )]
}

/// One output row per iteration of a parallel loop over `row`: the statements setting its
/// batch coordinates and query index from it, those coordinates, and the query index.
pub(super) struct QueryRow {
    pub row: Var,
    pub per_row: Vec<Stmt>,
    pub batch: Vec<Expr>,
    pub i: Expr,
}

impl QueryRow {
    /// The row of an attention whose output has type `out`.
    pub fn new(cx: &mut Ctx, out: &TensorType) -> QueryRow {
        let rank = out.rank();
        let row = cx.var();
        let coords = cx.vars(rank - 1);
        let per_row = super::body::delinearize(cx, var(row), &out.shape[..rank - 1])
            .into_iter()
            .zip(&coords)
            .map(|(e, v)| Stmt::Set(*v, e))
            .collect();
        QueryRow {
            row,
            per_row,
            batch: coords[..rank - 2].iter().map(|v| var(*v)).collect(),
            i: var(coords[rank - 2]),
        }
    }
}

/// `0, 1, …, rank − 1`: an operand stored in its logical order.
pub(super) fn plain(t: &TensorType) -> Vec<usize> {
    (0..t.rank()).collect()
}

/// The linear index of element 0 of row `pos` of an operand (its last axis is contiguous)
/// whose buffer holds `t` and whose axis `a` is `t`'s axis `order[a]`, at the output's batch
/// coordinates `batch` (broadcast against the operand's own).
pub(super) fn row_start(
    cx: &Ctx,
    batch: &[Expr],
    t: &TensorType,
    order: &[usize],
    pos: Expr,
) -> Expr {
    let logical: Vec<crate::graph::Dim> = order.iter().map(|&x| t.shape[x].clone()).collect();
    let mut at = batch.to_vec();
    at.push(pos);
    let mut at = broadcast_at(&at, &logical[..t.rank() - 1]);
    at.push(Expr::Int(0));
    let mut stored = at.clone();
    for (a, &x) in order.iter().enumerate() {
        stored[x] = at[a].clone();
    }
    cx.index(&t.shape, &stored)
}

/// The blocks of keys that queries `first ..= last` visit: those that meet the visible keys
/// `i + lo ..= i + hi` of some query `i` among them (the pass proved every row keeps one, so
/// the range is never empty). Returns the variable holding the first block, when there is a
/// lower bound (statements setting it go to `per_row`), and the number of blocks.
pub(super) fn key_blocks(
    cx: &mut Ctx,
    keys: &KeyRange,
    (first, last): (Expr, Expr),
    t: Expr,
    block: i64,
    per_row: &mut Vec<Stmt>,
) -> (Option<Var>, Expr) {
    let all = bin(Bin::Div, add(t, Expr::Int(block - 1)), Expr::Int(block));
    let end = match keys.hi {
        Some(hi) => bin(
            Bin::Min,
            all,
            add(
                bin(Bin::Div, plus(last, Expr::Int(hi)), Expr::Int(block)),
                Expr::Int(1),
            ),
        ),
        None => all,
    };
    // With a lower bound, the row starts at the block holding key i + lo.
    match keys.lo {
        Some(lo) => {
            let from = cx.var();
            per_row.push(Stmt::Set(
                from,
                bin(
                    Bin::Div,
                    bin(Bin::Max, Expr::Int(0), plus(first, Expr::Int(lo))),
                    Expr::Int(block),
                ),
            ));
            (Some(from), sub(end, var(from)))
        }
        None => (None, end),
    }
}

/// `s = Σₚ a[ra + p]·b[rb + p]` for p < d: f32x4 FMAs unrolled when d is a small multiple of
/// 4, a scalar loop otherwise.
pub(super) fn dot(
    cx: &mut Ctx,
    (ab, ra, a_regs): (usize, Var, &[Var]),
    (bb, rb): (usize, Var),
    d: &crate::graph::Dim,
    s: Var,
) -> Vec<Stmt> {
    let load = |buf: usize, base: Var, off: Expr, vector: bool| {
        let at = Box::new(add(var(base), off));
        if vector {
            Expr::VLoad(buf, at, LANES)
        } else {
            Expr::Load(buf, at)
        }
    };
    match d.as_const() {
        Some(n) if n % 4 == 0 && n <= MAX_UNROLLED_DOT => {
            let sv = cx.var();
            let mut out = vec![Stmt::Set(sv, splat(f32(0.0)))];
            for k in 0..n / 4 {
                let a = match a_regs.get(k as usize) {
                    Some(v) => var(*v),
                    None => load(ab, ra, Expr::Int(4 * k), true),
                };
                out.push(Stmt::Set(
                    sv,
                    Expr::Fma(
                        Box::new(a),
                        Box::new(load(bb, rb, Expr::Int(4 * k), true)),
                        Box::new(var(sv)),
                    ),
                ));
            }
            out.push(Stmt::Set(s, lane_sum(sv, LANES)));
            out
        }
        _ => {
            let pv = cx.var();
            vec![
                Stmt::Set(s, f32(0.0)),
                Stmt::For {
                    var: pv,
                    extent: cx.dim(d),
                    kind: Axis::Serial,
                    body: vec![Stmt::Set(
                        s,
                        add(
                            var(s),
                            mul(load(ab, ra, var(pv), false), load(bb, rb, var(pv), false)),
                        ),
                    )],
                },
            ]
        }
    }
}
