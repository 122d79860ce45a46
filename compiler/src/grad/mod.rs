//! Reverse-mode automatic differentiation of the Graph IR (`archc grad`, `dump --stage grad`).
//!
//! [`gradient`] takes an elaborated graph (before the passes: primitives only) and returns a
//! graph that computes, for every trained weight, the gradient of
//! `Σ over outputs o of Σ (o ⊙ cotangent_o)` with respect to it. The cotangents are new
//! inputs named like the outputs they weigh; the outputs are the gradients, named by the
//! weights' checkpoint names. It is an ordinary graph: it goes through the same passes,
//! lowering and backends as a forward pass, and the interpreter is its oracle.
//!
//! How: the forward graph is kept whole, and a sweep from the last node to the first gives
//! each node's gradient (the sum of its users' contributions) to its operands through one
//! vector-Jacobian product per primitive (`rules.rs`; `gather.rs` and `scan.rs` for the two
//! larger ones). Only nodes on a path from a trained weight get gradients: inputs, constants,
//! EMA weights and values behind `stop_grad` do not, nor, in [`loss_gradient`], the weights a
//! `train` section's group freezes.
//!
//! Invariants of the result (checked by the graph verifier before it is returned):
//! - the forward nodes keep their indices, and every new node comes after them, so node order
//!   is still a topological order;
//! - each gradient has its value's exact type (broadcasting is summed back);
//! - the stacks' layer spans are cleared: backward nodes read values inside layers, so a layer
//!   is no longer a unit the stack passes could compile once.

mod attention;
mod emit;
mod gather;
mod rules;
mod scan;
mod scan_region;

use crate::graph::{Graph, NodeIndex, Op, ParamKind, UnaryOp};
use crate::passes::{fuse_scan, tile_attention, PassOptions};

/// Why a gradient graph could not be made.
#[derive(Debug, thiserror::Error)]
pub enum GradError {
    /// The graph has an op gradients are not taken through.
    #[error("no gradient through {0}")]
    Unsupported(String),
    /// An output and an input share a name, so the output's cotangent could not be an input.
    #[error("output `{0}` has the name of an input; its cotangent needs that name")]
    NameClash(String),
    /// The loss `archc train` minimises is not a float output of the model.
    #[error("the model has no float output `{0}` to minimise (name it with --loss)")]
    NoLoss(String),
    /// Nothing to differentiate.
    #[error("the model has no trained weights (EMA copies and constants are not trained)")]
    NoWeights,
    /// A symbolic size overflowed.
    #[error("a size overflowed while building the gradient")]
    Overflow,
    /// A rule built an ill-typed node: a bug in the rule.
    #[error("internal error: the gradient of `{op}` is ill-typed: {why}")]
    Internal {
        /// The op built.
        op: String,
        /// The type error.
        why: String,
    },
    /// The gradient graph failed verification: a bug in a rule.
    #[error("internal error: the gradient graph is malformed: {0}")]
    Verify(String),
}

/// For each node: does its value depend on a trained weight through ops gradients cross?
fn depends_on_weights(g: &Graph, trained: &impl Fn(&str) -> bool) -> Vec<bool> {
    let mut needs = vec![false; g.dag.node_count()];
    for v in g.dag.node_indices() {
        let node = &g.dag[v];
        needs[v.index()] = rules::differentiable(node.ty.dtype)
            && match &node.op {
                Op::Param(name) => trained(name),
                Op::Unary(UnaryOp::StopGrad) => false,
                _ => g.operands(v).iter().any(|o| needs[o.index()]),
            };
    }
    needs
}

/// The gradient graph of `g` (see the module doc): inputs are `g`'s and one cotangent per
/// float output, outputs one gradient per trained float weight, in `g`'s weight order.
/// With `tile_attention` enabled in `o`, attention is tiled first and differentiated as
/// FlashAttention's backward (`attention.rs`).
pub fn gradient(g: &Graph, o: &PassOptions) -> Result<Graph, GradError> {
    build(g, Seed::Cotangents, o)
}

/// Names the gradient of weight `name` among [`loss_gradient`]'s outputs.
pub const GRAD_PREFIX: &str = "grad:";

/// The graph of one training step's values (`archc train`): `g`'s outputs as they are (the
/// loss, and whatever else the model reports), then the gradient of the sum of output `loss`
/// with respect to every trained weight, named `grad:` and the weight's checkpoint name.
pub fn loss_gradient(g: &Graph, loss: &str, o: &PassOptions) -> Result<Graph, GradError> {
    build(g, Seed::Loss(loss), o)
}

/// Where the backward sweep starts.
enum Seed<'a> {
    /// A cotangent input per float output; the outputs are the gradients alone.
    Cotangents,
    /// Ones at this output; the forward outputs stay, the gradients are added.
    Loss(&'a str),
}

fn build(g: &Graph, seed: Seed<'_>, o: &PassOptions) -> Result<Graph, GradError> {
    // Training honours the `train` section's frozen groups; `archc grad` differentiates every
    // trainable weight, as its contract says.
    let frozen = |name: &str| {
        matches!(seed, Seed::Loss(_)) && g.training.as_ref().is_some_and(|t| t.is_frozen(name))
    };
    let trained =
        |name: &str| matches!(g.params.get(name), Some((_, ParamKind::Trainable))) && !frozen(name);
    // Attention is tiled before differentiation, so that its backward can be streamed too;
    // the scores' modifications must not need gradients (a trained bias keeps the primitives).
    let tiled;
    let g = if o.enabled(tile_attention::NAME) {
        tiled = Graph {
            training: g.training.clone(),
            ..tile_attention::run_for_gradient(g, &depends_on_weights(g, &trained))
        };
        &tiled
    } else {
        g
    };
    // Scans with a read-out are fused first too, so that their backward recomputes the
    // states chunk by chunk (`scan_region.rs`); all of them, or none if one cannot be.
    let scanned;
    let g = if o.enabled(fuse_scan::NAME) {
        let fused = fuse_scan::run_for_gradient(g);
        let fits = fused.dag.node_weights().all(|n| match &n.op {
            Op::Fused(r) => match &r.kind {
                crate::graph::RegionKind::Scan(s) => scan_region::check(r, s).is_ok(),
                _ => true,
            },
            _ => true,
        });
        if fits {
            scanned = Graph {
                training: g.training.clone(),
                ..fused
            };
            &scanned
        } else {
            g
        }
    } else {
        g
    };
    let needs = depends_on_weights(g, &trained);
    let mut out = g.clone();
    for stack in &mut out.stacks {
        stack.spans.clear();
    }
    let count = g.dag.node_count();
    let mut adjoint: Vec<Option<NodeIndex>> = vec![None; count];
    let mut e = emit::Emit::new(&mut out);
    let mut outputs = indexmap::IndexMap::new();
    match seed {
        Seed::Cotangents => {
            for (name, &o) in &g.outputs {
                if !rules::differentiable(g.ty(o).dtype) {
                    continue;
                }
                if g.inputs.contains_key(name) {
                    return Err(GradError::NameClash(name.clone()));
                }
                e.at_node(o);
                let cotangent = e.typed(Op::Input(name.clone()), g.ty(o).clone(), &[]);
                e.g.inputs.insert(name.clone(), cotangent);
                if needs[o.index()] {
                    accumulate(&mut e, &mut adjoint, o, cotangent)?;
                }
            }
        }
        Seed::Loss(loss) => {
            let &o = g
                .outputs
                .get(loss)
                .ok_or_else(|| GradError::NoLoss(loss.to_string()))?;
            if !rules::differentiable(g.ty(o).dtype) {
                return Err(GradError::NoLoss(loss.to_string()));
            }
            e.at_node(o);
            let ones = e.typed(
                Op::Const(crate::graph::Ieee64::new(1.0)),
                g.ty(o).clone(),
                &[],
            );
            if needs[o.index()] {
                accumulate(&mut e, &mut adjoint, o, ones)?;
            }
            outputs.extend(g.outputs.iter().map(|(k, v)| (k.clone(), *v)));
        }
    }
    let wants = |x: NodeIndex| needs[x.index()];
    for i in (0..count).rev() {
        let v = NodeIndex::new(i);
        let Some(gv) = adjoint[i].filter(|_| needs[i]) else {
            continue;
        };
        for (x, d) in rules::vjp(&mut e, v, gv, &wants)? {
            accumulate(&mut e, &mut adjoint, x, d)?;
        }
    }
    let prefix = match seed {
        Seed::Cotangents => "",
        Seed::Loss(_) => GRAD_PREFIX,
    };
    let mut count = 0;
    for (name, (p, _)) in &g.params {
        if !trained(name) || !rules::differentiable(g.ty(*p).dtype) {
            continue;
        }
        e.at_node(*p);
        let grad = match adjoint[p.index()] {
            Some(d) => d,
            None => e.zeros(g.ty(*p).clone()),
        };
        outputs.insert(format!("{prefix}{name}"), grad);
        count += 1;
    }
    if count == 0 {
        return Err(GradError::NoWeights);
    }
    out.outputs = outputs;
    crate::verify::graph(&out).map_err(|e| GradError::Verify(e.to_string()))?;
    Ok(out)
}

/// Adds `d` to the gradient gathered so far for `x`.
fn accumulate(
    e: &mut emit::Emit<'_>,
    adjoint: &mut [Option<NodeIndex>],
    x: NodeIndex,
    d: NodeIndex,
) -> Result<(), GradError> {
    adjoint[x.index()] = Some(match adjoint[x.index()] {
        None => d,
        Some(prev) => e.add(prev, d)?,
    });
    Ok(())
}
