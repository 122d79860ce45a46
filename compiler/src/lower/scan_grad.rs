//! A fused scan's backward (`grad/scan_region.rs`), as Mamba's: the states are recomputed
//! chunk by chunk, never stored.
//!
//! One task per coordinate of the parallel axes; it loops over the other channels itself. For
//! each channel:
//!
//! ```text
//! h = 0; for chunk c:            checkpoint[c] = h; for t in c: h = a[t]·h + b[t]
//! μ = 0; for chunk c, last first: h = checkpoint[c]
//!                                for t in c:           hist[t] = h; h = a[t]·h + b[t]
//!                                for t in c, backwards: for each state element n:
//!                                    λ = g[t] + μ;  μ = a[t]·λ   (g: the read-out's gradient)
//!                                    sums over n += …;  gradients += …(λ, hist[t], h[t])
//!                                  gradients += …(the sums over n)
//! ```
//!
//! The checkpoints (one state per chunk) live in a scratch buffer, a row per task; a chunk's
//! states, `K·N` values, in thread-private memory. The gradients are zeroed first and added
//! into: every term of one lies in the task's rows (it keeps the parallel axes), and sums over
//! the other channels, time or state run in the task's own loops. Terms are sorted by what
//! they vary along: those along the state axes are added in the state loop, the others once
//! per step, after the sums over the state they read (`Σₙ λ·B` for `Δ·x`) are complete.

use archc_kernels::ir::build::{add, bin, load, mul, serial, sub, var};
use archc_kernels::ir::{Axis, Bin, Expr, Ieee32, Stmt, Var};
use petgraph::graph::NodeIndex;

use super::body::{broadcast_at, delinearize, BodyGen};
use super::index::{exprs, Ctx};
use super::{f32_locals, Template};
use crate::graph::scan_terms::{frames, terms, Term, Terms};
use archc_runtime::DType;

use crate::graph::{Dim, Graph, Op, Region, ScanFrames, ScanGradInfo, TensorType};

/// A chunk holds a multiple of the state's size in steps, at least this many.
const MIN_CHUNK: i64 = 32;

/// What the kernel's parts share: the body's scan, the loop variables of a task and a channel,
/// the chunks, and the buffers.
struct Scan<'a> {
    body: &'a Graph,
    info: &'a ScanGradInfo,
    /// The time axis.
    axis: usize,
    /// The decay and the input of the scan.
    a: NodeIndex,
    b: NodeIndex,
    /// The state's shape.
    h: Vec<Dim>,
    /// The state axes' sizes, and their product N.
    state_shape: Vec<Dim>,
    n: i64,
    /// Steps in a chunk, K (a multiple of N).
    chunk: i64,
    /// The channel axes the task loops over itself.
    serial_axes: Vec<usize>,
    /// The variables of the task's and the channel's coordinates.
    par_vars: Vec<Var>,
    ser_vars: Vec<Var>,
    /// The task's linear index.
    task: Var,
    /// Where the gradients are summed: the output (0), or, when it is stored narrower than
    /// f32 (bf16), the scratch buffer's first elements, copied to the output at the end, so
    /// that the sums round once.
    sums: usize,
    /// Where the checkpoints start in the scratch buffer (after those sums).
    base: Dim,
    /// Buffers: the checkpoints (scratch), and the locals: the chunk's states, the state, λ's
    /// carry a[t + 1]·λ[t + 1].
    ws: usize,
    hist: usize,
    state: usize,
    carry: usize,
}

/// The kernel of a `fused.scan_grad` region with `inputs` operands.
pub fn lower(cx: &mut Ctx, r: &Region, info: &ScanGradInfo, out: &TensorType) -> Template {
    let sc = Scan::new(cx, r, info, out);
    let body = &r.body;
    let dims = |axes: &[usize]| axes.iter().map(|&x| sc.h[x].clone()).collect::<Vec<Dim>>();
    let (par_shape, ser_shape) = (dims(&info.parallel), dims(&sc.serial_axes));
    let mut gen = BodyGen::new(body, 1);
    gen.loop_vars(&sc.par_vars);
    gen.enter(&sc.ser_vars);
    let mut per_channel = zero_state(cx, sc.state, sc.n);
    per_channel.extend(sc.checkpoints(cx, &mut gen));
    per_channel.extend(zero_state(cx, sc.carry, sc.n));
    per_channel.extend(sc.backward(cx, &mut gen, &terms(body, info)));
    // The task: zero its part of every gradient, then each channel in turn.
    let ser = cx.var();
    let mut per_serial = set_all(&sc.ser_vars, delinearize(cx, var(ser), &ser_shape));
    per_serial.extend(gen.leave());
    per_serial.extend(per_channel);
    let mut per_task = set_all(&sc.par_vars, delinearize(cx, var(sc.task), &par_shape));
    let frames = frames(body, info);
    let zero = |i: Expr| Stmt::Store(sc.sums, i, Expr::F32(Ieee32::new(0.0)));
    per_task.extend(task_elements(cx, &sc, &frames, &zero));
    per_task.extend(gen.take_lets());
    let serials = Dim::product(&ser_shape).expect("channel counts fit in i64");
    per_task.push(serial(ser, cx.dim(&serials), per_serial));
    if sc.sums != 0 {
        let copy = |i: Expr| Stmt::Store(0, i.clone(), load(sc.sums, i));
        per_task.extend(task_elements(cx, &sc, &frames, &copy));
    }
    let tasks = Dim::product(&par_shape).expect("task counts fit in i64");
    // A task's row of checkpoints: ⌈steps / K⌉ states of N ≤ K elements fit in steps + N.
    let row = sc.h[sc.axis].add(&Dim::constant(sc.n));
    let rows = row.and_then(|r| Dim::product(&par_shape)?.mul(&r));
    let scratch = vec![rows
        .and_then(|r| r.add(&sc.base))
        .expect("sizes fit in i64")];
    Template {
        body: vec![Stmt::For {
            var: sc.task,
            extent: cx.dim(&tasks),
            kind: Axis::Grid,
            body: per_task,
        }],
        checks: gen.checks,
        locals: f32_locals(&[("hist", sc.chunk * sc.n), ("state", sc.n), ("carry", sc.n)]),
        shared: Vec::new(),
        scratch: Some(scratch),
        occupancy: None,
    }
}

/// `vars[i] = values[i]`.
fn set_all(vars: &[Var], values: Vec<Expr>) -> Vec<Stmt> {
    values
        .into_iter()
        .zip(vars)
        .map(|(e, v)| Stmt::Set(*v, e))
        .collect()
}

impl<'a> Scan<'a> {
    fn new(cx: &mut Ctx, r: &'a Region, info: &'a ScanGradInfo, out: &TensorType) -> Scan<'a> {
        let inputs = r.body.inputs.len();
        let narrow = out.dtype != DType::F32;
        let body = &r.body;
        let Op::Scan { axis } = body.dag[info.scan].op else {
            unreachable!("the verifier checks the scan")
        };
        let [a, b] = body.operands(info.scan)[..] else {
            unreachable!("scan has two operands")
        };
        let h = body.ty(info.scan).shape.clone();
        let state_shape: Vec<Dim> = info.state.iter().map(|&x| h[x].clone()).collect();
        let n = Dim::product(&state_shape)
            .and_then(|d| d.as_const())
            .expect("the rule admits constant state sizes");
        let serial_axes: Vec<usize> = (0..h.len())
            .filter(|x| *x != axis && !info.state.contains(x) && !info.parallel.contains(x))
            .collect();
        let ser_count = serial_axes.len();
        Scan {
            body,
            info,
            axis,
            a,
            b,
            h,
            state_shape,
            n,
            chunk: n * ((MIN_CHUNK + n - 1) / n),
            serial_axes,
            par_vars: cx.vars(info.parallel.len()),
            ser_vars: cx.vars(ser_count),
            task: cx.var(),
            sums: if narrow { inputs + 1 } else { 0 },
            base: match narrow {
                true => Dim::product(&out.shape).expect("sizes fit in i64"),
                false => Dim::constant(0),
            },
            // Buffers: output, inputs, the checkpoints, status, then the locals.
            ws: inputs + 1,
            hist: inputs + 3,
            state: inputs + 4,
            carry: inputs + 5,
        }
    }

    /// The state's coordinates at step `t`, state element `st`, in the task and channel.
    fn point(&self, t: Var, st: &[Var]) -> Vec<Expr> {
        let mut at = vec![Expr::Int(0); self.h.len()];
        at[self.axis] = var(t);
        for (x, v) in self.info.parallel.iter().zip(&self.par_vars) {
            at[*x] = var(*v);
        }
        for (x, v) in self.serial_axes.iter().zip(&self.ser_vars) {
            at[*x] = var(*v);
        }
        for (x, v) in self.info.state.iter().zip(st) {
            at[*x] = var(*v);
        }
        at
    }

    fn steps(&self, cx: &Ctx) -> Expr {
        cx.dim(&self.h[self.axis])
    }

    /// ⌈steps / K⌉.
    fn chunks(&self, cx: &Ctx) -> Expr {
        let up = add(self.steps(cx), Expr::Int(self.chunk - 1));
        bin(Bin::Div, up, Expr::Int(self.chunk))
    }

    /// The steps of chunk `c`: K but in the last.
    fn chunk_len(&self, cx: &Ctx, c: Expr) -> Expr {
        let k = Expr::Int(self.chunk);
        bin(Bin::Min, k.clone(), sub(self.steps(cx), mul(c, k)))
    }

    /// Element `slot` of chunk `c`'s checkpoint in the task's row.
    fn checkpoint(&self, cx: &Ctx, c: Expr, slot: Expr) -> Expr {
        let row = mul(var(self.task), add(self.steps(cx), Expr::Int(self.n)));
        let at = add(row, add(mul(c, Expr::Int(self.n)), slot));
        add(cx.dim(&self.base), at)
    }

    /// `state[slot] ↔ checkpoint[c][slot]` over the state: saved, or (`restore`) loaded.
    fn copy_checkpoint(&self, cx: &mut Ctx, c: Expr, restore: bool) -> Vec<Stmt> {
        let st = cx.vars(self.info.state.len());
        let slot = cx.index(&self.state_shape, &exprs(&st));
        let saved = self.checkpoint(cx, c, slot.clone());
        let copy = if restore {
            Stmt::Store(self.state, slot, load(self.ws, saved))
        } else {
            Stmt::Store(self.ws, saved, load(self.state, slot))
        };
        nest(cx, &self.state_shape, &st, vec![copy])
    }

    /// The first pass over the channel's steps: the state before each chunk, saved.
    fn checkpoints(&self, cx: &mut Ctx, gen: &mut BodyGen<'_>) -> Vec<Stmt> {
        let (c, t, i) = (cx.var(), cx.var(), cx.var());
        let st = cx.vars(self.info.state.len());
        let mut per_chunk = self.copy_checkpoint(cx, var(c), false);
        let step = advance(cx, gen, self, (t, &st), None);
        let len = self.chunk_len(cx, var(c));
        per_chunk.push(serial(i, len, time_step(t, var(c), i, self.chunk, step)));
        vec![serial(c, self.chunks(cx), per_chunk)]
    }

    /// The chunks, last first: each one's states recomputed from its checkpoint and kept,
    /// then its steps backwards.
    fn backward(&self, cx: &mut Ctx, gen: &mut BodyGen<'_>, terms: &Terms) -> Vec<Stmt> {
        let (cr, c, len) = (cx.var(), cx.var(), cx.var());
        let last = sub(self.chunks(cx), Expr::Int(1));
        let mut per_chunk = vec![Stmt::Set(c, sub(last, var(cr)))];
        per_chunk.extend(self.copy_checkpoint(cx, var(c), true));
        per_chunk.push(Stmt::Set(len, self.chunk_len(cx, var(c))));
        let (t, i) = (cx.var(), cx.var());
        let st = cx.vars(self.info.state.len());
        let step = advance(cx, gen, self, (t, &st), Some(var(i)));
        per_chunk.push(serial(
            i,
            var(len),
            time_step(t, var(c), i, self.chunk, step),
        ));
        let (t, ir, i) = (cx.var(), cx.var(), cx.var());
        let st = cx.vars(self.info.state.len());
        let back = backward_step(cx, gen, self, (t, &st, i), terms);
        let mut step = vec![Stmt::Set(i, sub(sub(var(len), Expr::Int(1)), var(ir)))];
        step.extend(time_step(t, var(c), i, self.chunk, back));
        per_chunk.push(serial(ir, var(len), step));
        vec![serial(cr, self.chunks(cx), per_chunk)]
    }
}

/// `t = c·K + i`, then `body`.
fn time_step(t: Var, c: Expr, i: Var, chunk: i64, body: Vec<Stmt>) -> Vec<Stmt> {
    let mut out = vec![Stmt::Set(t, add(mul(c, Expr::Int(chunk)), var(i)))];
    out.extend(body);
    out
}

/// Local array `buf`'s `n` elements set to 0.
fn zero_state(cx: &mut Ctx, buf: usize, n: i64) -> Vec<Stmt> {
    let i = cx.var();
    vec![serial(
        i,
        Expr::Int(n),
        vec![Stmt::Store(buf, var(i), Expr::F32(Ieee32::new(0.0)))],
    )]
}

/// A serial loop nest over `shape` (no loop for no axes).
fn nest(cx: &mut Ctx, shape: &[Dim], vars: &[Var], body: Vec<Stmt>) -> Vec<Stmt> {
    cx.serial_nest(shape, vars, body)
}

/// The coordinates of a value of `shape` at the state's point `at` (its frame's axes; 0 on
/// axes of size 1).
fn coords(frames: &ScanFrames<'_>, shape: &[Dim], at: &[Expr]) -> Vec<Expr> {
    let (_, axes) = frames
        .axes_of(shape)
        .expect("the rule builds values that line up with the state");
    let one = Dim::constant(1);
    axes.iter()
        .zip(shape)
        .map(|(a, d)| {
            if *d == one {
                Expr::Int(0)
            } else {
                at[*a].clone()
            }
        })
        .collect()
}

/// One step of the recurrence at step `t` over the state axes `st`: `h = a·h + b` in the
/// local state, first keeping the old state at row `keep` of the chunk's states when asked.
fn advance(
    cx: &mut Ctx,
    gen: &mut BodyGen<'_>,
    sc: &Scan<'_>,
    (t, st): (Var, &[Var]),
    keep: Option<Expr>,
) -> Vec<Stmt> {
    gen.enter(&[t]);
    gen.enter(st);
    let at = sc.point(t, st);
    let decay = gen.value(cx, sc.a, &broadcast_at(&at, &sc.body.ty(sc.a).shape));
    let input = gen.value(cx, sc.b, &broadcast_at(&at, &sc.body.ty(sc.b).shape));
    let slot = cx.index(&sc.state_shape, &exprs(st));
    if let Some(i) = keep {
        let row = add(mul(i, Expr::Int(sc.n)), slot.clone());
        gen.push(Stmt::Store(sc.hist, row, load(sc.state, slot.clone())));
    }
    let next = add(mul(decay, load(sc.state, slot.clone())), input);
    gen.push(Stmt::Store(sc.state, slot, next));
    let inner = gen.leave();
    let mut step = gen.take_lets();
    step.extend(nest(cx, &sc.state_shape, st, inner));
    step.extend(gen.leave());
    step
}

/// The flat-output index of a term's element at the point `at`.
fn term_index(cx: &Ctx, body: &Graph, frames: &ScanFrames<'_>, term: &Term, at: &[Expr]) -> Expr {
    let mut c = coords(frames, &body.ty(term.value).shape, at);
    let mut from = term.value;
    for (k, &n) in term.path.iter().enumerate() {
        match &body.dag[n].op {
            Op::Reduce { axes, keepdim, .. } => {
                c = c
                    .into_iter()
                    .enumerate()
                    .filter_map(|(x, e)| match (axes.contains(&x), keepdim) {
                        (true, true) => Some(Expr::Int(0)),
                        (true, false) => None,
                        (false, _) => Some(e),
                    })
                    .collect();
            }
            Op::Pad { axis, before, .. } => c[*axis] = add(c[*axis].clone(), Expr::Int(*before)),
            // Reshapes keep the linear index: the last ones need no coordinates.
            Op::Reshape
                if term.path[k..]
                    .iter()
                    .all(|m| matches!(body.dag[*m].op, Op::Reshape)) =>
            {
                break;
            }
            Op::Reshape => {
                let linear = cx.index(&body.ty(from).shape, &c);
                c = delinearize(cx, linear, &body.ty(n).shape);
            }
            op => unreachable!("`{op}` does not place a term"),
        }
        from = n;
    }
    add(cx.dim(&term.offset), cx.index(&body.ty(from).shape, &c))
}

/// `sums[i] += v`: into the output, or its f32 copy when the output is stored narrow.
fn add_into(sc: &Scan<'_>, i: Expr, v: Expr) -> Stmt {
    Stmt::Store(sc.sums, i.clone(), add(load(sc.sums, i), v))
}

/// One step of the backward at step `t` (row `i` of the chunk's states): λ, the sums over
/// the state, and every term added into the output.
fn backward_step(
    cx: &mut Ctx,
    gen: &mut BodyGen<'_>,
    sc: &Scan<'_>,
    (t, st, i): (Var, &[Var], Var),
    terms: &Terms,
) -> Vec<Stmt> {
    let (body, info) = (sc.body, sc.info);
    let frames = frames(body, info);
    gen.enter(&[t]);
    gen.enter(st);
    let at = sc.point(t, st);
    state_element(cx, gen, sc, &at, st, i);
    // Sums over the state (read by later terms, or a term's own): accumulated in registers.
    let own: Vec<&Term> = terms
        .terms
        .iter()
        .filter(|t| t.per_state && sums_state(body, info, t))
        .collect();
    let reads: Vec<(NodeIndex, Var)> = terms
        .sums
        .iter()
        .map(|r| (body.operands(*r)[0], cx.var()))
        .collect();
    let owns: Vec<(NodeIndex, Var)> = own.iter().map(|t| (t.value, cx.var())).collect();
    for (o, acc) in reads.iter().chain(&owns) {
        let v = gen.value(cx, *o, &coords(&frames, &body.ty(*o).shape, &at));
        gen.push(Stmt::Set(*acc, add(var(*acc), v)));
    }
    let along = |t: &&Term| t.per_state && !sums_state(body, info, t);
    for term in terms.terms.iter().filter(along) {
        let v = gen.value(
            cx,
            term.value,
            &coords(&frames, &body.ty(term.value).shape, &at),
        );
        gen.push(add_into(sc, term_index(cx, body, &frames, term, &at), v));
    }
    let inner = gen.leave();
    let mut step = gen.take_lets();
    let zero = Expr::F32(Ieee32::new(0.0));
    step.extend(
        reads
            .iter()
            .chain(&owns)
            .map(|(_, acc)| Stmt::Set(*acc, zero.clone())),
    );
    step.extend(nest(cx, &sc.state_shape, st, inner));
    for (r, (_, acc)) in terms.sums.iter().zip(&reads) {
        gen.bind(*r, var(*acc));
    }
    for (term, (_, acc)) in own.iter().zip(&owns) {
        gen.push(add_into(
            sc,
            term_index(cx, body, &frames, term, &at),
            var(*acc),
        ));
    }
    for term in terms.terms.iter().filter(|t| !t.per_state) {
        let v = gen.value(
            cx,
            term.value,
            &coords(&frames, &body.ty(term.value).shape, &at),
        );
        gen.push(add_into(sc, term_index(cx, body, &frames, term, &at), v));
    }
    step.extend(gen.leave());
    step
}

/// At one state element of the backward: the state before the step (kept) and after it
/// (recomputed), and λ = g + a[t + 1]·λ[t + 1] from the carry, which becomes a[t]·λ[t]; the
/// body's nodes for them are bound to these values.
fn state_element(
    cx: &mut Ctx,
    gen: &mut BodyGen<'_>,
    sc: &Scan<'_>,
    at: &[Expr],
    st: &[Var],
    i: Var,
) {
    let info = sc.info;
    let slot = cx.index(&sc.state_shape, &exprs(st));
    let decay = gen.value(cx, sc.a, &broadcast_at(at, &sc.body.ty(sc.a).shape));
    let input = gen.value(cx, sc.b, &broadcast_at(at, &sc.body.ty(sc.b).shape));
    let [dv, hp, hv, lam] = [cx.var(), cx.var(), cx.var(), cx.var()];
    gen.push(Stmt::Set(dv, decay));
    let row = add(mul(var(i), Expr::Int(sc.n)), slot.clone());
    gen.push(Stmt::Set(hp, load(sc.hist, row)));
    gen.push(Stmt::Set(hv, add(mul(var(dv), var(hp)), input)));
    gen.bind(info.scan, var(hv));
    if let Some(p) = info.h_prev {
        gen.bind(p, var(hp));
    }
    let seed = gen.value(cx, info.seed, at);
    gen.push(Stmt::Set(lam, add(seed, load(sc.carry, slot.clone()))));
    gen.push(Stmt::Store(sc.carry, slot, mul(var(dv), var(lam))));
    gen.bind(info.lambda, var(lam));
}

/// Whether a term along the state goes into its gradient through a sum over every state axis
/// first: its element does not depend on the state coordinates, so the kernel sums it in a
/// register and adds it once per step.
fn sums_state(body: &Graph, info: &ScanGradInfo, t: &Term) -> bool {
    t.path.first().is_some_and(|r| match &body.dag[*r].op {
        Op::Reduce { axes, .. } => info.state.iter().all(|x| axes.contains(x)),
        _ => false,
    })
}

/// `each(i)` for every element `i` of the output the task owns (at its parallel coordinates).
fn task_elements(
    cx: &mut Ctx,
    sc: &Scan<'_>,
    frames: &ScanFrames<'_>,
    each: &dyn Fn(Expr) -> Stmt,
) -> Vec<Stmt> {
    let (body, info) = (sc.body, sc.info);
    let mut out = Vec::new();
    let mut offset = Dim::constant(0);
    let one = Dim::constant(1);
    for &g in &info.grads {
        let shape = body.ty(g).shape.clone();
        let axes = frames
            .loose_axes_of(&shape)
            .expect("gradients line up with the state");
        let mut loop_shape = Vec::new();
        let mut loop_vars = Vec::new();
        let mut at = Vec::new();
        for (a, d) in axes.iter().zip(&shape) {
            match info.parallel.iter().position(|p| p == a) {
                Some(i) if *d != one => at.push(var(sc.par_vars[i])),
                _ => {
                    let v = cx.var();
                    loop_shape.push(d.clone());
                    loop_vars.push(v);
                    at.push(var(v));
                }
            }
        }
        let i = add(cx.dim(&offset), cx.index(&shape, &at));
        out.extend(nest(cx, &loop_shape, &loop_vars, vec![each(i)]));
        offset = offset
            .add(&Dim::product(&shape).expect("sizes fit in i64"))
            .expect("sizes fit in i64");
    }
    out
}
