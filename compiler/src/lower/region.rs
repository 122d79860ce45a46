//! Templates for fused regions: one kernel per region, derived from its body graph.

use archc_kernels::ir::build::{bin, var};
use archc_kernels::ir::{Axis, Bin, Expr, Ieee32, Stmt, Ty, Var};
use petgraph::graph::NodeIndex;

use super::body::BodyGen;
use super::index::{exprs, folded, with_axis, Ctx};
use super::lanes::{widest, LANES};
use super::matmul::{matmul, Epilogue};
use super::{elem, ty, Template};
use crate::graph::{Op, ReduceOp, Region, RegionKind, TensorType};

/// The kernel for a region whose node has type `out` and operand types `ins`.
pub fn lower(cx: &mut Ctx, r: &Region, out: &TensorType, ins: &[&TensorType]) -> Template {
    let mut gen = BodyGen::new(&r.body, 1);
    let body = match &r.kind {
        RegionKind::Elementwise => elementwise(cx, &mut gen, r, out),
        RegionKind::Reduce { anchor } => {
            // On a GPU a block's threads share each reduction (`cooperative.rs`); its shared
            // array follows the output, the inputs and the status word.
            let shared = ins.len() + 2;
            let gpu = cx.schedule.gpu_block.and_then(|threads| {
                super::cooperative::reduce(cx, &mut gen, (r, *anchor, out), shared, threads)
            });
            match gpu {
                Some(t) => return t,
                None => reduce(cx, &mut gen, r, *anchor, out),
            }
        }
        RegionKind::MatMul { anchor } => {
            let mut epi = Finish {
                gen: &mut gen,
                anchor: *anchor,
                root: r.output(),
                out,
            };
            // The anchor's operands are the body inputs `a` and `b`.
            let operand = |i: usize| {
                let n = r.body.operands(*anchor)[i];
                let slot: usize = r
                    .body
                    .inputs
                    .iter()
                    .find(|(_, m)| **m == n)
                    .map(|(s, _)| s.parse().expect("numbered"))
                    .expect("matmul operands are region inputs");
                slot
            };
            let (sa, sb) = (operand(0), operand(1));
            // A `b` the epilogue reads too must keep its layout.
            let b_node = r.body.operands(*anchor)[1];
            if sa == sb || r.body.users(b_node) != [*anchor] {
                cx.packable.retain(|&p| p != sb + 1);
            }
            let operands = [(ins[sa], sa + 1), (ins[sb], sb + 1)];
            // Buffers: the output, the inputs, the status word, then the packed panels of b and a.
            let packed = ins.len() + 2;
            let (body, locals, shared) =
                matmul(cx, (out, elem(out.dtype)), operands, packed, Some(&mut epi));
            let mut t = Template::new(body, gen.checks);
            t.locals.extend(locals);
            t.shared.extend(shared);
            return t;
        }
        RegionKind::Attention(_)
        | RegionKind::AttentionGrad(_)
        | RegionKind::Scan(_)
        | RegionKind::ScanGrad(_)
        | RegionKind::Moe(_) => {
            unreachable!("attention, scan and moe regions have their own templates")
        }
    };
    Template::new(body, gen.checks)
}

/// A matmul's epilogue: the body from the anchor to the region's value, on each result.
struct Finish<'g, 'a, 't> {
    gen: &'g mut BodyGen<'a>,
    anchor: NodeIndex,
    root: NodeIndex,
    out: &'t TensorType,
}

impl Epilogue for Finish<'_, '_, '_> {
    fn scalar(&mut self, cx: &mut Ctx, value: Expr, at: Vec<Expr>) -> Vec<Stmt> {
        self.gen.bind(self.anchor, value);
        let v = self.gen.value(cx, self.root, &at);
        let mut s = self.gen.take_lets();
        s.push(Stmt::Store(0, cx.index(&self.out.shape, &at), v));
        s
    }

    fn vector(
        &mut self,
        cx: &mut Ctx,
        (value, width): (Expr, u8),
        at: Vec<Expr>,
        lane: Var,
    ) -> Option<Vec<Stmt>> {
        let saved = self.gen.clone();
        self.gen.width = width;
        self.gen.bind_lanes(self.anchor, value);
        let lanes = self.gen.lanes(cx, self.root, &at, lane);
        self.gen.width = saved.width;
        let Some(v) = lanes else {
            *self.gen = saved;
            return None;
        };
        let mut s = self.gen.take_lets();
        s.push(Stmt::VStore(
            0,
            cx.index(&self.out.shape, &at),
            v.vector(width),
            width,
        ));
        Some(s)
    }
}

/// The vector width for a loop over `size` elements: the widest vector of the target's that
/// divides a constant size, else four.
fn width_for(cx: &Ctx, size: &crate::graph::Dim) -> u8 {
    size.as_const()
        .and_then(|n| widest(cx.schedule.lanes, n))
        .unwrap_or(LANES)
}

/// One loop nest over the output; each element is the body's expression. The innermost axis
/// goes a vector at a time when the body has a vector form, then one element at a time.
fn elementwise(cx: &mut Ctx, gen: &mut BodyGen, r: &Region, out: &TensorType) -> Vec<Stmt> {
    let rank = out.rank();
    let vars = cx.vars(rank);
    let at = exprs(&vars);
    let store = |cx: &Ctx, v: Expr| Stmt::Store(0, cx.index(&out.shape, &at), v);
    if rank > 0 {
        let saved = gen.clone();
        let j = vars[rank - 1];
        let w = width_for(cx, &out.shape[rank - 1]);
        gen.width = w;
        if let Some(v) = gen.lanes(cx, r.output(), &at, j) {
            gen.width = saved.width;
            let mut vector = gen.take_lets();
            vector.push(Stmt::VStore(0, cx.index(&out.shape, &at), v.vector(w), w));
            let value = gen.value(cx, r.output(), &at);
            let mut scalar = gen.take_lets();
            scalar.push(store(cx, value));
            let (mut inner, tail) = by_lanes(cx, j, &out.shape[rank - 1], w, vector, scalar);
            if rank == 1 {
                // The vector loop is the parallel one; the tail (less than a vector) runs once.
                inner = with_axis(inner, Axis::Grid);
            }
            let mut both = inner;
            both.extend(tail);
            return cx.flat_nest(&out.shape[..rank - 1], &vars[..rank - 1], both);
        }
        *gen = saved;
    }
    let v = gen.value(cx, r.output(), &at);
    let mut inner = gen.take_lets();
    inner.push(store(cx, v));
    cx.nest(&out.shape, &vars, inner)
}

/// Loops over `0..size` with `j`: `width` at a time (`j` the first of them) running `vector`,
/// then one at a time running `scalar`. Returns the two loops.
fn by_lanes(
    cx: &mut Ctx,
    j: archc_kernels::ir::Var,
    size: &crate::graph::Dim,
    width: u8,
    vector: Vec<Stmt>,
    scalar: Vec<Stmt>,
) -> (Vec<Stmt>, Vec<Stmt>) {
    use archc_kernels::ir::build::{add, mul, serial, var};
    let (q, t) = (cx.var(), cx.var());
    let n = cx.dim(size);
    let w = Expr::Int(i64::from(width));
    let whole = folded(Bin::Div, n.clone(), w.clone());
    let mut vbody = vec![Stmt::Set(j, mul(var(q), w.clone()))];
    vbody.extend(vector);
    let done = folded(Bin::Mul, whole.clone(), w);
    let mut sbody = vec![Stmt::Set(j, add(done.clone(), var(t)))];
    sbody.extend(scalar);
    let rest = folded(Bin::Sub, n, done);
    (vec![serial(q, whole, vbody)], vec![serial(t, rest, sbody)])
}

/// A reduction region's parts, as its templates need them.
pub(super) struct Reduction {
    /// The reduced operand and its coordinates (the output's and the reduced variables).
    pub x: NodeIndex,
    pub x_at: Vec<Expr>,
    /// The output's variables.
    pub vars: Vec<Var>,
    /// The reduced axes (of the operand), their variables and sizes.
    pub axes: Vec<usize>,
    pub red_vars: Vec<Var>,
    pub red_shape: Vec<crate::graph::Dim>,
    /// The accumulator's first value and the operation folding into it.
    pub init: Expr,
    pub f: Bin,
}

/// The parts of the reduction `anchor` of region `r`, whose output has type `out`.
pub(super) fn reduction(
    cx: &mut Ctx,
    r: &Region,
    anchor: NodeIndex,
    out: &TensorType,
) -> Reduction {
    let Op::Reduce { op, axes, keepdim } = &r.body.dag[anchor].op else {
        unreachable!("a reduce region's anchor is a reduction")
    };
    let x = r.body.operands(anchor)[0];
    let xt = r.body.ty(x).clone();
    let vars = cx.vars(out.rank());
    let red_vars = cx.vars(axes.len());
    let mut kept = 0;
    let x_at: Vec<Expr> = (0..xt.rank())
        .map(|a| match axes.iter().position(|&b| b == a) {
            Some(k) => Expr::Var(red_vars[k]),
            None => {
                let v = if *keepdim { vars[a] } else { vars[kept] };
                kept += 1;
                Expr::Var(v)
            }
        })
        .collect();
    let (init, f) = match (op, ty(xt.dtype)) {
        (ReduceOp::Sum, Ty::F32) => (Expr::F32(Ieee32::new(0.0)), Bin::Add),
        (ReduceOp::Sum, _) => (Expr::Int(0), Bin::Add),
        (ReduceOp::Max, Ty::F32) => (Expr::F32(Ieee32::new(f32::NEG_INFINITY)), Bin::Max),
        (ReduceOp::Max, _) => (Expr::Int(i64::MIN), Bin::Max),
    };
    Reduction {
        x,
        x_at,
        vars,
        axes: axes.clone(),
        red_vars,
        red_shape: axes.iter().map(|&a| xt.shape[a].clone()).collect(),
        init,
        f,
    }
}

/// The reduction's operand is computed inside its loop; the epilogue after it, on the
/// accumulator.
fn reduce(
    cx: &mut Ctx,
    gen: &mut BodyGen,
    r: &Region,
    anchor: petgraph::graph::NodeIndex,
    out: &TensorType,
) -> Vec<Stmt> {
    let Reduction {
        x,
        x_at,
        vars,
        axes,
        red_vars,
        red_shape,
        init,
        f,
    } = reduction(cx, r, anchor, out);
    let xt = r.body.ty(x).clone();
    let acc = cx.var();
    let step = |gen: &mut BodyGen, cx: &mut Ctx| {
        let value = gen.value(cx, x, &x_at);
        let mut step = gen.take_lets();
        step.push(Stmt::Set(acc, bin(f, var(acc), value)));
        step
    };
    let mut inner = vec![Stmt::Set(acc, init.clone())];
    // Over the last (contiguous) axis: four lanes of partial results, combined at the end.
    let last = axes.as_slice() == [xt.rank() - 1];
    let saved = gen.clone();
    match last.then(|| gen.lanes(cx, x, &x_at, red_vars[0])).flatten() {
        Some(xv) => {
            let accv = cx.var();
            let mut vstep = gen.take_lets();
            vstep.push(Stmt::Set(accv, bin(f, var(accv), xv.vector(LANES))));
            let sstep = step(gen, cx);
            let (vloop, tail) = by_lanes(cx, red_vars[0], &red_shape[0], LANES, vstep, sstep);
            let lane = |l: u8| Expr::Lane(Box::new(var(accv)), l);
            inner = vec![Stmt::Set(accv, Expr::Splat(Box::new(init), LANES))];
            inner.extend(with_axis(vloop, Axis::Reduce));
            inner.push(Stmt::Set(
                acc,
                bin(f, bin(f, lane(0), lane(1)), bin(f, lane(2), lane(3))),
            ));
            inner.extend(with_axis(tail, Axis::Reduce));
        }
        None => {
            *gen = saved;
            let across = Across {
                x,
                x_at: &x_at,
                red: (&red_shape, &red_vars),
                vars: &vars,
                init: init.clone(),
                f,
            };
            if let Some(nest) = reduce_across(cx, gen, r, (anchor, out), &across) {
                return nest;
            }
            let s = step(gen, cx);
            inner.extend(cx.reduce_nest(&red_shape, &red_vars, s));
        }
    }
    gen.bind(anchor, Expr::Var(acc));
    let at = exprs(&vars);
    let v = gen.value(cx, r.output(), &at);
    inner.extend(gen.take_lets());
    inner.push(Stmt::Store(0, cx.index(&out.shape, &at), v));
    cx.flat_nest(&out.shape, &vars, inner)
}

/// A reduction's loop structure, for [`reduce_across`].
struct Across<'a> {
    /// The reduced operand and its coordinates.
    x: petgraph::graph::NodeIndex,
    x_at: &'a [Expr],
    /// The reduced axes' sizes and variables.
    red: (&'a [crate::graph::Dim], &'a [archc_kernels::ir::Var]),
    /// The output's variables.
    vars: &'a [archc_kernels::ir::Var],
    init: Expr,
    f: Bin,
}

/// A reduction over other axes than the last, when the output's last axis is the operand's:
/// a vector of consecutive outputs at a time, each lane its own accumulator (a depthwise
/// convolution's channels), finished through the epilogue in vectors; the outputs past the
/// last whole vector one at a time. None when the operand or the epilogue has no vector form.
fn reduce_across(
    cx: &mut Ctx,
    gen: &mut BodyGen,
    r: &Region,
    (anchor, out): (petgraph::graph::NodeIndex, &TensorType),
    a: &Across,
) -> Option<Vec<Stmt>> {
    use archc_kernels::ir::build::var;
    let rank = out.rank();
    let j = *a.vars.last()?;
    if a.x_at.last() != Some(&Expr::Var(j)) {
        return None;
    }
    let w = width_for(cx, &out.shape[rank - 1]);
    let saved = gen.clone();
    gen.width = w;
    let at = exprs(a.vars);
    let (accv, acc) = (cx.var(), cx.var());
    let vector = (|| {
        let xv = gen.lanes(cx, a.x, a.x_at, j)?.vector(w);
        let mut step = gen.take_lets();
        step.push(Stmt::Set(accv, bin(a.f, var(accv), xv)));
        let mut vector = vec![Stmt::Set(accv, Expr::Splat(Box::new(a.init.clone()), w))];
        vector.extend(cx.reduce_nest(a.red.0, a.red.1, step));
        gen.bind_lanes(anchor, var(accv));
        let v = gen.lanes(cx, r.output(), &at, j)?.vector(w);
        vector.extend(gen.take_lets());
        vector.push(Stmt::VStore(0, cx.index(&out.shape, &at), v, w));
        Some(vector)
    })();
    let Some(vector) = vector else {
        *gen = saved;
        return None;
    };
    gen.width = saved.width;
    let value = gen.value(cx, a.x, a.x_at);
    let mut step = gen.take_lets();
    step.push(Stmt::Set(acc, bin(a.f, var(acc), value)));
    let mut scalar = vec![Stmt::Set(acc, a.init.clone())];
    scalar.extend(cx.reduce_nest(a.red.0, a.red.1, step));
    gen.bind(anchor, var(acc));
    let v = gen.value(cx, r.output(), &at);
    scalar.extend(gen.take_lets());
    scalar.push(Stmt::Store(0, cx.index(&out.shape, &at), v));
    let (mut inner, tail) = by_lanes(cx, j, &out.shape[rank - 1], w, vector, scalar);
    if rank == 1 {
        // The vector loop is the parallel one.
        inner = with_axis(inner, Axis::Grid);
    }
    inner.extend(tail);
    Some(cx.flat_nest(&out.shape[..rank - 1], &a.vars[..rank - 1], inner))
}
