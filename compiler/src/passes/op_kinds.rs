//! What the fusion passes need to know about ops and nodes: who uses them, which ops a loop
//! nest can compute, which values are cheap to recompute or the same on every run.

use petgraph::graph::NodeIndex;

use crate::graph::{Graph, Op, UnaryOp};

/// Each node's users.
pub fn users(g: &Graph) -> Vec<Vec<NodeIndex>> {
    let mut users = vec![Vec::new(); g.dag.node_count()];
    for v in g.dag.node_indices() {
        for o in g.operands(v) {
            if !users[o.index()].contains(&v) {
                users[o.index()].push(v);
            }
        }
    }
    users
}

/// Ops a region computes inside its loops.
pub fn fusible(op: &Op) -> bool {
    matches!(
        op,
        Op::Unary(_)
            | Op::Binary(_)
            | Op::Select
            | Op::Cast
            | Op::Const(_)
            | Op::Iota
            | Op::Size(_)
            | Op::Reshape
            | Op::Permute(_)
            | Op::Slice { .. }
            | Op::Flip { .. }
            | Op::Pad { .. }
            | Op::Concat { .. }
            | Op::Gather { .. }
    )
}

/// Ops that act element by element on operands of their own shape (after broadcasting).
pub fn pointwise(op: &Op) -> bool {
    matches!(op, Op::Unary(_) | Op::Binary(_) | Op::Select | Op::Cast)
}

/// For each node: is it index arithmetic on constants, iotas and sizes (no loads, no
/// transcendental functions), which costs less to recompute than to store and load?
pub fn cheap(g: &Graph) -> Vec<bool> {
    let mut cheap = vec![false; g.dag.node_count()];
    for v in g.dag.node_indices() {
        let here = match &g.dag[v].op {
            Op::Unary(u) => matches!(u, UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Not),
            Op::Gather { .. } => false,
            op => fusible(op),
        };
        cheap[v.index()] = here && g.operands(v).iter().all(|o| cheap[o.index()]);
    }
    cheap
}
