//! The primitive ops of the Graph IR. Everything the prelude builds reduces to these.

use std::fmt;

use archc_kernels::Ieee64;
use archc_runtime::DType;

use archc_runtime::Dim;

use super::region::Region;

/// Elementwise unary functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// −x
    Neg,
    /// eˣ
    Exp,
    /// ln x
    Log,
    /// √x
    Sqrt,
    /// 1/√x
    Rsqrt,
    /// tanh x
    Tanh,
    /// The Gauss error function (exact GELU needs it).
    Erf,
    /// sin x
    Sin,
    /// cos x
    Cos,
    /// |x|
    Abs,
    /// Logical not of a bool tensor.
    Not,
    /// Identity that marks where gradients stop (JEPA targets).
    StopGrad,
}

/// Elementwise binary functions, with numpy broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// a + b
    Add,
    /// a − b
    Sub,
    /// a · b
    Mul,
    /// a / b; on integers the Euclidean quotient (floor division for b > 0), by zero 0
    Div,
    /// a mod b, integers only: the Euclidean remainder in `0..|b|`, by zero 0
    Rem,
    /// aᵇ
    Pow,
    /// max(a, b)
    Max,
    /// min(a, b)
    Min,
    /// a == b → bool
    Eq,
    /// a != b → bool
    Ne,
    /// a < b → bool
    Lt,
    /// a <= b → bool
    Le,
    /// a > b → bool
    Gt,
    /// a >= b → bool
    Ge,
    /// logical and of bools
    And,
    /// logical or of bools
    Or,
}

impl BinaryOp {
    /// True when the result is a bool whatever the operand dtype.
    pub fn is_comparison(self) -> bool {
        use BinaryOp::*;
        matches!(self, Eq | Ne | Lt | Le | Gt | Ge)
    }
}

/// Reductions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// Σ
    Sum,
    /// max
    Max,
}

/// A Graph IR operation. The node's type gives the result shape and dtype. Floats are held
/// as bits, so ops are `Eq + Hash` and passes compare them by structure.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// A model input, bound by name at run time.
    Input(String),
    /// A weight, bound by its checkpoint name.
    Param(String),
    /// A constant splatted over the node's shape (a scalar when the shape is `[]`).
    Const(Ieee64),
    /// `[0, 1, …, n−1]` along the node's single axis.
    Iota,
    /// The value of a dim (a symbol bound at run time, like `seq`) as a scalar.
    Size(Dim),
    /// Elementwise unary.
    Unary(UnaryOp),
    /// Elementwise binary with broadcasting.
    Binary(BinaryOp),
    /// `where(cond, a, b)` with broadcasting.
    Select,
    /// Reduction over `axes`.
    Reduce {
        /// Sum or max.
        op: ReduceOp,
        /// Reduced axes, ascending.
        axes: Vec<usize>,
        /// Whether reduced axes stay as size 1.
        keepdim: bool,
    },
    /// `[…, m, k] × […, k, n]` with broadcast batch dims.
    MatMul,
    /// Same elements, the node's shape.
    Reshape,
    /// Axis permutation: output axis i is input axis `perm[i]`.
    Permute(Vec<usize>),
    /// `start..end` along one axis.
    Slice {
        /// The axis.
        axis: usize,
        /// First index.
        start: Dim,
        /// One past the last index.
        end: Dim,
    },
    /// Concatenation along one axis.
    Concat {
        /// The axis.
        axis: usize,
    },
    /// The elements in reverse order along one axis: `out[…, i, …] = x[…, n−1−i, …]`.
    Flip {
        /// The reversed axis.
        axis: usize,
    },
    /// Constant padding along one axis.
    Pad {
        /// The axis.
        axis: usize,
        /// Elements added before.
        before: i64,
        /// Elements added after.
        after: i64,
        /// The fill value.
        value: Ieee64,
    },
    /// Batched take: `out[p, i…, s] = x[p, idx[p, i…], s]` where p are the leading `axis` dims
    /// (broadcast between x and idx), i… the remaining idx dims and s the dims after `axis`.
    Gather {
        /// The axis of `x` that is indexed.
        axis: usize,
    },
    /// Element type conversion to the node's dtype.
    Cast,
    /// The linear recurrence `h[t] = a[t]·h[t−1] + b[t]`, `h[−1] = 0`, along `axis`;
    /// `a` broadcasts to the shape of `b`.
    Scan {
        /// The sequence axis.
        axis: usize,
    },
    /// The singular values of each matrix of `x` [..., m, n] (n a constant), largest first:
    /// `[..., n]`, zeros past rank min(m, n). Not differentiable (a metric, read behind
    /// `stop_grad`).
    SvdVals,
    /// A fused region made by the passes: one kernel, whose meaning is its body graph.
    Fused(Box<Region>),
    /// One layer of a stack: runs layer kind `graph.kinds[i]` on the operands.
    Call(usize),
}

impl fmt::Display for UnaryOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = format!("{self:?}").to_lowercase();
        f.write_str(if s == "stopgrad" { "stop_grad" } else { &s })
    }
}

impl fmt::Display for BinaryOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format!("{self:?}").to_lowercase())
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Input(n) => write!(f, "input \"{n}\""),
            Op::Param(n) => write!(f, "param \"{n}\""),
            Op::Const(v) => write!(f, "const {:?}", v.value()),
            Op::Iota => f.write_str("iota"),
            Op::Size(d) => write!(f, "size({d})"),
            Op::Unary(u) => write!(f, "{u}"),
            Op::Binary(b) => write!(f, "{b}"),
            Op::Select => f.write_str("select"),
            Op::Reduce { op, axes, keepdim } => {
                let name = match op {
                    ReduceOp::Sum => "reduce_sum",
                    ReduceOp::Max => "reduce_max",
                };
                write!(f, "{name}[axes={axes:?}, keepdim={keepdim}]")
            }
            Op::MatMul => f.write_str("matmul"),
            Op::Reshape => f.write_str("reshape"),
            Op::Permute(p) => write!(f, "permute{p:?}"),
            Op::Slice { axis, start, end } => write!(f, "slice[axis={axis}, {start}..{end}]"),
            Op::Concat { axis } => write!(f, "concat[axis={axis}]"),
            Op::Flip { axis } => write!(f, "flip[axis={axis}]"),
            Op::Pad {
                axis,
                before,
                after,
                value,
            } => write!(
                f,
                "pad[axis={axis}, before={before}, after={after}, value={:?}]",
                value.value()
            ),
            Op::Gather { axis } => write!(f, "gather[axis={axis}]"),
            Op::Cast => f.write_str("cast"),
            Op::Scan { axis } => write!(f, "scan[axis={axis}]"),
            Op::SvdVals => f.write_str("svdvals"),
            Op::Fused(r) => write!(f, "{}", r.kind),
            Op::Call(k) => write!(f, "call kind{k}"),
        }
    }
}

/// A value's type: element dtype and symbolic shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    /// Element type.
    pub dtype: DType,
    /// Dims, outermost first.
    pub shape: Vec<Dim>,
}

impl TensorType {
    /// A type from a dtype and shape.
    pub fn new(dtype: DType, shape: Vec<Dim>) -> TensorType {
        TensorType { dtype, shape }
    }

    /// Number of axes.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}
