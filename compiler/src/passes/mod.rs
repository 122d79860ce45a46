//! The passes: each one file, each semantics-preserving, each with a snapshot test of its
//! before/after dumps and a proptest that the interpreter gives the same outputs before and
//! after. [`optimize`] runs the graph passes in order; `plan_memory` runs on the lowered plan.

pub mod canonicalize;
pub mod explain;
pub mod fuse_elementwise;
pub mod fuse_scan;
pub mod interleave_stack;
mod key_range;
mod op_kinds;
mod outline;
pub mod plan_memory;
mod rewrite;
pub mod route_experts;
pub mod tile_attention;

pub use rewrite::Rewriter;

use crate::graph::Graph;

/// Every pass, in the order the pipeline runs them.
pub const PASSES: &[&str] = &[
    "interleave_stack",
    "canonicalize",
    "tile_attention",
    "fuse_scan",
    "route_experts",
    "fuse_elementwise",
    "plan_memory",
];

/// Which passes run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassOptions {
    disabled: Vec<String>,
}

impl Default for PassOptions {
    fn default() -> PassOptions {
        PassOptions::all()
    }
}

impl PassOptions {
    /// Every pass (the default).
    pub fn all() -> PassOptions {
        PassOptions {
            disabled: Vec::new(),
        }
    }

    /// No pass at all (`--no-fuse`): one kernel per primitive op, one arena slot per buffer.
    pub fn none() -> PassOptions {
        PassOptions {
            disabled: PASSES.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// Turns one pass off; the name must be one of [`PASSES`].
    pub fn disable(mut self, pass: &str) -> Result<PassOptions, String> {
        if !PASSES.contains(&pass) {
            return Err(format!(
                "there is no pass `{pass}`; the passes are {}",
                PASSES.join(", ")
            ));
        }
        self.disabled.push(pass.to_string());
        Ok(self)
    }

    /// Turns one pass on (after [`PassOptions::none`], to test passes alone).
    pub fn enable(mut self, pass: &str) -> PassOptions {
        self.disabled.retain(|d| d != pass);
        self
    }

    /// Whether a pass runs.
    pub fn enabled(&self, pass: &str) -> bool {
        !self.disabled.iter().any(|d| d == pass)
    }
}

/// A graph pass: a function from a graph to an equivalent one.
type GraphPass = fn(&Graph) -> Graph;

/// Runs `pass` on the graph and on every layer kind's body.
fn on_every_body(mut g: Graph, pass: GraphPass) -> Graph {
    // The kinds are taken out first, so that rewriting the top level does not copy them.
    let mut kinds = std::mem::take(&mut g.kinds);
    let mut g = pass(&g);
    for k in &mut kinds {
        k.body = pass(&k.body);
    }
    g.kinds = kinds;
    g
}

/// The graph passes, in order.
pub fn optimize(g: &Graph, o: &PassOptions) -> Graph {
    run_passes(g, o, None)
}

/// The graph passes, in order, and a note on each attention and scan pattern the fusion
/// passes looked at (top level first, then each layer kind's body once), in that order.
pub fn optimize_explained(g: &Graph, o: &PassOptions) -> (Graph, Vec<explain::Note>) {
    let mut notes = Vec::new();
    let g = run_passes(g, o, Some(&mut notes));
    (g, notes)
}

/// The notes a fusion pass gives about a graph, before it runs on it.
type NotePass = fn(&Graph) -> Vec<explain::Note>;

fn run_passes(g: &Graph, o: &PassOptions, mut notes: Option<&mut Vec<explain::Note>>) -> Graph {
    let mut g = if o.enabled("interleave_stack") {
        interleave_stack::run(g)
    } else {
        g.clone()
    };
    let graph_passes: &[(&str, GraphPass, Option<NotePass>)] = &[
        ("canonicalize", canonicalize::run, None),
        (
            "tile_attention",
            tile_attention::run,
            Some(tile_attention::notes),
        ),
        ("fuse_scan", fuse_scan::run, Some(fuse_scan::notes)),
        ("route_experts", route_experts::run, None),
        ("fuse_elementwise", fuse_elementwise::run, None),
    ];
    for (name, pass, explain) in graph_passes {
        if !o.enabled(name) {
            continue;
        }
        if let (Some(notes), Some(explain)) = (notes.as_deref_mut(), explain) {
            notes.extend(explain(&g));
            for k in &g.kinds {
                notes.extend(explain(&k.body));
            }
        }
        g = on_every_body(g, *pass);
    }
    g
}

/// Optimises and lowers a graph: the graph passes, lowering to kernels and a plan, then
/// `plan_memory`.
pub fn lower_optimized(g: &Graph, o: &PassOptions) -> crate::lower::Lowered {
    lower_optimized_for(g, o, &archc_kernels::target::Target::cranelift_x86_64())
}

/// [`lower_optimized`] with the schedule constants of `target`.
pub fn lower_optimized_for(
    g: &Graph,
    o: &PassOptions,
    target: &archc_kernels::target::Target,
) -> crate::lower::Lowered {
    let mut lowered = crate::lower::lower_for(&optimize(g, o), target);
    // The passes hide gathers inside regions; the bounds come from the graph as written.
    lowered.plan.index_bounds = crate::lower::index_bounds(g);
    if o.enabled("plan_memory") {
        plan_memory::run(&mut lowered.plan);
    }
    lowered
}
