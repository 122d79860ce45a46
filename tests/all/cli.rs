//! The `archc` command line: `check`, `dump` and `--help`.

use crate::common;

use common::{archc, EXAMPLES};

#[test]
fn check_accepts_every_example() {
    for name in EXAMPLES {
        let path = format!("examples/{name}.arch");
        let (status, stdout, stderr) = archc(&["check", &path]);
        assert_eq!(status, 0, "{path}: {stderr}");
        assert!(
            stdout.starts_with(&format!("model {name}\n  parameters: ")),
            "{stdout}"
        );
        assert!(stdout.contains("  output "), "{stdout}");
    }
}

#[test]
fn check_lists_layer_kinds_with_counts() {
    let (_, stdout, _) = archc(&["check", "examples/jamba.arch"]);
    let expected = "  stack model.layers: 8 layers
    2 × layer(mixer=mamba_mixer, ff=mlp_ffn)
    4 × layer(mixer=mamba_mixer, ff=moe_ffn)
    2 × layer(mixer=attention_mixer, ff=mlp_ffn)
";
    assert!(stdout.contains(expected), "{stdout}");
    let (_, stdout, _) = archc(&["check", "examples/bamba.arch"]);
    assert!(
        stdout.contains("    2 × layer(mixer=mamba_mixer)\n    2 × layer(mixer=attention_mixer)\n"),
        "{stdout}"
    );
    let (_, stdout, _) = archc(&["check", "examples/zamba2.arch"]);
    assert!(stdout.contains("    3 × mamba_layer\n"), "{stdout}");
    assert!(
        stdout.contains(
            "hybrid_layer(transformer=shared_transformer@model.layers.1.shared_transformer, site=2"
        ),
        "{stdout}"
    );
}

#[test]
fn check_reports_inputs_outputs_and_ema() {
    let (_, stdout, _) = archc(&["check", "examples/ijepa.arch"]);
    assert!(
        stdout.contains("  input  pixel_values: f32[batch, 3, 32, 32]\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  output predicted: f32[batch, n_target, 64]\n"),
        "{stdout}"
    );
    assert!(stdout.contains(" in EMA target copies"), "{stdout}");
    assert!(
        stdout.contains("  stack encoder.layer: 2 layers, applied 2 times\n"),
        "{stdout}"
    );
}

#[test]
fn dump_prints_each_stage() {
    let (status, ast, _) = archc(&["dump", "--stage", "ast", "examples/llama.arch"]);
    assert_eq!(status, 0);
    assert!(
        ast.starts_with("model llama {\n  config {\n    vocab = 512,\n"),
        "{ast}"
    );
    let (status, graph, _) = archc(&["dump", "--stage", "graph", "examples/llama.arch"]);
    assert_eq!(status, 0);
    assert!(
        graph.starts_with(
            "graph llama\nsymbols batch, seq\ntrain loss=loss (computed by the section's expression)\n"
        ) && graph.contains("lr_scale=1.0 weight_decay=0.0\n%0 = input \"input_ids\" : i32[batch, seq]\n"),
        "{graph}"
    );
    assert!(
        graph.contains("param \"model.layers.1.self_attn.q_proj.weight\" : f32[64, 64]"),
        "{graph}"
    );
    assert!(graph.contains("output logits = %"), "{graph}");
    assert!(!graph.contains("output loss"), "{graph}");
    // `--train`: the step `archc train` runs: the section's loss made an output, and the
    // gradient of every trained weight.
    let (status, step, _) = archc(&["dump", "--stage", "graph", "--train", "examples/llama.arch"]);
    assert_eq!(status, 0);
    for want in ["output loss = %", "output grad:lm_head.weight = %"] {
        assert!(step.contains(want), "{want} in {step}");
    }
}

#[test]
fn help_teaches_each_command() {
    let (status, help, _) = archc(&["--help"]);
    assert_eq!(status, 0);
    for word in ["check", "dump", ".arch"] {
        assert!(help.contains(word), "{help}");
    }
    let (_, help, _) = archc(&["check", "--help"]);
    assert!(
        help.contains("Example: archc check examples/jamba.arch"),
        "{help}"
    );
    let (_, help, _) = archc(&["dump", "--help"]);
    assert!(help.contains("ast") && help.contains("graph"), "{help}");
}

#[test]
fn plan_dump_starts_with_arena_and_kernel_counts() {
    let (status, plan, stderr) = archc(&[
        "dump",
        "--stage",
        "plan",
        "examples/llama.arch",
        "--dim",
        "batch=1",
        "--dim",
        "seq=4096",
        "--no-fuse",
    ]);
    assert_eq!(status, 0, "{stderr}");
    let mut lines = plan.lines();
    let arena: u64 = lines
        .next()
        .unwrap()
        .strip_prefix("arena_bytes: ")
        .unwrap()
        .parse()
        .unwrap();
    let kernels: u64 = lines
        .next()
        .unwrap()
        .strip_prefix("kernels: ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(arena > 0 && kernels > 0, "{plan}");
    assert!(plan.contains("dims: batch=1, seq=4096"), "{plan}");
    // Unfused, the first layer's attention scores alone are batch·kv·group·seq·seq f32 values.
    assert!(arena >= 4 * 4096 * 4096 * 4, "{arena}");
    let (status, small, _) = archc(&[
        "dump",
        "--stage",
        "plan",
        "examples/llama.arch",
        "--dim",
        "seq=16",
        "--no-fuse",
    ]);
    assert_eq!(status, 0);
    let small_arena: u64 = small.lines().next().unwrap()[13..].parse().unwrap();
    assert!(small_arena < arena, "the arena follows the dims");
    for stage in ["kernels", "clif"] {
        let (status, text, stderr) = archc(&["dump", "--stage", stage, "examples/mamba.arch"]);
        assert_eq!(status, 0, "{stderr}");
        assert!(text.contains("k2_elementwise"), "{stage}");
    }
}

#[test]
fn pass_flags_are_checked() {
    let (status, _, stderr) = archc(&["run", "examples/llama.arch", "--disable-pass", "bogus"]);
    assert_eq!(status, 2, "{stderr}");
    assert!(
        stderr.contains("there is no pass `bogus`; the passes are interleave_stack,"),
        "{stderr}"
    );
    let (status, stdout, stderr) = archc(&["dump", "--stage", "fused", "examples/jamba.arch"]);
    assert_eq!(status, 0, "{stderr}");
    for region in [
        "fused.attention[",
        "fused.scan[",
        "fused.matmul[",
        "fused.reduce[",
        "kind2 ",
    ] {
        assert!(stdout.contains(region), "{region} missing");
    }
    let (status, stdout, _) = archc(&[
        "dump",
        "--stage",
        "fused",
        "examples/jamba.arch",
        "--disable-pass",
        "tile_attention",
    ]);
    assert_eq!(status, 0);
    assert!(!stdout.contains("fused.attention["));
}

/// The arena (from `archc dump --stage plan`) at batch 1 × seq 4096.
fn arena_at_4096(example: &str, flags: &[&str]) -> u64 {
    let mut args = vec![
        "dump", "--stage", "plan", example, "--dim", "batch=1", "--dim", "seq=4096",
    ];
    args.extend(flags);
    let (status, plan, stderr) = archc(&args);
    assert_eq!(status, 0, "{stderr}");
    plan.lines().next().unwrap()["arena_bytes: ".len()..]
        .parse()
        .unwrap()
}

#[test]
fn fused_plans_never_hold_the_big_intermediates() {
    // examples/mamba.arch: one [1, 4096, 128, 16] f32 state tensor.
    let state = 4096 * 128 * 16 * 4;
    let mamba = arena_at_4096("examples/mamba.arch", &[]);
    assert!(mamba * 2 < state, "{mamba} bytes");
    assert!(arena_at_4096("examples/mamba.arch", &["--no-fuse"]) > state);
    // examples/llama.arch and jamba.arch: one head's 4096 × 4096 f32 scores.
    let scores = 4096 * 4096 * 4;
    for example in ["examples/llama.arch", "examples/jamba.arch"] {
        let (_, plan, _) = archc(&["dump", "--stage", "plan", example]);
        assert!(
            plan.contains("attention("),
            "{example}: no attention kernel"
        );
        assert!(
            !plan.contains("seq, seq]"),
            "{example}: a seq × seq buffer is planned"
        );
        let fused = arena_at_4096(example, &[]);
        assert!(fused * 4 < scores, "{example}: {fused} bytes");
        assert!(arena_at_4096(example, &["--no-fuse"]) > scores, "{example}");
    }
}

/// Writes `src` to a file of its own under the temporary directory and returns its path.
fn scratch(name: &str, src: &str) -> String {
    let path = std::env::temp_dir().join(format!("archc-{name}-{}.arch", std::process::id()));
    std::fs::write(&path, src).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn a_width_one_linear_feeding_an_activation_runs() {
    // The matmul's epilogue once had no scalar form at width 1: `run` panicked in lowering.
    let src =
        "model w1 {\n  input x: f32[batch, seq, 8]\n  output y = sigmoid(linear(x, 1) @head)\n}\n";
    let path = scratch("width1", src);
    for flags in [&[][..], &["--no-fuse"][..]] {
        let mut args = vec!["run", &path, "--dim", "seq=5"];
        args.extend(flags);
        let (status, stdout, stderr) = archc(&args);
        assert_eq!(status, 0, "{flags:?}: {stderr}");
        assert!(stdout.contains("y: f32[1, 5, 1]"), "{stdout}");
    }
}

#[test]
fn check_notes_an_attention_that_is_not_tiled() {
    let src = "model p {
  input q: f32[batch, seq, 4]
  input k: f32[batch, seq, 4]
  input v: f32[batch, seq, 4]
  s = matmul(q, transpose(k))
  output logits = s * 2.0
  output out = matmul(softmax(s, -1), v)
}
";
    let path = scratch("untiled", src);
    let (status, stdout, stderr) = archc(&["check", &path]);
    assert_eq!(status, 0, "{stderr}");
    assert!(stdout.starts_with("model p\n"), "{stdout}");
    let want = format!(
        "note: attention at {path}:7:16 is not tiled: the scores are also used by `mul` at {path}:6:19\n"
    );
    assert_eq!(stderr, want);
    // The dump says nothing unless asked, then the same; its text is the same either way.
    let (_, fused, quiet) = archc(&["dump", "--stage", "fused", &path]);
    assert_eq!(quiet, "");
    let (status, explained, notes) =
        archc(&["dump", "--stage", "fused", "--explain-fusion", &path]);
    assert_eq!(status, 0);
    assert_eq!((explained, notes), (fused, want));
}

#[test]
fn explain_fusion_notes_the_fused_patterns_too() {
    let (status, _, stderr) = archc(&["check", "examples/jamba.arch"]);
    assert_eq!((status, stderr.as_str()), (0, ""));
    let (status, _, stderr) = archc(&["check", "--explain-fusion", "examples/jamba.arch"]);
    assert_eq!(status, 0);
    assert!(
        stderr.contains("note: attention at examples/jamba.arch:")
            && stderr.contains(" → compiler/prelude/attention.arch:")
            && stderr.contains(" is tiled (causal)\n")
            && stderr.contains(" is fused with its read-out\n"),
        "{stderr}"
    );
    // A scan whose state is an output is fused, but its state is stored.
    let src = "model s {\n  input a: f32[batch, seq, 4]\n  output h = scan(a, a, 1)\n}\n";
    let path = scratch("scan", src);
    let (_, _, stderr) = archc(&["check", &path]);
    assert_eq!(
        stderr,
        format!("note: scan at {path}:3:14 is fused but stores its whole state: the state is an output\n")
    );
}

#[test]
fn dump_verify_checks_every_stage() {
    for args in [
        &["dump", "--verify", "examples/jamba.arch"][..],
        &["dump", "--verify", "--no-fuse", "examples/llama.arch"],
    ] {
        let (status, stdout, stderr) = archc(args);
        assert_eq!(status, 0, "{stderr}");
        assert_eq!(stdout, "verified: graph, regions, kernels, plan\n");
    }
    // The help lists the registry's passes, with what each does.
    let (status, stdout, _) = archc(&["dump", "--help"]);
    assert_eq!(status, 0);
    assert!(stdout.contains("--verify"), "{stdout}");
    assert!(
        stdout.contains("interleave_stack: compiles each distinct layer of a stack once"),
        "{stdout}"
    );
}
