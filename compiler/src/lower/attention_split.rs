//! Attention for a few query rows on a GPU (a decoding step's one), split as Flash-Decoding
//! splits it: a query row per block, its keys shared among the block's threads, and each
//! key's channels among a group of lanes.
//!
//! The block's [`THREADS`] threads form groups of `G` consecutive lanes ([`Split::new`]: the
//! fewest, a power of two, that leave a lane at most [`MAX_CHANNELS`] channels of q and of v,
//! or fewer where the widths are not multiples of that).
//! Lane `l` of a group holds channels `l·d/G..(l + 1)·d/G` of the query (in registers, for
//! the whole row) and the same share of the output accumulator. Group `g` of the block's
//! `THREADS / G` takes blocks `g, g + THREADS/G, …` of [`KEYS`] keys, one per round; in each
//! round every group takes one (a group past the row's blocks takes none), so that all the
//! block's threads reach the round's fold:
//! 1. each lane computes the partial dot products of its channels with the block's keys; a
//!    `WarpFold` (add, across the group's lanes) makes them the scores, alike in the group;
//! 2. each lane turns the scores into logits with the user's modifications (the region
//!    body), runs the online softmax (the maximum starts at `f32::MIN`, so that a group that
//!    sees no key, or only masked ones, weighs `exp(f32::MIN − M) = 0` in the merge, not
//!    NaN) and adds `p·v` into its channels of the accumulator.
//!
//! At the end each group hands its maximum, sum and accumulator to shared memory, and a
//! thread per output channel merges the groups' shares, each weighed by `exp(m_g − M)` for
//! the block's maximum `M`. A decoding step reads the whole cache for one query per head:
//! one thread walking it would leave the block's other 127 idle. A thread holding all of a
//! 128-wide row (its query and its accumulator) needed more than 255 registers and spilled;
//! a lane of a group of four holds 32 channels of each.

use archc_kernels::ir::build::{add, bin, exp, f32, load, mul, serial, sub, var};
use archc_kernels::ir::{Bin, Elem, Expr, Fold, Local, Scope, Stmt, Var};

use super::attention::{key_blocks, plain, row_start, QueryRow};
use super::body::BodyGen;
use super::fragments::{div, int, lt, rem, threads, unroll, when, THREADS, WARP};
use super::index::Ctx;
use super::lanes::{lane_sum, splat, LANES};
use super::Template;
use crate::graph::{AttentionInfo, Dim, Region, TensorType};

/// Keys of a group's block, one round's.
const KEYS: i64 = 8;

/// The most channels of q, and of v, one lane holds.
const MAX_CHANNELS: i64 = 32;

/// The locals the template declares, in the order of [`Buffers`].
const LOCALS: usize = 4;

/// How a block splits its row's channels: lanes per group of threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    lanes: i64,
}

impl Split {
    /// The split of rows of head width `d` (when constant) and value width `dv`, if one
    /// applies (a thread per output channel merges the groups: `dv` at most [`THREADS`]):
    /// the fewest lanes a group (a power of two up to a warp) that leave a lane at most
    /// [`MAX_CHANNELS`] channels, or the most fewer that divide both widths.
    pub fn new(d: Option<i64>, dv: i64) -> Option<Split> {
        let d = d.filter(|&d| d > 0)?;
        let wanted = (d.max(dv) as u64)
            .div_ceil(MAX_CHANNELS as u64)
            .next_power_of_two();
        let mut lanes = wanted.min(WARP as u64) as i64;
        while lanes > 1 && (d % lanes != 0 || dv % lanes != 0) {
            lanes /= 2;
        }
        (1..=THREADS).contains(&dv).then_some(Split { lanes })
    }

    /// Groups of a block.
    fn groups(self) -> i64 {
        THREADS / self.lanes
    }
}

/// The kernel's arrays: per thread (locals) and per block (the shared array).
struct Buffers {
    /// The lane's channels of the query: `d / G`.
    q: usize,
    /// The round's scores, then logits: [`KEYS`].
    logits: usize,
    /// The lane's channels of the output accumulator: `dv / G`.
    acc: usize,
    /// The running maximum (0) and sum (1).
    stats: usize,
    /// Each group's maximum, sum and accumulator: `THREADS / G` rows of `dv + 2`.
    partials: usize,
}

/// Where a thread is: its index, group and lane, and the key block its group takes in the
/// round (its first key, and how many of its keys there are: 0 past the row's blocks).
struct Place {
    t: Var,
    group: Var,
    lane: Var,
    j0: Var,
    count: Var,
}

/// The row's keys and how the block splits them: the key count, the first key block (with a
/// lower bound on the keys), the count of blocks, and each lane's channels of q and of v.
struct Row {
    keys: Expr,
    first: Option<Var>,
    blocks: Expr,
    split: Split,
    dq: i64,
    dw: i64,
}

impl Place {
    fn new(cx: &mut Ctx) -> Place {
        Place {
            t: cx.var(),
            group: cx.var(),
            lane: cx.var(),
            j0: cx.var(),
            count: cx.var(),
        }
    }

    /// `body` on every thread of the block, its group and lane set first.
    fn threads(&self, split: Split, body: Vec<Stmt>) -> Stmt {
        let mut s = vec![
            Stmt::Set(self.group, div(var(self.t), split.lanes)),
            Stmt::Set(self.lane, rem(var(self.t), split.lanes)),
        ];
        s.extend(body);
        threads(self.t, s)
    }

    /// `body` on every thread in round `round`, its group's key block set first.
    fn round(&self, row: &Row, round: Var, body: Vec<Stmt>) -> Stmt {
        let jb = add(var(self.group), mul(var(round), int(row.split.groups())));
        let block = row.first.map_or(jb.clone(), |f| add(var(f), jb.clone()));
        let left = bin(Bin::Min, int(KEYS), sub(row.keys.clone(), var(self.j0)));
        let mut s = vec![
            Stmt::Set(self.j0, mul(block, int(KEYS))),
            Stmt::Set(
                self.count,
                Expr::Select(
                    Box::new(lt(jb, row.blocks.clone())),
                    Box::new(left),
                    Box::new(int(0)),
                ),
            ),
        ];
        s.extend(body);
        self.threads(row.split, s)
    }

    /// `body` for each key `jj` of the group's block (unrolled: its index constant).
    fn each_key(&self, cx: &mut Ctx, jj: Var, body: Vec<Stmt>) -> Stmt {
        let inside = when(cx, lt(var(jj), var(self.count)), body);
        unroll(&[(jj, KEYS)], vec![inside])
    }
}

/// The kernel (see the module doc) of one query row per iteration of its parallel loop, its
/// locals from buffer `first_local` on and its shared array after them.
pub(super) fn lower(
    cx: &mut Ctx,
    r: &Region,
    a: &AttentionInfo,
    (out, ins): (&TensorType, &[&TensorType]),
    (first_local, split): (usize, Split),
) -> Template {
    let [qs, ks, vs] = a.qkv;
    let (qt, kt, vt) = (ins[qs], ins[ks], ins[vs]);
    let width = |t: &TensorType| t.shape[t.rank() - 1].as_const().unwrap_or(0);
    let (d, dv) = (width(qt), width(vt));
    let b = Buffers {
        q: first_local,
        logits: first_local + 1,
        acc: first_local + 2,
        stats: first_local + 3,
        partials: first_local + LOCALS,
    };
    // k's slot holds r with k = permute(k_order)(r): k's shape, and r's axis of each of k's.
    let k_shape: Vec<Dim> = a.k_order.iter().map(|&x| kt.shape[x].clone()).collect();
    let k_rank = k_shape.len();

    // One block per output row.
    let QueryRow {
        row,
        mut per_row,
        batch,
        i,
    } = QueryRow::new(cx, out);
    let keys = cx.dim(&k_shape[k_rank - 2]);
    let rows = (i.clone(), i.clone());
    let (first, blocks) = key_blocks(cx, &a.keys, rows, keys.clone(), KEYS, &mut per_row);
    let rw = Row {
        keys,
        first,
        blocks,
        split,
        dq: d / split.lanes,
        dw: dv / split.lanes,
    };
    let at = Place::new(cx);
    let starts = Starts {
        buffers: [qs + 1, ks + 1, vs + 1],
        q: row_start(cx, &batch, qt, &plain(qt), i.clone()),
        k: row_start(cx, &batch, kt, &a.k_order, var(at.j0)),
        v: row_start(cx, &batch, vt, &plain(vt), var(at.j0)),
        k_stride: cx.strides(&kt.shape)[a.k_order[k_rank - 2]].clone(),
        v_stride: cx.strides(&vt.shape)[vt.rank() - 2].clone(),
    };
    let mut gen = BodyGen::new(&r.body, 1);
    let round = cx.var();
    let mut weigh = logits(cx, &mut gen, (a, &at, &b), (batch, i));
    weigh.extend(softmax(cx, &at, &b, (&rw, &starts)));
    let mut per_round = vec![at.round(&rw, round, scores(cx, &at, &b, (&rw, &starts)))];
    if split.lanes > 1 {
        per_round.push(Stmt::WarpFold(Fold {
            op: Bin::Add,
            buf: b.logits,
            at: int(0),
            count: KEYS as u8,
            lanes: split.lanes as u8,
        }));
    }
    per_round.push(at.round(&rw, round, weigh));
    let rounds = div(
        add(rw.blocks.clone(), int(split.groups() - 1)),
        split.groups(),
    );
    per_row.extend([
        at.threads(split, start(cx, &at, &b, (&rw, &starts))),
        serial(round, rounds, per_round),
        at.threads(split, hand(cx, &at, &b, (&rw, dv))),
        Stmt::Barrier(Scope::Block),
    ]);
    let merged = merge(cx, (at.t, row, dv), &b, split);
    per_row.push(threads(
        at.t,
        vec![when(cx, lt(var(at.t), int(dv)), merged)],
    ));
    template(cx, out, (row, per_row), gen.checks, (&rw, dv))
}

/// Where the row's operands are: their buffers, q's row, and the round's first key's rows of
/// k and v (at the thread's [`Place::j0`]), with the distances between consecutive keys' rows.
struct Starts {
    buffers: [usize; 3],
    q: Expr,
    k: Expr,
    v: Expr,
    k_stride: Expr,
    v_stride: Expr,
}

/// The lane's channels of the query; its accumulator at 0, the running maximum at `f32::MIN`
/// and the sum at 0.
fn start(cx: &mut Ctx, at: &Place, b: &Buffers, (rw, st): (&Row, &Starts)) -> Vec<Stmt> {
    let c = cx.var();
    let q_at = add(st.q.clone(), add(mul(var(at.lane), int(rw.dq)), var(c)));
    vec![
        unroll(
            &[(c, rw.dq)],
            vec![Stmt::Store(b.q, var(c), load(st.buffers[0], q_at))],
        ),
        unroll(&[(c, rw.dw)], vec![Stmt::Store(b.acc, var(c), f32(0.0))]),
        Stmt::Store(b.stats, int(0), f32(f32::MIN)),
        Stmt::Store(b.stats, int(1), f32(0.0)),
    ]
}

/// `Σ_c a(c)·b(c)` over `n` channels into `s`: in f32x4 vectors when `n` is a multiple of 4
/// (`a` and `b` then give a vector's first channel's index), else one at a time.
fn dot(cx: &mut Ctx, n: i64, s: Var, ab: ((usize, Expr), (usize, Expr))) -> Vec<Stmt> {
    let ((a, a0), (b, b0)) = ab;
    let c = cx.var();
    let at = |base: &Expr, step: i64| add(base.clone(), mul(var(c), int(step)));
    if n % 4 == 0 {
        let sv = cx.var();
        let term = Expr::Fma(
            Box::new(Expr::VLoad(a, Box::new(at(&a0, 4)), LANES)),
            Box::new(Expr::VLoad(b, Box::new(at(&b0, 4)), LANES)),
            Box::new(var(sv)),
        );
        vec![
            Stmt::Set(sv, splat(f32(0.0))),
            unroll(&[(c, n / 4)], vec![Stmt::Set(sv, term)]),
            Stmt::Set(s, lane_sum(sv, LANES)),
        ]
    } else {
        let term = Expr::Fma(
            Box::new(load(a, at(&a0, 1))),
            Box::new(load(b, at(&b0, 1))),
            Box::new(var(s)),
        );
        vec![
            Stmt::Set(s, f32(0.0)),
            unroll(&[(c, n)], vec![Stmt::Set(s, term)]),
        ]
    }
}

/// The lane's partial dot products with the round's keys (0 for keys past the block's).
fn scores(cx: &mut Ctx, at: &Place, b: &Buffers, (rw, st): (&Row, &Starts)) -> Vec<Stmt> {
    let (k_row, jj, s) = (cx.var(), cx.var(), cx.var());
    let lane_k = add(st.k.clone(), mul(var(at.lane), int(rw.dq)));
    let mut each = dot(cx, rw.dq, s, ((b.q, int(0)), (st.buffers[1], var(k_row))));
    each.push(Stmt::Store(b.logits, var(jj), var(s)));
    let zero = unroll(
        &[(jj, KEYS)],
        vec![Stmt::Store(b.logits, var(jj), f32(0.0))],
    );
    let mut key = vec![Stmt::Set(
        k_row,
        add(lane_k, mul(var(jj), st.k_stride.clone())),
    )];
    key.extend(each);
    vec![zero, at.each_key(cx, jj, key)]
}

/// Each score turned into its logit by the region body (`gen`'s, with the scores at
/// `a.scores`) at the row's batch coordinates and query `i`.
fn logits(
    cx: &mut Ctx,
    gen: &mut BodyGen,
    (a, at, b): (&AttentionInfo, &Place, &Buffers),
    (batch, i): (Vec<Expr>, Expr),
) -> Vec<Stmt> {
    let (jj, x) = (cx.var(), cx.var());
    gen.bind(a.scores, load(b.logits, var(jj)));
    let mut pos = batch;
    pos.extend([i, add(var(at.j0), var(jj))]);
    let logit = gen.value(cx, a.logits, &pos);
    let mut each = gen.take_lets();
    each.extend([Stmt::Set(x, logit), Stmt::Store(b.logits, var(jj), var(x))]);
    vec![at.each_key(cx, jj, each)]
}

/// The online softmax on the round's logits (see the module doc): the lane's sum and
/// channels corrected to the new maximum, then each key's `p = exp(x − m)` added to the sum
/// and `p·v` to the channels.
fn softmax(cx: &mut Ctx, at: &Place, b: &Buffers, (rw, st): (&Row, &Starts)) -> Vec<Stmt> {
    let [most, jj, m, corr, p, c, v_row] = [(); 7].map(|_| cx.var());
    let stat = |k: i64| load(b.stats, int(k));
    let biggest = at.each_key(
        cx,
        jj,
        vec![Stmt::Set(
            most,
            bin(Bin::Max, var(most), load(b.logits, var(jj))),
        )],
    );
    let vb = st.buffers[2];
    let weigh = if rw.dw % 4 == 0 {
        let at = |buf: usize, base: Expr| Expr::VLoad(buf, Box::new(base), LANES);
        let four = mul(var(c), int(4));
        let sum = Expr::Fma(
            Box::new(splat(var(p))),
            Box::new(at(vb, add(var(v_row), four.clone()))),
            Box::new(at(b.acc, four.clone())),
        );
        unroll(
            &[(c, rw.dw / 4)],
            vec![Stmt::VStore(b.acc, four, sum, LANES)],
        )
    } else {
        let sum = Expr::Fma(
            Box::new(var(p)),
            Box::new(load(vb, add(var(v_row), var(c)))),
            Box::new(load(b.acc, var(c))),
        );
        unroll(&[(c, rw.dw)], vec![Stmt::Store(b.acc, var(c), sum)])
    };
    let lane_v = add(st.v.clone(), mul(var(at.lane), int(rw.dw)));
    let key = vec![
        Stmt::Set(p, exp(sub(load(b.logits, var(jj)), var(m)))),
        Stmt::Store(b.stats, int(1), add(stat(1), var(p))),
        Stmt::Set(v_row, add(lane_v, mul(var(jj), st.v_stride.clone()))),
        weigh,
    ];
    let correct = Stmt::Store(b.acc, var(c), mul(load(b.acc, var(c)), var(corr)));
    vec![
        Stmt::Set(most, f32(f32::NEG_INFINITY)),
        biggest,
        Stmt::Set(m, bin(Bin::Max, stat(0), var(most))),
        Stmt::Set(corr, exp(sub(stat(0), var(m)))),
        Stmt::Store(b.stats, int(1), mul(stat(1), var(corr))),
        unroll(&[(c, rw.dw)], vec![correct]),
        at.each_key(cx, jj, key),
        Stmt::Store(b.stats, int(0), var(m)),
    ]
}

/// The group's share handed to the block: each lane's channels of the accumulator, and
/// lane 0's maximum and sum (alike in the group's lanes), in group `g`'s row of `dv + 2`.
fn hand(cx: &mut Ctx, at: &Place, b: &Buffers, (rw, dv): (&Row, i64)) -> Vec<Stmt> {
    let c = cx.var();
    let base = mul(var(at.group), int(dv + 2));
    let channel = add(
        base.clone(),
        add(int(2), add(mul(var(at.lane), int(rw.dw)), var(c))),
    );
    let stats = vec![
        Stmt::Store(b.partials, base.clone(), load(b.stats, int(0))),
        Stmt::Store(b.partials, add(base, int(1)), load(b.stats, int(1))),
    ];
    vec![
        unroll(
            &[(c, rw.dw)],
            vec![Stmt::Store(b.partials, channel, load(b.acc, var(c)))],
        ),
        when(cx, bin(Bin::Eq, var(at.lane), int(0)), stats),
    ]
}

/// Output channel `t` of row `row` (width `dv`) from the groups' shares: each weighed by
/// `exp(m_g − M)` for the block's maximum `M`.
fn merge(cx: &mut Ctx, (t, row, dv): (Var, Var, i64), b: &Buffers, split: Split) -> Vec<Stmt> {
    let (g, most, sum, o, e) = (cx.var(), cx.var(), cx.var(), cx.var(), cx.var());
    let share = |at: Expr| load(b.partials, add(mul(var(g), int(dv + 2)), at));
    vec![
        Stmt::Set(most, f32(f32::MIN)),
        serial(
            g,
            int(split.groups()),
            vec![Stmt::Set(most, bin(Bin::Max, var(most), share(int(0))))],
        ),
        Stmt::Set(sum, f32(0.0)),
        Stmt::Set(o, f32(0.0)),
        serial(
            g,
            int(split.groups()),
            vec![
                Stmt::Set(e, exp(sub(share(int(0)), var(most)))),
                Stmt::Set(sum, add(var(sum), mul(share(int(1)), var(e)))),
                Stmt::Set(o, add(var(o), mul(share(add(int(2), var(t))), var(e)))),
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
    (row, per_row): (Var, Vec<Stmt>),
    checks: Vec<String>,
    (rw, dv): (&Row, i64),
) -> Template {
    let rank = out.rank();
    let rows = cx.dim(&Dim::product(&out.shape[..rank - 1]).expect("row counts fit in i64"));
    let body = vec![Stmt::For {
        var: row,
        extent: rows,
        kind: archc_kernels::ir::Axis::Grid,
        body: per_row,
    }];
    let f32s = |name: &str, len: i64| Local {
        name: name.into(),
        elem: Elem::F32,
        len: len as usize,
    };
    Template {
        body,
        checks,
        locals: vec![
            f32s("q", rw.dq),
            f32s("logits", KEYS),
            f32s("acc", rw.dw),
            f32s("stats", 2),
        ],
        shared: vec![f32s("partials", rw.split.groups() * (dv + 2))],
        scratch: None,
        occupancy: None,
    }
}
