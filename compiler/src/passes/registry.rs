//! The `Pass` trait and the one registry of passes, in pipeline order. `--disable-pass`,
//! `--no-fuse`, the fusion notes and the CLI help all read [`PASSES`].

use std::mem;

use archc_runtime::Plan;

use super::explain::Note;
use super::tile_attention;
use super::{
    canonicalize, fuse_elementwise, fuse_scan, interleave_stack, plan_memory, route_experts,
};
use crate::graph::Graph;

/// Which IR a pass rewrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The Graph IR, before lowering.
    Graph,
    /// The lowered plan.
    Plan,
}

/// What a pass needs of the numbering of a graph's nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeOrder {
    /// Any topological order: the pass looks only at edges.
    Any,
    /// Elaboration's: each layer of a stack is the node range its `LayerSpan` records. Any pass
    /// that rebuilds the graph renumbers the nodes and loses it.
    Elaboration,
}

/// The IR a pass is given, by [`Stage`].
pub enum Unit<'a> {
    /// A whole graph, layer kinds included.
    Graph(&'a mut Graph),
    /// A lowered plan.
    Plan(&'a mut Plan),
}

/// One pass of the pipeline.
pub trait Pass: Sync {
    /// The name `--disable-pass` takes.
    fn name(&self) -> &'static str;
    /// One line on what it does, for the CLI help.
    fn description(&self) -> &'static str;
    /// Which IR it rewrites: the pipeline hands it a [`Unit`] of that stage only.
    fn stage(&self) -> Stage;
    /// The node numbering it relies on; the pipeline checks it holds before running it.
    fn needs(&self) -> NodeOrder {
        NodeOrder::Any
    }
    /// Notes on the patterns it looks at in `g` (one body), before it runs.
    fn notes(&self, _g: &Graph) -> Vec<Note> {
        Vec::new()
    }
    /// Rewrites the unit in place. A unit of another stage is left as it is.
    fn run(&self, unit: Unit<'_>);
}

/// A graph pass made of a function from a graph to an equivalent one.
struct GraphPass {
    name: &'static str,
    description: &'static str,
    needs: NodeOrder,
    /// Whether it also runs on each layer kind's body (`interleave_stack` makes the kinds).
    on_bodies: bool,
    rewrite: fn(&Graph) -> Graph,
    notes: Option<fn(&Graph) -> Vec<Note>>,
}

impl Pass for GraphPass {
    fn name(&self) -> &'static str {
        self.name
    }
    fn description(&self) -> &'static str {
        self.description
    }
    fn stage(&self) -> Stage {
        Stage::Graph
    }
    fn needs(&self) -> NodeOrder {
        self.needs
    }
    fn notes(&self, g: &Graph) -> Vec<Note> {
        self.notes.map(|f| f(g)).unwrap_or_default()
    }
    fn run(&self, unit: Unit<'_>) {
        let Unit::Graph(g) = unit else { return };
        if !self.on_bodies {
            *g = (self.rewrite)(g);
            return;
        }
        // The kinds are taken out first, so that rewriting the top level does not copy them.
        let mut kinds = mem::take(&mut g.kinds);
        *g = (self.rewrite)(g);
        for k in &mut kinds {
            k.body = (self.rewrite)(&k.body);
        }
        g.kinds = kinds;
    }
}

/// `plan_memory`: lifetimes for arena buffers.
struct PlanMemory;

impl Pass for PlanMemory {
    fn name(&self) -> &'static str {
        "plan_memory"
    }
    fn description(&self) -> &'static str {
        "lets arena buffers whose lifetimes do not overlap share memory"
    }
    fn stage(&self) -> Stage {
        Stage::Plan
    }
    fn run(&self, unit: Unit<'_>) {
        if let Unit::Plan(p) = unit {
            plan_memory::run(p);
        }
    }
}

/// Every pass, in the order the pipeline runs them.
pub static PASSES: &[&dyn Pass] = &[
    &GraphPass {
        name: "interleave_stack",
        description: "compiles each distinct layer of a stack once",
        needs: NodeOrder::Elaboration,
        on_bodies: false,
        rewrite: interleave_stack::run,
        notes: None,
    },
    &GraphPass {
        name: "canonicalize",
        description: "folds constants, merges common subexpressions, drops dead code",
        needs: NodeOrder::Any,
        on_bodies: true,
        rewrite: canonicalize::run,
        notes: None,
    },
    &GraphPass {
        name: tile_attention::NAME,
        description: "fuses matmul → softmax → matmul into one tiled attention kernel (in a gradient, before differentiation: its backward is streamed too)",
        needs: NodeOrder::Any,
        on_bodies: true,
        rewrite: tile_attention::run,
        notes: Some(tile_attention::notes),
    },
    &GraphPass {
        name: fuse_scan::NAME,
        description: "fuses a selective scan with its inputs and read-out (SSD when it can)",
        needs: NodeOrder::Any,
        on_bodies: true,
        rewrite: fuse_scan::run,
        notes: Some(fuse_scan::notes),
    },
    &GraphPass {
        name: "route_experts",
        description: "runs each expert of a mixture only on the tokens routed to it",
        needs: NodeOrder::Any,
        on_bodies: true,
        rewrite: route_experts::run,
        notes: None,
    },
    &GraphPass {
        name: "fuse_elementwise",
        description: "fuses elementwise ops into their producers and consumers",
        needs: NodeOrder::Any,
        on_bodies: true,
        rewrite: fuse_elementwise::run,
        notes: None,
    },
    &PlanMemory,
];

/// The pass named `name`.
pub fn find(name: &str) -> Option<&'static dyn Pass> {
    PASSES.iter().copied().find(|p| p.name() == name)
}

/// The passes' names, comma-separated, in order.
pub fn names() -> String {
    PASSES
        .iter()
        .map(|p| p.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line per pass, `name: description`, for the CLI help.
pub fn help() -> String {
    PASSES
        .iter()
        .map(|p| format!("{}: {}", p.name(), p.description()))
        .collect::<Vec<_>>()
        .join("\n")
}
