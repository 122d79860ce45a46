//! Outlining: a set of nodes becomes one fused region node whose body is those nodes.

use std::collections::{HashMap, HashSet};

use petgraph::graph::NodeIndex;

use super::rewrite::Rewriter;
use crate::graph::{Graph, Op, Region, RegionKind};

/// A region body cut out of a graph.
pub struct Outlined {
    /// The body: inputs `"0"`, `"1"`, … and the output `"out"`.
    pub body: Graph,
    /// The graph nodes that feed the body's inputs, in input order.
    pub leaves: Vec<NodeIndex>,
    /// Graph node → body node, for the members and the leaves (whose body node is an input).
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
        let b = body.add_like(node, node.op.clone(), &operands);
        map.insert(m, b);
    }
    body.outputs.insert("out".into(), map[&root]);
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
        let n = r.new.add_like(node, Op::Fused(Box::new(region)), &operands);
        r.set(root, n);
    }
}

impl Outlined {
    /// The body input a graph node feeds.
    pub fn slot(&self, n: NodeIndex) -> usize {
        self.leaves
            .iter()
            .position(|l| *l == n)
            .expect("the node is a region input")
    }
}

/// A region a pass matched, before outlining.
pub struct Match<K> {
    /// The node whose value the region computes.
    pub root: NodeIndex,
    /// Nodes only the region uses: they leave the graph.
    pub owned: Vec<NodeIndex>,
    /// Cheap nodes the region copies (they may have other users too).
    pub copied: Vec<NodeIndex>,
    /// What the pass knows of the region, for its kind.
    pub info: K,
}

/// Replaces every match by its region; `kind` makes the region's kind from the match and its
/// outlined body. Copied nodes that nothing else uses are dropped.
pub fn replace<K>(
    g: &Graph,
    found: &[Match<K>],
    kind: impl Fn(&K, &Outlined) -> RegionKind,
) -> Graph {
    let owned: HashSet<NodeIndex> = found.iter().flat_map(|f| f.owned.clone()).collect();
    let mut r = Rewriter::new(g);
    for v in g.dag.node_indices() {
        if let Some(f) = found.iter().find(|f| f.root == v) {
            let members: Vec<NodeIndex> = f.owned.iter().chain(&f.copied).copied().collect();
            let out = outline(g, &members, v);
            let k = kind(&f.info, &out);
            out.place(&mut r, v, k);
        } else if !owned.contains(&v) {
            r.copy(v);
        }
    }
    super::canonicalize::dead_code(&r.finish())
}
