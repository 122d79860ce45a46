//! Attention by query rows, for a few queries (a decoding step's one) and the shapes the
//! tiles do not take: one query row per iteration of the parallel loop, keys in blocks, an
//! online softmax.
//!
//! For each block the row's logits (the scores after the user's modifications, evaluated from
//! the region body) go to a thread-private array; the running max `m` and sum `l` are updated
//! and the output accumulator (one row of `v`'s width, in registers) is rescaled by
//! `exp(m_old − m_new)` before the block's `exp(x − m)·v` are added. The scores are never
//! stored. Blocks of keys outside the range the masks leave visible (after the query row for a
//! causal mask, outside the window for a sliding one) are not visited.
//!
//! On a GPU whose blocks take a split ([`super::attention_split`]), a row is a block's
//! instead.

use archc_kernels::ir::build::{add, bin, mul, serial, sub, var};
use archc_kernels::ir::{Axis, Bin, Elem, Expr, Ieee32, Local, Stmt, Un, Var};

use super::attention::{dot, key_blocks, plain, row_start, QueryRow};
use super::attention_split::Split;
use super::body::BodyGen;
use super::fragments::THREADS;
use super::index::Ctx;
use super::lanes::{lane_sum, splat, LANES};
use super::Template;
use crate::graph::{AttentionInfo, Region, TensorType};

/// Query rows of up to this many f32x4 vectors are held in registers.
const MAX_QUERY_REGISTERS: i64 = 8;

fn f32(v: f32) -> Expr {
    Expr::F32(Ieee32::new(v))
}

/// How a row's keys are walked.
#[derive(Clone, Copy, Debug)]
pub(super) enum Walk {
    /// By one thread, in order.
    Serial,
    /// By the threads of a GPU block, keys and channels split as
    /// [`super::attention_split`] says.
    Split(Split),
}

impl Walk {
    /// The walk of rows whose head width is `d` (when constant) and value width `dv` under
    /// `cx`'s schedule: split on a GPU whose blocks are [`THREADS`] threads when a split
    /// applies, serial otherwise.
    pub fn for_rows(cx: &Ctx, (d, dv): (Option<i64>, i64)) -> Walk {
        match Split::new(d, dv) {
            Some(s) if cx.schedule.gpu_block == Some(THREADS as u32) => Walk::Split(s),
            _ => Walk::Serial,
        }
    }
}

/// One query row per iteration of the parallel loop, its keys walked as `walk` says (see the
/// module doc), its logits in local `logits_buf`.
pub(super) fn lower(
    cx: &mut Ctx,
    r: &Region,
    a: &AttentionInfo,
    (out, ins): (&TensorType, &[&TensorType]),
    (logits_buf, walk): (usize, Walk),
) -> Template {
    if let Walk::Split(split) = walk {
        return super::attention_split::lower(cx, r, a, (out, ins), (logits_buf, split));
    }
    let [qs, ks, vs] = a.qkv;
    let (qt, kt, vt) = (ins[qs], ins[ks], ins[vs]);
    let mut gen = BodyGen::new(&r.body, 1);
    let (qb, kb, vb) = (qs + 1, ks + 1, vs + 1);
    let block = cx.schedule.attention_block as i64;
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

    // One parallel iteration per output row.
    let QueryRow {
        row,
        mut per_row,
        batch,
        i,
    } = QueryRow::new(cx, out);
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
    per_row.extend([Stmt::Set(m, f32(f32::NEG_INFINITY)), Stmt::Set(l, f32(0.0))]);
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
    template(cx, out, row, per_row, gen.checks)
}

/// The template of the rows' parallel loop over `row` (the output's rows) running `per_row`.
fn template(
    cx: &Ctx,
    out: &TensorType,
    row: Var,
    per_row: Vec<Stmt>,
    checks: Vec<String>,
) -> Template {
    let rank = out.rank();
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
        checks,
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
