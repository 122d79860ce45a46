//! The scan's backward as Mamba's (`grad/scan_region.rs`): a fused scan is differentiated into
//! one region whose kernel recomputes each channel's states chunk by chunk from checkpoints,
//! walking the sequence backwards with λ, and adds up every input's gradient as it goes.
//!
//! The snapshot shows a Mamba block and its gradient graph side by side. The checks
//! differentiate the prelude's blocks with the scan fused and without: Mamba (over several
//! chunks and the last one partial, and a single step), Mamba with Jamba's norms of Δ, B and C,
//! and Mamba-2 (heads of channels, groups sharing B and C). The interpreter runs the region's
//! body, every native backend its kernel, the simulator its GPU schedule (failing on a race),
//! and all agree with the unfused gradient within 1e-5 (interpreter) and 1e-4 (kernels). The
//! last test holds the Mamba example's training step to the promise: no value of the state's
//! size is stored.

use std::collections::HashMap;

use archc_compiler::grad::{gradient, loss_gradient};
use archc_compiler::graph::{Graph, Op};
use archc_compiler::passes::{optimize, PassOptions};
use archc_runtime::{random_tensor, DType, Tensor};

use crate::common;

/// A model of one block `block` over `x: [batch, seq, 16]`.
fn model(block: &str) -> String {
    format!(
        "model scan_grad {{
  input x: f32[batch, seq, 16]
  output y = {block} @mixer
}}
"
    )
}

/// `x` and the cotangent `y`, random.
fn inputs(batch: usize, seq: usize) -> HashMap<String, Tensor> {
    HashMap::from([
        (
            "x".to_string(),
            random_tensor(3, "x", DType::F32, &[batch, seq, 16], 1.0, 2),
        ),
        (
            "y".to_string(),
            random_tensor(4, "y", DType::F32, &[batch, seq, 16], 1.0, 2),
        ),
    ])
}

fn check(block: &str, batch: usize, seq: usize) {
    let parts = ["fused.scan_grad["];
    common::fused_gradient::check(&model(block), &inputs(batch, seq), true, &parts);
}

/// The pass's input and output side by side: a Mamba block, then its gradient graph, in which
/// the fused scan's gradient is one `fused.scan_grad` region.
#[test]
fn scan_gradient_before_after() {
    let src = model("mamba(x, 4, 2, 1)");
    let g = common::compile("a.arch", &src).unwrap_or_else(|(_, r)| panic!("{r}"));
    let grad = gradient(&g, &PassOptions::all()).unwrap_or_else(|e| panic!("{e}"));
    insta::assert_snapshot!(common::before_after(&src, &g, &grad));
}

/// 70 steps of a state of 8: chunks of 32 steps, the last one of 6.
#[test]
fn mamba_over_several_chunks() {
    check("mamba(x, 8, 4, 2)", 2, 70);
}

#[test]
fn mamba_over_one_step() {
    check("mamba(x, 8, 4, 2)", 3, 1);
}

/// Jamba's norms of Δ, B and C: B and C are normalised over the state after the sum over the
/// channels that their gradient is, so the norms stay outside the region.
#[test]
fn mamba_with_inner_norms() {
    check("mamba(x, 8, 4, 2, inner_norms = true)", 2, 40);
}

/// Mamba-2: a decay per head, B and C shared by the heads of a group.
#[test]
fn mamba2_heads_and_groups() {
    check("mamba2(x, 4, 8, 8, 2)", 2, 37);
}

/// The values of a fused scan's state size (`[batch, seq, channels, state]`) among `g`'s
/// top-level nodes.
fn state_sized(g: &Graph, states: &[Vec<archc_runtime::Dim>]) -> Vec<String> {
    g.dag
        .node_indices()
        .filter(|n| states.contains(&g.ty(*n).shape))
        .map(|n| format!("%{} = {} : {:?}", n.index(), g.dag[n].op, g.ty(n).shape))
        .collect()
}

/// The Mamba example's training step stores no value of the state's size: with the passes the
/// states live inside the scan regions, forward and backward; without them, the states, λ and
/// the discretised decays and inputs are stored.
#[test]
fn the_training_step_stores_no_states() {
    let mut s = archc_compiler::session::Session::new().unwrap_or_else(|e| panic!("{e}"));
    s.for_training = true;
    let id = s.add("mamba.arch", common::example_source("mamba"));
    let (_, g) = s.compile(id).unwrap_or_else(|d| panic!("{}", s.render(&d)));
    let states: Vec<_> = g
        .dag
        .node_indices()
        .filter(|n| matches!(g.dag[*n].op, Op::Scan { .. }))
        .map(|n| g.ty(n).shape.clone())
        .collect();
    assert!(!states.is_empty());
    let step = |o: &PassOptions| {
        let grad = loss_gradient(&g, "loss", o).unwrap_or_else(|e| panic!("{e}"));
        optimize(&grad, o).unwrap_or_else(|e| panic!("{e}"))
    };
    let fused = state_sized(&step(&PassOptions::all()), &states);
    assert!(fused.is_empty(), "stored states: {fused:#?}");
    assert!(!state_sized(&step(&PassOptions::none()), &states).is_empty());
}
