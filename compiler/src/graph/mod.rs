//! The Graph IR: primitive ops on a petgraph DAG, every value typed.
//!
//! Blocks do not survive elaboration; each node keeps the weight scope it was created under
//! (`model.layers.3.self_attn`), which the dump shows.

mod causality;
mod infer;
mod moe;
mod op;
mod printer;
mod region;
pub mod scan_terms;
mod storage;
mod structure;
mod training;

pub use archc_kernels::Ieee64;
pub use archc_runtime::Dim;
pub use causality::{noncausal, LookAhead};
pub use infer::{broadcast, infer, TypeError};
pub use moe::{Expert, MoeInfo, ROUTED};
pub use op::{BinaryOp, Op, ReduceOp, TensorType, UnaryOp};
pub use printer::print_graph;
pub use region::{
    AttentionGradInfo, AttentionInfo, AttentionPart, KeyRange, LayerKind, Region, RegionKind,
    ScanFrames, ScanGradInfo, ScanInfo, SsdInfo,
};
pub use storage::with_float_storage;
pub use structure::Structure;
pub use training::{glob_matches, OptimizerSpec, ParamGroup, ScheduleSpec, Training};

use indexmap::IndexMap;
use petgraph::graph::DiGraph;
pub use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef;
use petgraph::Direction;

/// One op and the type of the value it produces.
#[derive(Clone, Debug)]
pub struct Node {
    /// The operation.
    pub op: Op,
    /// Result dtype and shape.
    pub ty: TensorType,
    /// The weight scope the node was created under (empty at model level).
    pub scope: String,
    /// Where in the source the node was made, as text (`file:line:col`, the user's call site
    /// first when it is inside the prelude; empty for nodes a pass made up). Fusion notes print
    /// it, and lowering copies it into the plan, where no source map exists, so that a failure
    /// at run time can point at the user's code. Dumps do not print it.
    pub at: String,
}

impl Node {
    /// Where the node comes from, for messages: its source location, op and weight scope, e.g.
    /// ``llama.arch:31:7 (gather in `model.embed_tokens`)``.
    pub fn origin(&self) -> String {
        let op = match &self.op {
            Op::Param(name) => format!("weight `{name}`"),
            Op::Input(name) => format!("input `{name}`"),
            op => op.to_string(),
        };
        let name = match &self.op {
            Op::Param(_) | Op::Input(_) => &op,
            _ => op.split(['[', '(', ' ']).next().unwrap_or_default(),
        };
        let scope = if self.scope.is_empty() {
            String::new()
        } else {
            format!(" in `{}`", self.scope)
        };
        let at = if self.at.is_empty() { "?" } else { &self.at };
        format!("{at} ({name}{scope})")
    }
}

/// An edge: which operand slot of the consumer it feeds (the value's type is its source
/// node's).
#[derive(Clone, Debug)]
pub struct Edge {
    /// Operand position in the consumer.
    pub slot: usize,
}

/// What a weight is for beyond its shape.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamKind {
    /// A trainable weight.
    Trainable,
    /// An EMA copy: it follows `online` with `momentum` and is not trained.
    Ema {
        /// The online weight it follows.
        online: String,
        /// The EMA momentum at the first step.
        momentum: f64,
        /// The momentum at the last step: it moves linearly from `momentum` to this over a
        /// training run (I-JEPA's schedule, 0.996 to 1.0); equal to `momentum` when constant.
        end: f64,
    },
}

/// Where one layer of a stack sits in the graph: elaboration creates its nodes one after
/// another, so they are the index range `start..end`.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSpan {
    /// The first node the layer created.
    pub start: usize,
    /// One past the last node the layer created.
    pub end: usize,
    /// The value the layer received (the previous layer's output, or the stack's input).
    pub input: NodeIndex,
    /// The value the layer returned.
    pub output: NodeIndex,
}

/// One stack of layers, as the `check` summary and the stack passes see it.
#[derive(Clone, Debug, PartialEq)]
pub struct StackInfo {
    /// The stack's weight scope, e.g. `model.layers`.
    pub scope: String,
    /// One kind per layer, e.g. `decoder(mixer=attention_mixer)`.
    pub layers: Vec<String>,
    /// Where each layer's nodes are, as elaborated (passes that renumber nodes clear it).
    pub spans: Vec<LayerSpan>,
}

/// A whole elaborated model.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// The model's name.
    pub name: String,
    /// The DAG. Node indices follow creation order, which is a topological order.
    pub dag: DiGraph<Node, Edge>,
    /// Inputs by name, in declaration order.
    pub inputs: IndexMap<String, NodeIndex>,
    /// Outputs by name, in declaration order.
    pub outputs: IndexMap<String, NodeIndex>,
    /// Weights by checkpoint name, in creation order.
    pub params: IndexMap<String, (NodeIndex, ParamKind)>,
    /// Symbolic dims, in order of first appearance.
    pub symbols: Vec<String>,
    /// Conditions on the dims that types cannot prove, checked when the dims are bound.
    pub dim_checks: Vec<archc_runtime::DimCheck>,
    /// The stacks of layers, in creation order.
    pub stacks: Vec<StackInfo>,
    /// Distinct layer kinds that `call` nodes run (made by the `interleave_stack` pass).
    pub kinds: Vec<LayerKind>,
    /// What the model's `train` section says, if it has one.
    pub training: Option<Training>,
}

impl Graph {
    /// Adds a node fed by `operands` (in slot order) and returns it.
    pub fn add(
        &mut self,
        op: Op,
        ty: TensorType,
        scope: &str,
        operands: &[NodeIndex],
    ) -> NodeIndex {
        let n = self.dag.add_node(Node {
            op,
            ty,
            scope: scope.to_string(),
            at: String::new(),
        });
        for (slot, &o) in operands.iter().enumerate() {
            self.dag.add_edge(o, n, Edge { slot });
        }
        n
    }

    /// Adds a node like [`Graph::add`], carrying `from`'s source span and location (a pass's copy of a
    /// node, or a node that takes its place).
    pub fn add_like(&mut self, from: &Node, op: Op, operands: &[NodeIndex]) -> NodeIndex {
        let n = self.add(op, from.ty.clone(), &from.scope, operands);
        self.dag[n].at = from.at.clone();
        n
    }

    /// The operands of a node, in slot order.
    pub fn operands(&self, n: NodeIndex) -> Vec<NodeIndex> {
        let mut e: Vec<_> = self
            .dag
            .edges_directed(n, Direction::Incoming)
            .map(|e| (e.weight().slot, e.source()))
            .collect();
        e.sort();
        e.into_iter().map(|(_, s)| s).collect()
    }

    /// The nodes that use a node's value.
    pub fn users(&self, n: NodeIndex) -> Vec<NodeIndex> {
        self.dag
            .neighbors_directed(n, Direction::Outgoing)
            .collect()
    }

    /// The type of a node's value.
    pub fn ty(&self, n: NodeIndex) -> &TensorType {
        &self.dag[n].ty
    }

    /// For each node: is it computed from weights and constants alone, with a constant shape?
    /// Such values are the same on every run (a transposed weight, `−exp(A_log)`).
    pub fn weight_only(&self) -> Vec<bool> {
        let mut w = vec![false; self.dag.node_count()];
        for v in self.dag.node_indices() {
            let node = &self.dag[v];
            let constant_shape = node.ty.shape.iter().all(|d| d.as_const().is_some());
            w[v.index()] = constant_shape
                && match &node.op {
                    Op::Param(_) | Op::Const(_) => true,
                    Op::Input(_) | Op::Size(_) | Op::Iota | Op::Call(_) => false,
                    // A region of no operands is not constant when its body reads a dim
                    // (dynamic RoPE's frequencies depend on `seq`).
                    Op::Fused(r) if reads_dims(&r.body) => false,
                    _ => self.operands(v).iter().all(|o| w[o.index()]),
                };
        }
        w
    }

    /// Number of elements of each trainable and EMA weight, summed: (trainable, ema).
    /// Weights must have constant shapes, which elaboration guarantees.
    pub fn param_counts(&self) -> (u64, u64) {
        let mut counts = (0u64, 0u64);
        for (node, kind) in self.params.values() {
            let n: u64 = self.dag[*node]
                .ty
                .shape
                .iter()
                .map(|d| d.as_const().unwrap_or(0) as u64)
                .product();
            match kind {
                ParamKind::Trainable => counts.0 += n,
                ParamKind::Ema { .. } => counts.1 += n,
            }
        }
        counts
    }
}

/// Whether a graph's values depend on the dims' values: a `size` op, or a value of a symbolic
/// shape, here or in a fused region inside.
fn reads_dims(g: &Graph) -> bool {
    g.dag.node_weights().any(|n| {
        n.ty.shape.iter().any(|d| d.as_const().is_none())
            || match &n.op {
                Op::Size(_) => true,
                Op::Fused(r) => reads_dims(&r.body),
                _ => false,
            }
    })
}
