//! Mamba-2's chunked SSD on tensor cores: [`super::ssd_blocks`]'s kernels, blocks (per segment
//! of a head's chunks, or of a share of its channels) and phases, the chunk's four products
//! on `mma.sync` m16n8k16 with f32 accumulation, as Mamba-2's own kernels run them.
//!
//! With 16-bit storage the staged x, B and C are in that type, their rows padded to 16 values
//! and zeros past the chunk's steps, so that every product runs over whole k16 steps. After the
//! staging and the log-decays' sum, each chunk runs (a barrier after each):
//! 1. **scores**: `S = C·Bᵀ` (k over the state elements), then `G[t, s] = S[t, s]·exp(Lₜ − Lₛ)`
//!    for `s ≤ t` and 0 elsewhere, rounded to the operands' type in shared memory; and the
//!    steps' weights;
//! 2. **outputs**: `Y = diag(exp L)·(C·H) + G·X`, the first product from the state's 16-bit
//!    copy, its rows scaled in the accumulators, the second added onto them; then the
//!    region's epilogue on each accumulator;
//! 3. x's rows scaled by the weights `exp(L_end − Lₛ)` in place;
//! 4. **state**: `H ← exp(L_end)·H + Bᵀ·(w ∘ X)`, the f32 state in the scratch buffer, its
//!    16-bit copy in shared memory for the next chunk's outputs.
//!
//! The states' kernel (`ssd_blocks::Pass::States`) runs the weights, 3 and 4 only; the
//! outputs' kernel skips 3 and 4 after a segment's last chunk, and starts a segment by
//! copying the state before it (the pass kernel's) into the 16-bit copy.
//!
//! A product's result is cut into pieces of 16 rows and a group of columns, handed to the four
//! warps in rounds: each warp loads its rows' `A` fragment per k16 step (`ldmatrix` x4) and
//! its columns' `B` fragments two 8-column tiles at a time. An operand stored with k along its
//! rows (B for the state's `Bᵀ`, X and the state as `B` operands) is loaded transposed.
//!
//! The rounding of `G`, of `w ∘ X` and of the state's copy to 16 bits is Mamba-2's too
//! (`chunk_scan` multiplies the decayed scores and the previous states in the input's type).

use archc_kernels::ir::build::{add, axis, bin, exp, f32, load, mul, serial, sub, var};
use archc_kernels::ir::{Axis, Bin, Elem, Expr, Local, Scope, Stmt, Var};

use super::body::BodyGen;
use super::fragments::{
    and, div, int, load_matrices, lt, mma, rem, unroll, when, Lane, THREADS, WARP,
};
use super::index::Ctx;
use super::ssd::Parts;
use super::ssd_blocks::{Block, Pass};
use crate::graph::{Region, TensorType};

/// Warps in a block.
const WARPS: i64 = THREADS / WARP;

/// The tensor cores' operand type for an SSD whose output is `out`, where the target has
/// `mma.sync` m16n8k16 and the output is stored in f16 or bf16.
pub fn operands(cx: &Ctx, out: &TensorType) -> Option<Elem> {
    let elem = super::elem(out.dtype);
    let narrow = matches!(elem, Elem::F16 | Elem::BF16);
    (cx.schedule.tensor_cores && narrow).then_some(elem)
}

/// A 16-bit matrix in shared memory as an operand: element (outer, k), where outer is `A`'s
/// row or `B`'s column, lies at `outer·stride + k`, or at `k·stride + outer` when `k_rows`.
#[derive(Clone, Copy)]
struct Operand {
    buf: usize,
    stride: i64,
    k_rows: bool,
}

impl Operand {
    /// Where the row an `ldmatrix` thread points at starts, for the 8 × 8 matrix of outer
    /// indices from `o0` and k from `k0`, the thread's row being `r`: the stored rows are k's
    /// when `k_rows` (the load then transposes them).
    fn row(&self, o0: Expr, k0: Expr, r: Expr) -> Expr {
        let (major, minor) = if self.k_rows { (k0, o0) } else { (o0, k0) };
        add(mul(add(major, r), int(self.stride)), minor)
    }
}

/// How a `rows × cols` product is shared among the warps: pieces of 16 rows and `width`
/// columns, piece `i` to warp `i mod 4` in round `i / 4`.
struct Pieces {
    groups: i64,
    width: i64,
    total: i64,
}

impl Pieces {
    /// Column groups as many as leave no warp idle in the first round, where they divide
    /// the columns into multiples of 16.
    fn new(rows: i64, cols: i64) -> Pieces {
        let bands = rows / 16;
        let groups = [4, 2, 1]
            .into_iter()
            .find(|g| bands * g <= WARPS && cols % (16 * g) == 0)
            .unwrap_or(1);
        Pieces {
            groups,
            width: cols / groups,
            total: bands * groups,
        }
    }

    fn rounds(&self) -> i64 {
        (self.total + WARPS - 1) / WARPS
    }

    /// Accumulators per thread: 4 per 8-column tile.
    fn accumulators(&self) -> i64 {
        self.width / 2
    }

    /// The piece of warp `warp` in round `round`, unclamped.
    fn index(round: Var, warp: Expr) -> Expr {
        add(mul(var(round), int(WARPS)), warp)
    }

    /// The piece's first row.
    fn first_row(&self, piece: Expr) -> Expr {
        mul(div(piece, self.groups), int(16))
    }

    /// The piece's first column.
    fn first_col(&self, piece: Expr) -> Expr {
        mul(rem(piece, self.groups), int(self.width))
    }
}

/// The template's locals (buffer numbers): one k16 step's `A` fragment, two tiles' `B`
/// fragments, and the accumulators of a piece.
struct Frags {
    a: usize,
    b: usize,
    acc: usize,
}

/// Phases 2 to 4 on tensor cores (see the module doc), each followed by a barrier, and their
/// locals from buffer `first`, the fragments in `elem`.
pub fn phases(
    cx: &mut Ctx,
    gen: &mut BodyGen,
    k: &Block,
    rpo: (&Region, &Parts, &TensorType),
    (first, elem): (usize, Elem),
) -> (Vec<Stmt>, Vec<Local>) {
    let sh = &k.sh;
    let (pw, nw) = sh.widths();
    let fr = Frags {
        a: first,
        b: first + 1,
        acc: first + 2,
    };
    let lane = Lane::new(cx);
    let x = Operand {
        buf: sh.x,
        stride: sh.x_stride(),
        k_rows: true,
    };
    let bc = |buf, k_rows| Operand {
        buf,
        stride: sh.stride(),
        k_rows,
    };
    let scores = Pieces::new(sh.q, sh.q);
    let outputs = Pieces::new(sh.q, pw);
    let states = Pieces::new(nw, pw);
    let mut body = Vec::new();
    // 1. Scores (for the outputs) and weights.
    if k.pass == Pass::Outputs {
        let mut store = |cx: &mut Ctx, at: &Accumulator| decayed(cx, k, at);
        let operands = (bc(sh.c, false), bc(sh.b, false), nw);
        body.push(product(
            cx,
            (&fr, &lane, k.tid),
            &scores,
            operands,
            &mut store,
        ));
    }
    body.push(on_threads(k.tid, &lane, vec![k.weights(cx)]));
    body.push(Stmt::Barrier(Scope::Block));
    // 2. Outputs: C·H scaled by exp(Lₜ), then G·X.
    if k.pass == Pass::Outputs {
        body.push(outputs_phase(cx, gen, k, (&fr, &lane), rpo));
        body.push(Stmt::Barrier(Scope::Block));
    }
    // 3. x's rows weighed, and 4. the state, where a later chunk reads it.
    let mut store = |cx: &mut Ctx, at: &Accumulator| next_state(cx, k, at);
    let operands = (bc(sh.b, true), x, sh.q);
    let state = vec![
        on_threads(k.tid, &lane, vec![weigh_x(cx, k)]),
        Stmt::Barrier(Scope::Block),
        product(cx, (&fr, &lane, k.tid), &states, operands, &mut store),
        Stmt::Barrier(Scope::Block),
    ];
    body.extend(k.carried(cx, state));
    let accumulators = [scores, outputs, states]
        .iter()
        .map(Pieces::accumulators)
        .max()
        .unwrap_or(4);
    let array = |name: &str, elem, len: i64| Local {
        name: name.into(),
        elem,
        len: len as usize,
    };
    let locals = vec![
        array("a_fragment", elem, 8),
        array("b_fragments", elem, 8),
        array("accumulators", Elem::F32, accumulators),
    ];
    (body, locals)
}

/// `body` on every thread of the block, its lane in its warp set first.
fn on_threads(tid: Var, lane: &Lane, body: Vec<Stmt>) -> Stmt {
    let mut s = lane.of(tid);
    s.extend(body);
    axis(Axis::Thread, tid, int(THREADS), s)
}

/// One of a thread's accumulators, as an epilogue sees it.
struct Accumulator {
    /// Its row in the result (a variable of the nest).
    row: Var,
    /// Its column.
    col: Var,
    /// Its place in the accumulators' local.
    at: Expr,
    /// The local.
    buf: usize,
    /// The nest's variables besides `row` and `col`.
    vars: [Var; 3],
}

impl Accumulator {
    /// Its value.
    fn value(&self) -> Expr {
        load(self.buf, self.at.clone())
    }
}

/// What a product's epilogue does with one accumulator.
type Epilogue<'a> = &'a mut dyn FnMut(&mut Ctx, &Accumulator) -> Vec<Stmt>;

/// A product in rounds of pieces: per round, each warp's accumulators at 0, then `C = A·B`
/// (`operands` and k, a multiple of 16), then `store` on each accumulator of a piece that
/// exists.
fn product(
    cx: &mut Ctx,
    (fr, lane, tid): (&Frags, &Lane, Var),
    pieces: &Pieces,
    operands: (Operand, Operand, i64),
    store: Epilogue,
) -> Stmt {
    let round = cx.var();
    let mut body = vec![on_threads(tid, lane, vec![zero(cx, fr, pieces)])];
    body.push(accumulate(cx, fr, (pieces, round), operands));
    let stores = each_accumulator(cx, (fr, lane), (pieces, round), store);
    body.push(on_threads(tid, lane, stores));
    serial(round, int(pieces.rounds()), body)
}

/// The thread's accumulators at 0.
fn zero(cx: &mut Ctx, fr: &Frags, pieces: &Pieces) -> Stmt {
    let e = cx.var();
    let zero = Stmt::Store(fr.acc, var(e), f32(0.0));
    unroll(&[(e, pieces.accumulators())], vec![zero])
}

/// `C += A·B` over `k` for the piece of each warp in round `round`: per k16 step, the
/// piece's `A` fragment by an `ldmatrix` x4 (quarter `m`: rows from `8·(m mod 2)`, k from
/// `8·(m/2)`), then per pair of 8-column tiles their `B` fragments by another (matrix `m`:
/// tile `m/2`, k from `8·(m mod 2)`) and two `mma`. A warp past the last piece computes the
/// last one again and stores nothing.
fn accumulate(
    cx: &mut Ctx,
    fr: &Frags,
    (pieces, round): (&Pieces, Var),
    (a, b, k): (Operand, Operand, i64),
) -> Stmt {
    let (ks, np, i) = (cx.var(), cx.var(), cx.var());
    let piece = |warp: Expr| bin(Bin::Min, Pieces::index(round, warp), int(pieces.total - 1));
    let load_a = load_matrices(cx, (fr.a, int(0)), a.buf, (4, a.k_rows), &|p| {
        let m = p.matrix.clone();
        let o0 = add(
            pieces.first_row(piece(p.warp.clone())),
            mul(rem(m.clone(), 2), int(8)),
        );
        let k0 = add(mul(var(ks), int(16)), mul(div(m, 2), int(8)));
        a.row(o0, k0, p.row.clone())
    });
    let load_b = load_matrices(cx, (fr.b, int(0)), b.buf, (4, b.k_rows), &|p| {
        let (pair, half) = p.b_pair();
        let tile = add(mul(var(np), int(2)), pair);
        let o0 = add(pieces.first_col(piece(p.warp.clone())), mul(tile, int(8)));
        let k0 = add(mul(var(ks), int(16)), mul(half, int(8)));
        b.row(o0, k0, p.row.clone())
    });
    let product = mma(
        (fr.a, int(0)),
        (fr.b, mul(var(i), int(4))),
        (fr.acc, mul(add(mul(var(np), int(2)), var(i)), int(4))),
    );
    let tiles = vec![load_b, unroll(&[(i, 2)], vec![product])];
    unroll(
        &[(ks, k / 16)],
        vec![load_a, unroll(&[(np, pieces.width / 16)], tiles)],
    )
}

/// `store` on each of the thread's accumulators, in its warp's piece of round `round` where
/// there is one.
fn each_accumulator(
    cx: &mut Ctx,
    (fr, lane): (&Frags, &Lane),
    (pieces, round): (&Pieces, Var),
    store: Epilogue,
) -> Vec<Stmt> {
    let [piece, nt, e, row, col] = [(); 5].map(|_| cx.var());
    let (r, c) = lane.c(&var(e));
    let tile_col = add(mul(var(nt), int(8)), c);
    let mut each = vec![
        Stmt::Set(row, add(pieces.first_row(var(piece)), r)),
        Stmt::Set(col, add(pieces.first_col(var(piece)), tile_col)),
    ];
    let at = Accumulator {
        row,
        col,
        at: add(mul(var(nt), int(4)), var(e)),
        buf: fr.acc,
        vars: [piece, nt, e],
    };
    each.extend(store(cx, &at));
    let all = unroll(&[(nt, pieces.width / 8), (e, 4)], each);
    vec![
        Stmt::Set(piece, Pieces::index(round, var(lane.warp))),
        when(cx, lt(var(piece), int(pieces.total)), vec![all]),
    ]
}

/// `G[t, s]`: the score decayed by `exp(Lₜ − Lₛ)` for `s ≤ t` inside the chunk, else 0.
fn decayed(cx: &mut Ctx, k: &Block, acc: &Accumulator) -> Vec<Stmt> {
    let sh = &k.sh;
    let (t, s) = (var(acc.row), var(acc.col));
    let at = add(mul(t.clone(), int(sh.g_stride())), s.clone());
    let decay = |e: Expr| load(sh.decay, e);
    let value = mul(acc.value(), exp(sub(decay(t.clone()), decay(s.clone()))));
    let inside = and(bin(Bin::Le, s, t.clone()), lt(t, var(k.count)));
    vec![
        Stmt::Store(sh.g, at.clone(), f32(0.0)),
        when(cx, inside, vec![Stmt::Store(sh.g, at, value)]),
    ]
}

/// Phase 2: `Y = diag(exp L)·(C·H) + G·X` per round of pieces, through the region's
/// epilogue into the output at the chunk's steps and the block's channels.
fn outputs_phase(
    cx: &mut Ctx,
    gen: &mut BodyGen,
    k: &Block,
    (fr, lane): (&Frags, &Lane),
    rpo: (&Region, &Parts, &TensorType),
) -> Stmt {
    let sh = &k.sh;
    let (pw, nw) = sh.widths();
    let pieces = Pieces::new(sh.q, pw);
    let operand = |buf, stride, k_rows| Operand {
        buf,
        stride,
        k_rows,
    };
    let (c, h) = (
        operand(sh.c, sh.stride(), false),
        operand(sh.h, sh.h_stride(), true),
    );
    let (g, x) = (
        operand(sh.g, sh.g_stride(), false),
        operand(sh.x, sh.x_stride(), true),
    );
    let round = cx.var();
    let mut body = vec![on_threads(k.tid, lane, vec![zero(cx, fr, &pieces)])];
    body.push(accumulate(cx, fr, (&pieces, round), (c, h, nw)));
    let mut scale = |cx: &mut Ctx, at: &Accumulator| {
        let t = var(at.row);
        let kept = mul(at.value(), load(sh.kept, t.clone()));
        let scaled = Stmt::Store(at.buf, at.at.clone(), kept);
        vec![when(cx, lt(t, var(k.count)), vec![scaled])]
    };
    let scaled = each_accumulator(cx, (fr, lane), (&pieces, round), &mut scale);
    body.push(on_threads(k.tid, lane, scaled));
    body.push(accumulate(cx, fr, (&pieces, round), (g, x, sh.q)));
    let mut write = |cx: &mut Ctx, at: &Accumulator| {
        let (tt, p) = (at.row, at.col);
        let result = k.output(cx, gen, rpo, (&at.vars, tt, p), at.value());
        let inside = and(lt(var(tt), var(k.count)), lt(var(p), int(sh.p)));
        vec![when(cx, inside, result)]
    };
    let writes = each_accumulator(cx, (fr, lane), (&pieces, round), &mut write);
    body.push(on_threads(k.tid, lane, writes));
    serial(round, int(pieces.rounds()), body)
}

/// Phase 3: x's rows of the chunk's steps scaled by their weights `exp(L_end − Lₛ)`.
fn weigh_x(cx: &mut Ctx, k: &Block) -> Stmt {
    let sh = &k.sh;
    let pw = sh.widths().0;
    let [i, s, j] = [(); 3].map(|_| cx.var());
    let at = add(mul(var(s), int(sh.x_stride())), var(j));
    let weighed = mul(load(sh.x, at.clone()), load(sh.weight, var(s)));
    let body = vec![
        Stmt::Set(s, div(var(i), pw)),
        Stmt::Set(j, rem(var(i), pw)),
        Stmt::Store(sh.x, at, weighed),
    ];
    k.each(cx, i, mul(var(k.count), int(pw)), body)
}

/// Phase 4's epilogue: `H[n, p] ← exp(L_end)·H[n, p] + acc` in the scratch buffer, and its
/// copy for the next chunk, for `n` and `p` inside the state.
fn next_state(cx: &mut Ctx, k: &Block, acc: &Accumulator) -> Vec<Stmt> {
    let sh = &k.sh;
    let (n, p) = (var(acc.row), var(acc.col));
    let at = add(k.row.clone(), add(mul(n.clone(), int(sh.p)), p.clone()));
    let kept = load(sh.kept, sub(var(k.count), int(1)));
    let h = add(mul(kept, load(k.state, at.clone())), acc.value());
    let copy = add(mul(n.clone(), int(sh.h_stride())), p.clone());
    let inside = and(lt(n, int(sh.n)), lt(p, int(sh.p)));
    let hv = cx.var();
    let stores = vec![
        Stmt::Set(hv, h),
        Stmt::Store(k.state, at, var(hv)),
        Stmt::Store(sh.h, copy, var(hv)),
    ];
    vec![when(cx, inside, stores)]
}
