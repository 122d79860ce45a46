//! The passes: each one file, each semantics-preserving, each with a snapshot test of its
//! before/after dumps and a proptest that the interpreter gives the same outputs before and
//! after. [`registry::PASSES`] lists them in pipeline order; [`optimize`] runs the graph
//! passes and [`lower_optimized`] lowers and runs the plan passes. With verification on (debug
//! builds and tests, or `archc dump --verify`) every IR is checked after every pass, and the
//! first broken invariant is an error naming the pass.

pub mod canonicalize;
pub mod explain;
pub mod fuse_elementwise;
pub mod fuse_scan;
pub mod interleave_stack;
mod key_range;
mod op_kinds;
mod options;
pub(crate) mod outline;
pub mod plan_memory;
pub mod registry;
pub(crate) mod rewrite;
pub mod route_experts;
pub mod tile_attention;

pub use options::PassOptions;
pub use registry::{NodeOrder, Pass, Stage, Unit, PASSES};
pub use rewrite::Rewriter;

use crate::graph::Graph;
use crate::lower::Lowered;
use crate::verify::{self, VerifyError};

/// What stops the pipeline: an internal error, a bug in a pass or in elaboration.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// A stage left its IR breaking an invariant the verifiers check.
    #[error("internal error: `{stage}` broke an invariant\n{error}")]
    Broke {
        /// The pass, or `elaboration` or `lowering`.
        stage: &'static str,
        /// What broke, and where.
        error: VerifyError,
    },
    /// A pass needs a node numbering an earlier pass did not keep.
    #[error("internal error: pass `{pass}` needs elaboration's node order, but `{after}` renumbered the nodes")]
    Order {
        /// The pass that needs the order.
        pass: &'static str,
        /// The pass that renumbered.
        after: &'static str,
    },
}

fn check(stage: &'static str, r: Result<(), VerifyError>) -> Result<(), PassError> {
    r.map_err(|error| PassError::Broke { stage, error })
}

/// The graph passes, in order.
pub fn optimize(g: &Graph, o: &PassOptions) -> Result<Graph, PassError> {
    run_graph_passes(g, o, None)
}

/// The graph passes, in order, and a note on each attention and scan pattern the fusion
/// passes looked at (top level first, then each layer kind's body once), in that order.
pub fn optimize_explained(
    g: &Graph,
    o: &PassOptions,
) -> Result<(Graph, Vec<explain::Note>), PassError> {
    let mut notes = Vec::new();
    let g = run_graph_passes(g, o, Some(&mut notes))?;
    Ok((g, notes))
}

fn run_graph_passes(
    g: &Graph,
    o: &PassOptions,
    notes: Option<&mut Vec<explain::Note>>,
) -> Result<Graph, PassError> {
    run_graph(PASSES, g, o, notes)
}

/// Runs the graph passes of `passes` that `o` enables, in order.
fn run_graph(
    passes: &[&dyn Pass],
    g: &Graph,
    o: &PassOptions,
    mut notes: Option<&mut Vec<explain::Note>>,
) -> Result<Graph, PassError> {
    if o.verifies() {
        check("elaboration", verify::graph(g))?;
    }
    let mut g = g.clone();
    // Elaboration numbers nodes in creation order; the first pass that rebuilds the graph
    // renumbers them.
    let mut renumbered_by: Option<&'static str> = None;
    for pass in passes.iter().filter(|p| p.stage() == Stage::Graph) {
        if !o.enabled(pass.name()) {
            continue;
        }
        if let (NodeOrder::Elaboration, Some(after)) = (pass.needs(), renumbered_by) {
            return Err(PassError::Order {
                pass: pass.name(),
                after,
            });
        }
        if let Some(notes) = notes.as_deref_mut() {
            notes.extend(pass.notes(&g));
            for k in &g.kinds {
                notes.extend(pass.notes(&k.body));
            }
        }
        pass.run(Unit::Graph(&mut g));
        renumbered_by = Some(pass.name());
        if o.verifies() {
            check(pass.name(), verify::graph(&g))?;
        }
    }
    Ok(g)
}

/// Optimises and lowers a graph for Cranelift on x86-64 (`Target::cranelift_x86_64`): see
/// [`lower_optimized_for`].
pub fn lower_optimized(g: &Graph, o: &PassOptions) -> Result<Lowered, PassError> {
    lower_optimized_for(g, o, &archc_kernels::target::Target::cranelift_x86_64())
}

/// Optimises and lowers a graph for `target`: the graph passes (which decide what is fused),
/// lowering to kernels and a plan with the target's schedule (tiles, matmul blocking), then
/// the plan passes.
pub fn lower_optimized_for(
    g: &Graph,
    o: &PassOptions,
    target: &archc_kernels::target::Target,
) -> Result<Lowered, PassError> {
    let mut lowered = crate::lower::lower_with(&optimize(g, o)?, target, o.blocks());
    // The passes hide gathers inside regions; the bounds come from the graph as written.
    lowered.plan.index_bounds = crate::lower::index_bounds(g);
    if o.verifies() {
        check("lowering", verify::lowered(&lowered))?;
    }
    for pass in PASSES.iter().filter(|p| p.stage() == Stage::Plan) {
        if !o.enabled(pass.name()) {
            continue;
        }
        pass.run(Unit::Plan(&mut lowered.plan));
        if o.verifies() {
            check(pass.name(), verify::lowered(&lowered))?;
        }
    }
    Ok(lowered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_that_needs_elaboration_order_must_come_first() {
        let g = Graph::default();
        let (Some(canon), Some(interleave)) = (
            registry::find("canonicalize"),
            registry::find("interleave_stack"),
        ) else {
            panic!("both passes are registered")
        };
        assert!(run_graph(&[interleave, canon], &g, &PassOptions::all(), None).is_ok());
        let e = run_graph(&[canon, interleave], &g, &PassOptions::all(), None).err();
        assert_eq!(
            e.map(|e| e.to_string()).unwrap_or_default(),
            "internal error: pass `interleave_stack` needs elaboration's node order, but \
             `canonicalize` renumbered the nodes"
        );
    }
}
