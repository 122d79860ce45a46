//! Mamba-2's chunked SSD on a GPU: blocks per segment of a head's chunks (and per [`SLICE`] of
//! its channels: [`slices`]), each chunk's products spread over a block's threads.
//!
//! The CPU's template ([`super::ssd`]) gives a head to one thread, which on a GPU leaves all but
//! a few hundred threads idle (8 sequences × 32 heads); a block per head walking its chunks in
//! order still leaves two blocks per multiprocessor, their warps waiting on each chunk's
//! barriers. So a head's sequence of chunks of `Q` steps is cut into [`SEGMENTS`] segments of
//! consecutive chunks, as mamba-ssm's chunked kernels split the sequence, in three kernels
//! (the op's [`Templates`]):
//!
//! 1. **`_states`**: a block per segment walks its chunks from a zero state and leaves the
//!    segment's own state `S` and its summed log-decay `Λ` in the scratch buffer;
//! 2. **`_pass`**: a thread per state element walks the head's segments in order,
//!    `H ← exp(Λ)·H + S`, leaving in each segment's place the state before it;
//! 3. **`_outputs`**: a block per segment walks its chunks again from that state, now with
//!    the outputs.
//!
//! A sequence of fewer than [`SEGMENTS`] chunks uses as many segments as it has chunks.
//! With `Lₜ` the cumulative log-decay since the chunk's start and `H` the state before it (the
//! formulas of [`super::ssd`]), a chunk runs four phases in shared memory, with a barrier after
//! each (the states' kernel runs the staging, phase 2's weights and the state; the outputs'
//! kernel skips the state after a segment's last chunk, which no chunk reads):
//!
//! 1. **staging**: every step's log-decay, x, B and C from the region body, an element per
//!    thread; thread 0 then sums the log-decays into `L` (at most 64 additions);
//! 2. **scores**: `G[t, s] = (Cₜ·Bₛ)·exp(Lₜ − Lₛ)` for `s ≤ t` (0 above the diagonal), a
//!    thread per pair; and the step weights `exp(Lₜ)` and `exp(L_end − Lₛ)`;
//! 3. **outputs**: `y[t, p] = Σ_{s ≤ t} G[t, s]·x[s, p] + exp(Lₜ)·Σₙ C[t, n]·H[n, p]`, then the
//!    region's epilogue on it, each thread a register tile of (step, channel) results;
//! 4. **state**: `H[n, p] ← exp(L_end)·H[n, p] + Σₛ exp(L_end − Lₛ)·B[s, n]·x[s, p]`, each thread
//!    a register tile of state elements.
//!
//! The two large products run on register tiles ([`super::register_tiles`]: up to 4 channels
//! × 8 rows per thread at Mamba-2's sizes), so that a multiply-add costs a fraction of a
//! shared-memory load; the scores (about a tenth of the work there) keep a thread per pair.
//!
//! `H` (`[N, P]`, 32 KiB at Mamba-2's N 128 and P 64) lives in the scratch buffer in global
//! memory, a row per segment of each block's channels: beside the chunk's arrays it would not
//! fit a block's 48 KiB of static shared memory. The chunk is the longest power of two up to
//! 64 whose arrays fit there. B's and C's rows have an odd length, so that a warp's threads
//! reading different steps' rows hit different banks; in every other read a warp's threads
//! read one element (a broadcast) or consecutive ones.
//!
//! This runs on CUDA cores in f32. With f16 or bf16 storage on a GPU with tensor cores, the
//! same staging and log-decays feed the chunk's products on `mma.sync` instead
//! ([`super::ssd_mma`]): [`Shared`] then holds the operands in 16 bits, padded for the
//! fragments.

use archc_kernels::ir::build::{add, bin, exp, f32, load, mul, serial, sub, var};
use archc_kernels::ir::{Bin, Elem, Expr, Local, Scope, Stmt, Var};

use super::body::{broadcast_at, BodyGen};
use super::fragments::{and, div, int, lt, rem, threads, when, PAD, THREADS};
use super::index::Ctx;
use super::register_tiles::{self, Tile, Tiling};
use super::ssd::{log_decay, Parts};
use super::{Template, Templates};
use crate::graph::{Dim, Region, SsdInfo, TensorType};

/// A block's static shared memory, in bytes.
const SHARED_BYTES: i64 = 48 * 1024;

/// The most channels of a head one block takes: a head of more, a multiple of it, is split
/// among that many blocks (see [`slices`]).
const SLICE: i64 = 32;

/// The blocks that share a head of `p` channels, each taking `p / slices` consecutive ones:
/// Mamba-2's heads of 64 channels take two, doubling the blocks of each segment. Each stages
/// the chunk's decays, B and C and computes its scores `G` (about a tenth of a chunk's work at
/// Mamba-2's sizes), as mamba-ssm's kernels split a head's channels among their programs.
pub fn slices(p: i64) -> i64 {
    if p > SLICE && p % SLICE == 0 {
        p / SLICE
    } else {
        1
    }
}

/// The kernel's shared arrays (buffer numbers) and sizes.
pub struct Shared {
    /// The steps' log-decays, summed in place into `L`: `[Q]`.
    pub decay: usize,
    /// `exp(Lₜ)`: `[Q]`.
    pub kept: usize,
    /// `exp(L_end − Lₛ)`: `[Q]`.
    pub weight: usize,
    /// x: `[Q, P]` (the block's channels), rows of [`Shared::x_stride`].
    pub x: usize,
    /// B: `[Q, N]`, rows of [`Shared::stride`].
    pub b: usize,
    /// C: like B.
    pub c: usize,
    /// The scores `G`: `[Q, Q]`, only `s ≤ t` written on CUDA cores, every element on tensor
    /// cores.
    pub g: usize,
    /// On tensor cores, the state before the chunk in the operands' type: `[N, P]`, rows of
    /// [`Shared::h_stride`].
    pub h: usize,
    /// The chunk length `Q`.
    pub q: i64,
    /// The block's channels `P`: the head's, or its share of them ([`slices`]).
    pub p: i64,
    /// State elements per channel `N`.
    pub n: i64,
    /// The tensor cores' operand type, for the tensor-core template ([`super::ssd_mma`]):
    /// then x, B, C, `G` and the state's copy are stored in it, with widths padded to 16 and
    /// rows by [`PAD`], and every row of the chunk is staged (zeros past its steps).
    pub narrow: Option<Elem>,
}

impl Shared {
    /// The arrays numbered from buffer `first` on, for chunks of `q` steps, the operands in
    /// `narrow` on tensor cores.
    fn new(first: usize, q: i64, (p, n): (i64, i64), narrow: Option<Elem>) -> Shared {
        Shared {
            decay: first,
            kept: first + 1,
            weight: first + 2,
            x: first + 3,
            b: first + 4,
            c: first + 5,
            g: first + 6,
            h: first + 7,
            q,
            p,
            n,
            narrow,
        }
    }

    /// The staged widths of x's and B's rows: `P` and `N`, padded to 16 on tensor cores (a
    /// k16 step's or two 8-column tiles' worth).
    pub fn widths(&self) -> (i64, i64) {
        match self.narrow {
            Some(_) => (pad16(self.p), pad16(self.n)),
            None => (self.p, self.n),
        }
    }

    /// The row length of x.
    pub fn x_stride(&self) -> i64 {
        match self.narrow {
            Some(_) => self.widths().0 + PAD,
            None => self.p,
        }
    }

    /// The row length of B and C: `N` rounded up to odd on CUDA cores (a warp's threads reading
    /// different steps' rows hit different banks), padded by [`PAD`] on tensor cores.
    pub fn stride(&self) -> i64 {
        match self.narrow {
            Some(_) => self.widths().1 + PAD,
            None => self.n | 1,
        }
    }

    /// The row length of `G`.
    pub fn g_stride(&self) -> i64 {
        match self.narrow {
            Some(_) => self.q + PAD,
            None => self.q,
        }
    }

    /// The row length of the state's copy on tensor cores.
    pub fn h_stride(&self) -> i64 {
        self.widths().0 + PAD
    }

    /// The arrays, in buffer order.
    fn locals(&self) -> Vec<Local> {
        let q = self.q;
        let (wide, narrow) = (Elem::F32, self.narrow.unwrap_or(Elem::F32));
        let mut arrays = vec![
            ("log_decay", wide, q),
            ("kept", wide, q),
            ("weight", wide, q),
            ("x", narrow, q * self.x_stride()),
            ("B", narrow, q * self.stride()),
            ("C", narrow, q * self.stride()),
            ("scores", narrow, q * self.g_stride()),
        ];
        if self.narrow.is_some() {
            arrays.push(("state", narrow, self.widths().1 * self.h_stride()));
        }
        arrays
            .into_iter()
            .map(|(name, elem, len)| Local {
                name: name.into(),
                elem,
                len: len as usize,
            })
            .collect()
    }

    /// Their total size in bytes.
    fn bytes(&self) -> i64 {
        let size = |l: &Local| if l.elem == Elem::F32 { 4 } else { 2 };
        self.locals().iter().map(|l| l.len as i64 * size(l)).sum()
    }
}

/// `n` rounded up to a multiple of 16.
fn pad16(n: i64) -> i64 {
    (n + 15) / 16 * 16
}

/// The chunk length of the block template for heads of `p` channels with `n` state elements
/// each, where it applies: on a GPU whose blocks are [`THREADS`] threads, the longest power of
/// two from 8 to 64 (16 on tensor cores, a k16 step) whose chunk arrays fit in shared memory,
/// the operands in `narrow` on tensor cores.
pub fn chunk(cx: &Ctx, (p, n): (i64, i64), narrow: Option<Elem>) -> Option<i64> {
    if cx.schedule.gpu_block != Some(THREADS as u32) {
        return None;
    }
    let shortest = if narrow.is_some() { 16 } else { 8 };
    [64, 32, 16, 8]
        .into_iter()
        .filter(|&q| q >= shortest)
        .find(|&q| Shared::new(0, q, (p / slices(p), n), narrow).bytes() <= SHARED_BYTES)
}

/// The segments of a head's sequence (see the module doc): its chunks are cut into this many
/// runs of consecutive chunks, each walked by a block of its own.
const SEGMENTS: i64 = 16;

/// Which of the SSD's chunk kernels a template is (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// Each segment's own state from zero, `Σ exp(L_end − Lₛ)·Bₛ ⊗ xₛ` over its steps, and
    /// its summed log-decay: the state and decay phases only.
    States,
    /// Each segment's outputs, its chunks walked from the state before it: every phase.
    Outputs,
}

/// The variables every phase reads: the thread, the chunk's first step and its length, the
/// block's first channel of the head, and where its state starts in the scratch buffer.
pub struct Block {
    /// The thread in the block.
    pub tid: Var,
    /// The chunk's first step.
    pub c0: Var,
    /// Its steps: `Q`, or fewer in the last chunk.
    pub count: Var,
    /// The head's channel that is the block's first, where blocks share a head ([`slices`]).
    pub p0: Option<Var>,
    /// The scratch buffer: f32 states `[heads · slices, SEGMENTS, N, P / slices]`, then the
    /// segments' summed log-decays `[heads · slices, SEGMENTS]`.
    pub state: usize,
    /// Where the block's segment's state starts in it.
    pub row: Expr,
    /// Where its summed log-decay is.
    pub decay_at: Expr,
    /// The shared arrays.
    pub sh: Shared,
    /// The kernel this block runs.
    pub pass: Pass,
    /// Whether a later chunk of the segment reads the state after this one (the outputs'
    /// pass; None: always).
    pub carry: Option<Expr>,
}

/// The scan's head-slices (`heads · slices`) and its chunks, as expressions of the dims.
struct Extents {
    blocks: Expr,
    chunks: Expr,
}

impl Extents {
    /// The chunks of a segment (at least 1, so that `used` divides by it): the last used one
    /// may have fewer.
    fn length(&self) -> Expr {
        let length = div(add(self.chunks.clone(), int(SEGMENTS - 1)), SEGMENTS);
        bin(Bin::Max, int(1), length)
    }

    /// The segments that have chunks: all [`SEGMENTS`] but in a sequence of fewer chunks.
    fn used(&self) -> Expr {
        let length = self.length();
        bin(
            Bin::Div,
            add(self.chunks.clone(), sub(length.clone(), int(1))),
            length,
        )
    }
}

/// The kernels (see the module doc) for a scan region in SSD form whose node has type `out`,
/// with `inputs` region inputs, in chunks of `q` steps: the segments' states, the pass over
/// them, and the outputs, their products on tensor cores ([`super::ssd_mma`]) with operands
/// in `narrow`, else on CUDA cores.
pub fn lower(
    cx: &mut Ctx,
    rsp: (&Region, &SsdInfo, &Parts),
    (q, narrow): (i64, Option<Elem>),
    (out, inputs): (&TensorType, usize),
) -> Templates {
    let parts = rsp.2;
    let (co, n) = (&parts.co, parts.n);
    let heads = Dim::product(&co.dims(&co.head_axes)).expect("head counts fit in i64");
    let seq = cx.dim(&co.shape[co.axis]);
    let ext = Extents {
        blocks: mul(cx.dim(&heads), int(slices(parts.p))),
        chunks: div(add(seq, int(q - 1)), q),
    };
    // The states of every head's segments, then their log-decays.
    let per_head = slices(parts.p) * SEGMENTS;
    let scratch = heads
        .mul(&Dim::constant(
            per_head * (n * parts.p / slices(parts.p) + 1),
        ))
        .expect("state sizes fit in i64");
    let shape = Some(vec![scratch]);
    let chunks = |cx: &mut Ctx, pass| Template {
        scratch: shape.clone(),
        ..chunk_kernel(cx, rsp, (q, narrow), (out, inputs), (pass, &ext))
    };
    let states = chunks(cx, Pass::States);
    let outputs = chunks(cx, Pass::Outputs);
    let pass = Template {
        scratch: shape.clone(),
        ..state_pass(cx, (n, parts.p / slices(parts.p)), inputs + 1, &ext)
    };
    vec![("_states", states), ("_pass", pass), ("_outputs", outputs)]
}

/// The pass over each head-slice's used segments (a thread per state element): the state
/// before each segment, `H ← exp(Λ)·H + S` from its own state `S` and summed log-decay `Λ`,
/// put in place of `S` in scratch buffer `state`, for states of `n × p`.
fn state_pass(cx: &mut Ctx, (n, p): (i64, i64), state: usize, ext: &Extents) -> Template {
    let [block, tid, k, i, seg, h, own, at] = [(); 8].map(|_| cx.var());
    let decays = mul(ext.blocks.clone(), int(SEGMENTS * n * p));
    let slot = add(mul(var(block), int(SEGMENTS)), var(seg));
    // The first segment starts from 0: its own state, never `exp(Λ)·0` (NaN where the decay
    // overflows).
    let next = add(
        mul(exp(load(state, add(decays, slot.clone()))), var(h)),
        var(own),
    );
    let first = bin(Bin::Eq, var(seg), int(0));
    let step = vec![
        Stmt::Set(at, add(mul(slot, int(n * p)), var(i))),
        Stmt::Set(own, load(state, var(at))),
        Stmt::Store(state, var(at), var(h)),
        Stmt::Set(
            h,
            Expr::Select(Box::new(first), Box::new(var(own)), Box::new(next)),
        ),
    ];
    let element = vec![Stmt::Set(h, f32(0.0)), serial(seg, ext.used(), step)];
    let inside = vec![
        Stmt::Set(i, add(mul(var(k), int(THREADS)), var(tid))),
        when(cx, lt(var(i), int(n * p)), element),
    ];
    let each = serial(k, int((n * p + THREADS - 1) / THREADS), inside);
    Template::new(
        vec![Stmt::For {
            var: block,
            extent: ext.blocks.clone(),
            kind: archc_kernels::ir::Axis::Grid,
            body: vec![threads(tid, vec![each])],
        }],
        Vec::new(),
    )
}

/// One of the chunk kernels (`pass`): a block per segment of a head-slice, walking the
/// segment's chunks.
fn chunk_kernel(
    cx: &mut Ctx,
    (r, ssd, parts): (&Region, &SsdInfo, &Parts),
    (q, narrow): (i64, Option<Elem>),
    (out, inputs): (&TensorType, usize),
    (pass, ext): (Pass, &Extents),
) -> Template {
    let co = &parts.co;
    let (n, slices) = (parts.n, slices(parts.p));
    let p = parts.p / slices;
    let mut gen = BodyGen::new(&r.body, 1);
    let [task, block, seg, cb, ci, walked] = [(); 6].map(|_| cx.var());
    let slot = add(mul(var(block), int(SEGMENTS)), var(seg));
    let k = Block {
        tid: cx.var(),
        c0: cx.var(),
        count: cx.var(),
        p0: (slices > 1).then(|| cx.var()),
        // Buffers: output, inputs, the state (scratch), status, the products' three locals,
        // then the shared arrays.
        state: inputs + 1,
        row: mul(slot.clone(), int(n * p)),
        decay_at: add(mul(ext.blocks.clone(), int(SEGMENTS * n * p)), slot),
        sh: Shared::new(inputs + 6, q, (p, n), narrow),
        pass,
        carry: (pass == Pass::Outputs).then(|| lt(add(var(ci), int(1)), var(walked))),
    };
    gen.loop_vars(&co.head_vars);
    gen.enter(&[cb, k.c0, k.count]);
    let stage = k.stage(cx, &mut gen, (r, ssd, parts));
    let (phases, locals) = match narrow {
        Some(elem) => super::ssd_mma::phases(cx, &mut gen, &k, (r, parts, out), (inputs + 3, elem)),
        None => k.phases(cx, &mut gen, (r, parts, out), inputs + 3),
    };
    let seq = cx.dim(&co.shape[co.axis]);
    let mut chunk = vec![
        Stmt::Set(k.c0, mul(var(cb), int(q))),
        Stmt::Set(k.count, bin(Bin::Min, int(q), sub(seq, var(k.c0)))),
    ];
    // Values of the chunk only (none, unless the body reads the step's position as such).
    chunk.extend(gen.leave());
    chunk.extend([threads(k.tid, stage), Stmt::Barrier(Scope::Block)]);
    chunk.extend([
        threads(k.tid, k.sum_decays(cx)),
        Stmt::Barrier(Scope::Block),
    ]);
    chunk.extend(phases);
    // The block's head-slice and segment; its head and, where blocks share it, its first
    // channel.
    let mut per_task = vec![
        Stmt::Set(block, div(var(task), SEGMENTS)),
        Stmt::Set(seg, rem(var(task), SEGMENTS)),
    ];
    let hd = match k.p0 {
        Some(p0) => {
            let hd = cx.var();
            let first = mul(rem(var(block), slices), int(p));
            let at = [(hd, div(var(block), slices)), (p0, first)];
            per_task.extend(at.map(|(v, e)| Stmt::Set(v, e)));
            hd
        }
        None => block,
    };
    per_task.extend(co.split(cx, hd, &co.head_axes, &co.head_vars));
    per_task.extend(gen.take_lets());
    // The segment's chunks: `length` from `first`, fewer at the sequence's end; a segment
    // past the used ones (a short sequence's) does nothing.
    let first = mul(var(seg), ext.length());
    let mut walk = vec![Stmt::Set(cb, add(first.clone(), var(ci)))];
    walk.extend(chunk);
    let fewer = bin(Bin::Min, ext.length(), sub(ext.chunks.clone(), first));
    let chunks = bin(Bin::Max, int(0), fewer);
    // (The Thread loop stays at the block's top level, where the launch finds its size.)
    let states = k.start_states(cx);
    let start = when(cx, lt(int(0), var(walked)), states);
    per_task.extend([
        Stmt::Set(walked, chunks),
        threads(k.tid, vec![start]),
        Stmt::Barrier(Scope::Block),
        serial(ci, var(walked), walk),
    ]);
    Template {
        body: vec![Stmt::For {
            var: task,
            extent: mul(ext.blocks.clone(), int(SEGMENTS)),
            kind: archc_kernels::ir::Axis::Grid,
            body: per_task,
        }],
        checks: gen.checks,
        locals,
        shared: k.sh.locals(),
        scratch: None,
        occupancy: None,
    }
}

impl Block {
    /// Phases 2 to 4 on CUDA cores, each followed by a barrier, and the register tiles' locals
    /// (from buffer `first`).
    fn phases(
        &self,
        cx: &mut Ctx,
        gen: &mut BodyGen,
        rpo: (&Region, &Parts, &TensorType),
        first: usize,
    ) -> (Vec<Stmt>, Vec<Local>) {
        let (q, p, n) = (self.sh.q, self.sh.p, self.sh.n);
        let tilings = [Tiling::new(q, p), Tiling::new(n, p)];
        let [out_tile, state_tile] = tilings.map(|t| Tile::new(cx, t, first));
        let phases = match self.pass {
            Pass::States => vec![vec![self.weights(cx)]],
            Pass::Outputs => vec![self.scores(cx), self.outputs(cx, gen, rpo, &out_tile)],
        };
        let mut body = Vec::new();
        for phase in phases {
            body.push(threads(self.tid, phase));
            body.push(Stmt::Barrier(Scope::Block));
        }
        let state = vec![
            threads(self.tid, self.next_state(cx, &state_tile)),
            Stmt::Barrier(Scope::Block),
        ];
        body.extend(self.carried(cx, state));
        let locals = register_tiles::locals(
            tilings.iter().map(Tiling::len).max().unwrap_or(1),
            tilings.iter().map(|t| t.rows_each).max().unwrap_or(1),
            tilings.iter().map(|t| t.cols_each).max().unwrap_or(1),
        );
        (body, locals)
    }

    /// The state phase `state`, run where a later chunk reads the state: always in the
    /// states' pass, in the outputs' pass except after a segment's last chunk.
    pub fn carried(&self, cx: &mut Ctx, state: Vec<Stmt>) -> Vec<Stmt> {
        match &self.carry {
            Some(more) => vec![when(cx, more.clone(), state)],
            None => state,
        }
    }

    /// The thread's share of `total` items: `body` with `i` set to each of its items (the
    /// thread's index, then every [`THREADS`]-th after it) below `total`.
    pub fn each(&self, cx: &mut Ctx, i: Var, total: Expr, body: Vec<Stmt>) -> Stmt {
        let k = cx.var();
        let inside = when(cx, lt(var(i), total.clone()), body);
        let first = Stmt::Set(i, add(mul(var(k), int(THREADS)), var(self.tid)));
        serial(
            k,
            div(add(total, int(THREADS - 1)), THREADS),
            vec![first, inside],
        )
    }

    /// Phase 1: the chunk's log-decays, x, B and C from the region body, each element computed
    /// by one thread.
    fn stage(
        &self,
        cx: &mut Ctx,
        gen: &mut BodyGen,
        rsp: (&Region, &SsdInfo, &Parts),
    ) -> Vec<Stmt> {
        let (r, ssd, parts) = rsp;
        let (co, sh) = (&parts.co, &self.sh);
        let at_step = |tt: Var, t: Var| Stmt::Set(t, add(var(self.c0), var(tt)));
        // The log-decays.
        let (i, t) = (cx.var(), cx.var());
        gen.enter(&[i, t]);
        let la = log_decay(gen, cx, r, parts.a, &co.at(var(t), false, false));
        let mut body = vec![at_step(i, t)];
        body.extend(gen.leave());
        body.push(Stmt::Store(sh.decay, var(i), la));
        let decays = self.each(cx, i, var(self.count), body);
        // x, a step's channel per item.
        let (rows, (pw, nw)) = (self.staged_rows(), sh.widths());
        let [i, tt, t, p] = [(); 4].map(|_| cx.var());
        gen.enter(&[i, tt, t, p]);
        gen.loop_vars(&co.p_vars);
        let x_at = broadcast_at(&co.at(var(t), true, false), &r.body.ty(ssd.x).shape);
        let xv = gen.value(cx, ssd.x, &x_at);
        let mut value = self.channel(cx, p, co);
        value.extend(gen.leave());
        let slot = add(mul(var(tt), int(sh.x_stride())), var(p));
        value.push(Stmt::Store(sh.x, slot.clone(), xv));
        let mut body = vec![
            Stmt::Set(tt, div(var(i), pw)),
            Stmt::Set(p, rem(var(i), pw)),
            at_step(tt, t),
        ];
        body.extend(self.padded(cx, &[(sh.x, slot)], (tt, p, sh.p), value));
        let xs = self.each(cx, i, mul(rows.clone(), int(pw)), body);
        // B and C, a step's state element per item.
        let [i, tt, t, n] = [(); 4].map(|_| cx.var());
        gen.enter(&[i, tt, t, n]);
        gen.loop_vars(&co.n_vars);
        let n_at = co.at(var(t), false, true);
        let bv = gen.value(cx, ssd.b, &broadcast_at(&n_at, &r.body.ty(ssd.b).shape));
        let cv = gen.value(cx, ssd.c, &broadcast_at(&n_at, &r.body.ty(ssd.c).shape));
        let mut value = co.split(cx, n, &co.state, &co.n_vars);
        value.extend(gen.leave());
        let slot = add(mul(var(tt), int(sh.stride())), var(n));
        value.push(Stmt::Store(sh.b, slot.clone(), bv));
        value.push(Stmt::Store(sh.c, slot.clone(), cv));
        let mut body = vec![
            Stmt::Set(tt, div(var(i), nw)),
            Stmt::Set(n, rem(var(i), nw)),
            at_step(tt, t),
        ];
        let slots = [(sh.b, slot.clone()), (sh.c, slot)];
        body.extend(self.padded(cx, &slots, (tt, n, sh.n), value));
        let bcs = self.each(cx, i, mul(rows, int(nw)), body);
        vec![decays, xs, bcs]
    }

    /// The rows staged per chunk: its steps on CUDA cores, all `Q` on tensor cores (zeros past
    /// its steps, which the products then add).
    fn staged_rows(&self) -> Expr {
        match self.sh.narrow {
            Some(_) => int(self.sh.q),
            None => var(self.count),
        }
    }

    /// `value`, the staging of element `(tt, j)` of a row of `width` values: on tensor cores,
    /// zeros into `slots` first, and `value` only for a step of the chunk and `j < width`.
    fn padded(
        &self,
        cx: &mut Ctx,
        slots: &[(usize, Expr)],
        (tt, j, width): (Var, Var, i64),
        value: Vec<Stmt>,
    ) -> Vec<Stmt> {
        if self.sh.narrow.is_none() {
            return value;
        }
        let mut body: Vec<Stmt> = slots
            .iter()
            .map(|(buf, at)| Stmt::Store(*buf, at.clone(), f32(0.0)))
            .collect();
        let inside = and(lt(var(tt), var(self.count)), lt(var(j), int(width)));
        body.push(when(cx, inside, value));
        body
    }

    /// A segment's start. Its states' pass: the state at 0 in the scratch buffer, and the
    /// summed log-decay. Its outputs' (on tensor cores): the state before it (the pass's) copied
    /// to shared memory in the operands' type, with zeros in the padding the products read.
    fn start_states(&self, cx: &mut Ctx) -> Vec<Stmt> {
        let (i, len) = (cx.var(), self.sh.widths().1 * self.sh.h_stride());
        match (self.pass, self.sh.narrow) {
            (Pass::States, _) => {
                let zero = vec![Stmt::Store(
                    self.state,
                    add(self.row.clone(), var(i)),
                    f32(0.0),
                )];
                let first = bin(Bin::Eq, var(self.tid), int(0));
                let decay = Stmt::Store(self.state, self.decay_at.clone(), f32(0.0));
                vec![
                    self.each(cx, i, int(self.sh.n * self.sh.p), zero),
                    when(cx, first, vec![decay]),
                ]
            }
            (Pass::Outputs, Some(_)) => {
                let (n, p) = (cx.var(), cx.var());
                let from = add(self.row.clone(), add(mul(var(n), int(self.sh.p)), var(p)));
                let inside = and(lt(var(n), int(self.sh.n)), lt(var(p), int(self.sh.p)));
                let body = vec![
                    Stmt::Set(n, div(var(i), self.sh.h_stride())),
                    Stmt::Set(p, rem(var(i), self.sh.h_stride())),
                    Stmt::Store(self.sh.h, var(i), f32(0.0)),
                    when(
                        cx,
                        inside,
                        vec![Stmt::Store(self.sh.h, var(i), load(self.state, from))],
                    ),
                ];
                vec![self.each(cx, i, int(len), body)]
            }
            (Pass::Outputs, None) => Vec::new(),
        }
    }

    /// Phase 1's end: thread 0 sums the log-decays into `L`, and in the states' pass adds
    /// the chunk's `L_end` to the segment's.
    fn sum_decays(&self, cx: &mut Ctx) -> Vec<Stmt> {
        let (acc, s) = (cx.var(), cx.var());
        let mut sum = vec![
            Stmt::Set(acc, f32(0.0)),
            serial(
                s,
                var(self.count),
                vec![
                    Stmt::Set(acc, add(var(acc), load(self.sh.decay, var(s)))),
                    Stmt::Store(self.sh.decay, var(s), var(acc)),
                ],
            ),
        ];
        if self.pass == Pass::States {
            let total = add(load(self.state, self.decay_at.clone()), var(acc));
            sum.push(Stmt::Store(self.state, self.decay_at.clone(), total));
        }
        vec![when(cx, bin(Bin::Eq, var(self.tid), int(0)), sum)]
    }

    /// `Σ_{j < len} a(j)·b(j)` into `acc`.
    fn dot(cx: &mut Ctx, acc: Var, len: Expr, term: impl Fn(Expr) -> Expr) -> Vec<Stmt> {
        let j = cx.var();
        let add_term = Stmt::Set(acc, add(var(acc), term(var(j))));
        vec![Stmt::Set(acc, f32(0.0)), serial(j, len, vec![add_term])]
    }

    /// Phase 2: the decayed scores below the diagonal, a thread per pair, and the steps'
    /// weights, a thread per step.
    fn scores(&self, cx: &mut Ctx) -> Vec<Stmt> {
        let sh = &self.sh;
        let [i, t, s, g] = [(); 4].map(|_| cx.var());
        let decay = |e: Expr| load(sh.decay, e);
        let row =
            |buf: usize, step: Var, j: Expr| load(buf, add(mul(var(step), int(sh.stride())), j));
        let mut pair = Self::dot(cx, g, int(sh.n), |j| {
            mul(row(sh.c, t, j.clone()), row(sh.b, s, j))
        });
        let decayed = mul(var(g), exp(sub(decay(var(t)), decay(var(s)))));
        pair.push(Stmt::Store(sh.g, var(i), decayed));
        let below = when(cx, bin(Bin::Le, var(s), var(t)), pair);
        // Zeros above the diagonal: the outputs' product runs over the whole chunk.
        let zero = vec![Stmt::Store(sh.g, var(i), f32(0.0))];
        let above = when(cx, lt(var(t), var(s)), zero);
        let body = vec![
            Stmt::Set(t, div(var(i), sh.q)),
            Stmt::Set(s, rem(var(i), sh.q)),
            below,
            above,
        ];
        let pairs = self.each(cx, i, mul(var(self.count), int(sh.q)), body);
        vec![pairs, self.weights(cx)]
    }

    /// The steps' weights `exp(Lₜ)` and `exp(L_end − Lₜ)`, a thread per step.
    pub fn weights(&self, cx: &mut Ctx) -> Stmt {
        let sh = &self.sh;
        let decay = |e: Expr| load(sh.decay, e);
        let tid = var(self.tid);
        let last = decay(sub(var(self.count), int(1)));
        let weights = vec![
            Stmt::Store(sh.kept, tid.clone(), exp(decay(tid.clone()))),
            Stmt::Store(sh.weight, tid.clone(), exp(sub(last, decay(tid.clone())))),
        ];
        when(cx, lt(tid, var(self.count)), weights)
    }

    /// Phase 3: the chunk's outputs, `G·X + (diag(exp L)·C)·Hᵀ` in register tiles of (step,
    /// channel), then through the region's read-out and epilogue.
    fn outputs(
        &self,
        cx: &mut Ctx,
        gen: &mut BodyGen,
        (r, parts, out): (&Region, &Parts, &TensorType),
        tile: &Tile,
    ) -> Vec<Stmt> {
        let sh = &self.sh;
        let mut body = tile.place(self.tid);
        body.push(tile.zero(cx));
        body.push(tile.add_product(
            cx,
            var(self.count),
            |t, s| load(sh.g, add(mul(t, int(sh.q)), s)),
            |s, p| load(sh.x, add(mul(s, int(sh.p)), p)),
        ));
        body.push(tile.add_product(
            cx,
            int(sh.n),
            |t, n| {
                let c = load(sh.c, add(mul(t.clone(), int(sh.stride())), n));
                mul(load(sh.kept, t), c)
            },
            |n, p| load(self.state, add(self.row.clone(), add(mul(n, int(sh.p)), p))),
        ));
        let [ri, j, tt, p] = [(); 4].map(|_| cx.var());
        let value = load(tile.acc, tile.at(&var(ri), &var(j)));
        let result = self.output(cx, gen, (r, parts, out), (&[ri, j], tt, p), value);
        let stored = vec![
            Stmt::Set(tt, tile.row(&var(ri))),
            Stmt::Set(p, tile.col(&var(j))),
            when(
                cx,
                and(tile.inside(&var(ri), &var(j)), lt(var(tt), var(self.count))),
                result,
            ),
        ];
        body.push(tile.each((ri, j), stored));
        vec![when(cx, tile.has_one(self.tid), body)]
    }

    /// Sets the region body's channel coordinates to the block's channel `p` of the head.
    fn channel(&self, cx: &mut Ctx, p: Var, co: &super::ssd::Coords) -> Vec<Stmt> {
        let Some(p0) = self.p0 else {
            return co.split(cx, p, &co.p_axes, &co.p_vars);
        };
        let of_head = cx.var();
        let mut set = vec![Stmt::Set(of_head, add(var(p0), var(p)))];
        set.extend(co.split(cx, of_head, &co.p_axes, &co.p_vars));
        set
    }

    /// The output at the chunk's step `tt` and the block's channel `p` (both set by the caller, in a nest
    /// of `vars`), the read-out's sum being `value`: through the region's epilogue, stored.
    pub fn output(
        &self,
        cx: &mut Ctx,
        gen: &mut BodyGen,
        (r, parts, out): (&Region, &Parts, &TensorType),
        (vars, tt, p): (&[Var], Var, Var),
        value: Expr,
    ) -> Vec<Stmt> {
        let co = &parts.co;
        let t = cx.var();
        let mut result = vec![Stmt::Set(t, add(var(self.c0), var(tt)))];
        result.extend(self.channel(cx, p, co));
        gen.enter(&[vars, &[tt, t, p]].concat());
        gen.loop_vars(&co.p_vars);
        gen.bind(parts.ro, value);
        let out_at = co.out_at(var(t), parts.keepdim);
        let value = gen.value(cx, r.output(), &out_at);
        result.extend(gen.leave());
        result.push(Stmt::Store(0, cx.index(&out.shape, &out_at), value));
        result
    }

    /// Phase 4: the state after the chunk, `Hᵀ ← exp(L_end)·Hᵀ + Bᵀ·(w ∘ X)`, in register
    /// tiles of (state element, channel).
    fn next_state(&self, cx: &mut Ctx, tile: &Tile) -> Vec<Stmt> {
        let sh = &self.sh;
        let mut body = tile.place(self.tid);
        body.push(tile.zero(cx));
        body.push(tile.add_product(
            cx,
            var(self.count),
            |n, s| load(sh.b, add(mul(s, int(sh.stride())), n)),
            |s, p| {
                mul(
                    load(sh.weight, s.clone()),
                    load(sh.x, add(mul(s, int(sh.p)), p)),
                )
            },
        ));
        let (ri, j) = (cx.var(), cx.var());
        let (n, p) = (tile.row(&var(ri)), tile.col(&var(j)));
        let at = add(self.row.clone(), add(mul(n, int(sh.p)), p));
        let kept = load(sh.kept, sub(var(self.count), int(1)));
        let acc = load(tile.acc, tile.at(&var(ri), &var(j)));
        let h = add(mul(kept, load(self.state, at.clone())), acc);
        let store = when(
            cx,
            tile.inside(&var(ri), &var(j)),
            vec![Stmt::Store(self.state, at, h)],
        );
        body.push(tile.each((ri, j), vec![store]));
        vec![when(cx, tile.has_one(self.tid), body)]
    }
}
