//! `fuse_elementwise`: chains of elementwise, broadcast and layout ops become one loop nest,
//! fused into reduction prologues and into matmul and reduction epilogues.
//!
//! A node is *inlined* (computed where it is used, never stored) when every user can take
//! it: an elementwise or layout op, or a reduction (as its prologue). It must also have one
//! user, or users that all end up in one region (computed once there, `x · σ(x)`), or be
//! cheap: index arithmetic on constants, iotas and sizes, which costs less to recompute than
//! to load. Only cheap values are inlined into users that broadcast them (the
//! `rsqrt` of a norm is stored per row, not recomputed per element). Every other node is stored; a stored elementwise node is the
//! *root* of a region made of it and its inlined ancestors.
//!
//! A reduction or matmul whose one user starts a chain of same-shape elementwise ops to a root
//! is that root's *anchor*: the region computes the anchor, then the chain on each of its
//! results before storing (a bias and residual add after a matmul; `rsqrt(mean + ε)` after a
//! sum). A region has at most one anchor.

use std::collections::HashMap;

use petgraph::graph::NodeIndex;

use super::op_kinds::{cheap, fusible, pointwise, users};
use super::outline::outline;
use super::rewrite::Rewriter;
use crate::graph::{Graph, Op, RegionKind};

/// Runs the pass.
pub fn run(g: &Graph) -> Graph {
    let plan = Plan::new(g);
    let mut r = Rewriter::new(g);
    for v in g.dag.node_indices() {
        if plan.inline[v.index()] || plan.absorbed.contains_key(&v) {
            continue;
        }
        if !plan.is_root(v) {
            r.copy(v);
            continue;
        }
        let (members, anchor) = plan.region(v);
        let out = outline(g, &members, v);
        let kind = match anchor {
            Some(a) if matches!(g.dag[a].op, Op::MatMul) => RegionKind::MatMul {
                anchor: out.map[&a],
            },
            Some(a) => RegionKind::Reduce {
                anchor: out.map[&a],
            },
            None => RegionKind::Elementwise,
        };
        out.place(&mut r, v, kind);
    }
    r.finish()
}

/// The pass's decisions for one graph.
struct Plan<'g> {
    g: &'g Graph,
    users: Vec<Vec<NodeIndex>>,
    /// Computed inside the regions that use it.
    inline: Vec<bool>,
    /// Anchors, and the root of the region that computes them.
    absorbed: HashMap<NodeIndex, NodeIndex>,
}

impl<'g> Plan<'g> {
    fn new(g: &'g Graph) -> Plan<'g> {
        let users = users(g);
        let mut inline = vec![false; g.dag.node_count()];
        let outputs: Vec<NodeIndex> = g.outputs.values().copied().collect();
        let cheap = cheap(g);
        let weights = g.weight_only();
        // The root of the one region a node ends up in (None: in several, or in none).
        let mut root_of: Vec<Option<NodeIndex>> = vec![None; g.dag.node_count()];
        for v in g.dag.node_indices().rev() {
            let us = &users[v.index()];
            let op = &g.dag[v].op;
            root_of[v.index()] = (fusible(op) || matches!(op, Op::Reduce { .. })).then_some(v);
            if !fusible(op) || outputs.contains(&v) || us.is_empty() {
                continue;
            }
            let shape = &g.ty(v).shape;
            let accepts = |u: &NodeIndex| match &g.dag[*u].op {
                Op::Reduce { .. } => true,
                // A stored reshape of a stored value is an alias: keep the value stored.
                Op::Reshape => inline[u.index()],
                // A user that broadcasts the value would recompute it for every element it
                // is stretched over: only cheap values are worth that.
                op if pointwise(op) && &g.ty(*u).shape != shape => cheap[v.index()],
                op => fusible(op),
            };
            // Weight-only values are computed once, when the weights load, unless cheap.
            let once = weights[v.index()] && !cheap[v.index()];
            // Several users in one region share one computation (`x · σ(x)`).
            let roots: Vec<Option<NodeIndex>> = us.iter().map(|u| root_of[u.index()]).collect();
            let one_region = roots[0].is_some() && roots.iter().all(|r| *r == roots[0]);
            inline[v.index()] = !once
                && us.iter().all(accepts)
                && (us.len() == 1 || cheap[v.index()] || one_region);
            if inline[v.index()] {
                root_of[v.index()] = if one_region { roots[0] } else { None };
            }
        }
        let mut plan = Plan {
            g,
            users,
            inline,
            absorbed: HashMap::new(),
        };
        let mut claimed: Vec<NodeIndex> = Vec::new();
        for a in g.dag.node_indices() {
            if !matches!(g.dag[a].op, Op::Reduce { .. } | Op::MatMul) || outputs.contains(&a) {
                continue;
            }
            if let Some(root) = plan.epilogue_root(a) {
                if !claimed.contains(&root) {
                    claimed.push(root);
                    plan.absorbed.insert(a, root);
                }
            }
        }
        plan
    }

    /// The root an anchor's epilogue ends at: every path from the anchor goes through inlined
    /// pointwise ops of the anchor's shape to that one stored node (`x · σ(x)` uses the
    /// anchor twice, on the way to one root).
    fn epilogue_root(&self, a: NodeIndex) -> Option<NodeIndex> {
        let shape = &self.g.ty(a).shape;
        let mut root = None;
        let mut stack = vec![a];
        while let Some(cur) = stack.pop() {
            for u in &self.users[cur.index()] {
                let node = &self.g.dag[*u];
                if !pointwise(&node.op) || &node.ty.shape != shape {
                    return None;
                }
                if self.inline[u.index()] {
                    stack.push(*u);
                } else if *root.get_or_insert(*u) != *u {
                    return None;
                }
            }
        }
        root
    }

    /// Whether a node is stored as a region's value.
    fn is_root(&self, v: NodeIndex) -> bool {
        let op = &self.g.dag[v].op;
        if matches!(op, Op::Reduce { .. }) {
            return true;
        }
        if !fusible(op) {
            return false;
        }
        // A stored reshape of a stored value is an alias, not a kernel.
        !matches!(op, Op::Reshape) || self.inline[self.g.operands(v)[0].index()]
    }

    /// The members of the region whose root is `root`, and its anchor.
    fn region(&self, root: NodeIndex) -> (Vec<NodeIndex>, Option<NodeIndex>) {
        let mut anchor = matches!(self.g.dag[root].op, Op::Reduce { .. }).then_some(root);
        let mut members = vec![root];
        let mut stack = vec![root];
        while let Some(v) = stack.pop() {
            for o in self.g.operands(v) {
                let absorbed_here = self.absorbed.get(&o) == Some(&root);
                if (self.inline[o.index()] || absorbed_here) && !members.contains(&o) {
                    if absorbed_here {
                        anchor = Some(o);
                    }
                    members.push(o);
                    stack.push(o);
                }
            }
        }
        (members, anchor)
    }
}
