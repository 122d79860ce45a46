//! Tiled attention on blocks of query rows: FlashAttention's loop nest on CPU threads, with
//! both of its products on the register micro-kernel ([`super::micro`]).
//!
//! A task (one iteration of the parallel loop) takes `QB` query rows of one batch row and
//! head. It packs their `Qᵀ` once, into panels of `nr` queries (a step's queries side by side),
//! then walks the key blocks the masks leave visible. Per block of `KB` keys:
//! 1. `Sᵀ = K·Qᵀ` on the micro-kernel. The block's keys are its rows, read from `k` in place
//!    (each key row is contiguous), and the queries its columns, so the scores land key-major
//!    in a `KB × QB` local.
//! 2. The user's modifications (scale, masks, biases) turn each score into a logit, in place.
//! 3. The online softmax runs down the key axis in vectors across queries: the block's max per
//!    query, the correction `exp(m_old − m_new)`, `p = exp(x − m)` written back, and their sum.
//! 4. `O += P·V` on the micro-kernel. `Pᵀ` is laid out as a packed panel is (a step's queries
//!    side by side), the rows of `v` are read in place, and `O` (a `QB × dv` local) was first
//!    scaled by each query's correction.
//!
//! Each output row is then `O / l`. Keeping the scores key-major is what lets both products run
//! without packing `k` or `p`: only `Qᵀ` is packed, once per task.
//!
//! The running max starts at −∞ and is kept at or above `f32::MIN`: a query whose keys in the
//! first blocks are all masked with −∞ (a sliding window starting after them) then gets
//! `exp(−∞ − MIN) = 0` rather than `exp(−∞ + ∞) = NaN`.

use archc_kernels::ir::build::{add, bin, mul, serial, sub, var};
use archc_kernels::ir::{Bin, Expr, Ieee32, Local, Stmt, Un, Var};

use super::attention::{key_blocks, plain, row_start};
use super::attention_tasks::{over_tasks, pack_rows, row_stride, task, task_rows};
use super::body::BodyGen;
use super::index::Ctx;
use super::product::{columns, product, Product};
use super::Template;
use crate::graph::{AttentionGradInfo, AttentionInfo, KeyRange, Region, TensorType};
use petgraph::graph::NodeIndex;

/// The widths of one attention: of the query and key rows (`d`) and of the value rows (`dv`).
pub struct Widths {
    /// Channels of a query or key row.
    pub d: i64,
    /// Channels of a value row, a multiple of 4.
    pub dv: i64,
}

fn f32(v: f32) -> Expr {
    Expr::F32(Ieee32::new(v))
}

/// The buffers of a task's locals.
struct Locals {
    q_panels: usize,
    scores: usize,
    acc: usize,
    maxes: usize,
    sums: usize,
    corrections: usize,
}

impl Locals {
    /// The locals numbered from buffer `first` on.
    fn from(first: usize) -> Locals {
        Locals {
            q_panels: first,
            scores: first + 1,
            acc: first + 2,
            maxes: first + 3,
            sums: first + 4,
            corrections: first + 5,
        }
    }
}

/// What the tiles read of an attention's scores: the body's score and logit nodes, the slots
/// of q and k, k's layout and the keys each query sees.
pub(super) struct Spine<'a> {
    /// The `matmul(q, kᵀ)` node.
    pub scores: NodeIndex,
    /// The softmax's input.
    pub logits: NodeIndex,
    /// q's slot.
    pub q: usize,
    /// k's slot, holding `permute(k_order)` of k.
    pub k: usize,
    /// See `k`.
    pub k_order: &'a [usize],
    /// The visible keys.
    pub keys: &'a KeyRange,
}

/// The kernel for an attention region whose node has type `out` and operand types `ins`,
/// with constant widths `w`.
pub fn lower(
    cx: &mut Ctx,
    r: &Region,
    a: &AttentionInfo,
    (out, ins): (&TensorType, &[&TensorType]),
    w: &Widths,
) -> Template {
    let spine = Spine {
        scores: a.scores,
        logits: a.logits,
        q: a.qkv[0],
        k: a.qkv[1],
        k_order: &a.k_order,
        keys: &a.keys,
    };
    tiled(cx, r, &spine, Some(a.qkv[2]), (out, ins), w)
}

/// The kernel of attention's backward's first part: each query row's softmax statistics
/// `[m, log l]` (`[…, s, 2]`), as the forward computes its max and sum, without the values.
pub fn softmax_stats(
    cx: &mut Ctx,
    r: &Region,
    a: &AttentionGradInfo,
    (out, ins): (&TensorType, &[&TensorType]),
    d: i64,
) -> Template {
    let spine = Spine {
        scores: a.scores,
        logits: a.logits,
        q: a.q,
        k: a.k,
        k_order: &a.k_order,
        keys: &a.keys,
    };
    tiled(cx, r, &spine, None, (out, ins), &Widths { d, dv: 4 })
}

/// The tiled loop nest: the output rows `O / l` when `values` (v's slot) is given, else the
/// statistics `[m, log l]` of each query.
fn tiled(
    cx: &mut Ctx,
    r: &Region,
    a: &Spine,
    values: Option<usize>,
    (out, ins): (&TensorType, &[&TensorType]),
    w: &Widths,
) -> Template {
    let mut gen = BodyGen::new(&r.body, 1);
    let (qs, ks) = (a.q, a.k);
    let (qt, kt) = (ins[qs], ins[ks]);
    let (qb, kb) = (qs + 1, ks + 1);
    // Buffers: the output, the inputs, the status word, then the locals.
    let loc = Locals::from(ins.len() + 2);
    let schedule = cx.schedule;
    let lanes = schedule.lanes.clamp(4, 16);
    let nr = ((schedule.blocking.nr / lanes).max(1) * lanes) as i64;
    let rank = out.rank();
    let qrows = task_rows(cx, &out.shape[rank - 2], nr);
    let kblock = (schedule.attention_block as i64).max(1);
    let k_rank = a.k_order.len();
    let t = cx.dim(&kt.shape[a.k_order[k_rank - 2]]);
    let s_len = cx.dim(&out.shape[rank - 2]);

    let (mut per_task, tv) = task(cx, out, s_len.clone(), qrows);
    let (bt, i0, qn) = (tv.bt, tv.i0, tv.qn);
    let batch: Vec<Expr> = tv.coords.iter().map(|v| var(*v)).collect();
    let (q_stride, k_stride) = (
        row_stride(cx, qt, qt.rank() - 2),
        row_stride(cx, kt, a.k_order[k_rank - 2]),
    );
    let q_row0 = row_start(cx, &batch, qt, &plain(qt), var(i0));
    per_task.extend(pack_rows(
        cx,
        loc.q_panels,
        (qb, q_row0, q_stride),
        (qn, qrows, nr),
        w.d,
    ));
    per_task.extend(start(cx, &loc, qrows * w.dv, qrows, lanes));

    let last_row = sub(add(var(i0), var(qn)), Expr::Int(1));
    let rows = (var(i0), last_row);
    let (from, blocks) = key_blocks(cx, a.keys, rows, t.clone(), kblock, &mut per_task);
    let (jb, j0, count) = (cx.var(), cx.var(), cx.var());
    let block_at = from.map_or(var(jb), |f| add(var(f), var(jb)));
    let mut per_block = vec![
        Stmt::Set(j0, mul(block_at, Expr::Int(kblock))),
        Stmt::Set(count, bin(Bin::Min, Expr::Int(kblock), sub(t, var(j0)))),
    ];
    let place = Place {
        batch,
        i0,
        qn,
        j0,
        count,
    };
    let tile = Tile {
        qrows,
        nr,
        lanes,
        d: w.d,
    };
    per_block.extend(scores(
        cx,
        &mut gen,
        a,
        (kb, kt, k_stride),
        &loc,
        &place,
        &tile,
    ));
    // 3. The online softmax, in vectors across queries.
    per_block.extend(softmax(cx, &loc, (count, qn, qrows), lanes));
    // The output is row-major `[rows, dv]` (`[rows, 2]` for the statistics): query `q`'s
    // row is `bt · s + i0 + q`.
    let out_row = |q: Expr| add(mul(var(bt), s_len.clone()), add(var(i0), q));
    match values {
        Some(vs) => {
            let vt = ins[vs];
            let v_stride = row_stride(cx, vt, vt.rank() - 2);
            let (values, pv_lanes) =
                weigh_values(cx, (vs + 1, vt, v_stride), &loc, &place, qrows, w.dv);
            per_block.extend(values);
            per_task.push(serial(jb, blocks, per_block));
            let dest = |q: Expr| (0, mul(out_row(q), Expr::Int(w.dv)));
            let rows = (qn, w.dv, pv_lanes);
            per_task.push(each_row(cx, &loc, rows, (loc.sums, Bin::Div), &dest));
        }
        None => {
            per_task.push(serial(jb, blocks, per_block));
            per_task.push(write_stats(cx, &loc, qn, &out_row));
        }
    }
    let body = over_tasks(cx, out, &tv, per_task);
    Template {
        body,
        checks: gen.checks,
        locals: locals(w, qrows, kblock),
        shared: Vec::new(),
        scratch: None,
        occupancy: None,
    }
}

/// Each of the task's `qn` queries' statistics `[m, log l]`, at `2 · out_row(q)`.
fn write_stats(cx: &mut Ctx, loc: &Locals, qn: Var, out_row: &dyn Fn(Expr) -> Expr) -> Stmt {
    let q = cx.var();
    let at = |buf: usize| Expr::Load(buf, Box::new(var(q)));
    let log_sum = Expr::Un(Un::Log, Box::new(at(loc.sums)));
    let row = mul(out_row(var(q)), Expr::Int(2));
    let stats = vec![
        Stmt::Store(0, row.clone(), at(loc.maxes)),
        Stmt::Store(0, add(row, Expr::Int(1)), log_sum),
    ];
    serial(q, var(qn), stats)
}

/// The thread-private arrays of a task with `qrows` queries and key blocks of `kblock`, in
/// the order of [`Locals`].
fn locals(w: &Widths, qrows: i64, kblock: i64) -> Vec<Local> {
    super::f32_locals(&[
        ("q_panels", w.d * qrows),
        ("scores", kblock * qrows),
        ("acc", qrows * w.dv),
        ("maxes", qrows),
        ("sums", qrows),
        ("corrections", qrows),
    ])
}

/// Where a task is: its batch coordinates, first query and query count, and the current key
/// block's first key and key count.
struct Place {
    batch: Vec<Expr>,
    i0: Var,
    qn: Var,
    j0: Var,
    count: Var,
}

/// A task's tile: its queries (a multiple of `nr`), the micro-kernel's columns and lanes, and
/// the width of the query and key rows.
struct Tile {
    qrows: i64,
    nr: i64,
    lanes: usize,
    d: i64,
}

/// Steps 1 and 2 of a key block: `Sᵀ = K·Qᵀ` on the micro-kernel (key rows of `k`, whose
/// buffer, type and row stride `k` gives, read in place; the packed query panels), then each
/// score turned into its logit in place by the region body.
fn scores(
    cx: &mut Ctx,
    gen: &mut BodyGen,
    a: &Spine,
    (kb, kt, k_stride): (usize, &TensorType, Expr),
    loc: &Locals,
    at: &Place,
    tile: &Tile,
) -> Vec<Stmt> {
    let Tile {
        qrows,
        nr,
        lanes,
        d,
    } = *tile;
    let k_row0 = row_start(cx, &at.batch, kt, a.k_order, var(at.j0));
    let mut out = product(
        cx,
        &Product {
            a: (kb, k_row0, k_stride, 1),
            b: (loc.q_panels, Expr::Int(0), Expr::Int(d * nr), Expr::Int(nr)),
            out: (loc.scores, qrows),
            rows: var(at.count),
            panels: Expr::Int(qrows / nr),
            kc: Expr::Int(d),
            accumulate: false,
            shape: (cx.schedule.blocking.mr.max(1), (nr as usize) / lanes, lanes),
        },
    );
    let (jj, q, x) = (cx.var(), cx.var(), cx.var());
    let el = add(mul(var(jj), Expr::Int(qrows)), var(q));
    gen.bind(a.scores, Expr::Load(loc.scores, Box::new(el.clone())));
    let mut pos = at.batch.clone();
    pos.extend([add(var(at.i0), var(q)), add(var(at.j0), var(jj))]);
    let logit = gen.value(cx, a.logits, &pos);
    let mut one = gen.take_lets();
    one.extend([Stmt::Set(x, logit), Stmt::Store(loc.scores, el, var(x))]);
    out.push(serial(jj, var(at.count), vec![serial(q, var(at.qn), one)]));
    out
}

/// Step 4 of a key block: `O ← O·correction + P·V`, the rows of `v` (buffer, type and row
/// stride given) read in place. Returns the statements and the lanes the rows of `O` take.
fn weigh_values(
    cx: &mut Ctx,
    (vb, vt, v_stride): (usize, &TensorType, Expr),
    loc: &Locals,
    at: &Place,
    qrows: i64,
    dv: i64,
) -> (Vec<Stmt>, usize) {
    let (mr, across, lanes) = columns(cx.schedule, dv);
    let acc_row = |q: Expr| (loc.acc, mul(q, Expr::Int(dv)));
    let rows = (at.qn, dv, lanes);
    let mut out = vec![each_row(
        cx,
        loc,
        rows,
        (loc.corrections, Bin::Mul),
        &acc_row,
    )];
    let v_row0 = row_start(cx, &at.batch, vt, &plain(vt), var(at.j0));
    let panel = (across * lanes) as i64;
    out.extend(product(
        cx,
        &Product {
            a: (loc.scores, Expr::Int(0), Expr::Int(1), qrows),
            b: (vb, v_row0, Expr::Int(panel), v_stride),
            out: (loc.acc, dv),
            rows: var(at.qn),
            panels: Expr::Int(dv / panel),
            kc: var(at.count),
            accumulate: true,
            shape: (mr, across, lanes),
        },
    ));
    (out, lanes)
}

/// Zeros the output accumulator (`len` floats) and starts every query's max at −∞ and sum at 0.
fn start(cx: &mut Ctx, loc: &Locals, len: i64, qrows: i64, lanes: usize) -> Vec<Stmt> {
    let w = lanes as u8;
    let splat = |v: f32| Expr::Splat(Box::new(f32(v)), w);
    let (x, q) = (cx.var(), cx.var());
    let at = |v: Var| mul(var(v), Expr::Int(lanes as i64));
    vec![
        serial(
            x,
            Expr::Int(len / lanes as i64),
            vec![Stmt::VStore(loc.acc, at(x), splat(0.0), w)],
        ),
        serial(
            q,
            Expr::Int(qrows / lanes as i64),
            vec![
                Stmt::VStore(loc.maxes, at(q), splat(f32::NEG_INFINITY), w),
                Stmt::VStore(loc.sums, at(q), splat(0.0), w),
            ],
        ),
    ]
}

/// The block's online-softmax step for every query, `lanes` queries at a time: the new max,
/// the correction of what was accumulated, `p = exp(x − m)` in place of each logit, the sums.
fn softmax(
    cx: &mut Ctx,
    loc: &Locals,
    (count, qn, qrows): (Var, Var, i64),
    lanes: usize,
) -> Vec<Stmt> {
    let w = lanes as u8;
    let (qv, q, jj, bm, mo, mn, corr, sum, pv) = (
        cx.var(),
        cx.var(),
        cx.var(),
        cx.var(),
        cx.var(),
        cx.var(),
        cx.var(),
        cx.var(),
        cx.var(),
    );
    let splat = |e: Expr| Expr::Splat(Box::new(e), w);
    let score = || {
        Expr::VLoad(
            loc.scores,
            Box::new(add(mul(var(jj), Expr::Int(qrows)), var(q))),
            w,
        )
    };
    let body = vec![
        Stmt::Set(q, mul(var(qv), Expr::Int(lanes as i64))),
        Stmt::Set(bm, splat(f32(f32::NEG_INFINITY))),
        serial(
            jj,
            var(count),
            vec![Stmt::Set(bm, bin(Bin::Max, var(bm), score()))],
        ),
        Stmt::Set(mo, Expr::VLoad(loc.maxes, Box::new(var(q)), w)),
        Stmt::Set(
            mn,
            bin(
                Bin::Max,
                bin(Bin::Max, var(mo), var(bm)),
                splat(f32(f32::MIN)),
            ),
        ),
        Stmt::Set(corr, Expr::Un(Un::Exp, Box::new(sub(var(mo), var(mn))))),
        Stmt::VStore(loc.maxes, var(q), var(mn), w),
        Stmt::VStore(loc.corrections, var(q), var(corr), w),
        Stmt::Set(sum, splat(f32(0.0))),
        serial(
            jj,
            var(count),
            vec![
                Stmt::Set(pv, Expr::Un(Un::Exp, Box::new(sub(score(), var(mn))))),
                Stmt::VStore(
                    loc.scores,
                    add(mul(var(jj), Expr::Int(qrows)), var(q)),
                    var(pv),
                    w,
                ),
                Stmt::Set(sum, add(var(sum), var(pv))),
            ],
        ),
        Stmt::VStore(
            loc.sums,
            var(q),
            Expr::Fma(
                Box::new(Expr::VLoad(loc.sums, Box::new(var(q)), w)),
                Box::new(var(corr)),
                Box::new(var(sum)),
            ),
            w,
        ),
    ];
    let vectors = bin(
        Bin::Div,
        add(var(qn), Expr::Int(lanes as i64 - 1)),
        Expr::Int(lanes as i64),
    );
    vec![serial(qv, vectors, body)]
}

/// For each query row `q < qn` of the accumulator, `dest = acc[q] op factors[q]` in vectors,
/// where `dest(q)` names the buffer and the index of the row written: the accumulator itself
/// (scaled by the corrections) or the output row (divided by the sums).
fn each_row(
    cx: &mut Ctx,
    loc: &Locals,
    (qn, dv, lanes): (Var, i64, usize),
    (factors, op): (usize, Bin),
    dest: &dyn Fn(Expr) -> (usize, Expr),
) -> Stmt {
    let w = lanes as u8;
    let (q, f, x) = (cx.var(), cx.var(), cx.var());
    let step = |e: Expr| add(e, mul(var(x), Expr::Int(lanes as i64)));
    let (buf, row) = dest(var(q));
    let acc = Expr::VLoad(loc.acc, Box::new(step(mul(var(q), Expr::Int(dv)))), w);
    serial(
        q,
        var(qn),
        vec![
            Stmt::Set(
                f,
                Expr::Splat(Box::new(Expr::Load(factors, Box::new(var(q)))), w),
            ),
            serial(
                x,
                Expr::Int(dv / lanes as i64),
                vec![Stmt::VStore(buf, step(row), bin(op, acc, var(f)), w)],
            ),
        ],
    )
}
