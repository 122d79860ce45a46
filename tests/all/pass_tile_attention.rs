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
    let mask = if mask { PADDING } else { "" };
    attention(heads, kv, d, dv, &format!("{causal}{mask}"))
}

/// A padding mask from the input `m`, filling with more than the range masks do.
const PADDING: &str = "  s = where(reshape(m, [b, 1, 1, 1, n]) != 0, s, -1e30)\n";

/// Softcapped attention over grouped-query heads, then the score modifications `mods`.
fn attention(heads: usize, kv: usize, d: usize, dv: usize, mods: &str) -> String {
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
{mods}  o = matmul(softmax(s, -1), unsqueeze(v, 2))
  output out = reshape(o, [b, {heads}, n, {dv}])
}}
",
        scale = 1.0 / (d as f64).sqrt()
    )
}

/// A bias on the scores that is elementwise in (query, key, per-head constants).
#[derive(Clone, Copy, Debug)]
enum Bias {
    None,
    /// ALiBi: `slope_h · (j − i)`, the slopes a per-head weight.
    Alibi,
    /// ALiBi's symmetric form: `−slope_h · |i − j|`.
    AlibiAbs,
    /// T5: a `[heads, 9]` table gathered by `clamp(j − i, −4, 4) + 4`.
    T5,
}

/// The keys a query sees.
#[derive(Clone, Copy, Debug)]
enum Keys {
    All,
    Causal,
    /// Mistral's sliding window: `i − w < j ≤ i`.
    Window(usize),
    /// The symmetric window `|i − j| < w`.
    Symmetric(usize),
}

/// The modification lines for a bias and a range mask, then an optional padding mask.
fn mods(heads: usize, kv: usize, bias: Bias, keys: Keys, padding: bool) -> String {
    let per_head = format!("reshape(slopes, [1, {kv}, {heads} / {kv}, 1, 1])");
    let (i, j) = ("unsqueeze(iota(n), 1)", "unsqueeze(iota(n), 0)");
    let bias = match bias {
        Bias::None => String::new(),
        Bias::Alibi => format!("  s = s + {per_head} * cast({j} - {i}, f32)\n"),
        Bias::AlibiAbs => format!("  s = s - {per_head} * cast(abs({i} - {j}), f32)\n"),
        Bias::T5 => format!(
            "  bucket = minimum(maximum({j} - {i}, -4), 4) + 4
  rel = permute(gather(transpose(table), bucket), [2, 0, 1])
  s = s + reshape(rel, [1, {kv}, {heads} / {kv}, n, n])\n"
        ),
    };
    let fill = "-3.4028234663852886e38";
    let keys = match keys {
        Keys::All => String::new(),
        Keys::Causal => format!("  s = where({i} >= {j}, s, {fill})\n"),
        Keys::Window(w) => format!("  s = where({i} >= {j} and {i} - {j} < {w}, s, {fill})\n"),
        Keys::Symmetric(w) => format!("  s = where(abs({i} - {j}) < {w}, s, {fill})\n"),
    };
    // A padding mask fills with more than the range mask, so it goes under it.
    let padding = if padding { PADDING } else { "" };
    let params = format!("  param slopes: [{heads}]\n  param table: [{heads}, 9]\n");
    format!("{params}{bias}{padding}{keys}")
}

/// `src` after `canonicalize` and `tile_attention`, printed.
fn tiled(src: &str) -> String {
    let g = canonicalize::run(&compile("t.arch", src).unwrap_or_else(|(_, r)| panic!("{r}")));
    print_graph(&tile_attention::run(&g))
}

/// The key range the attention region of a printed graph records (`, causal]`), empty for
/// none.
fn key_range(text: &str) -> &str {
    let region = &text[text.find("fused.attention[").expect("an attention region")..];
    let region = &region[..=region.find(']').expect("the region's bracket closes")];
    region
        .find(", causal")
        .or_else(|| region.find(", keys="))
        .map_or("", |at| &region[at..])
}

/// The arena bytes of `src`'s fused plan at batch 1 and `seq`, after checking that no buffer
/// of it (top level or layer kind) has two `seq` axes.
fn fused_arena(src: &str, seq: i64) -> usize {
    let g = compile("a.arch", src).unwrap_or_else(|(_, r)| panic!("{r}"));
    let plan = archc_compiler::passes::lower_optimized(&g, &PassOptions::all())
        .unwrap()
        .plan;
    let seq_dim = archc_runtime::Dim::symbol("seq");
    let buffers = plan
        .buffers
        .iter()
        .chain(plan.kinds.iter().flat_map(|k| &k.buffers));
    for b in buffers {
        let seqs = b.shape.iter().filter(|d| **d == seq_dim).count();
        assert!(seqs < 2, "{} is {:?}\n{src}", b.name, b.shape);
    }
    let dims = [("batch".to_string(), 1), ("seq".to_string(), seq)];
    plan.layout(&dims.into_iter().collect()).bytes
}

#[test]
fn score_biases_and_windows_stay_in_the_tiled_kernel() {
    // One head's 4096 × 4096 f32 scores are 64 MiB; each variant's whole arena (q, k, v, the
    // mask and the output: 3 MiB) is under a sixteenth of that, and no buffer is seq × seq.
    let cases = [
        (Bias::Alibi, Keys::Causal, ", causal]"),
        (Bias::AlibiAbs, Keys::All, ""),
        (Bias::T5, Keys::Causal, ", causal]"),
        (Bias::None, Keys::Window(4), ", keys=-3..=0]"),
        (Bias::Alibi, Keys::Symmetric(3), ", keys=-2..=2]"),
    ];
    for (bias, keys, printed) in cases {
        let src = attention(4, 2, 16, 16, &mods(4, 2, bias, keys, true));
        let text = tiled(&src);
        let range = key_range(&text);
        assert_eq!(range, printed, "{bias:?} {keys:?}: {text}");
        let bytes = fused_arena(&src, 4096);
        assert!(
            bytes * 16 < 4096 * 4096 * 4,
            "{bias:?} {keys:?}: {bytes} bytes"
        );
    }
}

#[test]
fn a_window_over_keys_of_another_length_visits_every_block() {
    // With fewer keys than queries, late rows could see no key of the window: the region
    // must not skip, or those rows would lose the uniform weights the naive softmax gives.
    let src = "model cross {
  input q: f32[batch, seq, 4]
  input k: f32[batch, keys, 4]
  input v: f32[batch, keys, 4]
  s = matmul(q, transpose(k))
  d = unsqueeze(iota(q.shape[1]), 1) - unsqueeze(iota(k.shape[1]), 0)
  s = where(d >= 0 and d < 4, s, -3.4028234663852886e38)
  output out = matmul(softmax(s, -1), v)
}
";
    let text = tiled(src);
    assert_eq!(key_range(&text), "", "{text}");
}

#[test]
fn scores_that_reach_the_softmax_by_many_paths_are_walked_once() {
    // Each `s + s` offers the search two ways back to an input that is not q·kᵀ: a search
    // without memory takes 2^60 steps to give up.
    let sums = "  s = s + s\n".repeat(60);
    let src = format!(
        "model twice {{
  input a: f32[batch, seq, seq]
  input v: f32[batch, seq, 4]
  s = tanh(a)
{sums}  output out = matmul(softmax(s, -1), v)
}}
"
    );
    let text = tiled(&src);
    assert!(!text.contains("fused.attention"), "{text}");
}

#[test]
fn tile_attention_before_after() {
    let src = softcapped(4, 2, 8, 8, true, false);
    let g = compile("gemma.arch", &src).unwrap_or_else(|(_, r)| panic!("{r}"));
    let before = canonicalize::run(&g);
    let after = tile_attention::run(&before);
    archc_compiler::verify::graph(&after).unwrap_or_else(|e| panic!("{e}"));
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
    let text = tiled(src);
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

    #[test]
    fn biased_and_windowed_attention_matches_naive_softmax_attention(
        (heads, kv) in prop_oneof![Just((1usize, 1usize)), Just((4, 2)), Just((3, 3))],
        bias in prop_oneof![Just(Bias::None), Just(Bias::Alibi), Just(Bias::AlibiAbs), Just(Bias::T5)],
        keys in prop_oneof![
            Just(Keys::All),
            Just(Keys::Causal),
            (1usize..80).prop_map(Keys::Window),
            (1usize..80).prop_map(Keys::Symmetric),
        ],
        padding in any::<bool>(),
        batch in 1usize..3,
        seq in prop_oneof![1usize..5, 60usize..70, 120usize..200],
        seed in 0u64..1000,
    ) {
        let src = attention(heads, kv, 8, 4, &mods(heads, kv, bias, keys, padding));
        check_fused(&src, "fused.attention", batch, seq, seed, 1e-5);
    }
}

/// A softmax between two linears is attention with weights as keys and values: k and v have no
/// batch or head axes, so the kernel must count keys along k's own rank (it read the head
/// width as the key count once).
#[test]
fn weights_as_keys_and_values_are_tiled_correctly() {
    let src = "model p {
  input x: f32[batch, seq, 4]
  h = softmax(linear(x, 12, bias = false) @lin0, -1)
  output y = linear(h, 8, bias = false) @fit2
}
";
    for seq in [1, 3, 70] {
        check_fused(src, "fused.attention", 2, seq, 7, 1e-5);
    }
}
