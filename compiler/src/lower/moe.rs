//! The kernels of a sparse mixture of experts (`fused.moe`), beside the expert bodies, which
//! lower like a layer kind's body (see `frame.rs`):
//!
//! - [`route`]: one serial pass over the tokens lists those with a nonzero weight for expert
//!   `e`: buffer `[count, t₀, t₁, …]`, sized for the worst case (every token).
//! - [`gather`]: the routed tokens' rows, compacted.
//! - the expert's own kernels, whose row count is the symbol `$routed`;
//!   [`read_count`] rewrites it into a load of `count`, so their row loops stop there.
//! - [`zero`] then one [`scatter`] per expert: the output is `Σₑ w[t, e] · yₑ[row of t]`.
//!
//! Tokens routed to an expert are distinct, so a scatter's rows run in parallel.

use archc_kernels::ir::build::{add, bin, load, mul, serial, var};
use archc_kernels::ir::{Axis, Bin, Elem, Expr, Ieee32, Kernel, Param, Stmt};

use super::index::Ctx;
use super::Template;
use crate::graph::Dim;

/// The routing list of expert `e` of `experts` from the weights `w: [tokens, experts]`
/// (buffer 1) into buffer 0: the count, then the tokens in order.
pub fn route(cx: &mut Ctx, tokens: &Dim, e: usize, experts: usize) -> Template {
    let (t, count) = (cx.var(), cx.var());
    let weight = load(
        1,
        add(mul(var(t), Expr::Int(experts as i64)), Expr::Int(e as i64)),
    );
    let routed = Expr::Select(
        Box::new(bin(Bin::Ne, weight, Expr::F32(Ieee32::new(0.0)))),
        Box::new(Expr::Int(1)),
        Box::new(Expr::Int(0)),
    );
    let body = vec![
        Stmt::Set(count, Expr::Int(0)),
        serial(
            t,
            cx.dim(tokens),
            vec![
                // Written for every token, kept for the routed ones: no branch.
                Stmt::Store(0, add(var(count), Expr::Int(1)), var(t)),
                Stmt::Set(count, add(var(count), routed)),
            ],
        ),
        Stmt::Store(0, Expr::Int(0), var(count)),
    ];
    Template::new(body, Vec::new())
}

/// Rows `x[route[1 + r]]` (x: buffer 1, rows of `width`) into buffer 0 for `r < route[0]`
/// (buffer 2).
pub fn gather(cx: &mut Ctx, width: &Dim) -> Template {
    let (r, t, d) = (cx.var(), cx.var(), cx.var());
    let w = cx.dim(width);
    let body = vec![Stmt::For {
        var: r,
        extent: load(2, Expr::Int(0)),
        kind: Axis::Grid,
        body: vec![
            Stmt::Set(t, load(2, add(var(r), Expr::Int(1)))),
            serial(
                d,
                w.clone(),
                vec![Stmt::Store(
                    0,
                    add(mul(var(r), w.clone()), var(d)),
                    load(1, add(mul(var(t), w.clone()), var(d))),
                )],
            ),
        ],
    }];
    Template::new(body, Vec::new())
}

/// Buffer 0 (`size` floats) set to zero.
pub fn zero(cx: &mut Ctx, size: &Dim) -> Template {
    let i = cx.var();
    let body = vec![Stmt::For {
        var: i,
        extent: cx.dim(size),
        kind: Axis::Grid,
        body: vec![Stmt::Store(0, var(i), Expr::F32(Ieee32::new(0.0)))],
    }];
    Template::new(body, Vec::new())
}

/// `out[t] += w[t, e] · y[r]` for the `r`-th token `t` routed to expert `e` (buffers: 0 out,
/// 1 y `[tokens, dim]`, 2 w `[tokens, experts]`, 3 the routing list).
pub fn scatter(cx: &mut Ctx, dim: &Dim, e: usize, experts: usize) -> Template {
    let (r, t, s, d) = (cx.var(), cx.var(), cx.var(), cx.var());
    let n = cx.dim(dim);
    let at = add(mul(var(t), n.clone()), var(d));
    let body = vec![Stmt::For {
        var: r,
        extent: load(3, Expr::Int(0)),
        kind: Axis::Grid,
        body: vec![
            Stmt::Set(t, load(3, add(var(r), Expr::Int(1)))),
            Stmt::Set(
                s,
                load(
                    2,
                    add(mul(var(t), Expr::Int(experts as i64)), Expr::Int(e as i64)),
                ),
            ),
            serial(
                d,
                n.clone(),
                vec![Stmt::Store(
                    0,
                    at.clone(),
                    add(
                        load(0, at),
                        mul(var(s), load(1, add(mul(var(r), n), var(d)))),
                    ),
                )],
            ),
        ],
    }];
    Template::new(body, Vec::new())
}

/// Turns an expert kernel whose row count is `dims[routed]` into one that reads the count
/// from a routing list, passed as a new parameter just before the status word.
pub fn read_count(k: &mut Kernel, routed: usize) {
    let list = k.params.len() - 1;
    k.params.insert(
        list,
        Param {
            name: "routed".into(),
            elem: Elem::I64,
            output: false,
        },
    );
    // The status word and the locals move up by one.
    let fix = |b: &mut usize| {
        if *b >= list {
            *b += 1;
        }
    };
    let count = |e: &mut Expr| {
        if *e == Expr::Dim(routed) {
            *e = load(list, Expr::Int(0));
        }
    };
    for s in &mut k.body {
        stmt(s, &fix, &count);
    }
}

fn stmt(s: &mut Stmt, fix: &dyn Fn(&mut usize), count: &dyn Fn(&mut Expr)) {
    match s {
        Stmt::For { extent, body, .. } => {
            expr(extent, fix, count);
            for s in body {
                stmt(s, fix, count);
            }
        }
        Stmt::Set(_, e) | Stmt::Check(e, _) => expr(e, fix, count),
        Stmt::Barrier(_) => {}
        Stmt::WarpFold(f) => {
            fix(&mut f.buf);
            expr(&mut f.at, fix, count);
        }
        Stmt::CopyAsync(c) => {
            fix(&mut c.dst);
            fix(&mut c.src);
            for e in [&mut c.dst_at, &mut c.src_at, &mut c.valid] {
                expr(e, fix, count);
            }
        }
        Stmt::AsyncWait(_) => {}
        Stmt::LoadMatrix(m) => {
            fix(&mut m.dst.buf);
            fix(&mut m.src);
            expr(&mut m.dst.at, fix, count);
            expr(&mut m.row, fix, count);
        }
        Stmt::Mma { a, b, c } => {
            for f in [a, b, c] {
                fix(&mut f.buf);
                expr(&mut f.at, fix, count);
            }
        }
        Stmt::WarpgroupWait(w) => {
            fix(&mut w.c.buf);
            expr(&mut w.c.at, fix, count);
        }
        Stmt::WarpgroupMma(w) => {
            expr(&mut w.accumulate, fix, count);
            for (buf, at) in [
                (&mut w.a.buf, &mut w.a.at),
                (&mut w.b.buf, &mut w.b.at),
                (&mut w.c.buf, &mut w.c.at),
            ] {
                fix(buf);
                expr(at, fix, count);
            }
        }
        Stmt::Prefetch(b, i) => {
            fix(b);
            expr(i, fix, count);
        }
        Stmt::Store(b, i, v) | Stmt::VStore(b, i, v, _) => {
            fix(b);
            expr(i, fix, count);
            expr(v, fix, count);
        }
    }
}

fn expr(e: &mut Expr, fix: &dyn Fn(&mut usize), count: &dyn Fn(&mut Expr)) {
    match e {
        Expr::Int(_) | Expr::F32(_) | Expr::Bool(_) | Expr::Var(_) => {}
        Expr::Dim(_) => count(e),
        Expr::Load(b, i) | Expr::VLoad(b, i, _) | Expr::Block(b, i, _) => {
            fix(b);
            expr(i, fix, count);
        }
        Expr::Un(_, a) | Expr::Cast(_, a) | Expr::Splat(a, _) | Expr::Lane(a, _) => {
            expr(a, fix, count)
        }
        Expr::Bin(_, a, b) => {
            expr(a, fix, count);
            expr(b, fix, count);
        }
        Expr::Select(a, b, c) | Expr::Fma(a, b, c) => {
            expr(a, fix, count);
            expr(b, fix, count);
            expr(c, fix, count);
        }
    }
}
