//! Index arithmetic for kernel templates: dims as expressions, strides, loop nests.

use archc_kernels::ir::build::{add, bin, mul, product, sub, sum};
use archc_kernels::ir::{Axis, Bin, Expr, Stmt, Var};

use crate::graph::Dim;

/// Allocates variables and turns symbolic dims into kernel expressions; carries the
/// target's schedule constants to the templates.
pub struct Ctx<'a> {
    symbols: &'a [String],
    next: u32,
    /// The target's schedule.
    pub schedule: &'a super::schedule::Schedule,
    /// Buffers (kernel parameters) holding weights, which a matmul may take packed ahead.
    pub packable: Vec<usize>,
    /// The buffers the template reads packed ahead, with their panels' width.
    pub packed: Vec<(usize, i64)>,
    /// Buffers (kernel parameters) holding block-quantized weights: read only by scalar
    /// loads, or by a matmul that takes one as its transposed `b` ([`Ctx::transposed`]).
    pub blocks: Vec<usize>,
    /// The matmul operand `b` whose buffer holds its transpose, block-quantized in this
    /// element type: `b[p, j]` is element `[j, p]` of the buffer (a weight `w` of `x · wᵀ`,
    /// read in place).
    pub transposed: Option<(usize, archc_kernels::ir::Elem)>,
}

impl<'a> Ctx<'a> {
    /// A context whose `dims[i]` is `symbols[i]`.
    pub fn new(symbols: &'a [String], schedule: &'a super::schedule::Schedule) -> Ctx<'a> {
        Ctx {
            symbols,
            next: 0,
            schedule,
            packable: Vec::new(),
            packed: Vec::new(),
            blocks: Vec::new(),
            transposed: None,
        }
    }

    /// A fresh variable.
    pub fn var(&mut self) -> Var {
        self.next += 1;
        Var(self.next - 1)
    }

    /// `n` fresh variables.
    pub fn vars(&mut self, n: usize) -> Vec<Var> {
        (0..n).map(|_| self.var()).collect()
    }

    /// A dim's value: Σ coefficient · Π dims[symbol].
    pub fn dim(&self, d: &Dim) -> Expr {
        sum(d
            .terms()
            .map(|(m, c)| {
                let mut f: Vec<Expr> = m
                    .iter()
                    .map(|s| {
                        Expr::Dim(
                            self.symbols
                                .iter()
                                .position(|x| x == s)
                                .expect("graph symbols are plan symbols"),
                        )
                    })
                    .collect();
                f.push(Expr::Int(c));
                product(f)
            })
            .collect())
    }

    /// Row-major strides of a shape.
    pub fn strides(&self, shape: &[Dim]) -> Vec<Expr> {
        (0..shape.len())
            .map(|a| product(shape[a + 1..].iter().map(|d| self.dim(d)).collect()))
            .collect()
    }

    /// The linear index into a tensor of `shape` whose axis `a` is at `at[a]`; axes of constant
    /// size 1 contribute nothing, so `at` may hold any index there (this is broadcasting).
    pub fn index(&self, shape: &[Dim], at: &[Expr]) -> Expr {
        let strides = self.strides(shape);
        sum(shape
            .iter()
            .zip(at)
            .zip(strides)
            .filter(|((d, _), _)| d.as_const() != Some(1))
            .map(|((_, i), s)| mul_index(i.clone(), s))
            .collect())
    }

    /// The index into an operand of `shape` broadcast (right-aligned) against loop variables
    /// over the output's axes.
    pub fn broadcast_index(&self, shape: &[Dim], out_vars: &[Var]) -> Expr {
        let offset = out_vars.len() - shape.len();
        let at: Vec<Expr> = out_vars[offset..].iter().map(|v| Expr::Var(*v)).collect();
        self.index(shape, &at)
    }

    /// Wraps `body` in loops `vars[i] in 0..shape[i]`. With three axes or more, every axis but
    /// the last is one flattened parallel loop (see [`Ctx::flat_nest`]); otherwise the
    /// outermost loop is parallel.
    pub fn nest(&mut self, shape: &[Dim], vars: &[Var], body: Vec<Stmt>) -> Vec<Stmt> {
        let n = shape.len();
        if n >= 3 {
            let inner = vec![Stmt::For {
                var: vars[n - 1],
                extent: self.dim(&shape[n - 1]),
                kind: Axis::Serial,
                body,
            }];
            return self.flat_nest(&shape[..n - 1], &vars[..n - 1], inner);
        }
        let mut body = body;
        for (i, (d, v)) in shape.iter().zip(vars).enumerate().rev() {
            body = vec![Stmt::For {
                var: *v,
                extent: self.dim(d),
                kind: if i == 0 { Axis::Grid } else { Axis::Serial },
                body,
            }];
        }
        body
    }
}

impl Ctx<'_> {
    /// One parallel loop over every element of `shape` (each iteration splits its index into
    /// `vars`), around `body`: the whole product is split between threads, so a leading axis
    /// of size 1 (a batch of one) costs no parallelism.
    pub fn flat_nest(&mut self, shape: &[Dim], vars: &[Var], body: Vec<Stmt>) -> Vec<Stmt> {
        if shape.len() < 2 {
            return self.nest(shape, vars, body);
        }
        let flat = self.var();
        let mut inner: Vec<Stmt> = super::body::delinearize(self, Expr::Var(flat), shape)
            .into_iter()
            .zip(vars)
            .map(|(e, v)| Stmt::Set(*v, e))
            .collect();
        inner.extend(body);
        let total = Dim::product(shape).expect("tensor sizes fit in i64");
        vec![Stmt::For {
            var: flat,
            extent: self.dim(&total),
            kind: Axis::Grid,
            body: inner,
        }]
    }

    /// Reduce loops `vars[i] in 0..shape[i]` around `body`, which folds each element into
    /// accumulators set before the nest.
    pub fn reduce_nest(&mut self, shape: &[Dim], vars: &[Var], body: Vec<Stmt>) -> Vec<Stmt> {
        let mut body = body;
        for (d, v) in shape.iter().zip(vars).rev() {
            body = vec![archc_kernels::ir::build::axis(
                Axis::Reduce,
                *v,
                self.dim(d),
                body,
            )];
        }
        body
    }

    /// Like [`Ctx::nest`], but every loop is serial (it runs inside another parallel loop).
    pub fn serial_nest(&mut self, shape: &[Dim], vars: &[Var], body: Vec<Stmt>) -> Vec<Stmt> {
        with_axis(self.nest(shape, vars, body), Axis::Serial)
    }
}

/// `stmts` with its first statement, a loop, of axis kind `kind`.
pub fn with_axis(mut stmts: Vec<Stmt>, axis: Axis) -> Vec<Stmt> {
    if let Some(Stmt::For { kind, .. }) = stmts.first_mut() {
        *kind = axis;
    }
    stmts
}

/// `i * s`, folding multiplication by 1.
fn mul_index(i: Expr, s: Expr) -> Expr {
    match s {
        Expr::Int(1) => i,
        s => mul(i, s),
    }
}

/// `a + b` for index expressions, folding zeros.
pub fn plus(a: Expr, b: Expr) -> Expr {
    match (a, b) {
        (Expr::Int(0), e) | (e, Expr::Int(0)) => e,
        (a, b) => add(a, b),
    }
}

/// `a op b` for non-negative index arithmetic, computed now when both sides are constants
/// (a division only by a positive constant, so every backend would give the same).
pub fn folded(op: Bin, a: Expr, b: Expr) -> Expr {
    if let (Expr::Int(x), Expr::Int(y)) = (&a, &b) {
        let (x, y) = (*x, *y);
        let value = match op {
            Bin::Add => x.checked_add(y),
            Bin::Sub => x.checked_sub(y),
            Bin::Mul => x.checked_mul(y),
            Bin::Min => Some(x.min(y)),
            Bin::Max => Some(x.max(y)),
            Bin::Div if x >= 0 && y > 0 => Some(x / y),
            _ => None,
        };
        if let Some(v) = value {
            return Expr::Int(v);
        }
    }
    bin(op, a, b)
}

/// `⌈a / b⌉` for a non-negative `a` and a positive `b`, folded when both are constants.
pub fn div_up(a: Expr, b: Expr) -> Expr {
    let bump = folded(Bin::Sub, b.clone(), Expr::Int(1));
    folded(Bin::Div, folded(Bin::Add, a, bump), b)
}

/// `at` with coordinate `axis` read backwards along a dim of `size` (flip's index map).
pub fn flipped(cx: &Ctx, at: &[Expr], axis: usize, size: &Dim) -> Vec<Expr> {
    let mut src = at.to_vec();
    src[axis] = sub(sub(cx.dim(size), Expr::Int(1)), src[axis].clone());
    src
}

/// Variables as expressions.
pub fn exprs(vars: &[Var]) -> Vec<Expr> {
    vars.iter().map(|v| Expr::Var(*v)).collect()
}
