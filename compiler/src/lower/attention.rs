//! The attention kernel. Constant head widths whose value width is a multiple of 4 (every
//! model's) take the tiles of [`super::attention_tiles`] (on a GPU, [`super::attention_mma`]'s
//! tensor cores or [`super::attention_lanes`]' four threads per row); other shapes take this
//! one: one query row per iteration of the parallel loop, keys in blocks, an online softmax.
//!
//! For each block the row's logits (the scores after the user's modifications, evaluated from
//! the region body) go to a thread-private array; the running max `m` and sum `l` are updated
//! and the output accumulator (one row of `v`'s width, in registers) is rescaled by
//! `exp(m_old − m_new)` before the block's `exp(x − m)·v` are added. The scores are never
//! stored. Blocks of keys outside the range the masks leave visible (after the query row for a
//! causal mask, outside the window for a sliding one) are not visited.

use archc_kernels::ir::build::{add, bin, mul, serial, sub, var};
use archc_kernels::ir::{Axis, Bin, Elem, Expr, Ieee32, Local, Stmt, Un, Var};

use super::body::{broadcast_at, delinearize, BodyGen};
use super::index::{plus, Ctx};
use super::lanes::{lane_sum, splat, LANES};
use super::Template;
use crate::graph::{AttentionInfo, KeyRange, Region, TensorType};

/// Query rows of up to this many f32x4 vectors are held in registers.
const MAX_QUERY_REGISTERS: i64 = 8;

/// Attentions of at most this many query rows run a row per parallel iteration (see `lower`).
const ROW_QUERIES: i64 = 4;

/// Dot products whose length is a multiple of 4 up to this are unrolled into f32x4 FMAs.
const MAX_UNROLLED_DOT: i64 = 256;

fn f32(v: f32) -> Expr {
    Expr::F32(Ieee32::new(v))
}

/// The kernel for an attention region whose node has type `out` and operand types `ins`.
pub fn lower(
    cx: &mut Ctx,
    r: &Region,
    a: &AttentionInfo,
    out: &TensorType,
    ins: &[&TensorType],
) -> Template {
    let [qs, _, vs] = a.qkv;
    let (qt, vt) = (ins[qs], ins[vs]);
    let width = |t: &TensorType| t.shape[t.rank() - 1].as_const();
    // Buffers: the output, the inputs, the status word, then the locals.
    let first_local = ins.len() + 2;
    let (Some(d), Some(dv)) = (width(qt), width(vt)) else {
        return by_rows(cx, r, a, (out, ins), first_local);
    };
    if dv % 4 != 0 {
        return by_rows(cx, r, a, (out, ins), first_local);
    }
    let w = super::attention_tiles::Widths { d, dv };
    let queries = &out.shape[out.rank() - 2];
    // A GPU's own templates (tensor cores, else four threads per query row) declare their
    // locals first and their shared arrays after every local, the rows' ones too.
    let mma = super::attention_mma::applies(cx, a, ins, &w);
    let lanes = !mma && super::attention_lanes::applies(cx, &w);
    let own_locals = match (mma, lanes) {
        (true, _) => super::attention_mma::LOCALS,
        (false, true) => super::attention_lanes::LOCALS,
        (false, false) => 0,
    };
    let tiles = |cx: &mut Ctx, first_shared: usize| {
        let places = (&w, first_local, first_shared);
        match (mma, lanes) {
            (true, _) => super::attention_mma::lower(cx, r, a, (out, ins), places),
            (false, true) => super::attention_lanes::lower(cx, r, a, (out, ins), places),
            (false, false) => super::attention_tiles::lower(cx, r, a, (out, ins), &w),
        }
    };
    match queries.as_const() {
        Some(n) if n <= ROW_QUERIES => return by_rows(cx, r, a, (out, ins), first_local),
        Some(_) => return tiles(cx, first_local + own_locals),
        None => {}
    }
    // A few query rows (a decoding step's one) would fill the tiles' query panels with
    // padding: they take a row each instead. The kernel holds both; the row count picks.
    let (tiled, rows) = if mma || lanes {
        let rows = by_rows(cx, r, a, (out, ins), first_local + own_locals);
        (
            tiles(cx, first_local + own_locals + rows.locals.len()),
            rows,
        )
    } else {
        let tiled = tiles(cx, 0);
        let rows = by_rows(cx, r, a, (out, ins), first_local + tiled.locals.len());
        (tiled, rows)
    };
    let few = bin(Bin::Le, cx.dim(queries), Expr::Int(ROW_QUERIES));
    let base = tiled.checks.len() as u32;
    let mut body = super::grids_when(tiled.body, &few, false);
    let rows_body = super::frame::renumber_checks(rows.body, base);
    body.extend(super::grids_when(rows_body, &few, true));
    let mut checks = tiled.checks;
    checks.extend(rows.checks);
    let mut locals = tiled.locals;
    locals.extend(rows.locals);
    Template {
        body,
        checks,
        locals,
        shared: tiled.shared,
        scratch: None,
        occupancy: None,
    }
}

/// One query row per iteration of the parallel loop (see the module doc), its logits in
/// local `logits_buf`.
fn by_rows(
    cx: &mut Ctx,
    r: &Region,
    a: &AttentionInfo,
    (out, ins): (&TensorType, &[&TensorType]),
    logits_buf: usize,
) -> Template {
    let [qs, ks, vs] = a.qkv;
    let (qt, kt, vt) = (ins[qs], ins[ks], ins[vs]);
    let mut gen = BodyGen::new(&r.body, 1);
    let (qb, kb, vb) = (qs + 1, ks + 1, vs + 1);
    let block = cx.schedule.attention_block as i64;
    let rank = out.rank();
    let d = qt.shape[qt.rank() - 1].clone();
    let dv = vt.shape[vt.rank() - 1]
        .as_const()
        .expect("the pass admits constant value widths") as usize;
    // k's slot holds r with k = permute(k_order)(r): k's shape, and r's axis of each of k's.
    let k_shape: Vec<crate::graph::Dim> = a.k_order.iter().map(|&x| kt.shape[x].clone()).collect();
    // k may have fewer axes than the output (a weight as keys: no batch or head axes), so its
    // key axis is counted from k's own rank.
    let k_rank = k_shape.len();
    let t = cx.dim(&k_shape[k_rank - 2]);

    // One parallel iteration per output row: the batch coordinates and the query index.
    let row = cx.var();
    let coords = cx.vars(rank - 1);
    let mut per_row: Vec<Stmt> = delinearize(cx, var(row), &out.shape[..rank - 1])
        .into_iter()
        .zip(&coords)
        .map(|(e, v)| Stmt::Set(*v, e))
        .collect();
    let batch: Vec<Expr> = coords[..rank - 2].iter().map(|v| var(*v)).collect();
    let i = var(coords[rank - 2]);
    let row_start =
        |cx: &Ctx, t: &TensorType, order: &[usize], pos: Expr| row_start(cx, &batch, t, order, pos);
    let q_row = cx.var();
    per_row.push(Stmt::Set(q_row, row_start(cx, qt, &plain(qt), i.clone())));
    // A short query row stays in registers for all its keys.
    let q_regs: Vec<Var> = match d.as_const() {
        Some(n) if n % 4 == 0 && n / 4 <= MAX_QUERY_REGISTERS => {
            (0..n / 4).map(|_| cx.var()).collect()
        }
        _ => Vec::new(),
    };
    for (k, v) in q_regs.iter().enumerate() {
        per_row.push(Stmt::Set(
            *v,
            Expr::VLoad(
                qb,
                Box::new(add(var(q_row), Expr::Int(4 * k as i64))),
                LANES,
            ),
        ));
    }
    // Consecutive keys' rows are this far apart in k and v.
    let k_stride = cx.strides(&kt.shape)[a.k_order[k_rank - 2]].clone();
    let v_stride = cx.strides(&vt.shape)[vt.rank() - 2].clone();

    // The accumulator: f32x4 registers when the value width allows, scalars otherwise.
    let lanes = if dv.is_multiple_of(4) { 4 } else { 1 };
    let accs = cx.vars(dv / lanes);
    let widen = |e: Expr| if lanes == 4 { splat(e) } else { e };
    let (m, l) = (cx.var(), cx.var());
    per_row.push(Stmt::Set(m, f32(f32::NEG_INFINITY)));
    per_row.push(Stmt::Set(l, f32(0.0)));
    for acc in &accs {
        per_row.push(Stmt::Set(*acc, widen(f32(0.0))));
    }

    let rows = (i.clone(), i.clone());
    let (first, blocks) = key_blocks(cx, &a.keys, rows, t.clone(), block, &mut per_row);
    let (jb, j0, count, jj, j) = (cx.var(), cx.var(), cx.var(), cx.var(), cx.var());
    let (k_row, s, x, bm, mn, corr) = (cx.var(), cx.var(), cx.var(), cx.var(), cx.var(), cx.var());
    let mut per_block = vec![
        Stmt::Set(
            j0,
            mul(
                first.map_or(var(jb), |f| add(var(f), var(jb))),
                Expr::Int(block),
            ),
        ),
        Stmt::Set(
            count,
            bin(Bin::Min, Expr::Int(block), sub(t.clone(), var(j0))),
        ),
        Stmt::Set(bm, f32(f32::NEG_INFINITY)),
    ];

    // Pass 1: the block's logits and their max.
    per_block.push(Stmt::Set(k_row, row_start(cx, kt, &a.k_order, var(j0))));
    let mut score = vec![Stmt::Set(j, add(var(j0), var(jj)))];
    score.extend(dot(cx, (qb, q_row, &q_regs), (kb, k_row), &d, s));
    gen.bind(a.scores, var(s));
    let mut at = batch.clone();
    at.extend([i.clone(), var(j)]);
    let logit = gen.value(cx, a.logits, &at);
    score.extend(gen.take_lets());
    score.push(Stmt::Set(x, logit));
    score.push(Stmt::Store(logits_buf, var(jj), var(x)));
    score.push(Stmt::Set(bm, bin(Bin::Max, var(bm), var(x))));
    score.push(Stmt::Set(k_row, add(var(k_row), k_stride.clone())));
    per_block.push(Stmt::For {
        var: jj,
        extent: var(count),
        kind: Axis::Serial,
        body: score,
    });

    // Rescale what the earlier blocks accumulated to the new max.
    per_block.push(Stmt::Set(mn, bin(Bin::Max, var(m), var(bm))));
    per_block.push(Stmt::Set(
        corr,
        Expr::Un(Un::Exp, Box::new(sub(var(m), var(mn)))),
    ));
    per_block.push(Stmt::Set(l, mul(var(l), var(corr))));
    for acc in &accs {
        per_block.push(Stmt::Set(*acc, mul(var(*acc), widen(var(corr)))));
    }

    // Pass 2: p = exp(x − m) for each key, summed, and p·v accumulated; four keys at a time
    // (one vector exp) when the accumulator is in vectors, then one at a time.
    let (p, v_row) = (cx.var(), cx.var());
    per_block.push(Stmt::Set(v_row, row_start(cx, vt, &plain(vt), var(j0))));
    let weigh_key = |p: Expr| -> Vec<Stmt> {
        let mut out: Vec<Stmt> = accs
            .iter()
            .enumerate()
            .map(|(c, acc)| {
                let at = add(var(v_row), Expr::Int((c * lanes) as i64));
                Stmt::Set(
                    *acc,
                    if lanes == 4 {
                        Expr::Fma(
                            Box::new(splat(p.clone())),
                            Box::new(Expr::VLoad(vb, Box::new(at), LANES)),
                            Box::new(var(*acc)),
                        )
                    } else {
                        add(var(*acc), mul(p.clone(), Expr::Load(vb, Box::new(at))))
                    },
                )
            })
            .collect();
        out.push(Stmt::Set(v_row, add(var(v_row), v_stride.clone())));
        out
    };
    let quads = if lanes == 4 {
        bin(Bin::Div, var(count), Expr::Int(4))
    } else {
        Expr::Int(0)
    };
    if lanes == 4 {
        let (q4, p4, sum4) = (cx.var(), cx.var(), cx.var());
        per_block.push(Stmt::Set(sum4, splat(f32(0.0))));
        let mut quad = vec![
            Stmt::Set(
                p4,
                Expr::Un(
                    Un::Exp,
                    Box::new(sub(
                        Expr::VLoad(logits_buf, Box::new(mul(var(q4), Expr::Int(4))), LANES),
                        splat(var(mn)),
                    )),
                ),
            ),
            Stmt::Set(sum4, add(var(sum4), var(p4))),
        ];
        for lane in 0..4u8 {
            quad.extend(weigh_key(Expr::Lane(Box::new(var(p4)), lane)));
        }
        per_block.push(serial(q4, quads.clone(), quad));
        per_block.push(Stmt::Set(l, add(var(l), lane_sum(sum4, LANES))));
    }
    let mut weigh = vec![
        Stmt::Set(
            p,
            Expr::Un(
                Un::Exp,
                Box::new(sub(
                    Expr::Load(
                        logits_buf,
                        Box::new(add(mul(quads.clone(), Expr::Int(4)), var(jj))),
                    ),
                    var(mn),
                )),
            ),
        ),
        Stmt::Set(l, add(var(l), var(p))),
    ];
    weigh.extend(weigh_key(var(p)));
    per_block.push(serial(jj, sub(var(count), mul(quads, Expr::Int(4))), weigh));
    per_block.push(Stmt::Set(m, var(mn)));
    per_row.push(Stmt::For {
        var: jb,
        extent: blocks,
        kind: Axis::Serial,
        body: per_block,
    });

    // The output row is acc / l (the output is contiguous: row-major [rows, dv]).
    for (c, acc) in accs.iter().enumerate() {
        let at = add(
            mul(var(row), Expr::Int(dv as i64)),
            Expr::Int((c * lanes) as i64),
        );
        let value = bin(Bin::Div, var(*acc), widen(var(l)));
        per_row.push(if lanes == 4 {
            Stmt::VStore(0, at, value, LANES)
        } else {
            Stmt::Store(0, at, value)
        });
    }
    let rows =
        cx.dim(&crate::graph::Dim::product(&out.shape[..rank - 1]).expect("row counts fit in i64"));
    let body = vec![Stmt::For {
        var: row,
        extent: rows,
        kind: Axis::Grid,
        body: per_row,
    }];
    Template {
        body,
        checks: gen.checks,
        locals: vec![Local {
            name: "logits".into(),
            elem: Elem::F32,
            len: cx.schedule.attention_block,
        }],
        shared: Vec::new(),
        scratch: None,
        occupancy: None,
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
