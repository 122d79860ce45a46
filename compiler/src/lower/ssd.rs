//! Mamba-2's chunked SSD form (Dao & Gu 2024, "Transformers are SSMs"), on CPU threads.
//!
//! One iteration of the parallel loop owns one head: `P` channels sharing one decay per step,
//! with an `N`-element state each. The sequence is cut into chunks of `Q` steps. For a chunk,
//! with `Lₜ` the cumulative log-decay since the chunk start and `H` the state before it:
//!
//! ```text
//! yₜ = Σ_{s ≤ t} (Cₜ·Bₛ) · exp(Lₜ − Lₛ) · xₛ   +   exp(Lₜ) · H·Cₜ      (intra + inter chunk)
//! H ← exp(L_end) · H  +  Σₛ exp(L_end − Lₛ) · xₛ ⊗ Bₛ                  (the state pass)
//! ```
//!
//! which equals the recurrence `hₜ = aₜ·hₜ₋₁ + xₜ ⊗ Bₜ`, `yₜ = hₜ·Cₜ`. The chunk's x, B (stored
//! transposed), C and `L` are computed from the region body into thread-private arrays once.
//! The sums are then four products on the register micro-kernel ([`super::product`]): the
//! scores `C·Bᵀ` (decayed by `exp(Lₜ − Lₛ)` below the diagonal, zero above), `Y = G·X`,
//! `Y += diag(exp(L))·C·Hᵀ`, and the state pass `Hᵀ ← exp(L_end)·Hᵀ + Bᵀ·(w ∘ X)`. The state is
//! kept transposed so that each product's right operand is read by rows; the channels are
//! padded to a multiple of 4 with zero columns, so every product runs on whole vectors. The
//! epilogue (`+ D·x`) finishes each output.

use archc_kernels::ir::build::{add, exp, load, mul, serial, sub, var};
use archc_kernels::ir::{Axis, Bin, Expr, Ieee32, Local, Stmt, Un, Var};
use petgraph::graph::NodeIndex;

use super::body::{broadcast_at, delinearize, reshape_at, BodyGen};
use super::index::Ctx;
use super::lanes::widest;
use super::product::{columns, product, Product};
use super::{Template, Templates};
use crate::graph::{Dim, Op, Region, ScanInfo, SsdInfo, TensorType};

/// The thread-private arrays, by buffer number. `P4` is the channel count rounded up to a
/// multiple of 4: the columns past `P` stay zero, so every product runs on whole vectors.
struct Arrays {
    /// The state before the chunk, transposed: `Hᵀ`, `[N, P4]`.
    ht: usize,
    /// Cumulative log-decays of the chunk's steps, `[Q]`.
    decay: usize,
    /// The chunk's x, `[Q, P4]`.
    x: usize,
    /// The chunk's B, transposed: `[N, Q]`.
    bt: usize,
    /// The chunk's C, `[Q, N]`.
    c: usize,
    /// The chunk's decayed scores `(C·Bᵀ) ∘ exp(Lₜ − Lₛ)`, `[Q, Q]`, zero above the diagonal.
    g: usize,
    /// The chunk's outputs, `[Q, P4]`.
    y: usize,
}

/// The log of the decay at `at`: when the body computes the decay as `exp(z)` (through
/// reshapes), `z` itself, so nothing is lost to rounding near 0.
pub(super) fn log_decay(
    gen: &mut BodyGen,
    cx: &mut Ctx,
    r: &Region,
    a: NodeIndex,
    at: &[Expr],
) -> Expr {
    let body = &r.body;
    let (mut n, mut coords) = (a, broadcast_at(at, &body.ty(a).shape));
    loop {
        match &body.dag[n].op {
            Op::Reshape => {
                let from = body.operands(n)[0];
                coords = reshape_at(cx, &coords, &body.ty(n).shape, &body.ty(from).shape);
                n = from;
            }
            Op::Unary(crate::graph::UnaryOp::Exp) => {
                return gen.value(cx, body.operands(n)[0], &coords);
            }
            _ => return Expr::Un(Un::Log, Box::new(gen.value(cx, n, &coords))),
        }
    }
}

/// What both SSD templates read of the region: the decay node, the read-out, whether it keeps
/// the state axes, the head's coordinates, and the channel and state counts of a head.
pub(super) struct Parts {
    /// The scan's decay operand.
    pub a: NodeIndex,
    /// The read-out, a sum over the state.
    pub ro: NodeIndex,
    /// Whether the read-out keeps the state axes (as size 1).
    pub keepdim: bool,
    /// The head's coordinates.
    pub co: Coords,
    /// Channels per head (`P`).
    pub p: i64,
    /// State elements per channel (`N`).
    pub n: i64,
}

impl Parts {
    /// The parts of a scan region in SSD form.
    pub fn of(cx: &mut Ctx, r: &Region, info: &ScanInfo) -> Parts {
        let body = &r.body;
        let s = info.scan;
        let ro = info.readout.expect("the SSD form has a read-out");
        let (
            Op::Scan { axis },
            Op::Reduce {
                axes: state,
                keepdim,
                ..
            },
        ) = (&body.dag[s].op, &body.dag[ro].op)
        else {
            unreachable!("an SSD region is a scan read out by a sum")
        };
        let a = body.operands(s)[0];
        let h = body.ty(s);
        let co = Coords::of(cx, h, &body.ty(a).shape, (*axis, state));
        let size = |axes: &[usize]| -> i64 {
            Dim::product(&co.dims(axes))
                .and_then(|d| d.as_const())
                .expect("the pass admits constant channel and state sizes")
        };
        let (p, n) = (size(&co.p_axes), size(state));
        Parts {
            a,
            ro,
            keepdim: *keepdim,
            co,
            p,
            n,
        }
    }
}

/// The kernel for a scan region in SSD form whose node has type `out`, with `inputs` region
/// inputs: on a GPU's blocks where the chunk fits ([`super::ssd_blocks`], on tensor cores by
/// [`super::ssd_mma`]), else a thread per head.
pub fn lower(
    cx: &mut Ctx,
    r: &Region,
    info: &ScanInfo,
    ssd: &SsdInfo,
    out: &TensorType,
    inputs: usize,
) -> Templates {
    let parts = Parts::of(cx, r, info);
    // On tensor cores where the operands are 16-bit and the chunk's arrays fit, else on a
    // GPU's CUDA cores.
    let blocks = [super::ssd_mma::operands(cx, out), None]
        .into_iter()
        .find_map(|e| super::ssd_blocks::chunk(cx, (parts.p, parts.n), e).map(|q| (q, e)));
    if let Some(chunk) = blocks {
        return super::ssd_blocks::lower(cx, (r, ssd, &parts), chunk, (out, inputs));
    }
    let mut gen = BodyGen::new(&r.body, 1);
    let Parts {
        a,
        ro,
        keepdim,
        ref co,
        p: p_len,
        n: n_len,
    } = parts;
    let q = cx.schedule.ssd_chunk(p_len, n_len) as i64;
    let p4 = (p_len + 3) / 4 * 4;
    let sizes = Sizes {
        q,
        n: n_len,
        p: p_len,
        p4,
    };
    let arrays = Arrays::from(inputs + 2);
    let seq = cx.dim(&co.shape[co.axis]);
    let (hd, cb, c0, count) = (cx.var(), cx.var(), cx.var(), cx.var());
    gen.loop_vars(&co.head_vars);
    gen.enter(&[cb, c0, count]);

    // Phase 1: the chunk's cumulative log-decays, x, B and C.
    let (tt, t, acc, p, n) = (cx.var(), cx.var(), cx.var(), cx.var(), cx.var());
    let step = chunk_inputs(
        cx,
        &mut gen,
        (r, ssd, a),
        co,
        (&arrays, &sizes),
        [tt, t, acc, p, n, c0],
    );
    let mut per_chunk = vec![
        Stmt::Set(c0, mul(var(cb), Expr::Int(q))),
        Stmt::Set(
            count,
            Expr::Bin(
                Bin::Min,
                Box::new(Expr::Int(q)),
                Box::new(sub(seq.clone(), var(c0))),
            ),
        ),
        Stmt::Set(acc, Expr::F32(Ieee32::new(0.0))),
        serial(tt, var(count), step),
    ];

    // Phase 2: the chunk's outputs, Y = ((C·Bᵀ) ∘ decays)·X + diag(exp(L))·C·Hᵀ.
    per_chunk.extend(outputs(cx, &arrays, &sizes, count));
    let [tt2, t2, yv] = [(); 3].map(|_| cx.var());
    let read_out = (r, ro, keepdim);
    let step2 = write_outputs(
        cx,
        &mut gen,
        (read_out, out),
        co,
        (&arrays, &sizes),
        [tt2, t2, yv, p, c0],
    );
    per_chunk.push(serial(tt2, var(count), step2));
    // Phase 3: the state pass, Hᵀ ← exp(L_end)·Hᵀ + Bᵀ·(exp(L_end − L)·X).
    per_chunk.extend(state_pass(cx, &arrays, &sizes, count));
    // Values that depend on the chunk only go first in it; values of the head only, first in
    // the head's iteration.
    per_chunk.splice(2..2, gen.leave());
    let mut per_head = co.split(cx, hd, &co.head_axes, &co.head_vars);
    per_head.extend(gen.take_lets());
    per_head.extend(zeros(cx, &arrays, &sizes));
    let chunks = Expr::Bin(
        Bin::Div,
        Box::new(add(seq, Expr::Int(q - 1))),
        Box::new(Expr::Int(q)),
    );
    per_head.push(serial(cb, chunks, per_chunk));
    let heads = Dim::product(&co.dims(&co.head_axes)).expect("head counts fit in i64");
    let body = vec![Stmt::For {
        var: hd,
        extent: cx.dim(&heads),
        kind: Axis::Grid,
        body: per_head,
    }];
    let one = Template {
        body,
        checks: gen.checks,
        locals: sizes.locals(),
        shared: Vec::new(),
        scratch: None,
        occupancy: None,
    };
    vec![("", one)]
}

/// A head's coordinates in `h`: the sequence axis, the head's axes, the channels that share
/// one decay (`P`) and the state (`N`), with the variables that index them.
pub(super) struct Coords {
    rank: usize,
    /// The sequence axis.
    pub axis: usize,
    /// The axes that pick a head.
    pub head_axes: Vec<usize>,
    /// The channels of a head (`P`).
    pub p_axes: Vec<usize>,
    /// The state axes (`N`).
    pub state: Vec<usize>,
    /// The variables of [`Coords::head_axes`], …
    pub head_vars: Vec<Var>,
    /// … of [`Coords::p_axes`] …
    pub p_vars: Vec<Var>,
    /// … and of [`Coords::state`].
    pub n_vars: Vec<Var>,
    /// `h`'s shape.
    pub shape: Vec<Dim>,
}

impl Coords {
    /// The coordinates of `h` for the scan along `axis` with `state` axes, whose decay has
    /// shape `a_shape`: the channels the decay is constant along share a head.
    fn of(
        cx: &mut Ctx,
        h: &TensorType,
        a_shape: &[Dim],
        (axis, state): (usize, &[usize]),
    ) -> Coords {
        let rank = h.rank();
        let a_offset = rank - a_shape.len();
        let a_constant = |x: usize| x < a_offset || a_shape[x - a_offset].as_const() == Some(1);
        let (p_axes, head_axes): (Vec<usize>, Vec<usize>) = (0..rank)
            .filter(|x| *x != axis && !state.contains(x))
            .partition(|x| a_constant(*x));
        Coords {
            rank,
            axis,
            head_vars: cx.vars(head_axes.len()),
            p_vars: cx.vars(p_axes.len()),
            n_vars: cx.vars(state.len()),
            head_axes,
            p_axes,
            state: state.to_vec(),
            shape: h.shape.clone(),
        }
    }

    /// Coordinates in h of step `t`, the current channel (`p`) and state element (`n`) of the
    /// current head; axes a value is constant along read index 0.
    pub fn at(&self, t: Expr, p: bool, n: bool) -> Vec<Expr> {
        let mut at = vec![Expr::Int(0); self.rank];
        at[self.axis] = t;
        let mut set = |axes: &[usize], vars: &[Var]| {
            for (x, v) in axes.iter().zip(vars) {
                at[*x] = var(*v);
            }
        };
        set(&self.head_axes, &self.head_vars);
        if p {
            set(&self.p_axes, &self.p_vars);
        }
        if n {
            set(&self.state, &self.n_vars);
        }
        at
    }

    /// The read-out's coordinates at step `t` of the current channel: `h`'s without the state
    /// axes unless the sum keeps them.
    pub fn out_at(&self, t: Expr, keepdim: bool) -> Vec<Expr> {
        let at = self.at(t, true, false);
        if keepdim {
            return at;
        }
        (0..self.rank)
            .filter(|x| !self.state.contains(x))
            .map(|x| at[x].clone())
            .collect()
    }

    /// The sizes of `axes`.
    pub fn dims(&self, axes: &[usize]) -> Vec<Dim> {
        axes.iter().map(|&x| self.shape[x].clone()).collect()
    }

    /// Sets `vars`, the coordinates along `axes`, from their linear index `linear`.
    pub fn split(&self, cx: &Ctx, linear: Var, axes: &[usize], vars: &[Var]) -> Vec<Stmt> {
        delinearize(cx, var(linear), &self.dims(axes))
            .into_iter()
            .zip(vars)
            .map(|(e, v)| Stmt::Set(*v, e))
            .collect()
    }
}

/// Phase 1, the body of the loop over the chunk's steps `tt` (step `t = c0 + tt`): the
/// cumulative log-decay `acc` into `decay`, and the step's x, Bᵀ and C from the region body.
fn chunk_inputs(
    cx: &mut Ctx,
    gen: &mut BodyGen,
    (r, ssd, a): (&Region, &SsdInfo, NodeIndex),
    co: &Coords,
    (arrays, z): (&Arrays, &Sizes),
    [tt, t, acc, p, n, c0]: [Var; 6],
) -> Vec<Stmt> {
    let body = &r.body;
    gen.enter(&[tt, t]);
    let la = log_decay(gen, cx, r, a, &co.at(var(t), false, false));
    let mut step = vec![Stmt::Set(t, add(var(c0), var(tt)))];
    step.extend(gen.take_lets());
    step.push(Stmt::Set(acc, add(var(acc), la)));
    step.push(Stmt::Store(arrays.decay, var(tt), var(acc)));
    gen.enter(&co.p_vars);
    let xv = gen.value(
        cx,
        ssd.x,
        &broadcast_at(&co.at(var(t), true, false), &body.ty(ssd.x).shape),
    );
    let mut per_p = co.split(cx, p, &co.p_axes, &co.p_vars);
    per_p.extend(gen.leave());
    per_p.push(Stmt::Store(
        arrays.x,
        add(mul(var(tt), Expr::Int(z.p4)), var(p)),
        xv,
    ));
    step.extend(gen.take_lets());
    step.push(serial(p, Expr::Int(z.p), per_p));
    gen.enter(&co.n_vars);
    let n_at = co.at(var(t), false, true);
    let bv = gen.value(cx, ssd.b, &broadcast_at(&n_at, &body.ty(ssd.b).shape));
    let cv = gen.value(cx, ssd.c, &broadcast_at(&n_at, &body.ty(ssd.c).shape));
    let mut per_n = co.split(cx, n, &co.state, &co.n_vars);
    per_n.extend(gen.leave());
    per_n.push(Stmt::Store(
        arrays.bt,
        add(mul(var(n), Expr::Int(z.q)), var(tt)),
        bv,
    ));
    per_n.push(Stmt::Store(
        arrays.c,
        add(mul(var(tt), Expr::Int(z.n)), var(n)),
        cv,
    ));
    step.extend(gen.take_lets());
    step.push(serial(n, Expr::Int(z.n), per_n));
    step.extend(gen.leave());
    step
}

/// Phase 2's epilogue, the body of the loop over the chunk's steps `tt2` (step `t2 = c0 +
/// tt2`): each channel's output `y` through the region's read-out and epilogue, stored.
fn write_outputs(
    cx: &mut Ctx,
    gen: &mut BodyGen,
    ((r, ro, keepdim), out): ((&Region, NodeIndex, bool), &TensorType),
    co: &Coords,
    (arrays, z): (&Arrays, &Sizes),
    [tt2, t2, yv, p, c0]: [Var; 5],
) -> Vec<Stmt> {
    gen.enter(&[tt2, t2]);
    gen.enter(&co.p_vars);
    gen.bind(ro, var(yv));
    let out_at = co.out_at(var(t2), keepdim);
    let result = gen.value(cx, r.output(), &out_at);
    let mut per_p2 = co.split(cx, p, &co.p_axes, &co.p_vars);
    per_p2.push(Stmt::Set(
        yv,
        load(arrays.y, add(mul(var(tt2), Expr::Int(z.p4)), var(p))),
    ));
    per_p2.extend(gen.leave());
    per_p2.push(Stmt::Store(0, cx.index(&out.shape, &out_at), result));
    let mut step2 = vec![Stmt::Set(t2, add(var(c0), var(tt2)))];
    step2.extend(gen.take_lets());
    step2.push(serial(p, Expr::Int(z.p), per_p2));
    step2.extend(gen.leave());
    step2
}

/// The state starts at zero; so do x's padding columns and B's steps past a short last chunk,
/// which the products read but whose results are not used.
fn zeros(cx: &mut Ctx, arrays: &Arrays, z: &Sizes) -> Vec<Stmt> {
    [
        (arrays.ht, z.n * z.p4),
        (arrays.x, z.q * z.p4),
        (arrays.bt, z.n * z.q),
    ]
    .into_iter()
    .map(|(buf, len)| {
        let zero = cx.var();
        serial(
            zero,
            Expr::Int(len),
            vec![Stmt::Store(buf, var(zero), Expr::F32(Ieee32::new(0.0)))],
        )
    })
    .collect()
}

impl Arrays {
    /// The arrays numbered from buffer `first` on.
    fn from(first: usize) -> Arrays {
        Arrays {
            ht: first,
            decay: first + 1,
            x: first + 2,
            bt: first + 3,
            c: first + 4,
            g: first + 5,
            y: first + 6,
        }
    }
}

impl Sizes {
    /// The thread-private arrays, in the order of [`Arrays`].
    fn locals(&self) -> Vec<Local> {
        let (q, n, p4) = (self.q, self.n, self.p4);
        super::f32_locals(&[
            ("state", n * p4),
            ("log_decay", q),
            ("x", q * p4),
            ("B", n * q),
            ("C", q * n),
            ("scores", q * q),
            ("y", q * p4),
        ])
    }
}

/// The chunk length, state size, channel count and padded channel count of an SSD kernel.
struct Sizes {
    q: i64,
    n: i64,
    p: i64,
    p4: i64,
}

/// `dst[i] = dst[i] · factor` for `i < len` (a multiple of 4), in vectors.
fn scale(cx: &mut Ctx, (dst, at, len): (usize, Expr, i64), factor: Expr) -> Stmt {
    let w = widest(cx.schedule.lanes, len).unwrap_or(4);
    let i = cx.var();
    let el = add(at, mul(var(i), Expr::Int(i64::from(w))));
    serial(
        i,
        Expr::Int(len / i64::from(w)),
        vec![Stmt::VStore(
            dst,
            el.clone(),
            mul(
                Expr::VLoad(dst, Box::new(el), w),
                Expr::Splat(Box::new(factor), w),
            ),
            w,
        )],
    )
}

/// The chunk's outputs into `y`: the scores `C·Bᵀ` on the micro-kernel, each decayed by
/// `exp(Lₜ − Lₛ)` below the diagonal and zeroed above it, `Y = G·X`; then C's rows scaled by
/// `exp(Lₜ)` and `Y += C·Hᵀ`.
fn outputs(cx: &mut Ctx, arrays: &Arrays, z: &Sizes, count: Var) -> Vec<Stmt> {
    let g_shape = columns(cx.schedule, z.q);
    let g_panel = (g_shape.1 * g_shape.2) as i64;
    let mut out = product(
        cx,
        &Product {
            a: (arrays.c, Expr::Int(0), Expr::Int(z.n), 1),
            b: (arrays.bt, Expr::Int(0), Expr::Int(g_panel), Expr::Int(z.q)),
            out: (arrays.g, z.q),
            rows: var(count),
            panels: Expr::Int(z.q / g_panel),
            kc: Expr::Int(z.n),
            accumulate: false,
            shape: g_shape,
        },
    );
    let (t, s, lt) = (cx.var(), cx.var(), cx.var());
    let at = add(mul(var(t), Expr::Int(z.q)), var(s));
    let decayed = mul(
        load(arrays.g, at.clone()),
        exp(sub(var(lt), load(arrays.decay, var(s)))),
    );
    let above = add(
        add(mul(var(t), Expr::Int(z.q)), var(t)),
        add(var(s), Expr::Int(1)),
    );
    out.push(serial(
        t,
        var(count),
        vec![
            Stmt::Set(lt, load(arrays.decay, var(t))),
            serial(
                s,
                add(var(t), Expr::Int(1)),
                vec![Stmt::Store(arrays.g, at, decayed)],
            ),
            serial(
                s,
                sub(Expr::Int(z.q - 1), var(t)),
                vec![Stmt::Store(arrays.g, above, Expr::F32(Ieee32::new(0.0)))],
            ),
        ],
    ));
    let p_shape = columns(cx.schedule, z.p4);
    let p_panel = (p_shape.1 * p_shape.2) as i64;
    let by_x = |a: (usize, i64), b: usize, kc: Expr, accumulate: bool| Product {
        a: (a.0, Expr::Int(0), Expr::Int(a.1), 1),
        b: (b, Expr::Int(0), Expr::Int(p_panel), Expr::Int(z.p4)),
        out: (arrays.y, z.p4),
        rows: var(count),
        panels: Expr::Int(z.p4 / p_panel),
        kc,
        accumulate,
        shape: p_shape,
    };
    out.extend(product(
        cx,
        &by_x((arrays.g, z.q), arrays.x, var(count), false),
    ));
    let row = cx.var();
    let c_row = (arrays.c, mul(var(row), Expr::Int(z.n)), z.n);
    let decay = exp(load(arrays.decay, var(row)));
    if z.n % 4 == 0 {
        let scaled = scale(cx, c_row, decay);
        out.push(serial(row, var(count), vec![scaled]));
    } else {
        let el = cx.var();
        let at = add(c_row.1, var(el));
        let body = vec![Stmt::Store(
            arrays.c,
            at.clone(),
            mul(load(arrays.c, at), decay),
        )];
        out.push(serial(
            row,
            var(count),
            vec![serial(el, Expr::Int(z.n), body)],
        ));
    }
    out.extend(product(
        cx,
        &by_x((arrays.c, z.n), arrays.ht, Expr::Int(z.n), true),
    ));
    out
}

/// The state pass: `L` becomes the weight `exp(L_end − Lₛ)` of step s in the new state, x's
/// rows are scaled by it, and `Hᵀ ← exp(L_end)·Hᵀ + Bᵀ·X` on the micro-kernel.
fn state_pass(cx: &mut Ctx, arrays: &Arrays, z: &Sizes, count: Var) -> Vec<Stmt> {
    let (last, s) = (cx.var(), cx.var());
    let weight = exp(sub(var(last), load(arrays.decay, var(s))));
    let x_row = (arrays.x, mul(var(s), Expr::Int(z.p4)), z.p4);
    let weighted = scale(cx, x_row, weight);
    let kept = scale(cx, (arrays.ht, Expr::Int(0), z.n * z.p4), exp(var(last)));
    let shape = columns(cx.schedule, z.p4);
    let panel = (shape.1 * shape.2) as i64;
    let mut out = vec![
        Stmt::Set(last, load(arrays.decay, sub(var(count), Expr::Int(1)))),
        serial(s, var(count), vec![weighted]),
        kept,
    ];
    out.extend(product(
        cx,
        &Product {
            a: (arrays.bt, Expr::Int(0), Expr::Int(z.q), 1),
            b: (arrays.x, Expr::Int(0), Expr::Int(panel), Expr::Int(z.p4)),
            out: (arrays.ht, z.p4),
            rows: Expr::Int(z.n),
            panels: Expr::Int(z.p4 / panel),
            kc: var(count),
            accumulate: true,
            shape,
        },
    ));
    out
}
