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
//! which equals the recurrence `hₜ = aₜ·hₜ₋₁ + xₜ ⊗ Bₜ`, `yₜ = hₜ·Cₜ`. The chunk's x, B, C and
//! `L` are computed from the region body into thread-private arrays once; the epilogue
//! (`+ D·x`) finishes each output.

use archc_kernels::ir::build::{add, exp, load, mul, serial, sub, var};
use archc_kernels::ir::{Axis, Bin, Elem, Expr, Ieee32, Local, Stmt, Un, Var};
use petgraph::graph::NodeIndex;

use super::body::{broadcast_at, delinearize, reshape_at, BodyGen};
use super::index::Ctx;
use super::lanes::LANES;
use super::Template;
use crate::graph::{Dim, Op, Region, ScanInfo, SsdInfo, TensorType};

/// How many elements of the thread-private arrays a step of the inner loops takes: 4 (f32x4)
/// when the channel and state counts are multiples of 4, else 1.
#[derive(Clone, Copy)]
struct Width(i64);

impl Width {
    fn load(self, buf: usize, at: Expr) -> Expr {
        if self.0 == 4 {
            Expr::VLoad(buf, Box::new(at), LANES)
        } else {
            load(buf, at)
        }
    }

    fn store(self, buf: usize, at: Expr, v: Expr) -> Stmt {
        if self.0 == 4 {
            Stmt::VStore(buf, at, v, LANES)
        } else {
            Stmt::Store(buf, at, v)
        }
    }

    fn splat(self, e: Expr) -> Expr {
        if self.0 == 4 {
            Expr::Splat(Box::new(e), LANES)
        } else {
            e
        }
    }

    /// `a·b + c`.
    fn fma(self, a: Expr, b: Expr, c: Expr) -> Expr {
        if self.0 == 4 {
            Expr::Fma(Box::new(a), Box::new(b), Box::new(c))
        } else {
            add(mul(a, b), c)
        }
    }

    /// The sum of a value's lanes.
    fn total(self, v: Var) -> Expr {
        if self.0 == 4 {
            let lane = |l: u8| Expr::Lane(Box::new(var(v)), l);
            add(add(lane(0), lane(1)), add(lane(2), lane(3)))
        } else {
            var(v)
        }
    }

    /// `out = Σ_{i < len} a[a0 + i]·b[b0 + i]`, `len` a multiple of the width.
    fn dot(
        self,
        cx: &mut Ctx,
        out: Var,
        len: i64,
        (a, a0): (usize, Expr),
        (b, b0): (usize, Expr),
    ) -> Vec<Stmt> {
        let (i, acc) = (cx.var(), cx.var());
        let at = |base: Expr| add(base, mul(var(i), Expr::Int(self.0)));
        vec![
            Stmt::Set(acc, self.splat(Expr::F32(Ieee32::new(0.0)))),
            serial(
                i,
                Expr::Int(len / self.0),
                vec![Stmt::Set(
                    acc,
                    self.fma(self.load(a, at(a0)), self.load(b, at(b0)), var(acc)),
                )],
            ),
            Stmt::Set(out, self.total(acc)),
        ]
    }

    /// `dst[d0 + i] = dst[d0 + i] + w·src[s0 + i]` for `i < len`.
    fn axpy(
        self,
        cx: &mut Ctx,
        len: i64,
        w: Expr,
        (dst, d0): (usize, Expr),
        (src, s0): (usize, Expr),
    ) -> Stmt {
        let i = cx.var();
        let at = |base: Expr| add(base, mul(var(i), Expr::Int(self.0)));
        serial(
            i,
            Expr::Int(len / self.0),
            vec![self.store(
                dst,
                at(d0.clone()),
                self.fma(
                    self.splat(w),
                    self.load(src, at(s0)),
                    self.load(dst, at(d0)),
                ),
            )],
        )
    }

    /// `dst[i] = v` for `i < len`.
    fn fill(self, cx: &mut Ctx, len: i64, dst: usize, v: Expr) -> Stmt {
        let i = cx.var();
        serial(
            i,
            Expr::Int(len / self.0),
            vec![self.store(dst, mul(var(i), Expr::Int(self.0)), self.splat(v))],
        )
    }
}

/// The thread-private arrays, by buffer number.
struct Arrays {
    /// The state before the chunk, `[P, N]`.
    h: usize,
    /// Cumulative log-decays of the chunk's steps, `[Q]`.
    decay: usize,
    /// The chunk's x, `[Q, P]`.
    x: usize,
    /// The chunk's B, `[Q, N]`.
    b: usize,
    /// The chunk's C, `[Q, N]`.
    c: usize,
    /// One step's intra-chunk output, `[P]`.
    y: usize,
}

/// The log of the decay at `at`: when the body computes the decay as `exp(z)` (through
/// reshapes), `z` itself, so nothing is lost to rounding near 0.
fn log_decay(gen: &mut BodyGen, cx: &mut Ctx, r: &Region, a: NodeIndex, at: &[Expr]) -> Expr {
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

/// The kernel for a scan region in SSD form whose node has type `out`, with `inputs` region
/// inputs.
pub fn lower(
    cx: &mut Ctx,
    r: &Region,
    info: &ScanInfo,
    ssd: &SsdInfo,
    out: &TensorType,
    inputs: usize,
) -> Template {
    let mut gen = BodyGen::new(&r.body, 1);
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
    let (axis, keepdim) = (*axis, *keepdim);
    let a = body.operands(s)[0];
    let h = body.ty(s).clone();
    let rank = h.rank();
    let a_shape = &body.ty(a).shape;
    let a_offset = rank - a_shape.len();
    let a_constant = |x: usize| x < a_offset || a_shape[x - a_offset].as_const() == Some(1);
    let channels: Vec<usize> = (0..rank)
        .filter(|x| *x != axis && !state.contains(x))
        .collect();
    let p_axes: Vec<usize> = channels
        .iter()
        .copied()
        .filter(|x| a_constant(*x))
        .collect();
    let head_axes: Vec<usize> = channels
        .iter()
        .copied()
        .filter(|x| !a_constant(*x))
        .collect();
    let dims = |axes: &[usize]| -> Vec<Dim> { axes.iter().map(|&x| h.shape[x].clone()).collect() };
    let size = |axes: &[usize]| -> i64 {
        Dim::product(&dims(axes))
            .and_then(|d| d.as_const())
            .expect("the pass admits constant channel and state sizes")
    };
    let (p_len, n_len) = (size(&p_axes), size(state));
    let q = cx.schedule.ssd_chunk(p_len, n_len) as i64;
    let base = inputs + 2;
    let arrays = Arrays {
        h: base,
        decay: base + 1,
        x: base + 2,
        b: base + 3,
        c: base + 4,
        y: base + 5,
    };
    let locals = [
        ("state", p_len * n_len),
        ("log_decay", q),
        ("x", q * p_len),
        ("B", q * n_len),
        ("C", q * n_len),
        ("y", p_len),
    ]
    .into_iter()
    .map(|(name, len)| Local {
        name: name.into(),
        elem: Elem::F32,
        len: len as usize,
    })
    .collect();

    // Coordinates in h of step `t`, channel `p` and state element `n` of the current head
    // (axes a value is constant along read index 0).
    let head_vars = cx.vars(head_axes.len());
    let p_vars = cx.vars(p_axes.len());
    let n_vars = cx.vars(state.len());
    let at = |t: Expr, p: bool, n: bool| -> Vec<Expr> {
        let mut at = vec![Expr::Int(0); rank];
        at[axis] = t;
        for (x, v) in head_axes.iter().zip(&head_vars) {
            at[*x] = var(*v);
        }
        if p {
            for (x, v) in p_axes.iter().zip(&p_vars) {
                at[*x] = var(*v);
            }
        }
        if n {
            for (x, v) in state.iter().zip(&n_vars) {
                at[*x] = var(*v);
            }
        }
        at
    };
    // Loops over the channels or the state elements of a head, setting their coordinates.
    let split = |cx: &Ctx, linear: Var, axes: &[usize], vars: &[Var]| -> Vec<Stmt> {
        delinearize(cx, var(linear), &dims(axes))
            .into_iter()
            .zip(vars)
            .map(|(e, v)| Stmt::Set(*v, e))
            .collect()
    };

    let seq = cx.dim(&h.shape[axis]);
    let (hd, cb, c0, count) = (cx.var(), cx.var(), cx.var(), cx.var());
    gen.loop_vars(&head_vars);
    gen.enter(&[cb, c0, count]);

    // Phase 1: the chunk's cumulative log-decays, x, B and C.
    let (tt, t, acc, p, n) = (cx.var(), cx.var(), cx.var(), cx.var(), cx.var());
    gen.enter(&[tt, t]);
    let la = log_decay(&mut gen, cx, r, a, &at(var(t), false, false));
    let mut step = vec![Stmt::Set(t, add(var(c0), var(tt)))];
    step.extend(gen.take_lets());
    step.push(Stmt::Set(acc, add(var(acc), la)));
    step.push(Stmt::Store(arrays.decay, var(tt), var(acc)));
    gen.enter(&p_vars);
    let xv = gen.value(
        cx,
        ssd.x,
        &broadcast_at(&at(var(t), true, false), &body.ty(ssd.x).shape),
    );
    let mut per_p = split(cx, p, &p_axes, &p_vars);
    per_p.extend(gen.leave());
    per_p.push(Stmt::Store(
        arrays.x,
        add(mul(var(tt), Expr::Int(p_len)), var(p)),
        xv,
    ));
    step.extend(gen.take_lets());
    step.push(serial(p, Expr::Int(p_len), per_p));
    gen.enter(&n_vars);
    let n_at = at(var(t), false, true);
    let bv = gen.value(cx, ssd.b, &broadcast_at(&n_at, &body.ty(ssd.b).shape));
    let cv = gen.value(cx, ssd.c, &broadcast_at(&n_at, &body.ty(ssd.c).shape));
    let mut per_n = split(cx, n, state, &n_vars);
    per_n.extend(gen.leave());
    let slot = add(mul(var(tt), Expr::Int(n_len)), var(n));
    per_n.push(Stmt::Store(arrays.b, slot.clone(), bv));
    per_n.push(Stmt::Store(arrays.c, slot, cv));
    step.extend(gen.take_lets());
    step.push(serial(n, Expr::Int(n_len), per_n));
    step.extend(gen.leave());
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

    // Phase 2: each step's output. The intra-chunk part goes to y[P] first.
    let width = Width(if p_len % 4 == 0 && n_len % 4 == 0 {
        4
    } else {
        1
    });
    let [tt2, t2, el, dot, ss2, w2, yo, yv] = [(); 8].map(|_| cx.var());
    gen.enter(&[tt2, t2]);
    let row = |step: Var, len: i64| mul(var(step), Expr::Int(len));
    let mut intra = width.dot(
        cx,
        dot,
        n_len,
        (arrays.c, row(tt2, n_len)),
        (arrays.b, row(ss2, n_len)),
    );
    intra.push(Stmt::Set(
        w2,
        mul(
            var(dot),
            exp(sub(
                load(arrays.decay, var(tt2)),
                load(arrays.decay, var(ss2)),
            )),
        ),
    ));
    intra.push(width.axpy(
        cx,
        p_len,
        var(w2),
        (arrays.y, Expr::Int(0)),
        (arrays.x, row(ss2, p_len)),
    ));
    let mut step2 = vec![
        Stmt::Set(t2, add(var(c0), var(tt2))),
        Stmt::Set(el, exp(load(arrays.decay, var(tt2)))),
        width.fill(cx, p_len, arrays.y, Expr::F32(Ieee32::new(0.0))),
        serial(ss2, add(var(tt2), Expr::Int(1)), intra),
    ];
    // Per channel: the inter-chunk part from the state, then the epilogue on the sum.
    gen.enter(&p_vars);
    gen.bind(ro, var(yv));
    let mut out_at = at(var(t2), true, false);
    if !keepdim {
        out_at = (0..rank)
            .filter(|x| !state.contains(x))
            .map(|x| out_at[x].clone())
            .collect();
    }
    let result = gen.value(cx, r.output(), &out_at);
    let mut per_p2 = split(cx, p, &p_axes, &p_vars);
    per_p2.extend(width.dot(
        cx,
        yo,
        n_len,
        (arrays.c, row(tt2, n_len)),
        (arrays.h, row(p, n_len)),
    ));
    per_p2.push(Stmt::Set(
        yv,
        add(load(arrays.y, var(p)), mul(var(el), var(yo))),
    ));
    per_p2.extend(gen.leave());
    per_p2.push(Stmt::Store(0, cx.index(&out.shape, &out_at), result));
    step2.extend(gen.take_lets());
    step2.push(serial(p, Expr::Int(p_len), per_p2));
    step2.extend(gen.leave());
    per_chunk.push(serial(tt2, var(count), step2));

    // Phase 3: the state pass. L becomes exp(L_end − Lₛ), the weight of step s in the new state.
    let (last, scale, ss, w) = (cx.var(), cx.var(), cx.var(), cx.var());
    per_chunk.push(Stmt::Set(
        last,
        load(arrays.decay, sub(var(count), Expr::Int(1))),
    ));
    per_chunk.push(Stmt::Set(scale, exp(var(last))));
    per_chunk.push(serial(
        ss,
        var(count),
        vec![Stmt::Store(
            arrays.decay,
            var(ss),
            exp(sub(var(last), load(arrays.decay, var(ss)))),
        )],
    ));
    // H ← exp(L_end)·H, then H[p] += weightₛ·xₛ[p]·Bₛ for each step s.
    let cell = cx.var();
    per_chunk.push(serial(
        cell,
        Expr::Int(p_len * n_len / width.0),
        vec![{
            let at = mul(var(cell), Expr::Int(width.0));
            width.store(
                arrays.h,
                at.clone(),
                mul(width.splat(var(scale)), width.load(arrays.h, at)),
            )
        }],
    ));
    let update = vec![
        Stmt::Set(
            w,
            mul(
                load(arrays.decay, var(ss)),
                load(arrays.x, add(mul(var(ss), Expr::Int(p_len)), var(p))),
            ),
        ),
        width.axpy(
            cx,
            n_len,
            var(w),
            (arrays.h, mul(var(p), Expr::Int(n_len))),
            (arrays.b, mul(var(ss), Expr::Int(n_len))),
        ),
    ];
    per_chunk.push(serial(
        ss,
        var(count),
        vec![serial(p, Expr::Int(p_len), update)],
    ));
    // Values that depend on the chunk only go first in it; values of the head only, first in
    // the head's iteration.
    per_chunk.splice(2..2, gen.leave());
    let mut per_head = split(cx, hd, &head_axes, &head_vars);
    per_head.extend(gen.take_lets());
    let zero = cx.var();
    per_head.push(serial(
        zero,
        Expr::Int(p_len * n_len),
        vec![Stmt::Store(
            arrays.h,
            var(zero),
            Expr::F32(Ieee32::new(0.0)),
        )],
    ));
    let chunks = Expr::Bin(
        Bin::Div,
        Box::new(add(seq, Expr::Int(q - 1))),
        Box::new(Expr::Int(q)),
    );
    per_head.push(serial(cb, chunks, per_chunk));
    let heads = Dim::product(&dims(&head_axes)).expect("head counts fit in i64");
    let body = vec![Stmt::For {
        var: hd,
        extent: cx.dim(&heads),
        kind: Axis::Grid,
        body: per_head,
    }];
    Template {
        body,
        checks: gen.checks,
        locals,
    }
}
