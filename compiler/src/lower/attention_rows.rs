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
//! On a GPU a row is a block's, as in Flash-Decoding: its threads split the row's keys (thread
//! `t` takes blocks `t, t + 128, …` of [`SPLIT_KEYS`] keys), each with a maximum, sum and
//! accumulator of its own, which the block then merges: the warp's maximum (a `WarpFold`),
//! each thread's sum and accumulator rescaled to it and summed across the warp (another), the
//! four warps' results through shared memory, and a thread per output channel merging those.
//! A decoding step reads the whole cache for one query per head; one thread walking it left
//! the block's other 127 idle.

use archc_kernels::ir::build::{add, bin, mul, serial, sub, var};
use archc_kernels::ir::{Axis, Bin, Elem, Expr, Fold, Ieee32, Local, Scope, Stmt, Un, Var};

use super::attention::{dot, key_blocks, plain, row_start};
use super::body::{delinearize, BodyGen};
use super::fragments::{div, int, lt, rem, threads, unroll, when, THREADS, WARP};
use super::index::Ctx;
use super::lanes::{lane_sum, splat, LANES};
use super::Template;
use crate::graph::{AttentionInfo, Region, TensorType};

/// Query rows of up to this many f32x4 vectors are held in registers.
const MAX_QUERY_REGISTERS: i64 = 8;

/// Keys per block of a thread's share in a split walk: 1,024 keys keep 128 threads busy.
const SPLIT_KEYS: i64 = 8;

/// Elements of a thread's partial results folded across its warp at once.
const FOLD_AT_ONCE: i64 = 16;

/// The warps of a GPU block.
const WARPS: i64 = THREADS / WARP;

fn f32(v: f32) -> Expr {
    Expr::F32(Ieee32::new(v))
}

/// How a row's keys are walked.
#[derive(Clone, Copy, Debug)]
pub(super) enum Walk {
    /// By one thread, in order.
    Serial,
    /// By the threads of a GPU block, merged through the shared array `shared` (see the
    /// module doc).
    Split {
        /// The shared array's buffer.
        shared: usize,
    },
}

impl Walk {
    /// The walk of rows whose value width is `dv` under `cx`'s schedule, their locals from
    /// buffer `first_local` on: split on a GPU whose blocks are [`THREADS`] threads when a
    /// thread can merge each channel, serial otherwise.
    pub fn for_rows(cx: &Ctx, dv: i64, first_local: usize) -> Walk {
        if cx.schedule.gpu_block == Some(THREADS as u32) && (1..=THREADS).contains(&dv) {
            Walk::Split {
                shared: first_local + 2,
            }
        } else {
            Walk::Serial
        }
    }

    /// How many locals the template declares: the logits, and a split walk's partial results.
    pub fn locals(self) -> usize {
        match self {
            Walk::Serial => 1,
            Walk::Split { .. } => 2,
        }
    }

    /// Keys per block.
    fn block(self, cx: &Ctx) -> i64 {
        match self {
            Walk::Serial => cx.schedule.attention_block as i64,
            Walk::Split { .. } => SPLIT_KEYS,
        }
    }

    /// The running maximum's start. A split walk's threads may see no key, or only masked
    /// ones: kept at or above `f32::MIN`, their weights `exp(m − M)` are 0 or 1, never NaN.
    fn least(self) -> f32 {
        match self {
            Walk::Serial => f32::NEG_INFINITY,
            Walk::Split { .. } => f32::MIN,
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
    let [qs, ks, vs] = a.qkv;
    let (qt, kt, vt) = (ins[qs], ins[ks], ins[vs]);
    let mut gen = BodyGen::new(&r.body, 1);
    let (qb, kb, vb) = (qs + 1, ks + 1, vs + 1);
    let block = walk.block(cx);
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
    let mut init = vec![Stmt::Set(m, f32(walk.least())), Stmt::Set(l, f32(0.0))];
    for acc in &accs {
        init.push(Stmt::Set(*acc, widen(f32(0.0))));
    }
    if let Walk::Serial = walk {
        per_row.append(&mut init);
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
    let state = Partial {
        m,
        l,
        accs: &accs,
        lanes,
    };
    if let Walk::Split { shared } = walk {
        let keys = (jb, blocks, per_block);
        per_row.extend(split(
            cx,
            init,
            keys,
            &state,
            (row, dv as i64, logits_buf + 1, shared),
        ));
        return template(cx, out, row, per_row, (gen.checks, walk, dv as i64));
    }
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
    template(cx, out, row, per_row, (gen.checks, walk, dv as i64))
}

/// A thread's partial softmax over its keys: its running maximum and sum, and its
/// accumulator (`lanes` channels a variable).
struct Partial<'a> {
    m: Var,
    l: Var,
    accs: &'a [Var],
    lanes: usize,
}

/// The statements of a split walk of one row (see the module doc): each thread's walk of its
/// key blocks (`keys`: the block variable, the row's count of blocks and a block's statements,
/// after `init`), then the merge into output row `row` of width `dv`, through local `part`
/// (`dv + 3`: the accumulator, the sum, the warp's and the thread's maximum) and shared
/// array `shared`.
fn split(
    cx: &mut Ctx,
    init: Vec<Stmt>,
    (jb, blocks, per_block): (Var, Expr, Vec<Stmt>),
    st: &Partial,
    (row, dv, part, shared): (Var, i64, usize, usize),
) -> Vec<Stmt> {
    let (t, it, c, scale) = (cx.var(), cx.var(), cx.var(), cx.var());
    let mut walk = vec![Stmt::Set(jb, add(var(t), mul(var(it), int(THREADS))))];
    walk.extend(per_block);
    let mut own = init;
    let mine = div(sub(add(blocks, int(THREADS - 1)), var(t)), THREADS);
    own.push(serial(it, mine, walk));
    for (k, acc) in st.accs.iter().enumerate() {
        let at = int((k * st.lanes) as i64);
        own.push(match st.lanes {
            1 => Stmt::Store(part, at, var(*acc)),
            _ => Stmt::VStore(part, at, var(*acc), LANES),
        });
    }
    own.push(Stmt::Store(part, int(dv), var(st.l)));
    own.push(Stmt::Store(part, int(dv + 1), var(st.m)));
    own.push(Stmt::Store(part, int(dv + 2), var(st.m)));
    let fold = |op: Bin, at: i64, count: i64| {
        Stmt::WarpFold(Fold {
            op,
            buf: part,
            at: int(at),
            count: count as u8,
            lanes: WARP as u8,
        })
    };
    let part_at = |at: Expr| Expr::Load(part, Box::new(at));
    // Each thread's sum and accumulator in terms of its warp's maximum.
    let rescale = vec![
        Stmt::Set(
            scale,
            Expr::Un(
                Un::Exp,
                Box::new(sub(part_at(int(dv + 2)), part_at(int(dv + 1)))),
            ),
        ),
        unroll(
            &[(c, dv + 1)],
            vec![Stmt::Store(part, var(c), mul(part_at(var(c)), var(scale)))],
        ),
    ];
    // Lane 0 of each warp hands the warp's sums and maximum to the block.
    let warp_row = |w: Expr, at: Expr| add(mul(w, int(dv + 2)), at);
    let first_lane = bin(Bin::Eq, rem(var(t), WARP), int(0));
    let hand = unroll(
        &[(c, dv + 2)],
        vec![Stmt::Store(
            shared,
            warp_row(div(var(t), WARP), var(c)),
            part_at(var(c)),
        )],
    );
    let hand = vec![when(cx, first_lane, vec![hand])];
    let merge = merge(cx, (t, row, dv), shared, warp_row);
    let mut out = vec![
        threads(t, own),
        fold(Bin::Max, dv + 1, 1),
        threads(t, rescale),
    ];
    // A fold's shuffled copies are live together: a few elements at a time keep the
    // registers of the kernel (whose other grid loop is the tiles') where they were.
    out.extend(
        (0..dv + 1)
            .step_by(FOLD_AT_ONCE as usize)
            .map(|at| fold(Bin::Add, at, FOLD_AT_ONCE.min(dv + 1 - at))),
    );
    out.extend([
        threads(t, hand),
        Stmt::Barrier(Scope::Block),
        threads(t, vec![when(cx, lt(var(t), int(dv)), merge)]),
    ]);
    out
}

/// Output channel `t` of row `row` (width `dv`) from the warps' maxima, sums and
/// accumulators in `shared` (warp `w`'s element `at` at `warp_row(w, at)`): each warp's
/// share weighed by `exp(M_w − M)` for the block's maximum `M`.
fn merge(
    cx: &mut Ctx,
    (t, row, dv): (Var, Var, i64),
    shared: usize,
    warp_row: impl Fn(Expr, Expr) -> Expr,
) -> Vec<Stmt> {
    let (w, most, sum, o, e) = (cx.var(), cx.var(), cx.var(), cx.var(), cx.var());
    let at = |at: Expr| Expr::Load(shared, Box::new(warp_row(var(w), at)));
    vec![
        Stmt::Set(most, f32(f32::MIN)),
        unroll(
            &[(w, WARPS)],
            vec![Stmt::Set(most, bin(Bin::Max, var(most), at(int(dv + 1))))],
        ),
        Stmt::Set(sum, f32(0.0)),
        Stmt::Set(o, f32(0.0)),
        unroll(
            &[(w, WARPS)],
            vec![
                Stmt::Set(
                    e,
                    Expr::Un(Un::Exp, Box::new(sub(at(int(dv + 1)), var(most)))),
                ),
                Stmt::Set(sum, add(var(sum), mul(at(int(dv)), var(e)))),
                Stmt::Set(o, add(var(o), mul(at(var(t)), var(e)))),
            ],
        ),
        Stmt::Store(
            0,
            add(mul(var(row), int(dv)), var(t)),
            bin(Bin::Div, var(o), var(sum)),
        ),
    ]
}

/// The template of the rows' parallel loop over `row` (the output's rows) running `per_row`.
fn template(
    cx: &Ctx,
    out: &TensorType,
    row: Var,
    per_row: Vec<Stmt>,
    (checks, walk, dv): (Vec<String>, Walk, i64),
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
    let f32s = |name: &str, len: i64| Local {
        name: name.into(),
        elem: Elem::F32,
        len: len as usize,
    };
    let mut locals = vec![f32s("logits", walk.block(cx))];
    let mut shared = Vec::new();
    if let Walk::Split { .. } = walk {
        locals.push(f32s("partial", dv + 3));
        shared.push(f32s("warp_partials", WARPS * (dv + 2)));
    }
    Template {
        body,
        checks,
        locals,
        shared,
        scratch: None,
        occupancy: None,
    }
}
