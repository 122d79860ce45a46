//! Templates for fused regions: one kernel per region, derived from its body graph.

use archc_kernels::ir::{Bin, Expr, Stmt, Ty};

use super::body::BodyGen;
use super::index::{exprs, Ctx};
use super::matmul::matmul;
use super::{ty, Template};
use crate::graph::{Op, ReduceOp, Region, RegionKind, TensorType};

/// The kernel for a region whose node has type `out` and operand types `ins`.
pub fn lower(cx: &mut Ctx, r: &Region, out: &TensorType, ins: &[&TensorType]) -> Template {
    let mut gen = BodyGen::new(&r.body, 1);
    let body = match &r.kind {
        RegionKind::Elementwise => elementwise(cx, &mut gen, r, out),
        RegionKind::Reduce { anchor } => reduce(cx, &mut gen, r, *anchor, out),
        RegionKind::MatMul { anchor } => {
            let root = r.output();
            let mut epi = |cx: &mut Ctx, value: Expr, at: Vec<Expr>| {
                gen.bind(*anchor, value);
                let v = gen.value(cx, root, &at);
                let mut s = gen.take_lets();
                s.push(Stmt::Store(0, cx.index(&out.shape, &at), v));
                s
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
            matmul(cx, out, operands, Some(&mut epi))
        }
        RegionKind::Attention(_) | RegionKind::Scan(_) => {
            unreachable!("attention and scan regions have their own templates")
        }
    };
    Template::new(body, gen.checks)
}

/// One loop nest over the output; each element is the body's expression.
fn elementwise(cx: &mut Ctx, gen: &mut BodyGen, r: &Region, out: &TensorType) -> Vec<Stmt> {
    let vars = cx.vars(out.rank());
    let at = exprs(&vars);
    let v = gen.value(cx, r.output(), &at);
    let mut inner = gen.take_lets();
    inner.push(Stmt::Store(0, cx.index(&out.shape, &at), v));
    cx.nest(&out.shape, &vars, inner)
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
    let value = gen.value(cx, x, &x_at);
    let mut step = gen.take_lets();
    let (init, f) = match (op, ty(xt.dtype)) {
        (ReduceOp::Sum, Ty::F32) => (Expr::F32(0.0), Bin::Add),
        (ReduceOp::Sum, _) => (Expr::Int(0), Bin::Add),
        (ReduceOp::Max, Ty::F32) => (Expr::F32(f32::NEG_INFINITY), Bin::Max),
        (ReduceOp::Max, _) => (Expr::Int(i64::MIN), Bin::Max),
    };
    step.push(Stmt::Set(
        acc,
        Expr::Bin(f, Box::new(Expr::Var(acc)), Box::new(value)),
    ));
    let red_shape: Vec<_> = axes.iter().map(|&a| xt.shape[a].clone()).collect();
    let mut inner = vec![Stmt::Set(acc, init)];
    inner.extend(cx.serial_nest(&red_shape, &red_vars, step));
    gen.bind(anchor, Expr::Var(acc));
    let at = exprs(&vars);
    let v = gen.value(cx, r.output(), &at);
    inner.extend(gen.take_lets());
    inner.push(Stmt::Store(0, cx.index(&out.shape, &at), v));
    cx.nest(&out.shape, &vars, inner)
}
