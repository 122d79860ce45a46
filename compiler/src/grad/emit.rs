//! Building the nodes of a gradient: each op's type is inferred from its operands (the same
//! inference elaboration uses), so a rule that builds an ill-typed node is an error naming the
//! op, not a malformed graph.

use archc_runtime::{DType, Dim};

use super::GradError;
use crate::graph::{infer, BinaryOp, Graph, Ieee64, NodeIndex, Op, ReduceOp, TensorType, UnaryOp};

/// Adds nodes to the gradient graph under the scope and source location of the forward node
/// being differentiated, so `dump --stage grad` shows where each backward node comes from.
pub(super) struct Emit<'g> {
    pub(super) g: &'g mut Graph,
    scope: String,
    at: String,
}

impl<'g> Emit<'g> {
    pub(super) fn new(g: &'g mut Graph) -> Emit<'g> {
        Emit {
            g,
            scope: String::new(),
            at: String::new(),
        }
    }

    /// New nodes belong to the forward node `n` from here on.
    pub(super) fn at_node(&mut self, n: NodeIndex) {
        self.scope = self.g.dag[n].scope.clone();
        self.at = self.g.dag[n].at.clone();
    }

    pub(super) fn ty(&self, n: NodeIndex) -> TensorType {
        self.g.ty(n).clone()
    }

    fn shape(&self, n: NodeIndex) -> Vec<Dim> {
        self.g.ty(n).shape.clone()
    }

    /// A node of a given type (ops whose type is not inferred: constants, reshapes, casts).
    pub(super) fn typed(&mut self, op: Op, ty: TensorType, xs: &[NodeIndex]) -> NodeIndex {
        let n = self.g.add(op, ty, &self.scope, xs);
        self.g.dag[n].at = self.at.clone();
        n
    }

    /// A node whose type is inferred from its operands.
    pub(super) fn op(&mut self, op: Op, xs: &[NodeIndex]) -> Result<NodeIndex, GradError> {
        let tys: Vec<TensorType> = xs.iter().map(|&x| self.ty(x)).collect();
        let refs: Vec<&TensorType> = tys.iter().collect();
        let ty = infer(&op, &refs, None).map_err(|e| GradError::Internal {
            op: op.to_string(),
            why: format!("{e:?}"),
        })?;
        Ok(self.typed(op, ty, xs))
    }

    /// The constant `v` as a scalar of `dtype` (it broadcasts).
    pub(super) fn scalar(&mut self, v: f64, dtype: DType) -> NodeIndex {
        self.typed(
            Op::Const(Ieee64::new(v)),
            TensorType::new(dtype, vec![]),
            &[],
        )
    }

    /// Zeros of a type.
    pub(super) fn zeros(&mut self, ty: TensorType) -> NodeIndex {
        self.typed(Op::Const(Ieee64::new(0.0)), ty, &[])
    }

    pub(super) fn unary(&mut self, u: UnaryOp, x: NodeIndex) -> Result<NodeIndex, GradError> {
        self.op(Op::Unary(u), &[x])
    }

    pub(super) fn binary(
        &mut self,
        b: BinaryOp,
        x: NodeIndex,
        y: NodeIndex,
    ) -> Result<NodeIndex, GradError> {
        self.op(Op::Binary(b), &[x, y])
    }

    pub(super) fn add(&mut self, x: NodeIndex, y: NodeIndex) -> Result<NodeIndex, GradError> {
        self.binary(BinaryOp::Add, x, y)
    }

    pub(super) fn mul(&mut self, x: NodeIndex, y: NodeIndex) -> Result<NodeIndex, GradError> {
        self.binary(BinaryOp::Mul, x, y)
    }

    pub(super) fn div(&mut self, x: NodeIndex, y: NodeIndex) -> Result<NodeIndex, GradError> {
        self.binary(BinaryOp::Div, x, y)
    }

    /// `x · v` for a constant `v`.
    pub(super) fn scale(&mut self, x: NodeIndex, v: f64) -> Result<NodeIndex, GradError> {
        let c = self.scalar(v, self.g.ty(x).dtype);
        self.mul(x, c)
    }

    /// `where(c, a, b)` of two constants: a float mask of `c`'s shape.
    pub(super) fn choose(
        &mut self,
        c: NodeIndex,
        a: f64,
        b: f64,
        dtype: DType,
    ) -> Result<NodeIndex, GradError> {
        let (a, b) = (self.scalar(a, dtype), self.scalar(b, dtype));
        self.op(Op::Select, &[c, a, b])
    }

    pub(super) fn reshape(&mut self, x: NodeIndex, shape: Vec<Dim>) -> NodeIndex {
        if self.shape(x) == shape {
            return x;
        }
        let ty = TensorType::new(self.g.ty(x).dtype, shape);
        self.typed(Op::Reshape, ty, &[x])
    }

    pub(super) fn cast(&mut self, x: NodeIndex, dtype: DType) -> NodeIndex {
        if self.g.ty(x).dtype == dtype {
            return x;
        }
        let ty = TensorType::new(dtype, self.shape(x));
        self.typed(Op::Cast, ty, &[x])
    }

    pub(super) fn permute(
        &mut self,
        x: NodeIndex,
        perm: Vec<usize>,
    ) -> Result<NodeIndex, GradError> {
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(x);
        }
        self.op(Op::Permute(perm), &[x])
    }

    /// The last two axes swapped.
    /// `x` [d0, …, dk, m, n] as a matrix [d0·…·dk·m, n].
    pub(super) fn flatten_leading(&mut self, x: NodeIndex) -> Result<NodeIndex, GradError> {
        let shape = self.shape(x);
        let (rows, last) = shape.split_at(shape.len() - 1);
        let rows = Dim::product(rows).ok_or(GradError::Overflow)?;
        Ok(self.reshape(x, vec![rows, last[0].clone()]))
    }

    pub(super) fn transpose(&mut self, x: NodeIndex) -> Result<NodeIndex, GradError> {
        let r = self.g.ty(x).rank();
        let mut perm: Vec<usize> = (0..r).collect();
        perm.swap(r - 2, r - 1);
        self.permute(x, perm)
    }

    pub(super) fn sum(
        &mut self,
        x: NodeIndex,
        axes: Vec<usize>,
        keepdim: bool,
    ) -> Result<NodeIndex, GradError> {
        if axes.is_empty() {
            return Ok(x);
        }
        let op = Op::Reduce {
            op: ReduceOp::Sum,
            axes,
            keepdim,
        };
        self.op(op, &[x])
    }

    pub(super) fn slice(
        &mut self,
        x: NodeIndex,
        axis: usize,
        start: Dim,
        end: Dim,
    ) -> Result<NodeIndex, GradError> {
        if start.as_const() == Some(0) && end == self.shape(x)[axis] {
            return Ok(x);
        }
        self.op(Op::Slice { axis, start, end }, &[x])
    }

    pub(super) fn flip(&mut self, x: NodeIndex, axis: usize) -> Result<NodeIndex, GradError> {
        self.op(Op::Flip { axis }, &[x])
    }

    /// `x` with zeros added before and after along `axis` (`before`, `after` elements).
    pub(super) fn pad_zeros(
        &mut self,
        x: NodeIndex,
        axis: usize,
        before: Dim,
        after: Dim,
    ) -> Result<NodeIndex, GradError> {
        if let (Some(b), Some(a)) = (before.as_const(), after.as_const()) {
            if b == 0 && a == 0 {
                return Ok(x);
            }
            let op = Op::Pad {
                axis,
                before: b,
                after: a,
                value: Ieee64::new(0.0),
            };
            return self.op(op, &[x]);
        }
        // Symbolic amounts (a slice from `past`): concatenate zero blocks.
        let mut parts = Vec::new();
        for (size, middle) in [(before, false), (Dim::constant(0), true), (after, false)] {
            if middle {
                parts.push(x);
            } else if size.as_const() != Some(0) {
                let mut ty = self.ty(x);
                ty.shape[axis] = size;
                parts.push(self.zeros(ty));
            }
        }
        self.op(Op::Concat { axis }, &parts)
    }

    /// `x` broadcast to `shape` (a no-op when it has it): `x + 0`.
    pub(super) fn expand(&mut self, x: NodeIndex, shape: &[Dim]) -> Result<NodeIndex, GradError> {
        if self.shape(x) == shape {
            return Ok(x);
        }
        let zeros = self.zeros(TensorType::new(self.g.ty(x).dtype, shape.to_vec()));
        self.add(x, zeros)
    }

    /// The gradient `g` of a broadcast result, summed back to an operand of `shape`: over the
    /// leading axes the operand lacks and the axes where it has size 1.
    pub(super) fn unbroadcast(
        &mut self,
        g: NodeIndex,
        shape: &[Dim],
    ) -> Result<NodeIndex, GradError> {
        let gs = self.shape(g);
        if gs == shape {
            return Ok(g);
        }
        let lead = gs.len().saturating_sub(shape.len());
        let g = self.sum(g, (0..lead).collect(), false)?;
        let one = Dim::constant(1);
        let gs = self.shape(g);
        let ones: Vec<usize> = (0..shape.len())
            .filter(|&i| shape[i] == one && gs[i] != one)
            .collect();
        let g = self.sum(g, ones, true)?;
        Ok(self.reshape(g, shape.to_vec()))
    }
}
