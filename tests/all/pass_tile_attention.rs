//! `tile_attention`: attention written as matmul → score modifications → softmax → matmul
//! becomes one tiled region. The snapshot is a Gemma-2 style attention with a tanh softcap, a
//! causal mask and grouped-query heads, written by hand: it fuses like the prelude's. The
//! proptests check that the rewrite keeps the interpreter's outputs bit for bit, and that the
//! tiled kernel (online softmax, skipped causal blocks, GQA without copies) matches naive
//! softmax attention on random shapes, softcaps and masks, with several key blocks.

use crate::common;

use archc_compiler::graph::print_graph;
use archc_compiler::passes::{canonicalize, tile_attention, PassOptions};
use common::{before_after, check_fused, check_native, check_pass, compile, programs::programs};
use proptest::prelude::*;

/// Attention with a softcap on the scores, as Gemma 2 writes it: `cap · tanh(s / cap)`.
fn softcapped(heads: usize, kv: usize, d: usize, dv: usize, causal: bool, mask: bool) -> String {
    let causal = if causal {
        "  s = where(unsqueeze(iota(n), 1) >= unsqueeze(iota(n), 0), s, -3.4028234663852886e38)\n"
    } else {
        ""
    };
    let mask = if mask {
        "  s = where(reshape(m, [b, 1, 1, 1, n]) != 0, s, -1e30)\n"
    } else {
        ""
    };
    format!(
        "model gemma_attention {{
  input q: f32[batch, {heads}, seq, {d}]
  input k: f32[batch, {kv}, seq, {d}]
  input v: f32[batch, {kv}, seq, {dv}]
  input m: i32[batch, seq]
  b = q.shape[0]
  n = q.shape[2]
  g = reshape(q, [b, {kv}, {heads} / {kv}, n, {d}])      # grouped-query heads
  s = matmul(g, transpose(unsqueeze(k, 2))) * {scale}
  s = 50.0 * tanh(s / 50.0)                             # the softcap
{causal}{mask}  o = matmul(softmax(s, -1), unsqueeze(v, 2))
  output out = reshape(o, [b, {heads}, n, {dv}])
}}
",
        scale = 1.0 / (d as f64).sqrt()
    )
}

#[test]
fn tile_attention_before_after() {
    let src = softcapped(4, 2, 8, 8, true, false);
    let g = compile("gemma.arch", &src).unwrap_or_else(|(_, r)| panic!("{r}"));
    let before = canonicalize::run(&g);
    let after = tile_attention::run(&before);
    let text = print_graph(&after);
    assert!(text.contains("fused.attention["), "{text}");
    assert!(text.contains(", causal]"), "{text}");
    insta::assert_snapshot!(before_after(&src, &before, &after));
}

#[test]
fn a_chain_that_needs_the_scores_elsewhere_is_left_alone() {
    // The probabilities are an output too, so the seq×seq matrix must exist: no fusion.
    let src = "model p {
  input q: f32[batch, seq, 4]
  input k: f32[batch, seq, 4]
  input v: f32[batch, seq, 4]
  p = softmax(matmul(q, transpose(k)), -1)
  output probs = p
  output out = matmul(p, v)
}
";
    let g = canonicalize::run(&compile("p.arch", src).unwrap());
    let text = print_graph(&tile_attention::run(&g));
    assert!(!text.contains("fused.attention"), "{text}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn tile_attention_keeps_semantics(p in programs(3)) {
        check_pass(&[canonicalize::run], tile_attention::run, &p);
    }

    #[test]
    fn programs_with_tiled_attention_match_the_interpreter(p in programs(3)) {
        check_native(&PassOptions::all(), &p);
    }

    #[test]
    fn tiled_attention_matches_naive_softmax_attention(
        (heads, kv) in prop_oneof![Just((1usize, 1usize)), Just((4, 2)), Just((4, 1)), Just((3, 3))],
        d in prop_oneof![Just(4usize), Just(6), Just(16)],
        dv in prop_oneof![Just(4usize), Just(5), Just(8)],
        causal in any::<bool>(),
        mask in any::<bool>(),
        batch in 1usize..3,
        seq in prop_oneof![1usize..5, 60usize..70, 120usize..200],
        seed in 0u64..1000,
    ) {
        let src = softcapped(heads, kv, d, dv, causal, mask);
        check_fused(&src, "fused.attention", batch, seq, seed, 1e-5);
    }
}
