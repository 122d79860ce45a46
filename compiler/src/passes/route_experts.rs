//! `route_experts`: a mixture of experts written densely becomes a `fused.moe` region that runs
//! each expert only on the tokens routed to it.
//!
//! The prelude's `moe` evaluates every expert on every token and sums the results weighted by
//! the routing weights, which are zero for the experts a token is not routed to:
//! `reduce_sum(concat([reshape(yₑ)…], -2) · reshape(w), -2)` with `yₑ: [rows…, dim]` and
//! `w: [rows…, experts]`. Each `yₑ` must be a row-local computation of one shared value `x`
//! (matmuls by rank-2 weights, pointwise ops with weights or constants of rank ≤ 1), used by
//! nothing else. Then row `t` of `yₑ` depends on row `t` of `x` alone, so the expert can run on
//! the gathered rows with `w[t, e] ≠ 0` and its results be scattered back, weighted. The region
//! body stays the dense form (what the region means); [`MoeInfo`] adds each expert as a graph
//! over [`ROUTED`] rows, fused here as `fuse_elementwise` would fuse it.
//!
//! With a single expert there is nothing shared to call `x`, and routing would save nothing,
//! so the pass matches two experts or more.

use std::collections::HashSet;

use petgraph::graph::NodeIndex;

use super::op_kinds::{cheap, pointwise, users};
use super::outline::{replace, Match, Outlined};
use crate::graph::{
    BinaryOp, Dim, Expert, Graph, MoeInfo, Op, ReduceOp, RegionKind, TensorType, ROUTED,
};

/// A mixture found in the graph.
struct Found {
    /// The tokens every expert reads.
    x: NodeIndex,
    /// The routing weights.
    w: NodeIndex,
    /// Per expert: its result and its nodes, ascending.
    experts: Vec<(NodeIndex, Vec<NodeIndex>)>,
}

/// What the matcher looks up per node.
struct Facts {
    users: Vec<Vec<NodeIndex>>,
    /// Weight-only values (at the top level; a layer body's weights are inputs).
    weights: Vec<bool>,
    cheap: Vec<bool>,
    outputs: HashSet<NodeIndex>,
}

impl Facts {
    /// Whether every user of `n` is in `set` and `n` is no graph output.
    fn only_used_by(&self, n: NodeIndex, set: &HashSet<NodeIndex>) -> bool {
        !self.outputs.contains(&n) && self.users[n.index()].iter().all(|u| set.contains(u))
    }
}

/// Runs the pass.
pub fn run(g: &Graph) -> Graph {
    let facts = Facts {
        users: users(g),
        weights: g.weight_only(),
        cheap: cheap(g),
        outputs: g.outputs.values().copied().collect(),
    };
    let found: Vec<Match<Found>> = g
        .dag
        .node_indices()
        .filter_map(|r| find(g, &facts, r))
        .collect();
    replace(g, &found, |f, out| {
        RegionKind::Moe(MoeInfo {
            x: out.slot(f.x),
            w: out.slot(f.w),
            experts: f
                .experts
                .iter()
                .map(|(y, nodes)| expert(out, f.x, *y, nodes))
                .collect(),
        })
    })
}

/// Splits `reduce_sum(concat(parts) · reshape(w), axis)` into its parts and `w`.
fn combine(g: &Graph, root: NodeIndex) -> Option<(NodeIndex, NodeIndex, NodeIndex, NodeIndex)> {
    let Op::Reduce {
        op: ReduceOp::Sum,
        axes,
        keepdim: false,
    } = &g.dag[root].op
    else {
        return None;
    };
    let m = g.operands(root)[0];
    if !matches!(g.dag[m].op, Op::Binary(BinaryOp::Mul)) {
        return None;
    }
    let ops = g.operands(m);
    let (c, u) = match (&g.dag[ops[0]].op, &g.dag[ops[1]].op) {
        (Op::Concat { .. }, Op::Reshape) => (ops[0], ops[1]),
        (Op::Reshape, Op::Concat { .. }) => (ops[1], ops[0]),
        _ => return None,
    };
    let rank = g.ty(c).rank();
    let Op::Concat { axis } = g.dag[c].op else {
        return None;
    };
    (rank >= 3 && axes[..] == [rank - 2] && axis == rank - 2).then_some((m, c, u, g.operands(u)[0]))
}

/// Matches a mixture whose result is `root`.
fn find(g: &Graph, facts: &Facts, root: NodeIndex) -> Option<Match<Found>> {
    let (m, c, u, w) = combine(g, root)?;
    let cs = &g.ty(c).shape;
    let rank = cs.len();
    let rows = &cs[..rank - 2];
    let parts = g.operands(c);
    let n = parts.len();
    let w_ty = &g.ty(w).shape;
    let u_ty = &g.ty(u).shape;
    let mut want_w = rows.to_vec();
    want_w.push(Dim::constant(n as i64));
    let mut want_u = want_w.clone();
    want_u.push(Dim::constant(1));
    if n < 2 || g.ty(c).dtype != archc_runtime::DType::F32 || *w_ty != want_w || *u_ty != want_u {
        return None;
    }
    let mut owned: HashSet<NodeIndex> = [root, m, c, u].into_iter().collect();
    let mut ys = Vec::new();
    for p in &parts {
        let y = g.operands(*p)[0];
        if !matches!(g.dag[*p].op, Op::Reshape) || !row_shaped(g, facts, y, rows) {
            return None;
        }
        owned.insert(*p);
        ys.push(y);
    }
    // Every expert's row-local ancestors; those all share end at `x`.
    let closures: Vec<HashSet<NodeIndex>> =
        ys.iter().map(|y| closure(g, facts, *y, rows)).collect();
    let x = *closures[0]
        .iter()
        .filter(|v| closures[1..].iter().all(|c| c.contains(v)))
        .max()?;
    let mut experts = Vec::new();
    let mut copied = Vec::new();
    for (y, b) in ys.iter().zip(&closures) {
        let nodes = depends_on(g, b, x);
        if !nodes.contains(y) || nodes.iter().any(|v| owned.contains(v)) {
            return None;
        }
        copied.extend(leaves(g, facts, &nodes, x)?);
        owned.extend(nodes.iter().copied());
        experts.push((*y, nodes));
    }
    if [m, c, u]
        .into_iter()
        .chain(g.operands(c))
        .any(|v| !facts.only_used_by(v, &owned))
        || experts
            .iter()
            .flat_map(|(_, nodes)| nodes)
            .any(|v| !facts.only_used_by(*v, &owned))
    {
        return None;
    }
    copied.sort();
    copied.dedup();
    Some(Match {
        root,
        owned: owned.into_iter().collect(),
        copied,
        info: Found { x, w, experts },
    })
}

/// A float value of shape `[rows…, c]` computed per run (not from weights alone).
fn row_shaped(g: &Graph, facts: &Facts, v: NodeIndex, rows: &[Dim]) -> bool {
    let t = g.ty(v);
    t.dtype == archc_runtime::DType::F32
        && t.rank() == rows.len() + 1
        && t.shape[..rows.len()] == *rows
        && !facts.weights[v.index()]
}

/// `y` and its row-shaped ancestors through matmuls and pointwise ops.
fn closure(g: &Graph, facts: &Facts, y: NodeIndex, rows: &[Dim]) -> HashSet<NodeIndex> {
    let mut seen = HashSet::new();
    let mut stack = vec![y];
    while let Some(v) = stack.pop() {
        if !seen.insert(v) {
            continue;
        }
        let op = &g.dag[v].op;
        if !(pointwise(op) || matches!(op, Op::MatMul)) {
            continue;
        }
        stack.extend(
            g.operands(v)
                .into_iter()
                .filter(|o| row_shaped(g, facts, *o, rows)),
        );
    }
    seen
}

/// The nodes of `set` computed from `x`, ascending.
fn depends_on(g: &Graph, set: &HashSet<NodeIndex>, x: NodeIndex) -> Vec<NodeIndex> {
    let mut sorted: Vec<NodeIndex> = set.iter().copied().filter(|v| *v > x).collect();
    sorted.sort();
    let mut on: HashSet<NodeIndex> = [x].into_iter().collect();
    let mut out = Vec::new();
    for v in sorted {
        let op = &g.dag[v].op;
        if (pointwise(op) || matches!(op, Op::MatMul))
            && g.operands(v).iter().any(|o| on.contains(o))
        {
            on.insert(v);
            out.push(v);
        }
    }
    out
}

/// Checks that the expert `nodes` are row-local in `x` and returns the constants they read
/// (the region copies them); None when an operand would need rows of something else. Any
/// other operand is the same for every row (a matrix a matmul multiplies by, a vector or a
/// scalar a pointwise op broadcasts), whatever computes it.
fn leaves(g: &Graph, facts: &Facts, nodes: &[NodeIndex], x: NodeIndex) -> Option<Vec<NodeIndex>> {
    let inside = |o: &NodeIndex| *o == x || nodes.binary_search(o).is_ok();
    let fixed = |o: NodeIndex, rank: usize| {
        let t = g.ty(o);
        t.rank() == rank && t.shape.iter().all(|d| d.as_const().is_some())
    };
    let mut copied = Vec::new();
    for v in nodes {
        let ops = g.operands(*v);
        if matches!(g.dag[*v].op, Op::MatMul) {
            if !inside(&ops[0]) || inside(&ops[1]) || !fixed(ops[1], 2) {
                return None;
            }
            continue;
        }
        for o in ops.iter().filter(|o| !inside(o)) {
            if !fixed(*o, 0) && !fixed(*o, 1) {
                return None;
            }
            if facts.cheap[o.index()] && g.operands(*o).is_empty() {
                copied.push(*o);
            }
        }
    }
    Some(copied)
}

/// Expert `y` (graph nodes `nodes`) as a graph over its routed rows, fused.
fn expert(out: &Outlined, x: NodeIndex, y: NodeIndex, nodes: &[NodeIndex]) -> Expert {
    let body = &out.body;
    let mut symbols = body.symbols.clone();
    symbols.push(ROUTED.to_string());
    let mut eg = Graph {
        name: body.name.clone(),
        symbols,
        ..Graph::default()
    };
    let rows_of = |t: &TensorType| TensorType {
        dtype: t.dtype,
        shape: vec![Dim::symbol(ROUTED), t.shape[t.rank() - 1].clone()],
    };
    let bx = out.map[&x];
    let x_in = eg.add(Op::Input("0".into()), rows_of(body.ty(bx)), "", &[]);
    eg.inputs.insert("0".into(), x_in);
    let mut map = std::collections::HashMap::from([(bx, x_in)]);
    let mut slots = Vec::new();
    for v in nodes {
        let bv = out.map[v];
        let mut operands = Vec::new();
        for bo in body.operands(bv) {
            let e = match (map.get(&bo), &body.dag[bo].op) {
                (Some(e), _) => *e,
                (None, Op::Input(slot)) => {
                    slots.push(slot.parse::<usize>().unwrap_or_default());
                    let name = slots.len().to_string();
                    let e = eg.add(Op::Input(name.clone()), body.ty(bo).clone(), "", &[]);
                    eg.inputs.insert(name, e);
                    e
                }
                (None, op) => eg.add_like(&body.dag[bo], op.clone(), &[]),
            };
            map.insert(bo, e);
            operands.push(e);
        }
        let node = &body.dag[bv];
        let e = eg.add_like(node, node.op.clone(), &operands);
        eg.dag[e].ty = rows_of(&node.ty);
        map.insert(bv, e);
    }
    eg.outputs.insert("out".into(), map[&out.map[&y]]);
    Expert {
        body: super::fuse_elementwise::run(&eg),
        slots,
    }
}
