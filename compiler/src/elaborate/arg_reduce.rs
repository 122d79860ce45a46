//! `argmax(x, axis, keepdim)` and `argmin`: the i64 position of the largest (smallest) element
//! along an axis, spelled with primitive ops. Ties give the first position, as in NumPy and
//! PyTorch; a NaN counts as the extreme for both (PyTorch's rule), so a row holding a NaN gives
//! the position of its first NaN.

use archc_runtime::DType;
use petgraph::graph::NodeIndex;

use crate::graph::{BinaryOp, Op, ReduceOp, UnaryOp};
use crate::syntax::{Diagnostic, Span};

use super::args::CallArgs;
use super::expr::axis;
use super::value::Value;
use super::Elab;

impl Elab<'_> {
    pub(super) fn arg_reduce(&mut self, name: &str, ca: CallArgs) -> Result<Value, Diagnostic> {
        let mut b = ca.bind(&["x", "axis", "keepdim"])?;
        let span = b.span();
        let (x, xs) = b.req("x")?;
        let x = self.expect_tensor(&x, xs, &format!("the input of `{name}`"))?;
        let ty = self.graph.ty(x).clone();
        if ty.dtype == DType::Bool {
            return Err(Diagnostic::new(
                "E0203",
                xs,
                format!("`{name}` needs a numeric tensor, found bool"),
            )
            .label("dtype mismatch")
            .note("cast it first: `cast(x, i32)`"));
        }
        let k = self.req_int(&mut b, name, "axis")?;
        let a = axis(k.0, ty.rank(), k.1)?;
        let keepdim = self.opt_bool(&mut b, name, "keepdim", false)?;
        // argmin is argmax of an order-reversed copy: −x for floats, and for integers
        // −x − 1 (bitwise not), which reverses the order without overflowing at the minimum.
        let y = match (name, ty.dtype.is_float()) {
            ("argmax", _) => x,
            (_, true) => self.op(Op::Unary(UnaryOp::Neg), &[x], span)?,
            (_, false) => {
                let neg = self.op(Op::Unary(UnaryOp::Neg), &[x], span)?;
                let one = self.scalar(1.0, ty.dtype, span)?;
                self.bin(BinaryOp::Sub, neg, one, span)?
            }
        };
        let top = self.op(
            Op::Reduce {
                op: ReduceOp::Max,
                axes: vec![a],
                keepdim: true,
            },
            &[y],
            span,
        )?;
        let at_top = self.bin(BinaryOp::Eq, y, top, span)?;
        let mut index = self.first_where(at_top, a, keepdim, span)?;
        if ty.dtype.is_float() {
            // The max of a row with a NaN differs by backend (ignored or propagated), so a
            // row's first NaN is found apart and wins when there is one.
            let nan = self.bin(BinaryOp::Ne, y, y, span)?;
            let first_nan = self.first_where(nan, a, keepdim, span)?;
            let n = self.axis_size(x, a, span)?;
            let found = self.bin(BinaryOp::Lt, first_nan, n, span)?;
            index = self.op(Op::Select, &[found, first_nan, index], span)?;
        }
        Ok(Value::Tensor(index))
    }

    /// The first position along `a` where the bool tensor `hit` holds (the axis size where it
    /// never does), as i64: `−max(where(hit, −i, −n))`.
    fn first_where(
        &mut self,
        hit: NodeIndex,
        a: usize,
        keepdim: bool,
        span: Span,
    ) -> Result<NodeIndex, Diagnostic> {
        let shape = self.graph.ty(hit).shape.clone();
        let rank = shape.len();
        let iota = self.iota_of(shape[a].clone(), DType::I64, span)?;
        // The iota runs along axis `a` of a rank-`rank` tensor.
        let mut along = vec![crate::graph::Dim::constant(1); rank];
        along[a] = shape[a].clone();
        let iota = self.reshaped(iota, along, span)?;
        let neg_iota = self.op(Op::Unary(UnaryOp::Neg), &[iota], span)?;
        let n = self.axis_size(hit, a, span)?;
        let neg_n = self.op(Op::Unary(UnaryOp::Neg), &[n], span)?;
        let picked = self.op(Op::Select, &[hit, neg_iota, neg_n], span)?;
        let best = self.op(
            Op::Reduce {
                op: ReduceOp::Max,
                axes: vec![a],
                keepdim,
            },
            &[picked],
            span,
        )?;
        self.op(Op::Unary(UnaryOp::Neg), &[best], span)
    }

    /// The size of axis `a` of `x` as an i64 scalar (read at run time when symbolic).
    fn axis_size(&mut self, x: NodeIndex, a: usize, span: Span) -> Result<NodeIndex, Diagnostic> {
        let d = self.graph.ty(x).shape[a].clone();
        self.tensor_operand(&Value::from_dim(d), DType::I64, span)
    }
}
