//! The causality analysis that `archc generate` runs (`graph::noncausal`): each model beside
//! what the analysis must say of it, on the fully fused graph.

use archc_compiler::graph::{noncausal, LookAhead};
use archc_compiler::passes::{optimize, PassOptions};

use crate::common::compile;

/// How far `logits` looks ahead of its position (`None`: causal), and where.
fn ahead(source: &str) -> Option<LookAhead> {
    let g = compile("m.arch", source).unwrap_or_else(|(_, r)| panic!("{r}"));
    let fused = optimize(&g, &PassOptions::all()).expect("the passes run");
    noncausal(&fused, "ids", "logits")
}

fn model(body: &str) -> String {
    format!(
        "model m {{\n  input ids: i32[batch, seq]\n  h = embedding(ids, 16, 8) @embed\n{body}\n  output logits = linear(y, 16, bias = false) @head\n}}\n"
    )
}

#[test]
fn causal_convolutions_scans_and_masked_attention_are_causal() {
    for body in [
        // Mamba's convolution: windows of the input padded by kernel − 1 before.
        "  y = causal_conv1d(h, 4) @conv",
        // Causal attention, and a sliding window.
        "  y = attention(h, 2, 2, 4, causal = true) @attn",
        "  y = attention(h, 2, 2, 4, causal = true, window = 3) @attn",
        // A running sum is a scan forward.
        "  y = scan(sigmoid(h), h, 1)",
    ] {
        assert_eq!(ahead(&model(body)), None, "{body}");
    }
}

#[test]
fn reading_later_positions_is_found_and_located() {
    let cases = [
        // Windows one position further: each output reads the next token.
        (
            "  hp = pad(h, 1, before = 2, after = 1)\n  w = unsqueeze(unsqueeze(iota(seq), 1) + unsqueeze(iota(4), 0), 0)\n  y = sum(gather(hp, w, 1), 2)",
            "m.arch:6:11",
            Some(1),
        ),
        // Bidirectional attention and a mean over the sequence see every position.
        ("  y = attention(h, 2, 2, 4, causal = false) @attn", "attention", None),
        ("  y = h + mean(h, 1, keepdim = true)", "m.arch:4:11", None),
    ];
    for (body, at, by) in cases {
        let found = ahead(&model(body)).unwrap_or_else(|| panic!("{body}: not found"));
        assert!(found.origin.contains(at), "{body}: {found:?}");
        assert_eq!(found.by, by, "{body}");
    }
}
