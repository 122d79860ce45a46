//! The fused selective scan (Mamba's "hardware-aware" scan, on CPU threads).
//!
//! One iteration of the parallel loop owns one channel (every axis of the state but the
//! sequence axis and the state axes the read-out sums over) and walks the sequence: at each
//! step it computes the decay `a` and input `b` from the region body, updates its slice of the
//! state, `h ← a·h + b`, in a thread-private array, and sums the read-out (`h·C`) over it; the
//! epilogue (`+ D·x`, the gate) finishes the step's output. Values that do not depend on the
//! state axes (Δ, x, the gate) are computed once per step, not once per state element. The
//! `[batch, seq, channels, state]` tensors never exist.
//!
//! On a GPU, where one thread per channel leaves most of the machine idle, the block scan
//! (`scan_blocks.rs`) takes the regions it applies to; this template takes the rest.

use archc_kernels::ir::build::{add, mul, serial, var};
use archc_kernels::ir::{Axis, Elem, Expr, Ieee32, Local, Stmt};

use super::body::{broadcast_at, delinearize, BodyGen};
use super::index::{exprs, Ctx};
use super::lanes::{lane_sum, widest};
use super::Template;
use crate::graph::{Dim, Op, Region, ScanInfo, TensorType};

/// The axes of a scan region's state `h`, which both scan templates walk.
pub(super) struct ScanAxes {
    /// `h`'s type.
    pub h: TensorType,
    /// The sequence axis.
    pub axis: usize,
    /// The axes the read-out sums over (none without a read-out: the kernel stores `h`).
    pub state_axes: Vec<usize>,
    /// Whether the read-out keeps the state axes (as size 1).
    pub keepdim: bool,
    /// The sizes of the state axes.
    pub state_shape: Vec<Dim>,
    /// Their product: a channel's state elements.
    pub state_len: usize,
    /// The other axes: one channel each.
    pub channel_axes: Vec<usize>,
    /// Their sizes.
    pub channel_shape: Vec<Dim>,
}

impl ScanAxes {
    /// The axes of `r`'s scan.
    pub fn of(r: &Region, info: &ScanInfo) -> ScanAxes {
        let Op::Scan { axis } = r.body.dag[info.scan].op else {
            unreachable!("a scan region's anchor is a scan")
        };
        let h = r.body.ty(info.scan).clone();
        let (state_axes, keepdim) = match info.readout.map(|n| &r.body.dag[n].op) {
            Some(Op::Reduce { axes, keepdim, .. }) => (axes.clone(), *keepdim),
            _ => (Vec::new(), false),
        };
        let state_shape: Vec<Dim> = state_axes.iter().map(|&x| h.shape[x].clone()).collect();
        let state_len = Dim::product(&state_shape)
            .and_then(|d| d.as_const())
            .expect("the pass admits constant state sizes") as usize;
        let channel_axes: Vec<usize> = (0..h.rank())
            .filter(|x| *x != axis && !state_axes.contains(x))
            .collect();
        let channel_shape = channel_axes.iter().map(|&x| h.shape[x].clone()).collect();
        ScanAxes {
            h,
            axis,
            state_axes,
            keepdim,
            state_shape,
            state_len,
            channel_axes,
            channel_shape,
        }
    }

    /// The output's coordinates for `h`'s coordinates `h_at`: the read-out drops (or keeps as
    /// 0) the state axes.
    pub fn out_at(&self, h_at: &[Expr]) -> Vec<Expr> {
        (0..self.h.rank())
            .filter_map(|x| match (self.state_axes.contains(&x), self.keepdim) {
                (true, true) => Some(Expr::Int(0)),
                (true, false) => None,
                (false, _) => Some(h_at[x].clone()),
            })
            .collect()
    }
}

/// The kernel for a scan region whose node has type `out`, with `inputs` region inputs: the
/// block scan on GPUs where it applies, else one thread per channel.
pub fn lower(
    cx: &mut Ctx,
    r: &Region,
    info: &ScanInfo,
    out: &TensorType,
    inputs: usize,
) -> Template {
    let axes = ScanAxes::of(r, info);
    if super::scan_blocks::applies(cx, &axes) {
        return super::scan_blocks::lower(cx, (r, info, &axes), (out, inputs));
    }
    by_channels(cx, r, info, &axes, (out, inputs))
}

/// One thread per channel walks the whole sequence (see the module doc).
fn by_channels(
    cx: &mut Ctx,
    r: &Region,
    info: &ScanInfo,
    axes: &ScanAxes,
    (out, inputs): (&TensorType, usize),
) -> Template {
    let mut gen = BodyGen::new(&r.body, 1);
    let s = info.scan;
    let [a, b] = r.body.operands(s)[..] else {
        unreachable!("scan has two operands")
    };
    let ScanAxes {
        h,
        axis,
        state_axes,
        state_shape,
        state_len,
        channel_axes,
        channel_shape,
        ..
    } = axes;
    let (axis, state_len) = (*axis, *state_len);
    // Level 0: one channel.
    let ch = cx.var();
    let ch_vars = cx.vars(channel_axes.len());
    gen.loop_vars(&ch_vars);
    // Level 1: one step of the sequence.
    let t = cx.var();
    gen.enter(&[t]);
    // Level 2: one state element.
    let st_vars = cx.vars(state_axes.len());
    gen.enter(&st_vars);
    let mut h_at = vec![Expr::Int(0); h.rank()];
    h_at[axis] = var(t);
    for (x, v) in channel_axes.iter().zip(&ch_vars) {
        h_at[*x] = var(*v);
    }
    for (x, v) in state_axes.iter().zip(&st_vars) {
        h_at[*x] = var(*v);
    }
    let state_buf = inputs + 2;
    let slot = cx.index(state_shape, &exprs(&st_vars));
    let a_at = broadcast_at(&h_at, &r.body.ty(a).shape);
    let b_at = broadcast_at(&h_at, &r.body.ty(b).shape);
    let hv = cx.var();
    let mut per_step;
    let per_channel_init;
    match info.readout {
        Some(readout) => {
            let acc = cx.var();
            let term_node = r.body.operands(readout)[0];
            // A vector of state elements at a time (the target's width, or less when the
            // innermost state axis is not a multiple of it), else one.
            let width = state_shape
                .last()
                .and_then(|d| d.as_const())
                .and_then(|n| widest(cx.schedule.lanes, n));
            let saved = gen.clone();
            let vector = width.and_then(|w| {
                gen.width = w;
                let k = *st_vars.last().expect("state axes");
                let decay = gen.lanes(cx, a, &a_at, k)?.vector(w);
                let input = gen.lanes(cx, b, &b_at, k)?.vector(w);
                let mut step = gen.take_lets();
                let previous = Expr::VLoad(state_buf, Box::new(slot.clone()), w);
                step.push(Stmt::Set(hv, add(mul(decay, previous), input)));
                step.push(Stmt::VStore(state_buf, slot.clone(), var(hv), w));
                gen.bind_lanes(s, var(hv));
                let term = gen.lanes(cx, term_node, &h_at, k)?.vector(w);
                Some((k, w, step, term))
            });
            let state_loop = match vector {
                Some((k, w, mut step, term)) => {
                    gen.width = saved.width;
                    let accv = cx.var();
                    step.extend(gen.leave());
                    step.push(Stmt::Set(accv, add(var(accv), term)));
                    let q = cx.var();
                    let mut quad = vec![Stmt::Set(k, mul(var(q), Expr::Int(i64::from(w))))];
                    quad.extend(step);
                    let n = state_axes.len();
                    let last = state_shape[n - 1].as_const().expect("checked") / i64::from(w);
                    let inner = vec![serial(q, Expr::Int(last), quad)];
                    let mut out = vec![Stmt::Set(
                        accv,
                        Expr::Splat(Box::new(Expr::F32(Ieee32::new(0.0))), w),
                    )];
                    out.extend(cx.serial_nest(&state_shape[..n - 1], &st_vars[..n - 1], inner));
                    out.push(Stmt::Set(acc, lane_sum(accv, w)));
                    out
                }
                None => {
                    gen = saved;
                    let decay = gen.value(cx, a, &a_at);
                    let input = gen.value(cx, b, &b_at);
                    let mut step = gen.take_lets();
                    let previous = Expr::Load(state_buf, Box::new(slot.clone()));
                    step.push(Stmt::Set(hv, add(mul(decay, previous), input)));
                    step.push(Stmt::Store(state_buf, slot, var(hv)));
                    gen.bind(s, var(hv));
                    let term = gen.value(cx, term_node, &h_at);
                    step.extend(gen.leave());
                    step.push(Stmt::Set(acc, add(var(acc), term)));
                    let mut out = vec![Stmt::Set(acc, Expr::F32(Ieee32::new(0.0)))];
                    out.extend(cx.serial_nest(state_shape, &st_vars, step));
                    out
                }
            };
            per_step = gen.take_lets();
            per_step.extend(state_loop);
            // The epilogue, on the sum.
            gen.bind(readout, var(acc));
            let out_at = axes.out_at(&h_at);
            let y = gen.value(cx, r.output(), &out_at);
            per_step.extend(gen.take_lets());
            per_step.push(Stmt::Store(0, cx.index(&out.shape, &out_at), y));
            let zero = cx.var();
            per_channel_init = vec![serial(
                zero,
                Expr::Int(state_len as i64),
                vec![Stmt::Store(
                    state_buf,
                    var(zero),
                    Expr::F32(Ieee32::new(0.0)),
                )],
            )];
        }
        None => {
            let decay = gen.value(cx, a, &a_at);
            let input = gen.value(cx, b, &b_at);
            let mut step = gen.take_lets();
            step.push(Stmt::Set(hv, add(mul(decay, var(hv)), input)));
            step.extend(gen.leave());
            step.push(Stmt::Store(0, cx.index(&out.shape, &h_at), var(hv)));
            per_step = gen.take_lets();
            per_step.extend(step);
            per_channel_init = vec![Stmt::Set(hv, Expr::F32(Ieee32::new(0.0)))];
        }
    }
    gen.leave();
    let mut per_channel: Vec<Stmt> = delinearize(cx, var(ch), channel_shape)
        .into_iter()
        .zip(&ch_vars)
        .map(|(e, v)| Stmt::Set(*v, e))
        .collect();
    per_channel.extend(gen.take_lets());
    per_channel.extend(per_channel_init);
    per_channel.push(Stmt::For {
        var: t,
        extent: cx.dim(&h.shape[axis]),
        kind: Axis::Serial,
        body: per_step,
    });
    let channels = Dim::product(channel_shape).expect("channel counts fit in i64");
    let body = vec![Stmt::For {
        var: ch,
        extent: cx.dim(&channels),
        kind: Axis::Grid,
        body: per_channel,
    }];
    let locals = if info.readout.is_some() {
        vec![Local {
            name: "state".into(),
            elem: Elem::F32,
            len: state_len.max(1),
        }]
    } else {
        Vec::new()
    };
    Template {
        body,
        checks: gen.checks,
        locals,
        shared: Vec::new(),
        scratch: None,
        occupancy: None,
    }
}
