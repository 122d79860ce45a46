//! Templates for fused regions: one kernel per region, derived from its body graph.

use archc_kernels::ir::build::{bin, var};
use archc_kernels::ir::{Axis, Bin, Expr, Ieee32, Stmt, Ty, Var};
use petgraph::graph::NodeIndex;

use super::body::BodyGen;
use super::index::{exprs, with_axis, Ctx};
use super::lanes::LANES;
use super::matmul::{matmul, Epilogue};
use super::{elem, ty, Template};
use crate::graph::{Op, ReduceOp, Region, RegionKind, TensorType};

/// The kernel for a region whose node has type `out` and operand types `ins`.
pub fn lower(cx: &mut Ctx, r: &Region, out: &TensorType, ins: &[&TensorType]) -> Template {
    let mut gen = BodyGen::new(&r.body, 1);
    let body = match &r.kind {
        RegionKind::Elementwise => elementwise(cx, &mut gen, r, out),
        RegionKind::Reduce { anchor } => reduce(cx, &mut gen, r, *anchor, out),
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
            let operands = [(ins[sa], sa + 1), (ins[sb], sb + 1)];
            // Buffers: the output, the inputs, the status word, then the packed panels of b and a.
            let packed = ins.len() + 2;
            let (body, locals) =
                matmul(cx, (out, elem(out.dtype)), operands, packed, Some(&mut epi));
            let mut t = Template::new(body, gen.checks);
            t.locals.extend(locals);
            return t;
        }
        RegionKind::Attention(_) | RegionKind::Scan(_) | RegionKind::Moe(_) => {
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

/// One loop nest over the output; each element is the body's expression. The innermost axis
/// goes four elements at a time when the body has a vector form, then one at a time.
fn elementwise(cx: &mut Ctx, gen: &mut BodyGen, r: &Region, out: &TensorType) -> Vec<Stmt> {
    let rank = out.rank();
    let vars = cx.vars(rank);
    let at = exprs(&vars);
    let store = |cx: &Ctx, v: Expr| Stmt::Store(0, cx.index(&out.shape, &at), v);
    if rank > 0 {
        let saved = gen.clone();
        let j = vars[rank - 1];
        if let Some(v) = gen.lanes(cx, r.output(), &at, j) {
            let mut vector = gen.take_lets();
            vector.push(Stmt::VStore(
                0,
                cx.index(&out.shape, &at),
                v.vector(LANES),
                LANES,
            ));
            let value = gen.value(cx, r.output(), &at);
            let mut scalar = gen.take_lets();
            scalar.push(store(cx, value));
            let (mut inner, tail) = by_four(cx, j, &out.shape[rank - 1], vector, scalar);
            if rank == 1 {
                // The vector loop is the parallel one; the tail (≤ 3 elements) runs once.
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

/// Loops over `0..size` with `j`: four at a time (`j` the first of the four) running `vector`,
/// then one at a time running `scalar`. Returns the two loops.
fn by_four(
    cx: &mut Ctx,
    j: archc_kernels::ir::Var,
    size: &crate::graph::Dim,
    vector: Vec<Stmt>,
    scalar: Vec<Stmt>,
) -> (Vec<Stmt>, Vec<Stmt>) {
    use archc_kernels::ir::build::{add, bin, mul, serial, var};
    let (q, t) = (cx.var(), cx.var());
    let n = cx.dim(size);
    let quads = bin(Bin::Div, n.clone(), Expr::Int(4));
    let mut vbody = vec![Stmt::Set(j, mul(var(q), Expr::Int(4)))];
    vbody.extend(vector);
    let mut sbody = vec![Stmt::Set(j, add(mul(quads.clone(), Expr::Int(4)), var(t)))];
    sbody.extend(scalar);
    let rest = archc_kernels::ir::build::sub(n, mul(quads.clone(), Expr::Int(4)));
    (vec![serial(q, quads, vbody)], vec![serial(t, rest, sbody)])
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
    let acc = cx.var();
    let (init, f) = match (op, ty(xt.dtype)) {
        (ReduceOp::Sum, Ty::F32) => (Expr::F32(Ieee32::new(0.0)), Bin::Add),
        (ReduceOp::Sum, _) => (Expr::Int(0), Bin::Add),
        (ReduceOp::Max, Ty::F32) => (Expr::F32(Ieee32::new(f32::NEG_INFINITY)), Bin::Max),
        (ReduceOp::Max, _) => (Expr::Int(i64::MIN), Bin::Max),
    };
    let red_shape: Vec<_> = axes.iter().map(|&a| xt.shape[a].clone()).collect();
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
            let (vloop, tail) = by_four(cx, red_vars[0], &red_shape[0], vstep, sstep);
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
