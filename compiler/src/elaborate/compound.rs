//! Built-ins added after the first set (issue 9): `flip`, and the ones elaboration spells with
//! other primitive ops (`argmax`/`argmin`, `conv2d`, `fft`/`ifft`), with the small node
//! builders they share. Spelling them with primitives means every backend, the fusion passes
//! and the interpreter agree on them without new kernel templates.

use archc_runtime::DType;
use petgraph::graph::NodeIndex;

use crate::graph::{BinaryOp, Dim, Ieee64, Op, TensorType};
use crate::syntax::{Diagnostic, Span};

use super::args::CallArgs;
use super::expr::axis;
use super::value::Value;
use super::Elab;

impl Elab<'_> {
    /// Dispatches the built-ins of this file; other names go on to the structure built-ins.
    pub(super) fn compound(
        &mut self,
        name: &'static str,
        ca: CallArgs,
        scoped: bool,
    ) -> Result<Value, Diagnostic> {
        match name {
            "flip" => {
                let mut b = ca.bind(&["x", "axis"])?;
                let (x, xs) = b.req("x")?;
                let x = self.expect_tensor(&x, xs, "the input of `flip`")?;
                let k = self.req_int(&mut b, name, "axis")?;
                let a = axis(k.0, self.graph.ty(x).rank(), k.1)?;
                Ok(Value::Tensor(self.node(
                    Op::Flip { axis: a },
                    None,
                    &[x],
                    b.span(),
                )?))
            }
            "argmax" | "argmin" => self.arg_reduce(name, ca),
            "conv2d" => self.conv2d(ca),
            "fft" | "ifft" => self.fft(name, ca),
            _ => self.structure(name, ca, scoped),
        }
    }

    /// A node of inferred type.
    pub(super) fn op(
        &mut self,
        op: Op,
        operands: &[NodeIndex],
        span: Span,
    ) -> Result<NodeIndex, Diagnostic> {
        self.node(op, None, operands, span)
    }

    /// `a op b` with broadcasting.
    pub(super) fn bin(
        &mut self,
        op: BinaryOp,
        a: NodeIndex,
        b: NodeIndex,
        span: Span,
    ) -> Result<NodeIndex, Diagnostic> {
        self.node(Op::Binary(op), None, &[a, b], span)
    }

    /// A scalar constant.
    pub(super) fn scalar(
        &mut self,
        v: f64,
        dtype: DType,
        span: Span,
    ) -> Result<NodeIndex, Diagnostic> {
        self.node(
            Op::Const(Ieee64::new(v)),
            Some(TensorType::new(dtype, vec![])),
            &[],
            span,
        )
    }

    /// `x` with a new shape of the same element count.
    pub(super) fn reshaped(
        &mut self,
        x: NodeIndex,
        shape: Vec<Dim>,
        span: Span,
    ) -> Result<NodeIndex, Diagnostic> {
        let ty = TensorType::new(self.graph.ty(x).dtype, shape);
        self.node(Op::Reshape, Some(ty), &[x], span)
    }

    /// `x` converted to `dtype`.
    pub(super) fn cast_to(
        &mut self,
        x: NodeIndex,
        dtype: DType,
        span: Span,
    ) -> Result<NodeIndex, Diagnostic> {
        let ty = TensorType::new(dtype, self.graph.ty(x).shape.clone());
        self.node(Op::Cast, Some(ty), &[x], span)
    }

    /// `[0, 1, …, n−1]` as `dtype`.
    pub(super) fn iota_of(
        &mut self,
        n: Dim,
        dtype: DType,
        span: Span,
    ) -> Result<NodeIndex, Diagnostic> {
        self.node(Op::Iota, Some(TensorType::new(dtype, vec![n])), &[], span)
    }
}
