//! The Graph IR verifier. It checks, for a graph and (recursively) every region body and layer
//! kind body in it:
//!
//! 1. **Operands**: each node's incoming edges fill operand slots `0..n` once each, and `n` is
//!    the op's arity (none for inputs, weights, constants, iotas and sizes; one for unary,
//!    reduce and layout ops and casts; two for binary ops, matmul, gather and scan; three for
//!    select; at least one for concat).
//! 2. **Order**: every operand was created before its user (node indices are a topological
//!    order, so the graph is acyclic).
//! 3. **Types**: each node's type is what its op's typing rule (`graph::infer`) gives for its
//!    operands' types.
//! 4. **Index bounds**: axes of reduce, slice, concat, pad, flip, gather and scan are below the
//!    operand's rank, reduce axes ascend without repeats, an iota has rank 1.
//! 5. **Bindings**: each input and weight name maps to an existing `input`/`param` node of that
//!    name, and each output to an existing node.
//! 6. **Regions and kinds**: see [`super::region`].

use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use super::{region, Ir, Problem};
use crate::graph::{infer, Graph, Op, TypeError};

/// The problems in `g`, each with its IR.
pub fn verify(g: &Graph) -> Vec<(Ir, Problem)> {
    let mut out = Vec::new();
    in_body(g, "", &mut out);
    out
}

/// Where node `n` of `g` is, for messages: its path (`%4` at top level, `%4/%2` in a region
/// of `%4`) and its source (`Node::origin`).
pub(super) fn place(g: &Graph, path: &str, n: NodeIndex) -> String {
    format!("{path}%{} {}", n.index(), g.dag[n].origin())
}

/// Verifies `g`, a body at `path` (empty at top level, `%4/` inside the region of `%4`).
pub(super) fn in_body(g: &Graph, path: &str, out: &mut Vec<(Ir, Problem)>) {
    let count = g.dag.node_count();
    for n in g.dag.node_indices() {
        let mut report = |what: String| {
            out.push((
                Ir::Graph,
                Problem {
                    at: place(g, path, n),
                    what,
                },
            ))
        };
        let ops = operands(g, n, &mut report);
        if ops.iter().any(|o| o.index() >= n.index()) {
            report("an operand is not created before its user (a cycle or a bad order)".into());
            continue;
        }
        let node = &g.dag[n];
        if let Some(what) = arity(&node.op, ops.len()) {
            report(what);
            continue;
        }
        let tys: Vec<_> = ops.iter().map(|o| g.ty(*o)).collect();
        if let Some(what) = bounds(&node.op, &tys) {
            report(what);
            continue;
        }
        match &node.op {
            Op::Fused(r) => region::fused(g, n, r, path, out),
            Op::Call(k) => region::call(g, n, *k, path, out),
            op => match infer(op, &tys, Some(&node.ty)) {
                Ok(t) if t == node.ty => {}
                Ok(t) => report(format!(
                    "its type is {}, but its operands give {t}",
                    node.ty
                )),
                Err(TypeError::Shape(e) | TypeError::DType(e) | TypeError::Range(e)) => {
                    report(format!("its operands do not type: {e}"))
                }
            },
        }
    }
    bindings(g, path, count, out);
    for (i, k) in g.kinds.iter().enumerate() {
        in_body(&k.body, &format!("{path}kind{i}/"), out);
    }
}

/// The operands of `n` in slot order, reporting missing or repeated slots.
fn operands(g: &Graph, n: NodeIndex, report: &mut impl FnMut(String)) -> Vec<NodeIndex> {
    let mut slots: Vec<(usize, NodeIndex)> = g
        .dag
        .edges_directed(n, Direction::Incoming)
        .map(|e| (e.weight().slot, e.source()))
        .collect();
    slots.sort();
    if slots.iter().enumerate().any(|(i, (s, _))| *s != i) {
        let s: Vec<usize> = slots.iter().map(|(s, _)| *s).collect();
        report(format!("its operand slots are {s:?}, not 0..{}", s.len()));
    }
    slots.into_iter().map(|(_, o)| o).collect()
}

/// Why `n` operands do not fit `op`, if they do not.
fn arity(op: &Op, n: usize) -> Option<String> {
    let want = match op {
        Op::Input(_) | Op::Param(_) | Op::Const(_) | Op::Iota | Op::Size(_) => 0,
        Op::Unary(_)
        | Op::Reduce { .. }
        | Op::Reshape
        | Op::Permute(_)
        | Op::Slice { .. }
        | Op::Flip { .. }
        | Op::Pad { .. }
        | Op::Cast
        | Op::SvdVals => 1,
        Op::Binary(_) | Op::MatMul | Op::Gather { .. } | Op::Scan { .. } => 2,
        Op::Select => 3,
        // Regions and calls check their operands against their bodies.
        Op::Concat { .. } | Op::Fused(_) | Op::Call(_) => return None,
    };
    (n != want).then(|| format!("`{op}` takes {want} operands, it has {n}"))
}

/// Why the axes of `op` do not fit its operands, if they do not.
fn bounds(op: &Op, tys: &[&crate::graph::TensorType]) -> Option<String> {
    let rank = tys.first().map(|t| t.rank()).unwrap_or(0);
    let axis = match op {
        Op::Concat { .. } if tys.is_empty() => return Some("`concat` of nothing".into()),
        Op::Reduce { axes, .. } => {
            let ascending = axes.windows(2).all(|w| w[0] < w[1]);
            return match axes.last() {
                Some(&a) if a >= rank => Some(format!("reduces axis {a} of a rank-{rank} value")),
                _ if !ascending => Some(format!("reduce axes {axes:?} do not ascend")),
                _ => None,
            };
        }
        Op::Slice { axis, .. }
        | Op::Concat { axis }
        | Op::Pad { axis, .. }
        | Op::Flip { axis }
        | Op::Gather { axis }
        | Op::Scan { axis } => *axis,
        _ => return None,
    };
    (axis >= rank).then(|| format!("`{op}` on axis {axis} of a rank-{rank} value"))
}

/// Checks the input, weight and output bindings of a body of `count` nodes.
fn bindings(g: &Graph, path: &str, count: usize, out: &mut Vec<(Ir, Problem)>) {
    let mut report = |what: String| {
        out.push((
            Ir::Graph,
            Problem {
                at: format!("{path}bindings"),
                what,
            },
        ))
    };
    for (name, n) in &g.inputs {
        match g.dag.node_weight(*n).map(|w| &w.op) {
            Some(Op::Input(m)) if m == name => {}
            _ => report(format!("input `{name}` is not an `input \"{name}\"` node")),
        }
    }
    for (name, (n, _)) in &g.params {
        match g.dag.node_weight(*n).map(|w| &w.op) {
            Some(Op::Param(m)) if m == name => {}
            _ => report(format!("weight `{name}` is not a `param \"{name}\"` node")),
        }
    }
    for (name, n) in &g.outputs {
        if n.index() >= count {
            report(format!(
                "output `{name}` is %{}, but there are {count} nodes",
                n.index()
            ));
        }
    }
}
