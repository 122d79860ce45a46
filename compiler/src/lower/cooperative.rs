//! GPU templates whose threads cooperate through a block's shared memory.
//!
//! A reduction on a GPU (an RMSNorm's sum of squares, a softmax's max and sum when it is not
//! fused into attention) gets a block per output element instead of a thread: the block's
//! `T` threads stride over the reduced axis together, so neighbouring threads read
//! neighbouring elements (coalesced), each folds its share into a register, writes it to a
//! shared array, and after a barrier one thread folds the `T` partial results and runs the
//! epilogue:
//!
//! ```text
//! grid for o in 0..outputs {                       // one block per output element
//!   <o's coordinates>
//!   thread for t in 0..T {
//!     acc = init
//!     reduce for j in 0..(K - t + T - 1) / T { k = t + j·T; acc = f(acc, x[.., k, ..]) }
//!     partial[t] = acc
//!   }
//!   barrier
//!   thread for t in 0..1 { acc = init; reduce for u in 0..T { acc = f(acc, partial[u]) }; out[o] = epilogue(acc) }
//! }
//! ```
//!
//! Sums are so re-associated (T interleaved partial sums): a reduction's iterations may be,
//! as `Axis::Reduce` says. Only statements that set variables, all alike in every thread,
//! stand outside the Thread loops; every store is inside one.

use archc_kernels::ir::build::{add, axis, bin, load, mul, var};
use archc_kernels::ir::{Axis, Elem, Expr, Local, Scope, Stmt};
use petgraph::graph::NodeIndex;

use super::body::BodyGen;
use super::index::{exprs, Ctx};
use super::region::{reduction, Reduction};
use super::Template;
use crate::graph::{Region, TensorType};

/// The cooperative template of the reduction `anchor` of region `r` (output `out`), with
/// blocks of `threads`; its shared array is buffer `shared` (after the parameters). None for
/// a reduction over several axes.
pub fn reduce(
    cx: &mut Ctx,
    gen: &mut BodyGen,
    (r, anchor, out): (&Region, NodeIndex, &TensorType),
    shared: usize,
    threads: u32,
) -> Option<Template> {
    let Reduction {
        x,
        x_at,
        vars,
        red_vars,
        red_shape,
        init,
        f,
        ..
    } = reduction(cx, r, anchor, out);
    let ([k], [extent]) = (red_vars.as_slice(), red_shape.as_slice()) else {
        return None;
    };
    let n = i64::from(threads);
    let (t, j, acc) = (cx.var(), cx.var(), cx.var());
    // This thread's share of the reduced axis: k = t, t + T, t + 2T, ...
    let extent = cx.dim(extent);
    let share = bin(
        archc_kernels::ir::Bin::Div,
        add(
            archc_kernels::ir::build::sub(extent, var(t)),
            Expr::Int(n - 1),
        ),
        Expr::Int(n),
    );
    let value = gen.value(cx, x, &x_at);
    let mut step = vec![Stmt::Set(*k, add(var(t), mul(var(j), Expr::Int(n))))];
    step.extend(gen.take_lets());
    step.push(Stmt::Set(acc, bin(f, var(acc), value)));
    let partials = axis(
        Axis::Thread,
        t,
        Expr::Int(n),
        vec![
            Stmt::Set(acc, init.clone()),
            axis(Axis::Reduce, j, share, step),
            Stmt::Store(shared, var(t), var(acc)),
        ],
    );
    // One thread folds the partial results and finishes the element.
    let (u, first) = (cx.var(), cx.var());
    let mut finish = vec![
        Stmt::Set(acc, init),
        axis(
            Axis::Reduce,
            u,
            Expr::Int(n),
            vec![Stmt::Set(acc, bin(f, var(acc), load(shared, var(u))))],
        ),
    ];
    gen.bind(anchor, var(acc));
    let at = exprs(&vars);
    let v = gen.value(cx, r.output(), &at);
    finish.extend(gen.take_lets());
    finish.push(Stmt::Store(0, cx.index(&out.shape, &at), v));
    let body = vec![
        partials,
        Stmt::Barrier(Scope::Block),
        axis(Axis::Thread, first, Expr::Int(1), finish),
    ];
    let grid = match out.rank() {
        // One output element: one block, still a Grid loop (statements outside every Grid
        // loop run on one thread).
        0 => vec![axis(Axis::Grid, cx.var(), Expr::Int(1), body)],
        _ => cx.flat_nest(&out.shape, &vars, body),
    };
    let mut t = Template::new(grid, gen.checks.clone());
    t.shared.push(Local {
        name: "partials".into(),
        elem: if matches!(super::ty(r.body.ty(x).dtype), archc_kernels::ir::Ty::F32) {
            Elem::F32
        } else {
            Elem::I64
        },
        len: threads as usize,
    });
    Some(t)
}
