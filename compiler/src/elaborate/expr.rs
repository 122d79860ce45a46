//! Expressions: names, operators on compile-time values and tensors, calls, fields and indexing.

use archc_runtime::DType;
use petgraph::graph::NodeIndex;

use crate::graph::{BinaryOp, Dim, Ieee64, Op, TensorType, TypeError, UnaryOp};
use crate::syntax::ast::*;
use crate::syntax::{Diagnostic, Span};

use super::args::{self, CallArgs};
use super::builtins::{num, BUILTINS};
use super::number::{float_op, int_op, overflow};
use super::value::Value;
use super::Elab;

/// The longest string elaboration makes (1 MiB): config strings are names and patterns.
const MAX_STRING: usize = 1 << 20;

impl Elab<'_> {
    /// Resolves a name: locals, then shared instances, config constants, blocks, built-ins and
    /// symbolic dims.
    pub(super) fn lookup(&self, name: &str) -> Option<Value> {
        let frame = self.frames.last().expect("model frame");
        if let Some(v) = frame.vars.get(name) {
            return Some(v.clone());
        }
        if let Some(v) = self.shared.get(name).or_else(|| self.config.get(name)) {
            return Some(v.clone());
        }
        if let Some(b) = self.blocks.get(name) {
            return Some(Value::Block(super::BlockValue {
                def: b.clone(),
                bound: Vec::new(),
                instance: None,
            }));
        }
        if let Some(d) = DType::from_name(name) {
            return Some(Value::DType(d));
        }
        if let Some(b) = BUILTINS.iter().find(|b| **b == name) {
            return Some(Value::Builtin(b));
        }
        if self.graph.symbols.iter().any(|s| s == name) {
            return Some(Value::Dim(Dim::symbol(name)));
        }
        None
    }

    fn unknown_name(&self, name: &str, span: Span, called: bool) -> Diagnostic {
        let frame = self.frames.last().expect("model frame");
        let candidates: Vec<&str> = frame
            .vars
            .keys()
            .chain(self.config.keys())
            .chain(self.shared.keys())
            .chain(self.blocks.keys())
            .map(String::as_str)
            .chain(BUILTINS.iter().copied())
            .collect();
        let (code, what) = if called {
            ("E0102", "unknown block or op")
        } else {
            ("E0101", "unknown name")
        };
        let mut d = Diagnostic::new(code, span, format!("{what} `{name}`")).label("not defined");
        if let Some(best) = args::closest(name, candidates.into_iter()) {
            d = d.note(format!("did you mean `{best}`?"));
        }
        d
    }

    /// Evaluates an expression, charging the work to the elaboration budget: one unit for the
    /// evaluation and one per element of a list it makes.
    pub(super) fn eval(&mut self, e: &Expr) -> Result<Value, Diagnostic> {
        let v = self.eval_uncharged(e)?;
        let elements = match &v {
            Value::List(items) => items.len() as u64,
            _ => 0,
        };
        self.charge(1 + elements, e.span)?;
        Ok(v)
    }

    fn eval_uncharged(&mut self, e: &Expr) -> Result<Value, Diagnostic> {
        match &e.kind {
            ExprKind::Int(v) => Ok(Value::Int(*v)),
            ExprKind::Float(v) => Ok(Value::Float(*v)),
            ExprKind::Bool(b) => Ok(Value::Bool(*b)),
            ExprKind::Str(s) => Ok(Value::Str(s.clone())),
            ExprKind::None => Ok(Value::None),
            ExprKind::Comprehension(body, var, iter) => self.comprehension(body, var, iter),
            ExprKind::List(items) => Ok(Value::List(
                items
                    .iter()
                    .map(|i| self.eval(i))
                    .collect::<Result<_, _>>()?,
            )),
            ExprKind::Name(n) => self
                .lookup(n)
                .ok_or_else(|| self.unknown_name(n, e.span, false)),
            ExprKind::Unary(op, x) => {
                let v = self.eval(x)?;
                self.unary(*op, v, e.span)
            }
            ExprKind::Binary(op, l, r) => {
                let lv = self.eval(l)?;
                let rv = self.eval(r)?;
                self.binary(*op, (lv, l.span), (rv, r.span), e.span)
            }
            ExprKind::Call(f, a) => self.call(f, a, e.span, None),
            ExprKind::Scoped(inner, path) => {
                let scope = self.scope_path(path)?;
                match &inner.kind {
                    ExprKind::Call(f, a) => self.call(f, a, inner.span, Some(scope)),
                    _ => match self.eval(inner)? {
                        Value::Block(mut b) if b.instance.is_none() => {
                            b.instance = Some(std::rc::Rc::new(super::Instance {
                                scope: super::join(self.scope(), &scope.0),
                                ema: None,
                            }));
                            Ok(Value::Block(b))
                        }
                        other => Err(Diagnostic::new(
                            "E0111",
                            path.span,
                            format!(
                                "a scope `@{}` applies to a call or a block, not to {}",
                                scope.0,
                                other.kind()
                            ),
                        )
                        .label("misplaced scope")),
                    },
                }
            }
            ExprKind::Field(x, f) => {
                let v = self.eval(x)?;
                self.field(v, f, x.span)
            }
            ExprKind::Index(x, i) => {
                let v = self.eval(x)?;
                let iv = self.eval(i)?;
                index(v, iv, x.span, i.span)
            }
        }
    }

    /// `[body for var in iter]`; `var` is bound in the current frame while the body runs.
    fn comprehension(
        &mut self,
        body: &Expr,
        var: &Ident,
        iter: &Expr,
    ) -> Result<Value, Diagnostic> {
        let items = match self.eval(iter)? {
            Value::List(items) => items,
            other => {
                return Err(Diagnostic::new(
                    "E0111",
                    iter.span,
                    format!("a comprehension runs over a list, found {}", other.kind()),
                )
                .label("not a list")
                .note("`range(n)` makes the list 0, 1, …, n−1"))
            }
        };
        let saved = self.frame().vars.remove(&var.name);
        let mut out = Vec::with_capacity(items.len());
        let mut result = Ok(());
        for item in items {
            self.frame().vars.insert(var.name.clone(), item);
            match self.eval(body) {
                Ok(v) => out.push(v),
                Err(d) => {
                    result = Err(d);
                    break;
                }
            }
        }
        self.frame().vars.remove(&var.name);
        if let Some(v) = saved {
            self.frame().vars.insert(var.name.clone(), v);
        }
        result.map(|()| Value::List(out))
    }

    fn call(
        &mut self,
        f: &Expr,
        a: &[Arg],
        span: Span,
        scope: Option<(String, Span)>,
    ) -> Result<Value, Diagnostic> {
        let callee = match &f.kind {
            ExprKind::Name(n) => self
                .lookup(n)
                .ok_or_else(|| self.unknown_name(n, f.span, true))?,
            _ => self.eval(f)?,
        };
        let name = match &f.kind {
            ExprKind::Name(n) => n.clone(),
            _ => callee.describe(),
        };
        let ca = self.eval_args(name, a, span)?;
        match callee {
            Value::Block(b) => self.call_block(&b, ca, scope),
            Value::Builtin(name) => {
                let scoped = scope.is_some();
                let saved = scope.map(|(s, _)| {
                    let new = super::join(self.scope(), &s);
                    std::mem::replace(&mut self.frame().scope, new)
                });
                let r = self.builtin(name, ca, scoped);
                if let Some(old) = saved {
                    self.frame().scope = old;
                }
                r
            }
            other => Err(Diagnostic::new(
                "E0102",
                f.span,
                format!("{} is not a block or op and cannot be called", other.kind()),
            )
            .label("not callable")),
        }
    }

    /// Evaluates a call's arguments, positional ones before keywords.
    pub(super) fn eval_args(
        &mut self,
        callee: String,
        a: &[Arg],
        span: Span,
    ) -> Result<CallArgs, Diagnostic> {
        let mut ca = CallArgs {
            callee,
            span,
            positional: Vec::new(),
            named: Vec::new(),
        };
        for arg in a {
            let v = self.eval(&arg.value)?;
            match &arg.name {
                Some(n) => ca.named.push((n.name.clone(), n.span, v, arg.value.span)),
                None => {
                    if !ca.named.is_empty() {
                        return Err(Diagnostic::new(
                            "E0103",
                            arg.value.span,
                            "a positional argument cannot follow keyword arguments",
                        )
                        .label("positional after keyword"));
                    }
                    ca.positional.push((v, arg.value.span));
                }
            }
        }
        Ok(ca)
    }

    fn field(&mut self, v: Value, f: &Ident, at: Span) -> Result<Value, Diagnostic> {
        let Value::Tensor(n) = v else {
            return Err(Diagnostic::new(
                "E0111",
                f.span,
                format!("`.{}` needs a tensor, found {}", f.name, v.kind()),
            ));
        };
        let ty = self.graph.ty(n).clone();
        match f.name.as_str() {
            "shape" => Ok(Value::List(
                ty.shape.into_iter().map(Value::from_dim).collect(),
            )),
            "rank" => Ok(Value::Int(ty.rank() as i64)),
            "dtype" => Ok(Value::DType(ty.dtype)),
            other => Err(Diagnostic::new(
                "E0101",
                f.span.to(at),
                format!("tensors have no field `{other}`"),
            )
            .label("unknown field")
            .note("tensor fields are `shape`, `rank` and `dtype`")),
        }
    }

    fn unary(&mut self, op: UnOp, v: Value, span: Span) -> Result<Value, Diagnostic> {
        match (op, v) {
            (UnOp::Neg, Value::Int(x)) => x
                .checked_neg()
                .map(Value::Int)
                .ok_or_else(|| overflow(span)),
            (UnOp::Neg, Value::Float(x)) => Ok(Value::Float(-x)),
            (UnOp::Neg, Value::Dim(d)) => Ok(Value::from_dim(
                Dim::constant(0).sub(&d).ok_or_else(|| overflow(span))?,
            )),
            (UnOp::Not, Value::Bool(b)) => Ok(Value::Bool(!b)),
            (op, Value::Tensor(n)) => {
                let u = if op == UnOp::Neg {
                    UnaryOp::Neg
                } else {
                    UnaryOp::Not
                };
                Ok(Value::Tensor(self.node(Op::Unary(u), None, &[n], span)?))
            }
            (op, v) => Err(Diagnostic::new(
                "E0111",
                span,
                format!(
                    "`{}` is not defined on {}",
                    if op == UnOp::Neg { "-" } else { "not" },
                    v.kind()
                ),
            )),
        }
    }

    pub(super) fn binary(
        &mut self,
        op: BinOp,
        (l, ls): (Value, Span),
        (r, rs): (Value, Span),
        span: Span,
    ) -> Result<Value, Diagnostic> {
        use Value::*;
        // `x == none` asks whether an optional argument was given, even for tensors.
        if matches!((&l, &r), (None, _) | (_, None)) && matches!(op, BinOp::Eq | BinOp::Ne) {
            let same = matches!((&l, &r), (None, None));
            return Ok(Bool(same == (op == BinOp::Eq)));
        }
        if matches!(l, Tensor(_)) || matches!(r, Tensor(_)) {
            return self.tensor_binary(op, (l, ls), (r, rs), span);
        }
        // A float with a symbolic dim (`0.5 / seq`) cannot be a compile-time number: the dim
        // becomes a run-time f32 scalar, as it does next to a tensor.
        if let (Float(_), Value::Dim(_)) | (Value::Dim(_), Float(_)) = (&l, &r) {
            let (l, r) = match l {
                Float(_) => (
                    Tensor(self.tensor_operand(&l, archc_runtime::DType::F32, ls)?),
                    r,
                ),
                _ => (
                    l,
                    Tensor(self.tensor_operand(&r, archc_runtime::DType::F32, rs)?),
                ),
            };
            return self.tensor_binary(op, (l, ls), (r, rs), span);
        }
        let mismatch = |l: &Value, r: &Value| {
            Diagnostic::new(
                "E0111",
                span,
                format!(
                    "`{}` is not defined on {} and {}",
                    op.symbol(),
                    l.kind(),
                    r.kind()
                ),
            )
        };
        match (&l, &r) {
            (Int(a), Int(b)) => int_op(op, *a, *b, span, rs),
            (Int(_) | Float(_), Int(_) | Float(_)) => {
                Ok(float_op(op, num(&l), num(&r)).ok_or_else(|| mismatch(&l, &r))?)
            }
            (Bool(a), Bool(b)) => match op {
                BinOp::And => Ok(Bool(*a && *b)),
                BinOp::Or => Ok(Bool(*a || *b)),
                BinOp::Eq => Ok(Bool(a == b)),
                BinOp::Ne => Ok(Bool(a != b)),
                _ => Err(mismatch(&l, &r)),
            },
            (Str(a), Str(b)) => match op {
                BinOp::Add if a.len() + b.len() > MAX_STRING => Err(Diagnostic::new(
                    "E0401",
                    span,
                    format!("a string longer than {MAX_STRING} bytes"),
                )),
                BinOp::Add => Ok(Str(format!("{a}{b}"))),
                BinOp::Eq => Ok(Bool(a == b)),
                BinOp::Ne => Ok(Bool(a != b)),
                _ => Err(mismatch(&l, &r)),
            },
            (Str(s), Int(k)) if op == BinOp::Mul => {
                if *k < 0 || s.len().saturating_mul(*k as usize) > MAX_STRING {
                    return Err(Diagnostic::new(
                        "E0401",
                        rs,
                        format!("cannot repeat a string {k} times"),
                    ));
                }
                Ok(Str(s.repeat(*k as usize)))
            }
            (List(a), List(b)) if op == BinOp::Add => {
                Ok(List(a.iter().chain(b).cloned().collect()))
            }
            (DType(a), DType(b)) if matches!(op, BinOp::Eq | BinOp::Ne) => {
                Ok(Bool((a == b) == (op == BinOp::Eq)))
            }
            _ => {
                let (Some(a), Some(b)) = (l.as_dim(), r.as_dim()) else {
                    return Err(mismatch(&l, &r));
                };
                let d = match op {
                    BinOp::Add => a.add(&b),
                    BinOp::Sub => a.sub(&b),
                    BinOp::Mul => a.mul(&b),
                    BinOp::Div => a.div_exact(&b),
                    BinOp::Eq => return Ok(Bool(a == b)),
                    BinOp::Ne => return Ok(Bool(a != b)),
                    _ => return Err(mismatch(&l, &r)),
                };
                d.map(Value::from_dim).ok_or_else(|| {
                    Diagnostic::new(
                        "E0401",
                        span,
                        format!("`{a} {} {b}` is not a whole dim", op.symbol()),
                    )
                    .label("symbolic dims divide only exactly")
                })
            }
        }
    }

    fn tensor_binary(
        &mut self,
        op: BinOp,
        (l, ls): (Value, Span),
        (r, rs): (Value, Span),
        span: Span,
    ) -> Result<Value, Diagnostic> {
        let like = match (&l, &r) {
            (Value::Tensor(n), _) | (_, Value::Tensor(n)) => self.graph.ty(*n).dtype,
            _ => unreachable!("one operand is a tensor"),
        };
        let a = self.tensor_operand(&l, like, ls)?;
        let b = self.tensor_operand(&r, like, rs)?;
        let bop = match op {
            BinOp::Add => BinaryOp::Add,
            BinOp::Sub => BinaryOp::Sub,
            BinOp::Mul => BinaryOp::Mul,
            BinOp::Div => BinaryOp::Div,
            BinOp::Eq => BinaryOp::Eq,
            BinOp::Ne => BinaryOp::Ne,
            BinOp::Lt => BinaryOp::Lt,
            BinOp::Le => BinaryOp::Le,
            BinOp::Gt => BinaryOp::Gt,
            BinOp::Ge => BinaryOp::Ge,
            BinOp::And => BinaryOp::And,
            BinOp::Or => BinaryOp::Or,
            BinOp::Rem => BinaryOp::Rem,
        };
        Ok(Value::Tensor(self.node(
            Op::Binary(bop),
            None,
            &[a, b],
            span,
        )?))
    }

    /// A tensor operand: tensors as they are, numbers as scalar constants of dtype `like`.
    pub(super) fn tensor_operand(
        &mut self,
        v: &Value,
        like: DType,
        span: Span,
    ) -> Result<NodeIndex, Diagnostic> {
        let (value, ok) = match v {
            Value::Tensor(n) => return Ok(*n),
            Value::Dim(d) if like != DType::Bool => {
                let scope = self.scope().to_string();
                let ty = TensorType::new(like, vec![]);
                self.charge(1, span)?;
                let n = self.graph.add(Op::Size(d.clone()), ty, &scope, &[]);
                self.graph.dag[n].at = self.origin_of(span);
                return Ok(n);
            }
            Value::Int(i) => (*i as f64, true),
            Value::Float(f) => (*f, like.is_float()),
            Value::Bool(b) => (f64::from(u8::from(*b)), like == DType::Bool),
            _ => (0.0, false),
        };
        if !ok {
            return Err(Diagnostic::new(
                "E0203",
                span,
                format!("{} cannot be used as a {like} tensor", v.kind()),
            )
            .label("dtype mismatch"));
        }
        let scope = self.scope().to_string();
        Ok(self.graph.add(
            Op::Const(Ieee64::new(value)),
            TensorType::new(like, vec![]),
            &scope,
            &[],
        ))
    }

    /// The node behind a tensor value, or an error naming what was expected.
    pub(super) fn expect_tensor(
        &self,
        v: &Value,
        span: Span,
        what: &str,
    ) -> Result<NodeIndex, Diagnostic> {
        match v {
            Value::Tensor(n) => Ok(*n),
            other => Err(Diagnostic::new(
                "E0111",
                span,
                format!("{what} must be a tensor, found {}", other.kind()),
            )
            .label("not a tensor")),
        }
    }

    /// Adds a node after checking its operand types; type errors point at `span`.
    pub(super) fn node(
        &mut self,
        op: Op,
        declared: Option<TensorType>,
        operands: &[NodeIndex],
        span: Span,
    ) -> Result<NodeIndex, Diagnostic> {
        let tys: Vec<&TensorType> = operands.iter().map(|n| self.graph.ty(*n)).collect();
        let ty = crate::graph::infer(&op, &tys, declared.as_ref()).map_err(|e| {
            let (code, msg) = match e {
                TypeError::Shape(m) if op == Op::MatMul => ("E0202", m),
                TypeError::Shape(m) if op == Op::Reshape => ("E0206", m),
                TypeError::Shape(m) => ("E0201", m),
                TypeError::DType(m) => ("E0203", m),
                TypeError::Range(m) => ("E0205", m),
            };
            let label = match code {
                "E0203" => "dtype mismatch",
                "E0205" => "out of range",
                _ => "shape mismatch",
            };
            let mut d = Diagnostic::new(code, span, msg).label(label);
            if code == "E0201" || code == "E0202" {
                let shapes: Vec<String> = tys.iter().map(|t| t.to_string()).collect();
                d = d.note(format!("operand types: {}", shapes.join(", ")));
            }
            d
        })?;
        self.charge(1, span)?;
        let input = operands.first().map(|&n| self.graph.ty(n).clone());
        self.check_dims(&op, input.as_ref(), &ty, span)?;
        let scope = self.scope().to_string();
        let n = self.graph.add(op, ty, &scope, operands);
        self.graph.dag[n].at = self.origin_of(span);
        Ok(n)
    }
}

fn index(v: Value, i: Value, at: Span, is: Span) -> Result<Value, Diagnostic> {
    let Value::List(items) = v else {
        return Err(Diagnostic::new(
            "E0111",
            at,
            format!(
                "only lists can be indexed, found {} (use `slice` or `gather` on tensors)",
                v.kind()
            ),
        ));
    };
    let Value::Int(k) = i else {
        return Err(Diagnostic::new(
            "E0111",
            is,
            format!("a list index must be an integer, found {}", i.kind()),
        ));
    };
    let n = items.len() as i64;
    let j = if k < 0 { k + n } else { k };
    if j < 0 || j >= n {
        return Err(Diagnostic::new(
            "E0205",
            is,
            format!("index {k} is out of range for a list of {n}"),
        )
        .label("out of range"));
    }
    Ok(items[j as usize].clone())
}

/// Resolves a possibly negative axis against a rank.
pub(super) fn axis(k: i64, rank: usize, span: Span) -> Result<usize, Diagnostic> {
    let r = rank as i64;
    let a = if k < 0 { k + r } else { k };
    if a < 0 || a >= r {
        return Err(Diagnostic::new(
            "E0205",
            span,
            format!("axis {k} is out of range for a tensor of rank {rank}"),
        )
        .label("out of range"));
    }
    Ok(a as usize)
}
