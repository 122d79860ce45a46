//! Graph rebuilding for passes: nodes are copied into a fresh graph in topological order, some
//! replaced on the way, so that node indices stay dense and in creation (topological) order.

use petgraph::graph::NodeIndex;

use crate::graph::Graph;

/// A new graph being built from an old one, with the old → new node map.
pub struct Rewriter<'a> {
    /// The graph being rewritten.
    pub old: &'a Graph,
    /// The graph being built.
    pub new: Graph,
    map: Vec<Option<NodeIndex>>,
}

impl<'a> Rewriter<'a> {
    /// An empty new graph with the old one's name, symbols, stacks and layer kinds.
    pub fn new(old: &'a Graph) -> Rewriter<'a> {
        let stacks = old
            .stacks
            .iter()
            .map(|s| crate::graph::StackInfo {
                spans: Vec::new(),
                ..s.clone()
            })
            .collect();
        Rewriter {
            old,
            new: Graph {
                name: old.name.clone(),
                symbols: old.symbols.clone(),
                dim_checks: old.dim_checks.clone(),
                stacks,
                kinds: old.kinds.clone(),
                ..Graph::default()
            },
            map: vec![None; old.dag.node_count()],
        }
    }

    /// The new node an old node became, if it was copied or replaced.
    pub fn get(&self, old: NodeIndex) -> Option<NodeIndex> {
        self.map[old.index()]
    }

    /// The new node an old node became; its operands are copied before it, so this holds.
    pub fn at(&self, old: NodeIndex) -> NodeIndex {
        self.map[old.index()].expect("operands are rewritten before their users")
    }

    /// Records that `old` is now `new`.
    pub fn set(&mut self, old: NodeIndex, new: NodeIndex) {
        self.map[old.index()] = Some(new);
    }

    /// Copies an old node with its operands mapped, and records it.
    pub fn copy(&mut self, old: NodeIndex) -> NodeIndex {
        let node = &self.old.dag[old];
        let operands: Vec<NodeIndex> = self.old.operands(old).iter().map(|o| self.at(*o)).collect();
        let n = self.new.add_like(node, node.op.clone(), &operands);
        self.set(old, n);
        n
    }

    /// The new graph, with inputs, weights and outputs pointing at the new nodes.
    pub fn finish(mut self) -> Graph {
        for (name, n) in &self.old.inputs {
            let m = self.at(*n);
            self.new.inputs.insert(name.clone(), m);
        }
        for (name, (n, kind)) in &self.old.params {
            if let Some(m) = self.get(*n) {
                self.new.params.insert(name.clone(), (m, kind.clone()));
            }
        }
        for (name, n) in &self.old.outputs {
            let m = self.at(*n);
            self.new.outputs.insert(name.clone(), m);
        }
        self.new
    }
}
