//! Tiled attention on a GPU's CUDA cores, for storage tensor cores do not take (f32: tf32
//! would round q and k to 10 bits): FlashAttention's loop nest with four threads per query.
//!
//! A block of 128 threads takes 32 query rows of one batch row and head; the four threads of
//! a row (a row's lanes, `t mod 4`) split its channels: lane `l` holds channels `l, l + 4, …`
//! of the query (in registers, from a staged copy) and of the output accumulator. Per block of
//! 32 keys the threads stage the keys' rows of k and v in shared memory, then each thread:
//! 1. computes its partial dot products with the 32 keys over its channels; a `WarpFold`
//!    (add, across the row's 4 lanes) makes them the scores, the same in every lane;
//! 2. turns each score into its logit with the user's modifications (the region body), keys
//!    past the end set to −∞, and takes the block's maximum;
//! 3. runs the online softmax: the new maximum (kept at or above `f32::MIN`, so a row whose
//!    first keys are all masked gets `p = 0`, not NaN), the correction `exp(m_old − m_new)` of
//!    the running sum and of its output channels, `p = exp(x − m)` in place of each logit;
//! 4. adds `p · v` of the block's keys into its output channels.
//!
//! At the end each thread writes its channels of `O / l`. The four lanes of a row read the
//! same row of the staged k and v at consecutive channels, and the warp's 8 rows the same
//! ones (a broadcast), so shared memory is read without bank conflicts. Blocks of keys the
//! masks hide from all of the block's queries are not visited.

use archc_kernels::ir::build::{add, axis, bin, f32, load, mul, sub, var};
use archc_kernels::ir::{Axis, Bin, Elem, Expr, Fold, Local, Stmt, Un, Var};

use super::attention_staging::{barrier, Nest, Spot};
use super::attention_tiles::Widths;
use super::body::BodyGen;
use super::fragments::{and, div, int, lt, rem, unroll, when, PAD, THREADS};
use super::index::Ctx;
use super::Template;
use crate::graph::{AttentionInfo, Region, TensorType};

/// Threads per query row.
const LANES: i64 = 4;
/// Query rows of a block.
const ROWS: i64 = THREADS / LANES;
/// Keys per block of the online softmax.
const KEYS: i64 = 32;
/// The widest head (of q and k, and of v) whose staged rows fit the block's shared memory.
const MAX_WIDTH: i64 = 128;
/// The locals the kernel declares, in the order of [`Buffers`].
pub const LOCALS: usize = 4;

/// Whether this template computes attention `a` with widths `w`: on a GPU whose blocks are
/// [`THREADS`] threads, both widths multiples of [`LANES`] and at most [`MAX_WIDTH`].
pub fn applies(cx: &Ctx, w: &Widths) -> bool {
    cx.schedule.gpu_block == Some(THREADS as u32)
        && [w.d, w.dv]
            .iter()
            .all(|x| x % LANES == 0 && (LANES..=MAX_WIDTH).contains(x))
}

/// The kernel's arrays: per thread (locals from `first_local`) and per block (shared arrays
/// from `first_shared`).
struct Buffers {
    /// The thread's channels of its query, `d/4`.
    q: usize,
    /// The key block's scores, then logits, then weights `p`, `KEYS`.
    scores: usize,
    /// The thread's channels of the output accumulator, `dv/4`.
    out: usize,
    /// The running maximum (0), the running sum (1), the block's maximum (2) and the
    /// correction (3).
    stats: usize,
    /// The staged rows of q (first), then of each key block's k.
    k_tile: usize,
    /// The key block's rows of v.
    v_tile: usize,
}

/// Where the thread is in the nest, and its row of the block's queries and its lane among
/// the row's threads.
struct Place {
    at: Spot,
    row: Var,
    lane: Var,
}

impl Place {
    /// `body` for every thread of the block, its row and lane set first.
    fn threads(&self, body: Vec<Stmt>) -> Stmt {
        let mut s = vec![
            Stmt::Set(self.row, div(var(self.at.t), LANES)),
            Stmt::Set(self.lane, rem(var(self.at.t), LANES)),
        ];
        s.extend(body);
        axis(Axis::Thread, self.at.t, int(THREADS), s)
    }

    /// The thread's query.
    fn query(&self) -> Expr {
        add(var(self.at.i0), var(self.row))
    }

    /// Channel `c` of the thread's channels in a staged row `width` wide (padded by [`PAD`])
    /// starting at row `r`.
    fn staged(&self, r: Expr, width: i64, c: Expr) -> Expr {
        add(
            mul(r, int(width + PAD)),
            add(var(self.lane), mul(c, int(LANES))),
        )
    }
}

/// The kernel (see the module doc), its locals numbered from `first_local` and its shared
/// arrays from `first_shared`.
pub fn lower(
    cx: &mut Ctx,
    r: &Region,
    a: &AttentionInfo,
    (out, ins): (&TensorType, &[&TensorType]),
    (w, first_local, first_shared): (&Widths, usize, usize),
) -> Template {
    let mut gen = BodyGen::new(&r.body, 1);
    let b = Buffers {
        q: first_local,
        scores: first_local + 1,
        out: first_local + 2,
        stats: first_local + 3,
        k_tile: first_shared,
        v_tile: first_shared + 1,
    };
    let nest = Nest::new(
        cx,
        a,
        (out, ins),
        (w, ROWS, KEYS),
        (b.k_tile, b.v_tile, None),
    );
    let at = Place {
        at: nest.spot(),
        row: cx.var(),
        lane: cx.var(),
    };
    let lengths = (&nest.s_len.clone(), &nest.t_len.clone());
    // The queries' rows, staged where the keys' go later, into registers.
    let start = vec![
        at.threads(vec![nest.stage_q.clone()]),
        barrier(),
        at.threads(start(cx, &at, &b, w)),
        barrier(),
    ];
    let fold = Stmt::WarpFold(Fold {
        op: Bin::Add,
        buf: b.scores,
        at: int(0),
        count: KEYS as u8,
        lanes: LANES as u8,
    });
    let mut weigh = logits(cx, &mut gen, a, &at, &b, lengths);
    weigh.extend(softmax(cx, &b, w.dv));
    weigh.push(weigh_values(cx, &at, &b, w.dv));
    let per_block = vec![
        at.threads(nest.stage_kv.clone()),
        barrier(),
        at.threads(scores(cx, &at, &b, w.d)),
        fold,
        at.threads(weigh),
        barrier(),
    ];
    let end = vec![at.threads(write(cx, &at, &b, (lengths.0, w.dv)))];
    let body = nest.body(cx, out, KEYS, [start, per_block, end]);
    let array = |name: &str, len: i64| Local {
        name: name.into(),
        elem: Elem::F32,
        len: len as usize,
    };
    Template {
        body,
        checks: gen.checks,
        locals: vec![
            array("q", w.d / LANES),
            array("scores", KEYS),
            array("out", w.dv / LANES),
            array("stats", 4),
        ],
        shared: vec![
            array("k_tile", ROWS.max(KEYS) * (w.d + PAD)),
            array("v_tile", KEYS * (w.dv + PAD)),
        ],
        scratch: None,
        occupancy: None,
    }
}

/// The thread's query channels from the staged rows; the output accumulators at 0, the
/// running maximum at −∞ and the sum at 0.
fn start(cx: &mut Ctx, at: &Place, b: &Buffers, w: &Widths) -> Vec<Stmt> {
    let c = cx.var();
    let channel = at.staged(var(at.row), w.d, var(c));
    vec![
        unroll(
            &[(c, w.d / LANES)],
            vec![Stmt::Store(b.q, var(c), load(b.k_tile, channel))],
        ),
        unroll(
            &[(c, w.dv / LANES)],
            vec![Stmt::Store(b.out, var(c), f32(0.0))],
        ),
        Stmt::Store(b.stats, int(0), f32(f32::NEG_INFINITY)),
        Stmt::Store(b.stats, int(1), f32(0.0)),
    ]
}

/// The thread's partial dot products of its query channels with each staged key.
fn scores(cx: &mut Ctx, at: &Place, b: &Buffers, d: i64) -> Vec<Stmt> {
    let (j, c) = (cx.var(), cx.var());
    let key = load(b.k_tile, at.staged(var(j), d, var(c)));
    let product = Expr::Fma(
        Box::new(load(b.q, var(c))),
        Box::new(key),
        Box::new(load(b.scores, var(j))),
    );
    vec![unroll(
        &[(j, KEYS)],
        vec![
            Stmt::Store(b.scores, var(j), f32(0.0)),
            unroll(
                &[(c, d / LANES)],
                vec![Stmt::Store(b.scores, var(j), product)],
            ),
        ],
    )]
}

/// Each score turned into its logit by the region body (−∞ for keys past the end and rows
/// past the queries), and the block's maximum.
fn logits(
    cx: &mut Ctx,
    gen: &mut BodyGen,
    a: &AttentionInfo,
    at: &Place,
    b: &Buffers,
    (s_len, t_len): (&Expr, &Expr),
) -> Vec<Stmt> {
    let (j, i, key, x) = (cx.var(), cx.var(), cx.var(), cx.var());
    gen.bind(a.scores, load(b.scores, var(j)));
    let mut pos = at.at.batch.clone();
    pos.extend([var(i), var(key)]);
    let logit = gen.value(cx, a.logits, &pos);
    let mut inside = gen.take_lets();
    inside.push(Stmt::Set(x, logit));
    let each = vec![
        Stmt::Set(key, add(var(at.at.j0), var(j))),
        Stmt::Set(x, f32(f32::NEG_INFINITY)),
        when(
            cx,
            and(lt(var(i), s_len.clone()), lt(var(key), t_len.clone())),
            inside,
        ),
        Stmt::Store(b.scores, var(j), var(x)),
        Stmt::Store(
            b.stats,
            int(2),
            bin(Bin::Max, load(b.stats, int(2)), var(x)),
        ),
    ];
    vec![
        Stmt::Set(i, at.query()),
        Stmt::Store(b.stats, int(2), f32(f32::NEG_INFINITY)),
        unroll(&[(j, KEYS)], each),
    ]
}

/// The online softmax on the block's logits: the new maximum and the correction, the sum and
/// the output channels corrected, `p = exp(x − m)` added to the sum and put in place of each
/// logit.
fn softmax(cx: &mut Ctx, b: &Buffers, dv: i64) -> Vec<Stmt> {
    let (m, j, c, p) = (cx.var(), cx.var(), cx.var(), cx.var());
    let stat = |k: i64| load(b.stats, int(k));
    let newest = bin(Bin::Max, stat(0), stat(2));
    let exp = |e: Expr| Expr::Un(Un::Exp, Box::new(e));
    let correct = Stmt::Store(b.out, var(c), mul(load(b.out, var(c)), stat(3)));
    vec![
        Stmt::Set(m, bin(Bin::Max, newest, f32(f32::MIN))),
        Stmt::Store(b.stats, int(3), exp(sub(stat(0), var(m)))),
        Stmt::Store(b.stats, int(0), var(m)),
        Stmt::Store(b.stats, int(1), mul(stat(1), stat(3))),
        unroll(
            &[(j, KEYS)],
            vec![
                Stmt::Set(p, exp(sub(load(b.scores, var(j)), var(m)))),
                Stmt::Store(b.stats, int(1), add(stat(1), var(p))),
                Stmt::Store(b.scores, var(j), var(p)),
            ],
        ),
        unroll(&[(c, dv / LANES)], vec![correct]),
    ]
}

/// `O += P·V` for the key block, on the thread's output channels.
fn weigh_values(cx: &mut Ctx, at: &Place, b: &Buffers, dv: i64) -> Stmt {
    let (j, c) = (cx.var(), cx.var());
    let value = load(b.v_tile, at.staged(var(j), dv, var(c)));
    let product = Expr::Fma(
        Box::new(load(b.scores, var(j))),
        Box::new(value),
        Box::new(load(b.out, var(c))),
    );
    unroll(
        &[(j, KEYS), (c, dv / LANES)],
        vec![Stmt::Store(b.out, var(c), product)],
    )
}

/// The thread's channels of `O / l` for its row, when inside the queries: output row
/// `bt · s + i`, `dv` wide.
fn write(cx: &mut Ctx, at: &Place, b: &Buffers, (s_len, dv): (&Expr, i64)) -> Vec<Stmt> {
    let (c, i) = (cx.var(), cx.var());
    let row = add(mul(var(at.at.bt), s_len.clone()), var(i));
    let channel = add(var(at.lane), mul(var(c), int(LANES)));
    let index = add(mul(row, int(dv)), channel);
    let value = bin(Bin::Div, load(b.out, var(c)), load(b.stats, int(1)));
    vec![
        Stmt::Set(i, at.query()),
        when(
            cx,
            lt(var(i), s_len.clone()),
            vec![unroll(
                &[(c, dv / LANES)],
                vec![Stmt::Store(0, index, value)],
            )],
        ),
    ]
}
