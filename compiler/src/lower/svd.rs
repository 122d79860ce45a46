//! The `svdvals` template: per matrix, the Gram matrix in a thread-private local, a fixed
//! number of cyclic Jacobi sweeps over it (Numerical Recipes' rotation, `JᵀGJ`, which zeroes
//! one off-diagonal pair at a time), the square roots of its diagonal, sorted largest first.
//! Branch-free: a zero pair gets the identity rotation through selects, so every target runs
//! the same straight-line loops (no data-dependent trip counts).
//!
//! The Gram matrix is `XᵀX` (`n × n`) when the matrix has at least as many rows `m` as columns
//! `n`, and `XXᵀ` (`m × m`, in the corner of the `n × n` local, zeros around it) when it has
//! fewer: the same nonzero eigenvalues, and the other `n − m` values exactly zero. In f32 a
//! zero eigenvalue comes out as rounding noise of about ε × the largest, a singular value of
//! √ε ≈ 3e-4 × the largest: a batch of one embedding would have an effective rank of 1.01,
//! different on each target, instead of 1.
//!
//! Buffers: 0 the values `[..., n]`, 1 the matrices `[..., m, n]`, 2 the status word, 3 the
//! local Gram matrix (`n²` floats).

use archc_kernels::ir::build::{add, bin, f32, load, mul, serial, sub, var};
use archc_kernels::ir::{Bin, Expr, Stmt, Un, Var};

use super::index::Ctx;
use super::{f32_locals, Template};
use crate::graph::TensorType;

/// Jacobi sweeps. Cyclic Jacobi converges quadratically once the off-diagonal part is
/// small; eight sweeps bring matrices of up to 256 columns to f32 precision in the tests.
const SWEEPS: i64 = 8;

const GRAM: usize = 3;

fn un(op: Un, x: Expr) -> Expr {
    Expr::Un(op, Box::new(x))
}

fn select(cond: Expr, a: Expr, b: Expr) -> Expr {
    Expr::Select(Box::new(cond), Box::new(a), Box::new(b))
}

/// The kernel of `svdvals(x)` for `x` of type `x` and values of type `out`.
pub fn lower(cx: &mut Ctx, out: &TensorType, x: &TensorType) -> Template {
    let r = x.rank();
    let n = x.shape[r - 1].as_const().unwrap_or(1);
    let batch_vars = cx.vars(r - 2);
    let at = |cx: &Ctx, row: Expr, col: Expr| {
        let mut idx: Vec<Expr> = batch_vars.iter().map(|v| var(*v)).collect();
        idx.extend([row, col]);
        cx.index(&x.shape, &idx)
    };
    let g = |i: Expr, j: Expr| add(mul(i, Expr::Int(n)), j);
    let mut body = Vec::new();
    // G = XᵀX, or XXᵀ in the corner when there are fewer rows than columns: entry (i, j) sums
    // over `count` terms, none outside that corner.
    let (i, j, k, acc) = (cx.var(), cx.var(), cx.var(), cx.var());
    let m = cx.dim(&x.shape[r - 2]);
    let wide = bin(Bin::Lt, m.clone(), Expr::Int(n));
    let element = |cx: &Ctx, line: Var| {
        let row = select(wide.clone(), var(line), var(k));
        let col = select(wide.clone(), var(k), var(line));
        load(1, at(cx, row, col))
    };
    let (xi, xj) = (element(cx, i), element(cx, j));
    let corner = bin(
        Bin::And,
        bin(Bin::Lt, var(i), m.clone()),
        bin(Bin::Lt, var(j), m.clone()),
    );
    let count = select(wide.clone(), select(corner, Expr::Int(n), Expr::Int(0)), m);
    body.push(serial(
        i,
        Expr::Int(n),
        vec![serial(
            j,
            Expr::Int(n),
            vec![
                Stmt::Set(acc, f32(0.0)),
                serial(k, count, vec![Stmt::Set(acc, add(var(acc), mul(xi, xj)))]),
                Stmt::Store(GRAM, g(var(i), var(j)), var(acc)),
            ],
        )],
    ));
    body.push(sweeps(cx, n, &g));
    // The values, then a bubble sort by max/min pairs, largest first.
    let mut out_idx: Vec<Expr> = batch_vars.iter().map(|v| var(*v)).collect();
    let mut out_at = |cx: &Ctx, e: Expr| {
        out_idx.truncate(r - 2);
        out_idx.push(e);
        cx.index(&out.shape, &out_idx)
    };
    let diag = bin(Bin::Max, load(GRAM, g(var(i), var(i))), f32(0.0));
    body.push(serial(
        i,
        Expr::Int(n),
        vec![Stmt::Store(0, out_at(cx, var(i)), un(Un::Sqrt, diag))],
    ));
    let (a, b) = (cx.var(), cx.var());
    let here = out_at(cx, var(j));
    let next = out_at(cx, add(var(j), Expr::Int(1)));
    body.push(serial(
        i,
        Expr::Int(n),
        vec![serial(
            j,
            Expr::Int(n - 1),
            vec![
                Stmt::Set(a, load(0, here.clone())),
                Stmt::Set(b, load(0, next.clone())),
                Stmt::Store(0, here, bin(Bin::Max, var(a), var(b))),
                Stmt::Store(0, next, bin(Bin::Min, var(a), var(b))),
            ],
        )],
    ));
    let shape = x.shape[..r - 2].to_vec();
    let body = cx.nest(&shape, &batch_vars, body);
    let mut t = Template::new(body, vec![]);
    t.locals = f32_locals(&[("gram", n * n)]);
    t
}

/// `SWEEPS` cyclic sweeps of Jacobi rotations over every pair p < q of the Gram matrix.
fn sweeps(cx: &mut Ctx, n: i64, g: &dyn Fn(Expr, Expr) -> Expr) -> Stmt {
    let (sweep, p, q1, k) = (cx.var(), cx.var(), cx.var(), cx.var());
    let [q, apq, theta, t, c, s, u, w] = [(); 8].map(|()| cx.var());
    let gl = |i: Expr, j: Expr| load(GRAM, g(i, j));
    let zero = bin(Bin::Eq, var(apq), f32(0.0));
    // θ = (a_qq − a_pp) / 2a_pq; t = sgn θ / (|θ| + √(θ² + 1)): the smaller angle. A huge θ
    // gives t = 0 through infinities; a zero a_pq is the identity.
    let den = select(zero.clone(), f32(1.0), var(apq));
    let sign = select(bin(Bin::Ge, var(theta), f32(0.0)), f32(1.0), f32(-1.0));
    let root = un(Un::Sqrt, add(mul(var(theta), var(theta)), f32(1.0)));
    let tan = bin(Bin::Div, sign, add(un(Un::Abs, var(theta)), root));
    // (first, second) ← (c·first − s·second, s·first + c·second).
    let rotate = |first: Expr, second: Expr| {
        vec![
            Stmt::Set(u, load(GRAM, first.clone())),
            Stmt::Set(w, load(GRAM, second.clone())),
            Stmt::Store(GRAM, first, sub(mul(var(c), var(u)), mul(var(s), var(w)))),
            Stmt::Store(GRAM, second, add(mul(var(s), var(u)), mul(var(c), var(w)))),
        ]
    };
    let columns = rotate(g(var(k), var(p)), g(var(k), var(q)));
    let rows = rotate(g(var(p), var(k)), g(var(q), var(k)));
    let pair = vec![
        Stmt::Set(q, add(add(var(p), Expr::Int(1)), var(q1))),
        Stmt::Set(apq, gl(var(p), var(q))),
        Stmt::Set(
            theta,
            bin(
                Bin::Div,
                sub(gl(var(q), var(q)), gl(var(p), var(p))),
                mul(f32(2.0), den),
            ),
        ),
        Stmt::Set(t, select(zero, f32(0.0), tan)),
        Stmt::Set(c, un(Un::Rsqrt, add(mul(var(t), var(t)), f32(1.0)))),
        Stmt::Set(s, mul(var(t), var(c))),
        serial(k, Expr::Int(n), columns),
        serial(k, Expr::Int(n), rows),
    ];
    serial(
        sweep,
        Expr::Int(SWEEPS),
        vec![serial(
            p,
            Expr::Int(n),
            vec![serial(q1, sub(Expr::Int(n - 1), var(p)), pair)],
        )],
    )
}
