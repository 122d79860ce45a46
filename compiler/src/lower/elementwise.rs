//! Elementwise templates: unary, binary, select, cast and the generators (const, iota, size).
//! One loop nest over the output; each operand is read at its broadcast index.

use archc_kernels::ir::{Bin, Expr, Ieee32, Stmt, Ty, Un};
use archc_runtime::DType;

use super::index::{exprs, Ctx};
use super::{ty, Template};
use crate::graph::{BinaryOp, Op, TensorType, UnaryOp};

/// The Kernel IR function for a graph unary op (None for `stop_grad`, the identity).
pub fn un(u: UnaryOp) -> Option<Un> {
    Some(match u {
        UnaryOp::Neg => Un::Neg,
        UnaryOp::Exp => Un::Exp,
        UnaryOp::Log => Un::Log,
        UnaryOp::Sqrt => Un::Sqrt,
        UnaryOp::Rsqrt => Un::Rsqrt,
        UnaryOp::Tanh => Un::Tanh,
        UnaryOp::Erf => Un::Erf,
        UnaryOp::Sin => Un::Sin,
        UnaryOp::Cos => Un::Cos,
        UnaryOp::Abs => Un::Abs,
        UnaryOp::Not => Un::Not,
        UnaryOp::StopGrad => return None,
    })
}

/// The Kernel IR operator for a graph binary op on operands of dtype `d`.
pub fn bin(b: BinaryOp, d: DType) -> Bin {
    match b {
        BinaryOp::Add => Bin::Add,
        BinaryOp::Sub => Bin::Sub,
        BinaryOp::Mul => Bin::Mul,
        BinaryOp::Div if d.is_float() => Bin::Div,
        BinaryOp::Div => Bin::DivEuclid,
        BinaryOp::Rem => Bin::RemEuclid,
        BinaryOp::Pow => Bin::Pow,
        BinaryOp::Max => Bin::Max,
        BinaryOp::Min => Bin::Min,
        BinaryOp::Eq => Bin::Eq,
        BinaryOp::Ne => Bin::Ne,
        BinaryOp::Lt => Bin::Lt,
        BinaryOp::Le => Bin::Le,
        BinaryOp::Gt => Bin::Gt,
        BinaryOp::Ge => Bin::Ge,
        BinaryOp::And => Bin::And,
        BinaryOp::Or => Bin::Or,
    }
}

/// A constant of a dtype.
pub fn constant(v: f64, d: DType) -> Expr {
    match ty(d) {
        Ty::F32 | Ty::F32xN(_) => Expr::F32(Ieee32::new(v as f32)),
        Ty::I64 => Expr::Int(v as i64),
        Ty::Bool => Expr::Bool(v != 0.0),
    }
}

/// The elementwise kernel body for `op`, or None if `op` is not elementwise.
pub fn lower(cx: &mut Ctx, op: &Op, out: &TensorType, ins: &[&TensorType]) -> Option<Template> {
    let vars = cx.vars(out.rank());
    // Operand i is buffer i + 1 (the output is buffer 0).
    let load =
        |cx: &Ctx, i: usize| Expr::Load(i + 1, Box::new(cx.broadcast_index(&ins[i].shape, &vars)));
    let value = match op {
        Op::Const(v) => constant(v.value(), out.dtype),
        Op::Iota => Expr::Cast(ty(out.dtype), Box::new(Expr::Var(vars[0]))),
        Op::Size(d) => Expr::Cast(ty(out.dtype), Box::new(cx.dim(d))),
        Op::Unary(u) => match un(*u) {
            Some(u) => Expr::Un(u, Box::new(load(cx, 0))),
            None => load(cx, 0),
        },
        Op::Binary(b) => Expr::Bin(
            bin(*b, ins[0].dtype),
            Box::new(load(cx, 0)),
            Box::new(load(cx, 1)),
        ),
        Op::Select => Expr::Select(
            Box::new(load(cx, 0)),
            Box::new(load(cx, 1)),
            Box::new(load(cx, 2)),
        ),
        Op::Cast => Expr::Cast(ty(out.dtype), Box::new(load(cx, 0))),
        _ => return None,
    };
    let index = cx.index(&out.shape, &exprs(&vars));
    let body = cx.nest(&out.shape, &vars, vec![Stmt::Store(0, index, value)]);
    Some(Template::new(body, vec![]))
}
