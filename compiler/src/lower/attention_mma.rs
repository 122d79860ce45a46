//! Tiled attention on tensor cores: FlashAttention-2's loop nest for GPUs whose q, k and v are
//! stored in f16 or bf16, both products on `mma.sync` m16n8k16 with f32 accumulation.
//!
//! A block of four warps takes 64 query rows of one batch row and head, each warp 16 of them.
//! The queries' `A` fragments are loaded once (through shared memory) and stay in registers.
//! Per block of 64 keys the threads stage the keys' rows of k and v in shared memory, then each
//! warp:
//! 1. computes its 16 × 64 scores `S = Q·Kᵀ` into f32 accumulators (8 tiles of 16 × 8, `d/16`
//!    k-steps each, `K`'s `B` fragments read from the staged rows);
//! 2. turns each score into its logit with the user's modifications (the region body), and
//!    masks keys past the end;
//! 3. runs the online softmax on its rows: each thread's maximum over its elements of a row,
//!    folded across the 4 threads that share the row (`WarpFold`, two shuffles); the
//!    correction `exp(m_old − m_new)` of the running sum and of the output accumulators;
//!    `p = exp(x − m)`, added to the thread's share of the row sum and written straight into
//!    `P`'s `A` fragments: a score accumulator's place is an `A` element's place, as
//!    FlashAttention-2 uses;
//! 4. adds `P·V` into its 16 × dv output accumulators (`V`'s `B` fragments from the staged
//!    rows).
//!
//! At the end the row sums are folded across the 4 threads, and each thread writes its
//! elements of `O / l`. The scores never leave registers. Blocks of keys the masks hide from
//! all of the block's queries are not visited, as on CPUs. The running max is kept at or
//! above `f32::MIN`, so a row whose keys in the first blocks are all masked gets `p = 0`, not
//! NaN. Rows are staged by `cp.async`, 16 bytes a copy, a block ahead as FlashAttention-2
//! stages them: a key block's k rows are copied as soon as every warp is done with the
//! previous block's scores, so they arrive while its `P·V` runs, and its v rows as soon as
//! the previous `P·V` is done, arriving while its scores and softmax run.
//! Fragments come from the staged rows by `ldmatrix` (four 8 × 8 matrices per instruction;
//! `V`'s transposed). Hopper's `wgmma` and TMA are still to come.

use archc_kernels::ir::build::{add, axis, bin, f32, load, mul, sub, var};
use archc_kernels::ir::{Axis, Bin, Elem, Expr, Fold, Local, Stmt, Un};

use super::attention_staging::{barrier, Nest, Spot};
use super::attention_tiles::Widths;
use super::body::BodyGen;
use super::fragments::{
    and, div, int, load_matrices, lt, mma, rem, unroll, when, Lane, PAD, THREADS,
};
use super::index::Ctx;
use super::Template;
use crate::graph::{AttentionInfo, Region, TensorType};

/// Query rows of a block: 16 per warp.
const ROWS: i64 = 64;
/// Keys per block of the online softmax.
const KEYS: i64 = 64;
/// The widest head (of q and k, and of v) whose tiles fit the block's shared memory and
/// registers.
const MAX_WIDTH: i64 = 128;
/// Elements of one asynchronous copy of a staged row: 16 bytes of a 16-bit type.
const CHUNK: i64 = 8;
/// The locals the kernel declares, in the order of [`Buffers`].
pub const LOCALS: usize = 6;

/// Whether the tensor-core template computes attention `a` with widths `w`: the target has
/// `mma.sync` m16n8k16 and blocks of four warps, q, k and v are stored in one 16-bit float
/// type, the query and key width is a multiple of 16 and the value width of 8, neither above
/// [`MAX_WIDTH`].
pub fn applies(cx: &Ctx, a: &AttentionInfo, ins: &[&TensorType], w: &Widths) -> bool {
    let elems: Vec<Elem> = a.qkv.iter().map(|&s| super::elem(ins[s].dtype)).collect();
    cx.schedule.tensor_cores
        && cx.schedule.gpu_block == Some(THREADS as u32)
        && matches!(elems[0], Elem::F16 | Elem::BF16)
        && elems.iter().all(|e| *e == elems[0])
        && w.d % 16 == 0
        && w.dv % 8 == 0
        && (16..=MAX_WIDTH).contains(&w.d)
        && (8..=MAX_WIDTH).contains(&w.dv)
}

/// The kernel's arrays: per thread (locals from `first_local`) and per block (shared arrays
/// from `first_shared`).
struct Buffers {
    /// The queries' `A` fragments, `d/16` k-steps of 8.
    q: usize,
    /// Two tiles' `B` fragments (of `Kᵀ` or of `V`), 4 each.
    b: usize,
    /// `P`'s `A` fragments, 4 key steps of 8.
    p: usize,
    /// The scores of the key block, 8 tiles of 4 accumulators.
    scores: usize,
    /// The output accumulators, `dv/8` tiles of 4.
    out: usize,
    /// Per row half (rows `g` and `g + 8`): the running max (0, 1), the thread's share of
    /// the sum (2, 3), the block's max being folded (4, 5) and the correction (6, 7).
    stats: usize,
    /// The staged rows of q (first), then of each key block's k.
    k_tile: usize,
    /// The key block's rows of v.
    v_tile: usize,
}

/// Where the thread is in the nest, and its lane in its warp.
struct Place {
    at: Spot,
    lane: Lane,
}

impl Place {
    /// The query of row `r` (`0..16`) of the thread's warp.
    fn query(&self, r: Expr) -> Expr {
        add(var(self.at.i0), add(mul(var(self.lane.warp), int(16)), r))
    }
}

/// `body` for every thread of the block, its place in its warp set first.
fn threads(at: &Place, body: Vec<Stmt>) -> Stmt {
    let mut s = at.lane.of(at.at.t);
    s.extend(body);
    axis(Axis::Thread, at.at.t, int(THREADS), s)
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
        b: first_local + 1,
        p: first_local + 2,
        scores: first_local + 3,
        out: first_local + 4,
        stats: first_local + 5,
        k_tile: first_shared,
        v_tile: first_shared + 1,
    };
    let chunk = Some(CHUNK);
    let nest = Nest::new(
        cx,
        a,
        (out, ins),
        (w, ROWS, KEYS),
        (b.k_tile, b.v_tile, chunk),
    );
    let at = Place {
        at: nest.spot(),
        lane: Lane::new(cx),
    };
    let lengths = (&nest.s_len.clone(), &nest.t_len.clone());
    // The queries' rows, staged where the keys' go later, into A fragments.
    let stage_q = vec![nest.stage_q.clone(), Stmt::AsyncWait(0)];
    let mut start = vec![threads(&at, stage_q), barrier()];
    start.extend(self::start(cx, &at, &b, w));
    start.push(barrier());
    // The copies run a block ahead, as FlashAttention-2's: a block's k rows land while the
    // previous block's `P·V` runs, and its v rows while its scores and softmax run. Each is
    // a group of copies; a thread's wait for all but its newest group is the wait for the
    // older one.
    start.push(Stmt::Set(nest.jk, nest.first_key(KEYS)));
    let first_k = when(cx, nest.visits_any(), vec![nest.stage_kv[0].clone()]);
    start.push(threads(&at, vec![first_k, Stmt::AsyncWait(1)]));
    let [stage_k, stage_v] = [0, 1].map(|i| nest.stage_kv[i].clone());
    let next_k = when(cx, nest.has_next(), vec![stage_k]);
    let mut per_block = vec![threads(&at, vec![stage_v, Stmt::AsyncWait(1)]), barrier()];
    per_block.extend(scores(cx, &at, &b, w.d));
    per_block.push(threads(&at, logits(cx, &mut gen, a, &at, &b, lengths)));
    per_block.push(fold(Bin::Max, b.stats, 4));
    per_block.push(threads(&at, softmax(cx, &b, w.dv)));
    // Every warp is done with this block's k rows: the next block's go in their place.
    per_block.push(barrier());
    per_block.push(Stmt::Set(nest.jk, add(var(nest.j0), int(KEYS))));
    per_block.push(threads(&at, vec![next_k, Stmt::AsyncWait(1)]));
    per_block.push(barrier());
    per_block.push(weigh_values(cx, &b, w.dv));
    per_block.push(barrier());
    let end = vec![
        fold(Bin::Add, b.stats, 2),
        threads(&at, write(cx, &at, &b, (lengths.0, w.dv))),
    ];
    let body = nest.body(cx, out, KEYS, [start, per_block, end]);
    let elem = super::elem(ins[a.qkv[0]].dtype);
    let array = |name: &str, elem, len: i64| Local {
        name: name.into(),
        elem,
        len: len as usize,
    };
    Template {
        body,
        checks: gen.checks,
        locals: vec![
            array("q_fragments", elem, w.d / 2),
            array("b_fragments", elem, 8),
            array("p_fragments", elem, KEYS / 2),
            array("scores", Elem::F32, KEYS / 2),
            array("out", Elem::F32, w.dv / 2),
            array("stats", Elem::F32, 8),
        ],
        shared: vec![
            array("k_tile", elem, KEYS * (w.d + PAD)),
            array("v_tile", elem, KEYS * (w.dv + PAD)),
        ],
        scratch: None,
        occupancy: None,
    }
}

/// Folds stats `at..at + 2` (one per row half) across the 4 threads of each lane group.
fn fold(op: Bin, stats: usize, at: i64) -> Stmt {
    Stmt::WarpFold(Fold {
        op,
        buf: stats,
        at: int(at),
        count: 2,
        lanes: 4,
    })
}

/// The thread's query fragments from the staged rows (an `ldmatrix` x4 per k16 step; the
/// block's threads run it together, between their Thread loops); then, in each thread, the
/// output accumulators at 0, the running maxima at −∞ and the sums at 0.
fn start(cx: &mut Ctx, at: &Place, b: &Buffers, w: &Widths) -> Vec<Stmt> {
    let ks = cx.var();
    let load_q = load_matrices(
        cx,
        (b.q, mul(var(ks), int(8))),
        b.k_tile,
        (4, false),
        &|p| {
            let (r, c) = p.a_quarter();
            let row = add(mul(p.warp.clone(), int(16)), r);
            add(mul(row, int(w.d + PAD)), add(mul(var(ks), int(16)), c))
        },
    );
    let (e, h) = (cx.var(), cx.var());
    let init = vec![
        unroll(&[(e, w.dv / 2)], vec![Stmt::Store(b.out, var(e), f32(0.0))]),
        unroll(
            &[(h, 2)],
            vec![
                Stmt::Store(b.stats, var(h), f32(f32::NEG_INFINITY)),
                Stmt::Store(b.stats, add(var(h), int(2)), f32(0.0)),
            ],
        ),
    ];
    vec![unroll(&[(ks, w.d / 16)], vec![load_q]), threads(at, init)]
}

/// `S = Q·Kᵀ` for the key block. `Kᵀ`'s `B` fragments come from the staged key rows as they
/// are: a fragment register holds two channels of one key, a row's neighbours.
fn scores(cx: &mut Ctx, at: &Place, b: &Buffers, d: i64) -> Vec<Stmt> {
    let e = cx.var();
    let zero = Stmt::Store(b.scores, var(e), f32(0.0));
    // Matrix `half` of k16 step `ks` for key tile `nt`: 8 keys' rows, 8 channels from
    // `16·ks + 8·half`.
    let row = |ks: Expr, nt: Expr, half: Expr, r: Expr| {
        let key = add(mul(nt, int(8)), r);
        add(
            mul(key, int(d + PAD)),
            add(mul(ks, int(16)), mul(half, int(8))),
        )
    };
    vec![
        threads(at, vec![unroll(&[(e, KEYS / 2)], vec![zero])]),
        products(
            cx,
            (b.q, b.b, b.scores),
            (b.k_tile, false, &row),
            (d / 16, KEYS / 8),
        ),
    ]
}

/// Where the row an `ldmatrix` thread points at starts in a staged tile: from the k16 step,
/// the 8-column tile of `B`, the half of the step (`B`'s rows 0–7 or 8–15) and the row of the
/// 8 × 8 matrix.
type Row<'a> = &'a dyn Fn(Expr, Expr, Expr, Expr) -> Expr;

/// `C += A·B` over `steps` k16 steps and `tiles` tiles of 8 columns, `A`'s fragments in local
/// `a` (8 per step), `C`'s in `c` (4 per tile): per step, the `B` fragments of two tiles at a
/// time (one when `tiles` is odd) come from shared array `tile` by one `ldmatrix` (transposed
/// when `trans`) into local `b`, each thread pointing at the row `row` gives, and the warp
/// multiplies. Two tiles' fragments are live at a time.
fn products(
    cx: &mut Ctx,
    (a, b, c): (usize, usize, usize),
    (tile, trans, row): (usize, bool, Row),
    (steps, tiles): (i64, i64),
) -> Stmt {
    let per = if tiles % 2 == 0 { 2 } else { 1 };
    let (ks, np, i) = (cx.var(), cx.var(), cx.var());
    let fragments = load_matrices(cx, (b, int(0)), tile, (2 * per as u8, trans), &|p| {
        let (pair, half) = p.b_pair();
        let nt = add(mul(var(np), int(per)), pair);
        row(var(ks), nt, half, p.row.clone())
    });
    let product = mma(
        (a, mul(var(ks), int(8))),
        (b, mul(var(i), int(4))),
        (c, mul(add(mul(var(np), int(per)), var(i)), int(4))),
    );
    unroll(
        &[(ks, steps), (np, tiles / per)],
        vec![fragments, unroll(&[(i, per)], vec![product])],
    )
}

/// Each score turned into its logit by the region body (−∞ for keys past the end and rows
/// past the queries), and the thread's maximum of each row half.
fn logits(
    cx: &mut Ctx,
    gen: &mut BodyGen,
    a: &AttentionInfo,
    at: &Place,
    b: &Buffers,
    (s_len, t_len): (&Expr, &Expr),
) -> Vec<Stmt> {
    let (nt, e, i, j, x) = (cx.var(), cx.var(), cx.var(), cx.var(), cx.var());
    let (r, c) = at.lane.c(&var(e));
    let el = add(mul(var(nt), int(4)), var(e));
    gen.bind(a.scores, load(b.scores, el.clone()));
    let mut pos = at.at.batch.clone();
    pos.extend([var(i), var(j)]);
    let logit = gen.value(cx, a.logits, &pos);
    let mut inside = gen.take_lets();
    inside.push(Stmt::Set(x, logit));
    let half = add(div(var(e), 2), int(4));
    let each = vec![
        Stmt::Set(i, at.query(r)),
        Stmt::Set(j, add(var(at.at.j0), add(mul(var(nt), int(8)), c))),
        Stmt::Set(x, f32(f32::NEG_INFINITY)),
        when(
            cx,
            and(lt(var(i), s_len.clone()), lt(var(j), t_len.clone())),
            inside,
        ),
        Stmt::Store(b.scores, el, var(x)),
        Stmt::Store(
            b.stats,
            half.clone(),
            bin(Bin::Max, load(b.stats, half), var(x)),
        ),
    ];
    let h = cx.var();
    let reset = Stmt::Store(b.stats, add(var(h), int(4)), f32(f32::NEG_INFINITY));
    vec![
        unroll(&[(h, 2)], vec![reset]),
        unroll(&[(nt, KEYS / 8), (e, 4)], each),
    ]
}

/// The online softmax on the thread's scores, the block's maxima folded: new maxima and
/// corrections, the sums and the output accumulators corrected, `p = exp(x − m)` added to the
/// sums and placed in `P`'s `A` fragments (score tile `nt`'s element `e` is key step `nt/2`'s
/// element `4·(nt mod 2) + e`).
fn softmax(cx: &mut Ctx, b: &Buffers, dv: i64) -> Vec<Stmt> {
    let (h, nt, e, m, p) = (cx.var(), cx.var(), cx.var(), cx.var(), cx.var());
    let stat = |k: i64, h: Expr| load(b.stats, add(h, int(k)));
    let newest = bin(Bin::Max, stat(0, var(h)), stat(4, var(h)));
    let correction = Expr::Un(Un::Exp, Box::new(sub(stat(0, var(h)), var(m))));
    let rescale = vec![
        Stmt::Set(m, bin(Bin::Max, newest, f32(f32::MIN))),
        Stmt::Store(b.stats, add(var(h), int(6)), correction),
        Stmt::Store(b.stats, var(h), var(m)),
        Stmt::Store(
            b.stats,
            add(var(h), int(2)),
            mul(stat(2, var(h)), stat(6, var(h))),
        ),
    ];
    let half = div(var(e), 2);
    let score = load(b.scores, add(mul(var(nt), int(4)), var(e)));
    let place = add(
        mul(div(var(nt), 2), int(8)),
        add(mul(rem(var(nt), 2), int(4)), var(e)),
    );
    let weigh = vec![
        Stmt::Set(
            p,
            Expr::Un(Un::Exp, Box::new(sub(score, stat(0, half.clone())))),
        ),
        Stmt::Store(
            b.stats,
            add(half.clone(), int(2)),
            add(stat(2, half.clone()), var(p)),
        ),
        Stmt::Store(b.p, place, var(p)),
    ];
    let o = add(mul(var(nt), int(4)), var(e));
    let correct = Stmt::Store(b.out, o.clone(), mul(load(b.out, o), stat(6, half)));
    vec![
        unroll(&[(h, 2)], rescale),
        unroll(&[(nt, KEYS / 8), (e, 4)], weigh),
        unroll(&[(nt, dv / 8), (e, 4)], vec![correct]),
    ]
}

/// `O += P·V` for the key block. `V`'s `B` fragments come from the staged value rows
/// transposed: a fragment register holds one channel of two neighbouring keys.
fn weigh_values(cx: &mut Ctx, b: &Buffers, dv: i64) -> Stmt {
    // Matrix `half` of key step `kk` for channel tile `nt`: 8 keys from `16·kk + 8·half`,
    // 8 channels from `8·nt`.
    let row = |kk: Expr, nt: Expr, half: Expr, r: Expr| {
        let key = add(add(mul(kk, int(16)), mul(half, int(8))), r);
        add(mul(key, int(dv + PAD)), mul(nt, int(8)))
    };
    products(
        cx,
        (b.p, b.b, b.out),
        (b.v_tile, true, &row),
        (KEYS / 16, dv / 8),
    )
}

/// Each thread's elements of `O / l` for its rows inside the queries: output row
/// `bt · s + i`, `dv` wide.
fn write(cx: &mut Ctx, at: &Place, b: &Buffers, (s_len, dv): (&Expr, i64)) -> Vec<Stmt> {
    let (nt, e, i) = (cx.var(), cx.var(), cx.var());
    let (r, c) = at.lane.c(&var(e));
    let row = add(mul(var(at.at.bt), s_len.clone()), var(i));
    let index = add(mul(row, int(dv)), add(mul(var(nt), int(8)), c));
    let sum = load(b.stats, add(div(var(e), 2), int(2)));
    let value = bin(
        Bin::Div,
        load(b.out, add(mul(var(nt), int(4)), var(e))),
        sum,
    );
    let each = vec![
        Stmt::Set(i, at.query(r)),
        when(
            cx,
            lt(var(i), s_len.clone()),
            vec![Stmt::Store(0, index, value)],
        ),
    ];
    vec![unroll(&[(nt, dv / 8), (e, 4)], each)]
}
