//! The fused selective scan on a GPU: Mamba's chunked scan, with a warp's lanes on 32
//! neighbouring channels.
//!
//! One thread per channel walking the whole sequence (the CPU's template) leaves a GPU mostly
//! idle: Mamba's 8 × 2048 channels are a few percent of the threads an H100 holds, each
//! waiting on its own serial chain. Here a block of [`WARPS`] warps takes 32 channels, a lane
//! each, and splits their sequence: per chunk of `WARPS · ITEMS` steps, warp `w` owns `ITEMS`
//! consecutive steps. A step's loads of Δ and x, `[batch, seq, channels]`, are then one
//! 128-byte line per warp (the lanes are neighbouring channels) and its loads of B and C one
//! address (a broadcast). (The first version gave a block one channel and its lanes steps 16
//! apart: every load touched 32 lines, and it ran 18 times slower than Mamba's kernel on an
//! H200.)
//!
//! A step maps the state affinely, `h ↦ a·h + b` (per state element), and affine maps compose,
//! so, lane by lane:
//! 1. each warp composes its steps' maps into one, `(P, H)` with `P = Π a` and `H` the state
//!    its steps reach from 0; warp 0 starts from the chunk's carried-in state instead, so its
//!    `H` is a true state;
//! 2. the block scans the warps' maps, in shared memory, in `log₂ WARPS` rounds
//!    (Hillis–Steele): in round `k` warp `w ≥ 2ᵏ` composes its map after that of warp
//!    `w − 2ᵏ`. Warp `w` ends with the map of steps `0..=w`, whose `H` is the state at the end
//!    of its steps;
//! 3. each warp starts from the state at the end of its predecessor's steps (warp 0 from the
//!    carried-in state) and walks its steps again, this time with the read-out and the
//!    epilogue, storing the outputs; warp 0 copies the last warp's state into the row of
//!    shared memory that carries it into the next chunk.
//!
//! A chunk shorter than the block's share (the last) involves only the warps with steps in
//! it, and only the rounds they need; lanes past the last channel sit every pass out.
//!
//! Every step's `a` and `b` are computed twice (in passes 1 and 3), as Mamba's kernel does;
//! the state lives in registers (the state loops are unrolled), and the `[batch, seq,
//! channels, state]` tensors never exist. A sequence of at most `ITEMS` steps (a decoding
//! step) keeps the one-thread-per-channel template.

use std::collections::HashSet;

use archc_kernels::ir::build::{add, axis, bin, f32, load, mul, serial, sub, var};
use archc_kernels::ir::{Axis, Bin, Elem, Expr, Local, Scope, Stmt, Var};

use super::body::{broadcast_at, delinearize, BodyGen};
use super::fragments::{and, div, int, lt, rem, threads, when, THREADS, WARP};
use super::hoist::Hoist;
use super::index::{exprs, Ctx};
use super::scan::ScanAxes;
use super::Template;
use crate::graph::{Dim, Region, ScanInfo, TensorType};

/// Warps of a block, each a segment of every chunk.
const WARPS: i64 = THREADS / WARP;
/// Consecutive steps of one warp per chunk.
const ITEMS: i64 = 32;
/// Steps of one chunk.
const CHUNK: i64 = WARPS * ITEMS;
/// The blocks a multiprocessor holds at once: registers for 4 blocks of 128 threads (128
/// each) suffice without spilling at 16 state elements, and Mamba's 8 × 2048 channels make
/// 512 blocks, one wave on an H100's 132 multiprocessors, where ptxas's own choice (167
/// registers on sm_90a) fits 3 and leaves a second wave of 116.
const BLOCKS_PER_SM: u32 = 4;
/// The most state elements per channel: a thread holds four arrays of them in registers, and
/// the block two of them per warp and lane in shared memory (40 KiB at 32).
pub const MAX_STATE: usize = 32;

/// Whether the block scan computes a scan of these axes: on a GPU whose blocks are
/// [`THREADS`] threads, with at most [`MAX_STATE`] state elements per channel, over a sequence
/// longer than one warp's share of a chunk.
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
    /// A round's map of the warp `2ᵏ` before: its product …
    p_before: usize,
    /// … and its state.
    h_before: usize,
    /// Every thread's `P`, in rows (see [`Each::row`]).
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
    let mut b = Buffers {
        p: first,
        h: first + 1,
        p_before: first + 2,
        h_before: first + 3,
        shared_p: 0,
        shared_h: 0,
    };
    let mut gen = BodyGen::new(&r.body, 1);
    let ch_vars = cx.vars(axes.channel_axes.len());
    gen.loop_vars(&ch_vars);
    let channels = Dim::product(&axes.channel_shape).expect("channel counts fit in i64");
    let channels = cx.dim(&channels);
    let len = cx.dim(&axes.h.shape[axes.axis]);
    let (group, tid, c, active) = (cx.var(), cx.var(), cx.var(), cx.var());
    let each = Each {
        n,
        tid,
        lane: cx.var(),
        warp: cx.var(),
        channel: cx.var(),
    };
    // The steps' code, generated first: the values they need per channel are known after.
    let at1 = place(cx, axes, &ch_vars);
    let mut steps1 = maps(cx, &mut gen, (r, info, axes), &at1, &b);
    let at3 = place(cx, axes, &ch_vars);
    let mut steps3 = outputs(cx, &mut gen, (r, info, axes), &at3, (&b, out));
    let mut per_channel: Vec<Stmt> = delinearize(cx, var(each.channel), &axes.channel_shape)
        .into_iter()
        .zip(&ch_vars)
        .map(|(e, v)| Stmt::Set(*v, e))
        .collect();
    per_channel.extend(gen.take_lets());
    let (fills, locals) = hoist_loads(
        axes,
        &per_channel,
        (inputs, first + 4),
        [(&at1, &mut steps1), (&at3, &mut steps3)],
    );
    let [fills1, fills3] = fills;
    b.shared_p = first + 4 + locals.len();
    b.shared_h = b.shared_p + 1;
    let chunk_at = Chunk {
        each,
        b,
        first_step: add(mul(var(c), int(CHUNK)), mul(var(each.warp), int(ITEMS))),
        len: len.clone(),
        c,
        active,
        group,
        valid: lt(var(each.channel), channels.clone()),
        per_channel,
    };
    let chunk = chunk_at.passes(cx, (&at1, fills1, steps1), (&at3, fills3, steps3));
    let (each, b) = (&chunk_at.each, &chunk_at.b);
    // Only warp 0 touches the carried-in state's row until pass 3, after barriers.
    let zero = each.on(cx, 0, |k| {
        vec![Stmt::Store(b.shared_h, each.row(int(-1), k), f32(0.0))]
    });
    let zero = chunk_at.on_lanes(cx, None, vec![zero]);
    let block = vec![zero, serial(c, div(add(len, int(CHUNK - 1)), CHUNK), chunk)];
    let array = |name: &str, len: i64| Local {
        name: name.into(),
        elem: Elem::F32,
        len: len as usize,
    };
    let rows = (WARPS + 1) * n * WARP;
    Template {
        body: vec![Stmt::For {
            var: group,
            extent: div(add(channels, int(WARP - 1)), WARP),
            kind: Axis::Grid,
            body: block,
        }],
        checks: gen.checks,
        locals: [
            vec![
                array("map_p", n),
                array("map_h", n),
                array("before_p", n),
                array("before_h", n),
            ],
            locals,
        ]
        .concat(),
        shared: vec![array("maps_p", rows), array("maps_h", rows)],
        scratch: None,
        occupancy: Some(BLOCKS_PER_SM),
    }
}

/// What one chunk's passes need: the thread's state-element loops, the buffers, the warp's
/// first step in the chunk, the sequence's length, the chunk, the warps with steps in the chunk, the block's
/// group of channels, whether the lane has a channel, and the statements that set the channel's coordinates and the
/// values the steps need of it.
struct Chunk {
    each: Each,
    b: Buffers,
    first_step: Expr,
    len: Expr,
    /// The chunk.
    c: Var,
    active: Var,
    group: Var,
    valid: Expr,
    per_channel: Vec<Stmt>,
}

impl Chunk {
    /// One chunk's code: the warps with steps in it, then the three passes (see the module
    /// doc), each pass's steps at their place after what fills their hoisted arrays.
    fn passes(
        &self,
        cx: &mut Ctx,
        (at1, fills1, steps1): (&At, Vec<Stmt>, Vec<Stmt>),
        (at3, fills3, steps3): (&At, Vec<Stmt>, Vec<Stmt>),
    ) -> Vec<Stmt> {
        let c = self.c;
        // The warps with steps in this chunk: all but in the last.
        let left = sub(self.len.clone(), mul(var(c), int(CHUNK)));
        let mut chunk = vec![Stmt::Set(
            self.active,
            bin(Bin::Min, div(add(left, int(ITEMS - 1)), ITEMS), int(WARPS)),
        )];
        // Pass 1: the warp's map.
        let compose = [fills1, self.compose(cx, at1, steps1)].concat();
        chunk.push(self.active_warps(cx, compose));
        chunk.push(Stmt::Barrier(Scope::Block));
        // Pass 2: the block's inclusive scan of the maps.
        for round in 0..WARPS.ilog2() {
            let d = 1 << round;
            let round = scan_round(cx, self, d);
            chunk.push(when(cx, lt(int(d), var(self.active)), round));
        }
        // Pass 3: the steps again from the predecessor's state, with the read-out.
        let finish = [fills3, self.finish(cx, at3, steps3)].concat();
        chunk.push(self.active_warps(cx, finish));
        chunk.push(Stmt::Barrier(Scope::Block));
        chunk
    }

    /// `body` on the threads whose lane has a channel and where `cond` (if any) holds, with
    /// the thread's lane, warp and channel set.
    fn on_lanes(&self, cx: &mut Ctx, cond: Option<Expr>, body: Vec<Stmt>) -> Stmt {
        let e = &self.each;
        let cond = match cond {
            Some(c) => and(self.valid.clone(), c),
            None => self.valid.clone(),
        };
        threads(
            e.tid,
            vec![
                Stmt::Set(e.lane, rem(var(e.tid), WARP)),
                Stmt::Set(e.warp, div(var(e.tid), WARP)),
                Stmt::Set(e.channel, add(mul(var(self.group), int(WARP)), var(e.lane))),
                when(cx, cond, body),
            ],
        )
    }

    /// `body` on the warps with steps in the chunk, after the channel's values.
    fn active_warps(&self, cx: &mut Ctx, body: Vec<Stmt>) -> Stmt {
        let mut all = self.per_channel.clone();
        all.extend(body);
        let cond = lt(var(self.each.warp), var(self.active));
        self.on_lanes(cx, Some(cond), all)
    }

    /// The warp's steps before the sequence's end, each `body` with `at.t` set.
    fn walk(&self, cx: &mut Ctx, at: &At, body: Vec<Stmt>) -> Stmt {
        let i = cx.var();
        let inside = when(cx, lt(var(at.t), self.len.clone()), body);
        let t = Stmt::Set(at.t, add(self.first_step.clone(), var(i)));
        serial(i, int(ITEMS), vec![t, inside])
    }

    /// Pass 1: the warp's map composed over its steps (`steps`, one step's code at `at`),
    /// warp 0's from the carried-in state, then published in shared memory.
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
                let at = each.row(var(each.warp), k.clone());
                vec![
                    Stmt::Store(b.shared_p, at.clone(), load(b.p, k.clone())),
                    Stmt::Store(b.shared_h, at, load(b.h, k)),
                ]
            }),
        ]
    }

    /// Pass 3: the warp's state from its predecessor's map (warp 0's from the carried-in
    /// state, which it then replaces with the last warp's), then its steps with their
    /// outputs (`steps`, one step's code at `at`).
    fn finish(&self, cx: &mut Ctx, at: &At, steps: Vec<Stmt>) -> Vec<Stmt> {
        let (each, b) = (&self.each, &self.b);
        vec![
            each.all(cx, |k| {
                let at = each.row(sub(var(each.warp), int(1)), k.clone());
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

/// A thread's place, and code over its channel's state elements, as unrolled loops.
#[derive(Clone, Copy)]
struct Each {
    /// The state elements.
    n: i64,
    /// The thread.
    tid: Var,
    /// Its lane, `tid mod 32`: the channel among the block's.
    lane: Var,
    /// Its warp: the segment of each chunk.
    warp: Var,
    /// Its channel, among all.
    channel: Var,
}

impl Each {
    /// `body(k)` for every state element `k`.
    fn all(&self, cx: &mut Ctx, body: impl FnOnce(Expr) -> Vec<Stmt>) -> Stmt {
        let k = cx.var();
        axis(Axis::Unroll, k, int(self.n), body(var(k)))
    }

    /// [`Each::all`], on warp `w` only.
    fn on(&self, cx: &mut Ctx, w: i64, body: impl FnOnce(Expr) -> Vec<Stmt>) -> Stmt {
        let all = self.all(cx, body);
        when(cx, bin(Bin::Eq, var(self.warp), int(w)), vec![all])
    }

    /// Element `k` of the lane's row for warp `w` in a shared array: a row per warp and state
    /// element, the lanes side by side, so that a warp's 32 accesses fall in 32 banks. The
    /// first rows, "warp −1"'s, hold the state carried into the chunk.
    fn row(&self, w: Expr, k: Expr) -> Expr {
        let row = add(mul(add(w, int(1)), int(self.n)), k);
        add(mul(row, int(WARP)), var(self.lane))
    }
}

/// Round `k` of the block's scan, `d = 2ᵏ`: on each of the `active` warps `w ≥ d`, each lane
/// reads the map of warp `w − d`, then (after a barrier) composes its own after it and
/// publishes the result.
fn scan_round(cx: &mut Ctx, chunk: &Chunk, d: i64) -> Vec<Stmt> {
    let (each, b) = (&chunk.each, &chunk.b);
    let warp = var(each.warp);
    let receives = and(
        bin(Bin::Le, int(d), warp.clone()),
        lt(warp, var(chunk.active)),
    );
    let read = each.all(cx, |k| {
        let at = each.row(sub(var(each.warp), int(d)), k.clone());
        vec![
            Stmt::Store(b.p_before, k.clone(), load(b.shared_p, at.clone())),
            Stmt::Store(b.h_before, k, load(b.shared_h, at)),
        ]
    });
    let combine = each.all(cx, |k| {
        let (p, h) = (load(b.p, k.clone()), load(b.h, k.clone()));
        let at = each.row(var(each.warp), k.clone());
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
        chunk.on_lanes(cx, Some(receives.clone()), vec![read]),
        Stmt::Barrier(Scope::Block),
        chunk.on_lanes(cx, Some(receives), vec![combine]),
        Stmt::Barrier(Scope::Block),
    ]
}

/// The loads each pass's steps repeat at every step (Mamba's A), read once per chunk and pass
/// instead (see `hoist.rs`): for each pass (its place and steps, rewritten), what fills its
/// arrays; and the arrays, locals from buffer `first_local` on. The region's inputs are
/// buffers `1..=inputs`; the values `per_channel` sets keep their value through the steps.
fn hoist_loads(
    axes: &ScanAxes,
    per_channel: &[Stmt],
    (inputs, first_local): (usize, usize),
    passes: [(&At, &mut Vec<Stmt>); 2],
) -> ([Vec<Stmt>; 2], Vec<Local>) {
    let fixed: HashSet<Var> = per_channel
        .iter()
        .filter_map(|s| match s {
            Stmt::Set(v, _) => Some(*v),
            _ => None,
        })
        .collect();
    let mut locals = Vec::new();
    let fills = passes.map(|(at, steps)| {
        let state = (&fixed, at.st_vars.as_slice(), &at.slot);
        let mut hoist = Hoist::new(1..inputs + 1, state, first_local + locals.len());
        hoist.rewrite(steps);
        locals.extend(hoist.locals(axes.state_len));
        state_loops(axes, at, hoist.fills())
    });
    (fills, locals)
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
