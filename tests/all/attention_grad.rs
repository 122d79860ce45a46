//! Attention's backward as FlashAttention computes it (`grad/attention.rs`): a tiled attention
//! is differentiated into three streamed regions, the softmax statistics, dq, and dk beside dv,
//! whose kernels recompute the scores block by block.
//!
//! The snapshot shows the pass's input and output side by side. The checks differentiate hand
//! written attentions (causal and grouped-query, a sliding window, a padding mask that hides
//! every key of a row, a softcap, cross-attention over a memory of another length, a head
//! width the tiles do not take) with the attention tiled and without: the interpreter runs the
//! regions' bodies, every native backend their kernels, and all agree with the unfused
//! gradient within 1e-5 (interpreter) and 1e-4 (kernels, and the GPU schedule in the
//! simulator). The last test holds the training
//! step of the Llama example to its promise: no value of `seq × seq` elements is stored.

use std::collections::HashMap;

use archc_compiler::grad::{gradient, loss_gradient};
use archc_compiler::graph::Graph;
use archc_compiler::passes::{optimize, PassOptions};
use archc_runtime::{random_tensor, DType, Dim, Tensor};

use crate::common;

/// The hand-written attention of these tests: `heads` query heads over `kv` key-value heads of
/// width `d`, q from the input `x`, k and v from `x` or (`cross`) from the memory `mem`, the
/// score modifications `mods` (over `s`, with `i` and `j` the query and key positions).
fn model(heads: usize, kv: usize, d: usize, cross: bool, mods: &str) -> String {
    let (src, memory) = if cross {
        ("mem", "  input mem: f32[batch, mlen, 12]\n")
    } else {
        ("x", "")
    };
    let keys = if cross { "mlen" } else { "seq" };
    format!(
        "model attention_grad {{
  input x: f32[batch, seq, 12]
{memory}  input m: i32[batch, {keys}]
  b = x.shape[0]
  q = split_heads(linear(x, {hq}, false) @q_proj, {heads})
  k = split_heads(linear({src}, {hk}, false) @k_proj, {kv})
  v = split_heads(linear({src}, {hk}, false) @v_proj, {kv})
  n = q.shape[2]
  t = k.shape[2]
  i = unsqueeze(iota(n), 1)
  j = unsqueeze(iota(t), 0)
  g = reshape(q, [b, {kv}, {heads} / {kv}, n, {d}])
  s = matmul(g, transpose(unsqueeze(k, 2))) * {scale}
{mods}  o = reshape(matmul(softmax(s, -1), unsqueeze(v, 2)), [b, {heads}, n, {d}])
  output y = linear(merge_heads(o), 12, false) @o_proj
}}
",
        hq = heads * d,
        hk = kv * d,
        scale = 1.0 / (d as f64).sqrt()
    )
}

const FILL: &str = "-3.4028234663852886e38";

fn causal() -> String {
    format!("  s = where(i >= j, s, {FILL})\n")
}

/// A padding mask over the keys from the input `m`.
const PADDING: &str = "  s = where(reshape(m, [b, 1, 1, 1, t]) != 0, s, -1e30)\n";

/// Inputs: `x` (and `mem`) random, the key mask `m` all ones but for batch row 1, which hides
/// every key when `hide_row` (its softmax is uniform over the fills), and the cotangent `y`.
fn inputs(
    batch: usize,
    seq: usize,
    mlen: Option<usize>,
    hide_row: bool,
) -> HashMap<String, Tensor> {
    let keys = mlen.unwrap_or(seq);
    let mut mask = vec![1i64; batch * keys];
    for (at, m) in mask.iter_mut().enumerate() {
        if (hide_row && at / keys == 1) || at % 5 == 3 {
            *m = 0;
        }
    }
    let mut out = HashMap::from([
        (
            "x".to_string(),
            random_tensor(3, "x", DType::F32, &[batch, seq, 12], 1.0, 2),
        ),
        (
            "m".to_string(),
            Tensor::int(DType::I32, vec![batch, keys], mask),
        ),
        (
            "y".to_string(),
            random_tensor(4, "y", DType::F32, &[batch, seq, 12], 1.0, 2),
        ),
    ]);
    if let Some(l) = mlen {
        out.insert(
            "mem".into(),
            random_tensor(5, "mem", DType::F32, &[batch, l, 12], 1.0, 2),
        );
    }
    out
}

/// The fused gradient of `src` agrees with the unfused one (`common::fused_gradient`).
fn check(src: &str, inputs: &HashMap<String, Tensor>, gpu: bool) {
    let parts = [
        "fused.attention[",
        "fused.attention_stats[",
        "fused.attention_dq[",
        "fused.attention_dkv[",
    ];
    common::fused_gradient::check(src, inputs, gpu, &parts);
}

/// The pass's input and output side by side: a causal attention, then its gradient graph, in
/// which the tiled attention's gradient is the statistics, dq and dk-dv regions.
#[test]
fn attention_gradient_before_after() {
    let src = model(2, 1, 4, false, &causal());
    let g = common::compile("a.arch", &src).unwrap_or_else(|(_, r)| panic!("{r}"));
    let grad = gradient(&g, &PassOptions::all()).unwrap_or_else(|e| panic!("{e}"));
    insta::assert_snapshot!(common::before_after(&src, &g, &grad));
}

#[test]
fn causal_grouped_query_over_several_key_blocks() {
    check(
        &model(4, 2, 8, false, &causal()),
        &inputs(2, 150, None, false),
        false,
    );
}

#[test]
fn sliding_window_and_softcap() {
    let mods = format!("  s = 5.0 * tanh(s / 5.0)\n  s = where(i >= j and i - j < 7, s, {FILL})\n");
    check(
        &model(2, 2, 8, false, &mods),
        &inputs(2, 40, None, false),
        true,
    );
}

/// A batch row whose keys are all masked: its softmax is uniform over the fills, which the
/// statistics must keep (`m + log l` would round `log l` away against `m = −10³⁰`).
#[test]
fn padding_that_hides_a_whole_row() {
    check(
        &model(2, 1, 4, false, PADDING),
        &inputs(3, 9, None, true),
        true,
    );
}

#[test]
fn cross_attention_over_a_memory_of_another_length() {
    check(
        &model(2, 2, 8, true, PADDING),
        &inputs(2, 11, Some(23), false),
        true,
    );
}

/// Head widths that are not multiples of 4 take the row kernels.
#[test]
fn head_width_the_tiles_do_not_take() {
    check(
        &model(2, 1, 6, false, &causal()),
        &inputs(2, 13, None, false),
        true,
    );
}

/// Whether a node's value has two axes of the symbolic size `seq`: a score matrix.
fn scores_sized(g: &Graph) -> Vec<String> {
    let seq = Dim::symbol("seq");
    g.dag
        .node_indices()
        .filter(|n| g.ty(*n).shape.iter().filter(|d| **d == seq).count() >= 2)
        .map(|n| format!("%{} = {} : {:?}", n.index(), g.dag[n].op, g.ty(n).shape))
        .collect()
}

/// The Llama example's training step stores no `seq × seq` value: with the passes, every score
/// lives inside an attention region (forward or backward); without them, the scores, the
/// probabilities and their gradients are stored.
#[test]
fn the_training_step_stores_no_scores() {
    let mut s = archc_compiler::session::Session::new().unwrap_or_else(|e| panic!("{e}"));
    s.for_training = true;
    let id = s.add("llama.arch", common::example_source("llama"));
    let (_, g) = s.compile(id).unwrap_or_else(|d| panic!("{}", s.render(&d)));
    let step = |o: &PassOptions| {
        let grad = loss_gradient(&g, "loss", o).unwrap_or_else(|e| panic!("{e}"));
        optimize(&grad, o).unwrap_or_else(|e| panic!("{e}"))
    };
    let fused = scores_sized(&step(&PassOptions::all()));
    assert!(fused.is_empty(), "stored scores: {fused:#?}");
    assert!(!scores_sized(&step(&PassOptions::none())).is_empty());
}
