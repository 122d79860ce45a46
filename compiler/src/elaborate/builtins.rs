//! Built-in functions: the primitive ops, and a few compile-time helpers on numbers and lists.

use archc_runtime::DType;
use petgraph::graph::NodeIndex;

use crate::graph::{BinaryOp, Dim, Ieee64, Op, ReduceOp, TensorType, UnaryOp};
use crate::syntax::{Diagnostic, Span};

use super::args::CallArgs;
use super::expr::axis;
use super::value::Value;
use super::Elab;

/// Every built-in name. The prelude builds everything else from these.
#[rustfmt::skip]
pub const BUILTINS: &[&str] = &[
    // elementwise
    "exp", "log", "sqrt", "rsqrt", "tanh", "erf", "sin", "cos", "abs", "stop_grad",
    "maximum", "minimum", "pow", "where",
    // reductions and contraction
    "sum", "max", "matmul", "svdvals",
    // layout
    "reshape", "unsqueeze", "permute", "transpose", "slice", "flip", "concat", "pad", "gather",
    "cast",
    // index reductions
    "argmax", "argmin",
    // convolution and spectra
    "conv2d", "fft", "ifft",
    // generators
    "iota", "full",
    // recurrence
    "scan",
    // compile time
    "ceil", "floor", "len", "range", "assert",
    // structure
    "stack", "every", "at", "ema", "bind",
];

fn unary_op(name: &str) -> Option<UnaryOp> {
    Some(match name {
        "exp" => UnaryOp::Exp,
        "log" => UnaryOp::Log,
        "sqrt" => UnaryOp::Sqrt,
        "rsqrt" => UnaryOp::Rsqrt,
        "tanh" => UnaryOp::Tanh,
        "erf" => UnaryOp::Erf,
        "sin" => UnaryOp::Sin,
        "cos" => UnaryOp::Cos,
        "abs" => UnaryOp::Abs,
        "stop_grad" => UnaryOp::StopGrad,
        _ => return None,
    })
}

fn number_unary(op: UnaryOp, x: f64) -> Option<f64> {
    Some(match op {
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Rsqrt => 1.0 / x.sqrt(),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Sin => x.sin(),
        UnaryOp::Cos => x.cos(),
        UnaryOp::Abs => x.abs(),
        _ => return None,
    })
}

pub(super) fn kind_error(
    callee: &str,
    arg: &str,
    want: &str,
    got: &Value,
    span: Span,
) -> Diagnostic {
    let d = Diagnostic::new(
        "E0111",
        span,
        format!(
            "argument `{arg}` of `{callee}` must be {want}, found {}",
            got.kind()
        ),
    )
    .label(format!("expected {want}"));
    match got {
        Value::Float(_) if want.contains("integer") || want.contains("dim") => {
            d.note("round it to an integer with `floor(...)` or `ceil(...)`")
        }
        _ => d,
    }
}

impl Elab<'_> {
    pub(super) fn builtin(
        &mut self,
        name: &'static str,
        ca: CallArgs,
        scoped: bool,
    ) -> Result<Value, Diagnostic> {
        if let Some(u) = unary_op(name) {
            let mut b = ca.bind(&["x"])?;
            let (x, xs) = b.req("x")?;
            return match x {
                Value::Tensor(n) => Ok(Value::Tensor(self.node(
                    Op::Unary(u),
                    None,
                    &[n],
                    b.span(),
                )?)),
                Value::Int(i) if u == UnaryOp::Abs => Ok(Value::Int(i.saturating_abs())),
                Value::Int(_) | Value::Float(_) if u == UnaryOp::StopGrad => Ok(x),
                Value::Int(_) | Value::Float(_) => match number_unary(u, num(&x)) {
                    Some(v) => Ok(Value::Float(v)),
                    None => Err(kind_error(
                        name,
                        "x",
                        "a tensor (it has no compile-time form)",
                        &x,
                        xs,
                    )),
                },
                other => Err(kind_error(name, "x", "a tensor or a number", &other, xs)),
            };
        }
        match name {
            "maximum" | "minimum" | "pow" => {
                let mut b = ca.bind(&["a", "b"])?;
                let (a, as_) = b.req("a")?;
                let (c, cs) = b.req("b")?;
                let op = match name {
                    "maximum" => BinaryOp::Max,
                    "minimum" => BinaryOp::Min,
                    _ => BinaryOp::Pow,
                };
                if let (Value::Int(x), Value::Int(y), false) = (&a, &c, name == "pow") {
                    return Ok(Value::Int(if name == "maximum" {
                        *x.max(y)
                    } else {
                        *x.min(y)
                    }));
                }
                if !matches!(a, Value::Tensor(_)) && !matches!(c, Value::Tensor(_)) {
                    let (x, y) = (num(&a), num(&c));
                    if x.is_nan() || y.is_nan() {
                        return Err(kind_error(name, "a", "a tensor or a number", &a, as_));
                    }
                    return Ok(Value::Float(match op {
                        BinaryOp::Max => x.max(y),
                        BinaryOp::Min => x.min(y),
                        _ => x.powf(y),
                    }));
                }
                let like = self
                    .dtype_of(&a)
                    .or(self.dtype_of(&c))
                    .unwrap_or(DType::F32);
                let x = self.tensor_operand(&a, like, as_)?;
                let y = self.tensor_operand(&c, like, cs)?;
                Ok(Value::Tensor(self.node(
                    Op::Binary(op),
                    None,
                    &[x, y],
                    b.span(),
                )?))
            }
            "where" => {
                let mut b = ca.bind(&["cond", "a", "b"])?;
                let (c, cs) = b.req("cond")?;
                let (x, xs) = b.req("a")?;
                let (y, ys) = b.req("b")?;
                let c = self.expect_tensor(&c, cs, "the condition of `where`")?;
                let like = self
                    .dtype_of(&x)
                    .or(self.dtype_of(&y))
                    .unwrap_or(DType::F32);
                let x = self.tensor_operand(&x, like, xs)?;
                let y = self.tensor_operand(&y, like, ys)?;
                Ok(Value::Tensor(self.node(
                    Op::Select,
                    None,
                    &[c, x, y],
                    b.span(),
                )?))
            }
            "sum" | "max" => {
                let mut b = ca.bind(&["x", "axis", "keepdim"])?;
                let (x, xs) = b.req("x")?;
                let x = self.expect_tensor(&x, xs, &format!("the input of `{name}`"))?;
                let rank = self.graph.ty(x).rank();
                let (a, asp) = b.req("axis")?;
                let mut axes = match a {
                    Value::Int(k) => vec![axis(k, rank, asp)?],
                    Value::List(items) => items
                        .iter()
                        .map(|i| match i {
                            Value::Int(k) => axis(*k, rank, asp),
                            o => Err(kind_error(name, "axis", "an integer", o, asp)),
                        })
                        .collect::<Result<_, _>>()?,
                    o => return Err(kind_error(name, "axis", "an integer or a list", &o, asp)),
                };
                axes.sort();
                axes.dedup();
                let keepdim = self.opt_bool(&mut b, name, "keepdim", false)?;
                let op = if name == "sum" {
                    ReduceOp::Sum
                } else {
                    ReduceOp::Max
                };
                Ok(Value::Tensor(self.node(
                    Op::Reduce { op, axes, keepdim },
                    None,
                    &[x],
                    b.span(),
                )?))
            }
            "matmul" => {
                let mut b = ca.bind(&["a", "b"])?;
                let (x, xs) = b.req("a")?;
                let (y, ys) = b.req("b")?;
                let x = self.expect_tensor(&x, xs, "the left operand of `matmul`")?;
                let y = self.expect_tensor(&y, ys, "the right operand of `matmul`")?;
                Ok(Value::Tensor(self.node(
                    Op::MatMul,
                    None,
                    &[x, y],
                    b.span(),
                )?))
            }
            "svdvals" => {
                let mut b = ca.bind(&["x"])?;
                let (x, xs) = b.req("x")?;
                let x = self.expect_tensor(&x, xs, "the input of `svdvals`")?;
                Ok(Value::Tensor(self.node(
                    Op::SvdVals,
                    None,
                    &[x],
                    b.span(),
                )?))
            }
            "reshape" => {
                let mut b = ca.bind(&["x", "shape"])?;
                let (x, xs) = b.req("x")?;
                let x = self.expect_tensor(&x, xs, "the input of `reshape`")?;
                let (s, ss) = b.req("shape")?;
                let shape = self.reshape_target(x, s, ss)?;
                let ty = TensorType::new(self.graph.ty(x).dtype, shape);
                Ok(Value::Tensor(self.node(
                    Op::Reshape,
                    Some(ty),
                    &[x],
                    b.span(),
                )?))
            }
            "unsqueeze" => {
                let mut b = ca.bind(&["x", "axis"])?;
                let (x, xs) = b.req("x")?;
                let x = self.expect_tensor(&x, xs, "the input of `unsqueeze`")?;
                let mut ty = self.graph.ty(x).clone();
                let k = self.req_int(&mut b, name, "axis")?;
                let a = axis(k.0, ty.rank() + 1, k.1)?;
                ty.shape.insert(a, Dim::constant(1));
                Ok(Value::Tensor(self.node(
                    Op::Reshape,
                    Some(ty),
                    &[x],
                    b.span(),
                )?))
            }
            "permute" => {
                let mut b = ca.bind(&["x", "perm"])?;
                let (x, xs) = b.req("x")?;
                let x = self.expect_tensor(&x, xs, "the input of `permute`")?;
                let rank = self.graph.ty(x).rank();
                let (p, ps) = b.req("perm")?;
                let Value::List(items) = p else {
                    return Err(kind_error(name, "perm", "a list of axes", &p, ps));
                };
                let perm = items
                    .iter()
                    .map(|i| match i {
                        Value::Int(k) => axis(*k, rank, ps),
                        o => Err(kind_error(name, "perm", "a list of axes", o, ps)),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Value::Tensor(self.node(
                    Op::Permute(perm),
                    None,
                    &[x],
                    b.span(),
                )?))
            }
            "transpose" => {
                let mut b = ca.bind(&["x", "a", "b"])?;
                let (x, xs) = b.req("x")?;
                let x = self.expect_tensor(&x, xs, "the input of `transpose`")?;
                let rank = self.graph.ty(x).rank();
                let i = self.opt_int(&mut b, name, "a", -2)?;
                let j = self.opt_int(&mut b, name, "b", -1)?;
                let (i, j) = (axis(i.0, rank, i.1)?, axis(j.0, rank, j.1)?);
                let mut perm: Vec<usize> = (0..rank).collect();
                perm.swap(i, j);
                Ok(Value::Tensor(self.node(
                    Op::Permute(perm),
                    None,
                    &[x],
                    b.span(),
                )?))
            }
            "slice" => {
                let mut b = ca.bind(&["x", "axis", "start", "end"])?;
                let (x, xs) = b.req("x")?;
                let x = self.expect_tensor(&x, xs, "the input of `slice`")?;
                let ty = self.graph.ty(x).clone();
                let k = self.req_int(&mut b, name, "axis")?;
                let a = axis(k.0, ty.rank(), k.1)?;
                let start = self.req_dim(&mut b, name, "start")?;
                let end = match b.opt("end") {
                    Some((v, vs)) => v
                        .as_dim()
                        .ok_or_else(|| kind_error(name, "end", "a dim", &v, vs))?,
                    None => ty.shape[a].clone(),
                };
                Ok(Value::Tensor(self.node(
                    Op::Slice {
                        axis: a,
                        start,
                        end,
                    },
                    None,
                    &[x],
                    b.span(),
                )?))
            }
            "concat" => {
                let mut b = ca.bind(&["xs", "axis"])?;
                let (l, ls) = b.req("xs")?;
                let Value::List(items) = l else {
                    return Err(kind_error(name, "xs", "a list of tensors", &l, ls));
                };
                if items.is_empty() {
                    return Err(kind_error(
                        name,
                        "xs",
                        "a non-empty list of tensors",
                        &Value::List(items),
                        ls,
                    ));
                }
                let nodes = items
                    .iter()
                    .map(|i| self.expect_tensor(i, ls, "each item of `concat`"))
                    .collect::<Result<Vec<NodeIndex>, _>>()?;
                let k = self.req_int(&mut b, name, "axis")?;
                let a = axis(k.0, self.graph.ty(nodes[0]).rank(), k.1)?;
                Ok(Value::Tensor(self.node(
                    Op::Concat { axis: a },
                    None,
                    &nodes,
                    b.span(),
                )?))
            }
            "pad" => {
                let mut b = ca.bind(&["x", "axis", "before", "after", "value"])?;
                let (x, xs) = b.req("x")?;
                let x = self.expect_tensor(&x, xs, "the input of `pad`")?;
                let k = self.req_int(&mut b, name, "axis")?;
                let a = axis(k.0, self.graph.ty(x).rank(), k.1)?;
                let before = self.opt_int(&mut b, name, "before", 0)?;
                let after = self.opt_int(&mut b, name, "after", 0)?;
                for (v, s) in [before, after] {
                    if v < 0 {
                        return Err(Diagnostic::new(
                            "E0205",
                            s,
                            format!("padding must be ≥ 0, found {v}"),
                        ));
                    }
                }
                let value = match b.opt("value") {
                    Some((v @ (Value::Int(_) | Value::Float(_)), _)) => num(&v),
                    Some((v, vs)) => return Err(kind_error(name, "value", "a number", &v, vs)),
                    None => 0.0,
                };
                let op = Op::Pad {
                    axis: a,
                    before: before.0,
                    after: after.0,
                    value: Ieee64::new(value),
                };
                Ok(Value::Tensor(self.node(op, None, &[x], b.span())?))
            }
            "gather" => {
                let mut b = ca.bind(&["x", "index", "axis"])?;
                let (x, xs) = b.req("x")?;
                let x = self.expect_tensor(&x, xs, "the input of `gather`")?;
                let (i, is) = b.req("index")?;
                let i = self.expect_tensor(&i, is, "the index of `gather`")?;
                let k = self.opt_int(&mut b, name, "axis", 0)?;
                let a = axis(k.0, self.graph.ty(x).rank(), k.1)?;
                Ok(Value::Tensor(self.node(
                    Op::Gather { axis: a },
                    None,
                    &[x, i],
                    b.span(),
                )?))
            }
            "cast" => {
                let mut b = ca.bind(&["x", "dtype"])?;
                let (x, xs) = b.req("x")?;
                let x = self.expect_tensor(&x, xs, "the input of `cast`")?;
                let d = self.req_dtype(&mut b, name)?;
                let ty = TensorType::new(d, self.graph.ty(x).shape.clone());
                Ok(Value::Tensor(self.node(
                    Op::Cast,
                    Some(ty),
                    &[x],
                    b.span(),
                )?))
            }
            "iota" => {
                let mut b = ca.bind(&["n", "dtype"])?;
                let n = self.req_dim(&mut b, name, "n")?;
                let d = match b.opt("dtype") {
                    Some((Value::DType(d), _)) => d,
                    Some((o, os)) => return Err(kind_error(name, "dtype", "a dtype", &o, os)),
                    None => DType::I32,
                };
                let ty = TensorType::new(d, vec![n]);
                Ok(Value::Tensor(self.node(
                    Op::Iota,
                    Some(ty),
                    &[],
                    b.span(),
                )?))
            }
            "full" => {
                let mut b = ca.bind(&["shape", "value", "dtype"])?;
                let (s, ss) = b.req("shape")?;
                let Value::List(items) = s else {
                    return Err(kind_error(name, "shape", "a list of dims", &s, ss));
                };
                let shape = items
                    .iter()
                    .map(|d| {
                        d.as_dim()
                            .ok_or_else(|| kind_error(name, "shape", "a list of dims", d, ss))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let (v, vs) = b.req("value")?;
                let dtype = match b.opt("dtype") {
                    Some((Value::DType(d), _)) => d,
                    Some((o, os)) => return Err(kind_error(name, "dtype", "a dtype", &o, os)),
                    None => DType::F32,
                };
                let value = match v {
                    Value::Int(_) | Value::Float(_) => num(&v),
                    Value::Bool(x) => f64::from(u8::from(x)),
                    o => return Err(kind_error(name, "value", "a number", &o, vs)),
                };
                Ok(Value::Tensor(self.node(
                    Op::Const(Ieee64::new(value)),
                    Some(TensorType::new(dtype, shape)),
                    &[],
                    b.span(),
                )?))
            }
            "scan" => {
                let mut b = ca.bind(&["a", "b", "axis"])?;
                let (x, xs) = b.req("a")?;
                let x = self.expect_tensor(&x, xs, "the decay `a` of `scan`")?;
                let (y, ys) = b.req("b")?;
                let y = self.expect_tensor(&y, ys, "the input `b` of `scan`")?;
                let k = self.req_int(&mut b, name, "axis")?;
                let a = axis(k.0, self.graph.ty(y).rank(), k.1)?;
                Ok(Value::Tensor(self.node(
                    Op::Scan { axis: a },
                    None,
                    &[x, y],
                    b.span(),
                )?))
            }
            "ceil" | "floor" => {
                let mut b = ca.bind(&["x"])?;
                let (x, xs) = b.req("x")?;
                let v = match x {
                    Value::Int(i) => return Ok(Value::Int(i)),
                    Value::Float(f) if name == "ceil" => f.ceil(),
                    Value::Float(f) => f.floor(),
                    o => return Err(kind_error(name, "x", "a number", &o, xs)),
                };
                if !(i64::MIN as f64..=i64::MAX as f64).contains(&v) {
                    return Err(Diagnostic::new(
                        "E0401",
                        xs,
                        "value does not fit in an integer",
                    ));
                }
                Ok(Value::Int(v as i64))
            }
            "len" => {
                let mut b = ca.bind(&["x"])?;
                match b.req("x")? {
                    (Value::List(l), _) => Ok(Value::Int(l.len() as i64)),
                    (Value::Str(s), _) => Ok(Value::Int(s.chars().count() as i64)),
                    (o, os) => Err(kind_error(name, "x", "a list or a string", &o, os)),
                }
            }
            "assert" => {
                let span = ca.span;
                let mut b = ca.bind(&["cond", "message"])?;
                let (c, cs) = b.req("cond")?;
                let message = match b.opt("message") {
                    Some((Value::Str(s), _)) => s,
                    Some((o, os)) => return Err(kind_error(name, "message", "a string", &o, os)),
                    None => "assertion failed".to_string(),
                };
                match c {
                    Value::Bool(true) => Ok(Value::None),
                    Value::Bool(false) => {
                        Err(Diagnostic::new("E0405", span, message).label("this check failed"))
                    }
                    o => Err(kind_error(name, "cond", "a compile-time bool", &o, cs)),
                }
            }
            "range" => {
                let mut b = ca.bind(&["n"])?;
                let (n, ns) = self.req_int(&mut b, name, "n")?;
                if !(0..=1 << 16).contains(&n) {
                    return Err(Diagnostic::new(
                        "E0205",
                        ns,
                        format!("range({n}) is out of bounds"),
                    ));
                }
                Ok(Value::List((0..n).map(Value::Int).collect()))
            }
            _ => self.compound(name, ca, scoped),
        }
    }

    fn dtype_of(&self, v: &Value) -> Option<DType> {
        match v {
            Value::Tensor(n) => Some(self.graph.ty(*n).dtype),
            _ => None,
        }
    }

    fn reshape_target(&self, x: NodeIndex, s: Value, ss: Span) -> Result<Vec<Dim>, Diagnostic> {
        let Value::List(items) = s else {
            return Err(kind_error("reshape", "shape", "a list of dims", &s, ss));
        };
        let mut shape = Vec::new();
        let mut infer_at = None;
        for d in &items {
            match d {
                Value::Int(-1) if infer_at.is_none() => {
                    infer_at = Some(shape.len());
                    shape.push(Dim::constant(1));
                }
                Value::Int(v) if *v <= 0 => {
                    return Err(Diagnostic::new(
                        "E0204",
                        ss,
                        format!("reshape dims must be positive (or one -1), found {v}"),
                    ))
                }
                _ => shape.push(
                    d.as_dim()
                        .ok_or_else(|| kind_error("reshape", "shape", "a list of dims", d, ss))?,
                ),
            }
        }
        if let Some(i) = infer_at {
            let total = Dim::product(&self.graph.ty(x).shape);
            let known = Dim::product(&shape);
            shape[i] = total
                .zip(known)
                .and_then(|(t, k)| t.div_exact(&k))
                .ok_or_else(|| {
                    Diagnostic::new(
                        "E0206",
                        ss,
                        format!(
                            "cannot infer the -1 dim of a reshape of {}",
                            self.graph.ty(x)
                        ),
                    )
                    .label("shape mismatch")
                })?;
        }
        Ok(shape)
    }
}

pub(super) fn num(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        _ => f64::NAN,
    }
}
