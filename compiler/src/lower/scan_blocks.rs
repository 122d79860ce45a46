//! The fused selective scan on a GPU: Mamba's chunked block scan.
//!
//! One thread per channel walking the whole sequence (the CPU's template) leaves a GPU mostly
//! idle: Mamba's 8 × 2048 channels are a few percent of the threads an H100 holds, each
//! waiting on its own serial chain. Here a block of 128 threads takes one channel and splits
//! its sequence: per chunk of `128 · ITEMS` steps, thread `j` owns `ITEMS` consecutive steps.
//! A step maps the state affinely, `h ↦ a·h + b` (per state element), and affine maps compose,
//! so:
//! 1. each thread composes its steps' maps into one, `(P, H)` with `P = Π a` and `H` the state
//!    its steps reach from 0; thread 0 starts from the chunk's carried-in state instead, so its
//!    `H` is a true state;
//! 2. the block scans the maps, in shared memory, in `log₂ 128` rounds (Hillis–Steele): in
//!    round `k` thread `j ≥ 2ᵏ` composes its map after that of thread `j − 2ᵏ`. Thread `j`
//!    ends with the map of steps `0..=j`, whose `H` is the state at the end of its steps;
//! 3. each thread starts from the state at the end of its predecessor's steps (thread 0 from
//!    the carried-in state) and walks its steps again, this time with the read-out and the
//!    epilogue, storing the outputs; thread 0 copies the last thread's state into the row of
//!    shared memory that carries it into the next chunk.
//!
//! A chunk shorter than the block's share (the last) involves only the threads with steps in
//! it, and only the rounds they need.
//!
//! Every step's `a` and `b` are computed twice (in passes 1 and 3), as Mamba's kernel does;
//! the state lives in registers (the state loops are unrolled), and the `[batch, seq,
//! channels, state]` tensors never exist. A sequence of at most `ITEMS` steps (a decoding
//! step) keeps the one-thread-per-channel template.

use archc_kernels::ir::build::{add, axis, bin, f32, load, mul, serial, sub, var};
use archc_kernels::ir::{Axis, Bin, Elem, Expr, Local, Scope, Stmt, Var};

use super::body::{broadcast_at, delinearize, BodyGen};
use super::fragments::{and, div, int, lt, threads, when, THREADS};
use super::index::{exprs, Ctx};
use super::scan::ScanAxes;
use super::Template;
use crate::graph::{Dim, Region, ScanInfo, TensorType};

/// Consecutive steps of one thread per chunk.
const ITEMS: i64 = 16;
/// Steps of one chunk.
const CHUNK: i64 = THREADS * ITEMS;
/// The most state elements per channel: a thread holds four arrays of them in registers, and
/// the block two of them per thread in shared memory (33 KiB at 32).
pub const MAX_STATE: usize = 32;

/// Whether the block scan computes a scan of these axes: on a GPU whose blocks are
/// [`THREADS`] threads, with at most [`MAX_STATE`] state elements per channel, over a sequence
/// longer than one thread's share of a chunk.
pub fn applies(cx: &Ctx, axes: &ScanAxes) -> bool {
    cx.schedule.gpu_block == Some(THREADS as u32)
        && axes.state_len <= MAX_STATE
        && axes.h.shape[axes.axis].as_const().is_none_or(|n| n > ITEMS)
}

/// The kernel's arrays: per thread (locals) and per block (shared), each of the channel's
/// state elements.
struct Buffers {
    /// The thread's map: the product of the decays.
    p: usize,
    /// The thread's map: the state it reaches. In pass 3, the state.
    h: usize,
    /// A round's map of the thread `2ᵏ` before: its product …
    p_before: usize,
    /// … and its state.
    h_before: usize,
    /// Every thread's `P`, a row of the state each (see [`Each::row`]).
    shared_p: usize,
    /// Every thread's `H`, and the state carried into the chunk.
    shared_h: usize,
}

/// Where a step's code is generated: `h`'s coordinates, among them the time variable (set at
/// the top of the step) and the state axes' variables (of unrolled loops).
struct At {
    h_at: Vec<Expr>,
    t: Var,
    st_vars: Vec<Var>,
    /// The state element's index in the thread's arrays.
    slot: Expr,
}

/// The kernel (see the module doc) for a scan region whose node has type `out`, with
/// `inputs` region inputs.
pub fn lower(
    cx: &mut Ctx,
    (r, info, axes): (&Region, &ScanInfo, &ScanAxes),
    (out, inputs): (&TensorType, usize),
) -> Template {
    let n = axes.state_len as i64;
    let first = inputs + 2;
    let b = Buffers {
        p: first,
        h: first + 1,
        p_before: first + 2,
        h_before: first + 3,
        shared_p: first + 4,
        shared_h: first + 5,
    };
    let mut gen = BodyGen::new(&r.body, 1);
    let ch = cx.var();
    let ch_vars = cx.vars(axes.channel_axes.len());
    gen.loop_vars(&ch_vars);
    let (c, tid, active) = (cx.var(), cx.var(), cx.var());
    let len = cx.dim(&axes.h.shape[axes.axis]);
    let chunk_at = Chunk {
        each: Each { n, tid },
        b,
        first_step: add(mul(var(c), int(CHUNK)), mul(var(tid), int(ITEMS))),
        len: len.clone(),
        active,
    };
    let (each, b) = (&chunk_at.each, &chunk_at.b);
    // The threads with steps in this chunk: all but in the last.
    let left = sub(len.clone(), mul(var(c), int(CHUNK)));
    let mut chunk = vec![Stmt::Set(
        active,
        bin(
            Bin::Min,
            div(add(left, int(ITEMS - 1)), ITEMS),
            int(THREADS),
        ),
    )];
    // Pass 1: the thread's map.
    let at = place(cx, axes, &ch_vars);
    let steps = maps(cx, &mut gen, (r, info, axes), &at, b);
    let compose = chunk_at.compose(cx, &at, steps);
    chunk.push(chunk_at.active_threads(cx, compose));
    chunk.push(Stmt::Barrier(Scope::Block));
    // Pass 2: the block's inclusive scan of the maps.
    for round in 0..THREADS.ilog2() {
        let d = 1 << round;
        let round = scan_round(cx, (each, b), d, active);
        chunk.push(when(cx, lt(int(d), var(active)), round));
    }
    // Pass 3: the steps again from the predecessor's state, with the read-out.
    let at = place(cx, axes, &ch_vars);
    let steps = outputs(cx, &mut gen, (r, info, axes), &at, (b, out));
    let finish = chunk_at.finish(cx, &at, steps);
    chunk.push(chunk_at.active_threads(cx, finish));
    chunk.push(Stmt::Barrier(Scope::Block));

    let mut block: Vec<Stmt> = delinearize(cx, var(ch), &axes.channel_shape)
        .into_iter()
        .zip(&ch_vars)
        .map(|(e, v)| Stmt::Set(*v, e))
        .collect();
    block.extend(gen.take_lets());
    // Only thread 0 touches the carried-in state's row until pass 3, after barriers.
    let zero = each.on(cx, 0, |k| {
        vec![Stmt::Store(b.shared_h, each.row(int(-1), k), f32(0.0))]
    });
    block.push(threads(tid, vec![zero]));
    block.push(serial(c, div(add(len, int(CHUNK - 1)), CHUNK), chunk));
    let channels = Dim::product(&axes.channel_shape).expect("channel counts fit in i64");
    let array = |name: &str, len: i64| Local {
        name: name.into(),
        elem: Elem::F32,
        len: len as usize,
    };
    Template {
        body: vec![Stmt::For {
            var: ch,
            extent: cx.dim(&channels),
            kind: Axis::Grid,
            body: block,
        }],
        checks: gen.checks,
        locals: vec![
            array("map_p", n),
            array("map_h", n),
            array("before_p", n),
            array("before_h", n),
        ],
        shared: vec![
            array("maps_p", (THREADS + 1) * each.stride()),
            array("maps_h", (THREADS + 1) * each.stride()),
        ],
        scratch: None,
    }
}

/// What one chunk's passes need: the thread's state-element loops, the buffers, the
/// thread's first step in the chunk, the sequence's length and the threads with steps in
/// the chunk.
struct Chunk {
    each: Each,
    b: Buffers,
    first_step: Expr,
    len: Expr,
    active: Var,
}

impl Chunk {
    /// `body` on the threads with steps in the chunk.
    fn active_threads(&self, cx: &mut Ctx, body: Vec<Stmt>) -> Stmt {
        let tid = self.each.tid;
        threads(tid, vec![when(cx, lt(var(tid), var(self.active)), body)])
    }

    /// The thread's steps before the sequence's end, each `body` with `at.t` set.
    fn walk(&self, cx: &mut Ctx, at: &At, body: Vec<Stmt>) -> Stmt {
        let i = cx.var();
        let inside = when(cx, lt(var(at.t), self.len.clone()), body);
        let t = Stmt::Set(at.t, add(self.first_step.clone(), var(i)));
        serial(i, int(ITEMS), vec![t, inside])
    }

    /// Pass 1: the thread's map composed over its steps (`steps`, one step's code at `at`),
    /// thread 0's from the carried-in state, then published in shared memory.
    fn compose(&self, cx: &mut Ctx, at: &At, steps: Vec<Stmt>) -> Vec<Stmt> {
        let (each, b) = (&self.each, &self.b);
        vec![
            each.all(cx, |k| {
                vec![
                    Stmt::Store(b.p, k.clone(), f32(1.0)),
                    Stmt::Store(b.h, k, f32(0.0)),
                ]
            }),
            each.on(cx, 0, |k| {
                let carried = load(b.shared_h, each.row(int(-1), k.clone()));
                vec![Stmt::Store(b.h, k, carried)]
            }),
            self.walk(cx, at, steps),
            each.all(cx, |k| {
                let at = each.row(var(each.tid), k.clone());
                vec![
                    Stmt::Store(b.shared_p, at.clone(), load(b.p, k.clone())),
                    Stmt::Store(b.shared_h, at, load(b.h, k)),
                ]
            }),
        ]
    }

    /// Pass 3: the thread's state from its predecessor's map (thread 0's from the carried-in
    /// state, which it then replaces with the last thread's), then its steps with their
    /// outputs (`steps`, one step's code at `at`).
    fn finish(&self, cx: &mut Ctx, at: &At, steps: Vec<Stmt>) -> Vec<Stmt> {
        let (each, b) = (&self.each, &self.b);
        vec![
            each.all(cx, |k| {
                let at = each.row(sub(var(each.tid), int(1)), k.clone());
                vec![Stmt::Store(b.h, k, load(b.shared_h, at))]
            }),
            each.on(cx, 0, |k| {
                let last = each.row(sub(var(self.active), int(1)), k.clone());
                let carried = each.row(int(-1), k);
                vec![Stmt::Store(b.shared_h, carried, load(b.shared_h, last))]
            }),
            self.walk(cx, at, steps),
        ]
    }
}

/// Code over a thread's state elements, as unrolled loops.
struct Each {
    /// The state elements.
    n: i64,
    /// The thread.
    tid: Var,
}

impl Each {
    /// `body(k)` for every state element `k`.
    fn all(&self, cx: &mut Ctx, body: impl FnOnce(Expr) -> Vec<Stmt>) -> Stmt {
        let k = cx.var();
        axis(Axis::Unroll, k, int(self.n), body(var(k)))
    }

    /// [`Each::all`], only where `cond` holds.
    fn when(&self, cx: &mut Ctx, cond: Expr, body: impl FnOnce(Expr) -> Vec<Stmt>) -> Stmt {
        let all = self.all(cx, body);
        when(cx, cond, vec![all])
    }

    /// [`Each::all`], on thread `j` only.
    fn on(&self, cx: &mut Ctx, j: i64, body: impl FnOnce(Expr) -> Vec<Stmt>) -> Stmt {
        self.when(cx, bin(Bin::Eq, var(self.tid), int(j)), body)
    }

    /// Element `k` of thread `j`'s row in a shared array: rows of an odd length, so that a
    /// warp's 32 rows start in 32 different banks. The first row, "thread −1"'s, holds the
    /// state carried into the chunk.
    fn row(&self, j: Expr, k: Expr) -> Expr {
        add(mul(add(j, int(1)), int(self.stride())), k)
    }

    /// The length of a thread's row in a shared array: the state, rounded up to odd.
    fn stride(&self) -> i64 {
        self.n | 1
    }
}

/// Round `k` of the block's scan, `d = 2ᵏ`: each of the `active` threads `j ≥ d` reads the map
/// of thread `j − d`, then (after a barrier) composes its own after it and publishes the result.
fn scan_round(cx: &mut Ctx, (each, b): (&Each, &Buffers), d: i64, active: Var) -> Vec<Stmt> {
    let tid = each.tid;
    let receives = and(bin(Bin::Le, int(d), var(tid)), lt(var(tid), var(active)));
    let read = each.when(cx, receives.clone(), |k| {
        let at = each.row(sub(var(tid), int(d)), k.clone());
        vec![
            Stmt::Store(b.p_before, k.clone(), load(b.shared_p, at.clone())),
            Stmt::Store(b.h_before, k, load(b.shared_h, at)),
        ]
    });
    let combine = each.when(cx, receives, |k| {
        let (p, h) = (load(b.p, k.clone()), load(b.h, k.clone()));
        let at = each.row(var(tid), k.clone());
        vec![
            Stmt::Store(
                b.h,
                k.clone(),
                add(mul(p.clone(), load(b.h_before, k.clone())), h),
            ),
            Stmt::Store(b.p, k.clone(), mul(p, load(b.p_before, k.clone()))),
            Stmt::Store(b.shared_p, at.clone(), load(b.p, k.clone())),
            Stmt::Store(b.shared_h, at, load(b.h, k)),
        ]
    });
    vec![
        threads(tid, vec![read]),
        Stmt::Barrier(Scope::Block),
        threads(tid, vec![combine]),
        Stmt::Barrier(Scope::Block),
    ]
}

/// Fresh variables for a step: `h`'s coordinates in the channel `ch_vars` name.
fn place(cx: &mut Ctx, axes: &ScanAxes, ch_vars: &[Var]) -> At {
    let t = cx.var();
    let st_vars = cx.vars(axes.state_axes.len());
    let mut h_at = vec![Expr::Int(0); axes.h.rank()];
    h_at[axes.axis] = var(t);
    for (x, v) in axes.channel_axes.iter().zip(ch_vars) {
        h_at[*x] = var(*v);
    }
    for (x, v) in axes.state_axes.iter().zip(&st_vars) {
        h_at[*x] = var(*v);
    }
    let slot = cx.index(&axes.state_shape, &exprs(&st_vars));
    At {
        h_at,
        t,
        st_vars,
        slot,
    }
}

/// `body` in unrolled loops over the state axes (none: `body` itself).
fn state_loops(axes: &ScanAxes, at: &At, body: Vec<Stmt>) -> Vec<Stmt> {
    let mut body = body;
    for (v, d) in at.st_vars.iter().zip(&axes.state_shape).rev() {
        let extent = d.as_const().expect("the pass admits constant state sizes");
        body = vec![axis(Axis::Unroll, *v, int(extent), body)];
    }
    body
}

/// The step's decay and input at `at` (generated inside its state loops), into variables.
fn decay_input(
    cx: &mut Ctx,
    gen: &mut BodyGen,
    (r, info): (&Region, &ScanInfo),
    at: &At,
) -> (Vec<Stmt>, Var, Var) {
    let [a, b] = r.body.operands(info.scan)[..] else {
        unreachable!("scan has two operands")
    };
    let decay = gen.value(cx, a, &broadcast_at(&at.h_at, &r.body.ty(a).shape));
    let input = gen.value(cx, b, &broadcast_at(&at.h_at, &r.body.ty(b).shape));
    let (av, bv) = (cx.var(), cx.var());
    let mut code = gen.take_lets();
    code.push(Stmt::Set(av, decay));
    code.push(Stmt::Set(bv, input));
    (code, av, bv)
}

/// A step of pass 1: the thread's map after the step's.
fn maps(
    cx: &mut Ctx,
    gen: &mut BodyGen,
    (r, info, axes): (&Region, &ScanInfo, &ScanAxes),
    at: &At,
    b: &Buffers,
) -> Vec<Stmt> {
    gen.enter(&[at.t]);
    gen.enter(&at.st_vars);
    let (mut inner, av, bv) = decay_input(cx, gen, (r, info), at);
    let (p, h) = (load(b.p, at.slot.clone()), load(b.h, at.slot.clone()));
    inner.push(Stmt::Store(
        b.h,
        at.slot.clone(),
        add(mul(var(av), h), var(bv)),
    ));
    inner.push(Stmt::Store(b.p, at.slot.clone(), mul(var(av), p)));
    inner.extend(gen.leave());
    let mut step = gen.leave();
    step.extend(state_loops(axes, at, inner));
    step
}

/// A step of pass 3: the state after the step, and the step's output: the read-out summed
/// over the state and the epilogue on the sum, or without a read-out the state itself.
fn outputs(
    cx: &mut Ctx,
    gen: &mut BodyGen,
    (r, info, axes): (&Region, &ScanInfo, &ScanAxes),
    at: &At,
    (b, out): (&Buffers, &TensorType),
) -> Vec<Stmt> {
    gen.enter(&[at.t]);
    gen.enter(&at.st_vars);
    let (mut inner, av, bv) = decay_input(cx, gen, (r, info), at);
    let hv = cx.var();
    let previous = load(b.h, at.slot.clone());
    inner.push(Stmt::Set(hv, add(mul(var(av), previous), var(bv))));
    inner.push(Stmt::Store(b.h, at.slot.clone(), var(hv)));
    let Some(readout) = info.readout else {
        inner.push(Stmt::Store(0, cx.index(&out.shape, &at.h_at), var(hv)));
        inner.extend(gen.leave());
        let mut step = gen.leave();
        step.extend(state_loops(axes, at, inner));
        return step;
    };
    gen.bind(info.scan, var(hv));
    let acc = cx.var();
    let term = gen.value(cx, r.body.operands(readout)[0], &at.h_at);
    inner.extend(gen.leave());
    inner.push(Stmt::Set(acc, add(var(acc), term)));
    let mut step = gen.take_lets();
    step.push(Stmt::Set(acc, f32(0.0)));
    step.extend(state_loops(axes, at, inner));
    gen.bind(readout, var(acc));
    let out_at = axes.out_at(&at.h_at);
    let y = gen.value(cx, r.output(), &out_at);
    step.extend(gen.leave());
    step.push(Stmt::Store(0, cx.index(&out.shape, &out_at), y));
    step
}
