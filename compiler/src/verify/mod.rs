//! The verifiers: one per IR, each a module whose doc lists the invariants it checks.
//!
//! - [`graph`]: the Graph IR (types, operands, order, bindings, index bounds);
//! - [`region`]: fused regions and layer kinds against the nodes that use them;
//! - `archc_kernels::verify`: the Kernel IR;
//! - [`plan`]: the plan against its kernels (definitions, arguments, lifetimes, weights).
//!
//! The pass pipeline runs them after every pass in debug builds (tests included) and under
//! `archc dump --verify`; Cranelift's verifier and tract's `check_consistency` are the model.

pub mod graph;
pub mod plan;
pub mod region;

use std::fmt;

pub use archc_kernels::verify::Problem;

use crate::lower::Lowered;

/// Which IR a problem is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ir {
    /// The Graph IR.
    Graph,
    /// A fused region or layer kind, against its node.
    Regions,
    /// The Kernel IR.
    Kernels,
    /// The plan.
    Plan,
}

impl fmt::Display for Ir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ir::Graph => "graph",
            Ir::Regions => "regions",
            Ir::Kernels => "kernels",
            Ir::Plan => "plan",
        })
    }
}

/// Every broken invariant a verifier found, each with its IR, place and description.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct VerifyError {
    /// The problems, in the order found.
    pub problems: Vec<(Ir, Problem)>,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (ir, p)) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{ir}: {}: {}", p.at, p.what)?;
        }
        Ok(())
    }
}

fn result(problems: Vec<(Ir, Problem)>) -> Result<(), VerifyError> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(VerifyError { problems })
    }
}

/// Verifies a graph, its fused regions and its layer kinds.
pub fn graph(g: &crate::graph::Graph) -> Result<(), VerifyError> {
    result(graph::verify(g))
}

/// Verifies lowered kernels and the plan that runs them.
pub fn lowered(l: &Lowered) -> Result<(), VerifyError> {
    let dims = l.plan.symbols.len();
    let mut problems: Vec<(Ir, Problem)> = l
        .kernels
        .iter()
        .flat_map(|k| archc_kernels::verify::verify_kernel(k, dims))
        .map(|p| (Ir::Kernels, p))
        .collect();
    problems.extend(
        plan::verify(&l.plan, &l.kernels)
            .into_iter()
            .map(|p| (Ir::Plan, p)),
    );
    result(problems)
}
