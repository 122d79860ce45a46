//! Outlining: a set of nodes becomes one fused region node whose body is those nodes.

use std::collections::HashMap;

use petgraph::graph::NodeIndex;

use super::rewrite::Rewriter;
use crate::graph::{Graph, Op, Region, RegionKind};

/// A region body cut out of a graph.
pub struct Outlined {
    /// The body: inputs `"0"`, `"1"`, … and the output `"out"`.
    pub body: Graph,
    /// The graph nodes that feed the body's inputs, in input order.
    pub leaves: Vec<NodeIndex>,
    /// Graph node → body node, for the members.
    pub map: HashMap<NodeIndex, NodeIndex>,
}

/// Makes the body of a region from `members` (graph nodes, any order) whose value is `root`.
/// Operands of members that are not members become the body's inputs, in order of first use.
pub fn outline(g: &Graph, members: &[NodeIndex], root: NodeIndex) -> Outlined {
    let mut sorted = members.to_vec();
    sorted.sort();
    sorted.dedup();
    let mut body = Graph {
        name: g.name.clone(),
        symbols: g.symbols.clone(),
        ..Graph::default()
    };
    let mut map: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut leaves = Vec::new();
    for &m in &sorted {
        let mut operands = Vec::new();
        for o in g.operands(m) {
            if let Some(b) = map.get(&o) {
                operands.push(*b);
                continue;
            }
            let slot = leaves.len();
            let b = body.add(
                Op::Input(slot.to_string()),
                g.ty(o).clone(),
                &g.dag[o].scope,
                &[],
            );
            body.inputs.insert(slot.to_string(), b);
            leaves.push(o);
            map.insert(o, b);
            operands.push(b);
        }
        let node = &g.dag[m];
        let b = body.add(node.op.clone(), node.ty.clone(), &node.scope, &operands);
        map.insert(m, b);
    }
    body.outputs.insert("out".into(), map[&root]);
    // Leaves were put in the map to share their input node; only members stay in it.
    for l in &leaves {
        map.remove(l);
    }
    Outlined { body, leaves, map }
}

impl Outlined {
    /// Adds the region node to the rewritten graph in place of `root`, on its leaves.
    pub fn place(self, r: &mut Rewriter, root: NodeIndex, kind: RegionKind) {
        let operands: Vec<NodeIndex> = self.leaves.iter().map(|l| r.at(*l)).collect();
        let node = &r.old.dag[root];
        let region = Region {
            kind,
            body: self.body,
        };
        let n = r.new.add(
            Op::Fused(Box::new(region)),
            node.ty.clone(),
            &node.scope,
            &operands,
        );
        r.set(root, n);
    }
}
