//! Mamba-2's chunked SSD on a GPU: a block per head, each chunk's products spread over its
//! threads.
//!
//! The CPU's template ([`super::ssd`]) gives a head to one thread, which on a GPU leaves all but
//! a few hundred threads idle (8 sequences × 32 heads). Here a block of [`THREADS`] threads
//! takes a head and walks its chunks of `Q` steps. With `Lₜ` the cumulative log-decay since the
//! chunk's start and `H` the state before it (the formulas of [`super::ssd`]), each chunk runs
//! four phases in shared memory, with a barrier after each:
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
//! × 16 rows per thread at Mamba-2's sizes), so that a multiply-add costs a fraction of a
//! shared-memory load; the scores (an eighth of the work there) keep a thread per pair.
//!
//! `H` (`[N, P]`, 32 KiB at Mamba-2's N 128 and P 64) lives in a scratch buffer in global memory,
//! a row per head: beside the chunk's arrays it would not fit a block's 48 KiB of static
//! shared memory. The chunk is the longest power of two up to 64 whose arrays fit there. B's and
//! C's rows have an odd length, so that a warp's threads reading different steps' rows hit
//! different banks; in every other read a warp's threads read one element (a broadcast) or
//! consecutive ones.
//!
//! This runs on CUDA cores in f32, whatever the storage type; the chunk's products on tensor
//! cores (Mamba-2's own kernels) are not done yet.

use archc_kernels::ir::build::{add, bin, exp, f32, load, mul, serial, sub, var};
use archc_kernels::ir::{Bin, Elem, Expr, Local, Scope, Stmt, Var};

use super::body::{broadcast_at, BodyGen};
use super::fragments::{and, div, int, lt, rem, threads, when, THREADS};
use super::index::Ctx;
use super::register_tiles::{self, Tile, Tiling};
use super::ssd::{log_decay, Parts};
use super::Template;
use crate::graph::{Dim, Region, SsdInfo, TensorType};

/// A block's static shared memory, in f32 elements.
const SHARED_FLOATS: i64 = 48 * 1024 / 4;

/// The kernel's shared arrays (buffer numbers) and sizes.
struct Shared {
    /// The steps' log-decays, summed in place into `L`: `[Q]`.
    decay: usize,
    /// `exp(Lₜ)`: `[Q]`.
    kept: usize,
    /// `exp(L_end − Lₛ)`: `[Q]`.
    weight: usize,
    /// x: `[Q, P]`.
    x: usize,
    /// B: `[Q, N]`, rows of [`Shared::stride`].
    b: usize,
    /// C: like B.
    c: usize,
    /// The scores `G`: `[Q, Q]`, only `s ≤ t` written.
    g: usize,
    /// The chunk length `Q`.
    q: i64,
    /// Channels per head `P`.
    p: i64,
    /// State elements per channel `N`.
    n: i64,
}

impl Shared {
    /// The arrays numbered from buffer `first` on, for chunks of `q` steps.
    fn new(first: usize, q: i64, (p, n): (i64, i64)) -> Shared {
        Shared {
            decay: first,
            kept: first + 1,
            weight: first + 2,
            x: first + 3,
            b: first + 4,
            c: first + 5,
            g: first + 6,
            q,
            p,
            n,
        }
    }

    /// The row length of B and C: `N` rounded up to odd.
    fn stride(&self) -> i64 {
        self.n | 1
    }

    /// The arrays, in buffer order.
    fn locals(&self) -> Vec<Local> {
        let (q, p, row) = (self.q, self.p, self.stride());
        [
            ("log_decay", q),
            ("kept", q),
            ("weight", q),
            ("x", q * p),
            ("B", q * row),
            ("C", q * row),
            ("scores", q * q),
        ]
        .into_iter()
        .map(|(name, len)| Local {
            name: name.into(),
            elem: Elem::F32,
            len: len as usize,
        })
        .collect()
    }

    /// Their total length in f32 elements.
    fn floats(&self) -> i64 {
        self.locals().iter().map(|l| l.len as i64).sum()
    }
}

/// The chunk length of the block template for heads of `p` channels with `n` state elements
/// each, where it applies: on a GPU whose blocks are [`THREADS`] threads, the longest power of
/// two from 8 to 64 whose chunk arrays fit in shared memory.
pub fn chunk(cx: &Ctx, p: i64, n: i64) -> Option<i64> {
    if cx.schedule.gpu_block != Some(THREADS as u32) {
        return None;
    }
    [64, 32, 16, 8]
        .into_iter()
        .find(|&q| Shared::new(0, q, (p, n)).floats() <= SHARED_FLOATS)
}

/// The variables every phase reads: the thread, the chunk's first step and its length, and
/// where the head's state starts in the scratch buffer.
struct Block {
    tid: Var,
    c0: Var,
    count: Var,
    state: usize,
    row: Expr,
    sh: Shared,
}

/// The kernel (see the module doc) for a scan region in SSD form whose node has type `out`,
/// with `inputs` region inputs, in chunks of `q` steps.
pub fn lower(
    cx: &mut Ctx,
    (r, ssd, parts): (&Region, &SsdInfo, &Parts),
    q: i64,
    (out, inputs): (&TensorType, usize),
) -> Template {
    let co = &parts.co;
    let (n, p) = (parts.n, parts.p);
    let mut gen = BodyGen::new(&r.body, 1);
    let (hd, cb) = (cx.var(), cx.var());
    let k = Block {
        tid: cx.var(),
        c0: cx.var(),
        count: cx.var(),
        // Buffers: output, inputs, the state (scratch), status, the tiles' locals, then the
        // shared arrays.
        state: inputs + 1,
        row: mul(var(hd), int(n * p)),
        sh: Shared::new(inputs + 6, q, (p, n)),
    };
    let tilings = [Tiling::new(q, p), Tiling::new(n, p)];
    let [out_tile, state_tile] = tilings.map(|t| Tile::new(cx, t, inputs + 3));
    gen.loop_vars(&co.head_vars);
    gen.enter(&[cb, k.c0, k.count]);
    let stage = k.stage(cx, &mut gen, (r, ssd, parts));
    let outputs = k.outputs(cx, &mut gen, (r, parts), (out, &out_tile));
    let seq = cx.dim(&co.shape[co.axis]);
    let mut chunk = vec![
        Stmt::Set(k.c0, mul(var(cb), int(q))),
        Stmt::Set(k.count, bin(Bin::Min, int(q), sub(seq.clone(), var(k.c0)))),
    ];
    // Values of the chunk only (none, unless the body reads the step's position as such).
    chunk.extend(gen.leave());
    let barrier = Stmt::Barrier(Scope::Block);
    for phase in [
        stage,
        k.sum_decays(cx),
        k.scores(cx),
        outputs,
        k.next_state(cx, &state_tile),
    ] {
        chunk.push(threads(k.tid, phase));
        chunk.push(barrier.clone());
    }
    let mut per_head = co.split(cx, hd, &co.head_axes, &co.head_vars);
    per_head.extend(gen.take_lets());
    let i = cx.var();
    let zero = vec![Stmt::Store(k.state, add(k.row.clone(), var(i)), f32(0.0))];
    let zero = k.each(cx, i, int(n * p), zero);
    per_head.push(threads(k.tid, vec![zero]));
    per_head.push(serial(cb, div(add(seq, int(q - 1)), q), chunk));
    let heads = Dim::product(&co.dims(&co.head_axes)).expect("head counts fit in i64");
    let scratch = heads
        .mul(&Dim::constant(n * p))
        .expect("state sizes fit in i64");
    Template {
        body: vec![Stmt::For {
            var: hd,
            extent: cx.dim(&heads),
            kind: archc_kernels::ir::Axis::Grid,
            body: per_head,
        }],
        checks: gen.checks,
        locals: register_tiles::locals(
            tilings.iter().map(Tiling::len).max().unwrap_or(1),
            tilings.iter().map(|t| t.rows_each).max().unwrap_or(1),
            tilings.iter().map(|t| t.cols_each).max().unwrap_or(1),
        ),
        shared: k.sh.locals(),
        scratch: Some(vec![scratch]),
    }
}

impl Block {
    /// The thread's share of `total` items: `body` with `i` set to each of its items (the
    /// thread's index, then every [`THREADS`]-th after it) below `total`.
    fn each(&self, cx: &mut Ctx, i: Var, total: Expr, body: Vec<Stmt>) -> Stmt {
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
        let [i, tt, t, p] = [(); 4].map(|_| cx.var());
        gen.enter(&[i, tt, t, p]);
        gen.loop_vars(&co.p_vars);
        let x_at = broadcast_at(&co.at(var(t), true, false), &r.body.ty(ssd.x).shape);
        let xv = gen.value(cx, ssd.x, &x_at);
        let mut body = vec![
            Stmt::Set(tt, div(var(i), sh.p)),
            Stmt::Set(p, rem(var(i), sh.p)),
            at_step(tt, t),
        ];
        body.extend(co.split(cx, p, &co.p_axes, &co.p_vars));
        body.extend(gen.leave());
        body.push(Stmt::Store(sh.x, var(i), xv));
        let xs = self.each(cx, i, mul(var(self.count), int(sh.p)), body);
        // B and C, a step's state element per item.
        let [i, tt, t, n] = [(); 4].map(|_| cx.var());
        gen.enter(&[i, tt, t, n]);
        gen.loop_vars(&co.n_vars);
        let n_at = co.at(var(t), false, true);
        let bv = gen.value(cx, ssd.b, &broadcast_at(&n_at, &r.body.ty(ssd.b).shape));
        let cv = gen.value(cx, ssd.c, &broadcast_at(&n_at, &r.body.ty(ssd.c).shape));
        let mut body = vec![
            Stmt::Set(tt, div(var(i), sh.n)),
            Stmt::Set(n, rem(var(i), sh.n)),
            at_step(tt, t),
        ];
        body.extend(co.split(cx, n, &co.state, &co.n_vars));
        body.extend(gen.leave());
        let slot = add(mul(var(tt), int(sh.stride())), var(n));
        body.push(Stmt::Store(sh.b, slot.clone(), bv));
        body.push(Stmt::Store(sh.c, slot, cv));
        let bcs = self.each(cx, i, mul(var(self.count), int(sh.n)), body);
        vec![decays, xs, bcs]
    }

    /// Phase 1's end: thread 0 sums the log-decays into `L`.
    fn sum_decays(&self, cx: &mut Ctx) -> Vec<Stmt> {
        let (acc, s) = (cx.var(), cx.var());
        let sum = vec![
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
        let tid = var(self.tid);
        let last = decay(sub(var(self.count), int(1)));
        let weights = vec![
            Stmt::Store(sh.kept, tid.clone(), exp(decay(tid.clone()))),
            Stmt::Store(sh.weight, tid.clone(), exp(sub(last, decay(tid.clone())))),
        ];
        let steps = when(cx, lt(tid, var(self.count)), weights);
        vec![pairs, steps]
    }

    /// Phase 3: the chunk's outputs, `G·X + (diag(exp L)·C)·Hᵀ` in register tiles of (step,
    /// channel), then through the region's read-out and epilogue.
    fn outputs(
        &self,
        cx: &mut Ctx,
        gen: &mut BodyGen,
        (r, parts): (&Region, &Parts),
        (out, tile): (&TensorType, &Tile),
    ) -> Vec<Stmt> {
        let (co, sh) = (&parts.co, &self.sh);
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
        let [ri, j, tt, t, p] = [(); 5].map(|_| cx.var());
        let mut result = vec![Stmt::Set(t, add(var(self.c0), var(tt)))];
        result.extend(co.split(cx, p, &co.p_axes, &co.p_vars));
        gen.enter(&[ri, j, tt, t, p]);
        gen.loop_vars(&co.p_vars);
        gen.bind(parts.ro, load(tile.acc, tile.at(&var(ri), &var(j))));
        let out_at = co.out_at(var(t), parts.keepdim);
        let value = gen.value(cx, r.output(), &out_at);
        result.extend(gen.leave());
        result.push(Stmt::Store(0, cx.index(&out.shape, &out_at), value));
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
