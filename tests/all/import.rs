//! `archc import hf`: every family's config imports; unsupported options are errors that name
//! the config field, never a silently different model.

use crate::common;

use archc_compiler::import::{import_hf, FAMILIES};
use common::{archc, compile, repo};

fn fixture_config(case: &str) -> serde_json::Value {
    let text =
        std::fs::read_to_string(repo(&format!("tests/fixtures/hf/{case}/config.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn import_error(config: &serde_json::Value) -> String {
    match import_hf(&config.to_string(), "cfg.json") {
        Ok(arch) => panic!("expected an error, got:\n{arch}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_family_imports_and_compiles() {
    for family in FAMILIES {
        let arch = import_hf(&fixture_config(family).to_string(), "config.json").unwrap();
        assert!(
            arch.starts_with("# Imported by `archc import hf` from config.json"),
            "{arch}"
        );
        compile(family, &arch).unwrap_or_else(|(_, r)| panic!("{family}:\n{r}\n{arch}"));
    }
}

#[test]
fn hf_input_and_output_names() {
    let names = |case: &str| {
        let arch = import_hf(&fixture_config(case).to_string(), "c").unwrap();
        let g = compile(case, &arch).unwrap_or_else(|(_, r)| panic!("{r}"));
        (
            g.inputs.keys().cloned().collect::<Vec<_>>(),
            g.outputs.keys().cloned().collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        names("llama"),
        (vec!["input_ids".into()], vec!["logits".into()])
    );
    assert_eq!(
        names("zamba2"),
        (vec!["input_ids".into()], vec!["logits".into()])
    );
    assert_eq!(
        names("bert"),
        (
            vec![
                "input_ids".into(),
                "attention_mask".into(),
                "token_type_ids".into()
            ],
            vec!["last_hidden_state".into(), "pooler_output".into()]
        )
    );
    assert_eq!(
        names("ijepa"),
        (
            vec!["pixel_values".into()],
            vec!["last_hidden_state".into()]
        )
    );
}

#[test]
fn unsupported_options_name_the_field() {
    let cases: &[(&str, &str, serde_json::Value, &str)] = &[
        (
            "llama",
            "hidden_act",
            serde_json::json!("mish"),
            "activation `mish`",
        ),
        (
            "llama",
            "pretraining_tp",
            serde_json::json!(2),
            "archc only supports 1",
        ),
        (
            "llama",
            "num_key_value_heads",
            serde_json::json!(3),
            "does not divide",
        ),
        (
            "gpt2",
            "scale_attn_by_inverse_layer_idx",
            serde_json::json!(true),
            "only supports false",
        ),
        (
            "bert",
            "position_embedding_type",
            serde_json::json!("relative_key"),
            "only supports \"absolute\"",
        ),
        (
            "mamba2",
            "time_step_limit",
            serde_json::json!([0.0, 10.0]),
            "upper Δ limit",
        ),
        (
            "zamba2",
            "use_shared_attention_adapter",
            serde_json::json!(true),
            "only supports false",
        ),
        (
            "zamba2",
            "layers_block_type",
            serde_json::json!(["mamba", "moe"]),
            "layer kind `moe`",
        ),
        (
            "jamba",
            "attn_layer_offset",
            serde_json::json!(7),
            "is not below its period",
        ),
        (
            "ijepa",
            "qkv_bias",
            serde_json::json!(false),
            "only supports true",
        ),
        (
            "llama",
            "model_type",
            serde_json::json!("t5"),
            "`t5` is not supported",
        ),
        (
            "llama",
            "hidden_size",
            serde_json::json!(-4),
            "positive integer",
        ),
    ];
    for (case, field, value, fragment) in cases {
        let mut cfg = fixture_config(case);
        cfg[*field] = value.clone();
        let err = import_error(&cfg);
        assert!(
            err.contains(&format!("field `{field}`")),
            "{case}.{field}: {err}"
        );
        assert!(
            err.contains(fragment),
            "{case}.{field}: expected `{fragment}` in: {err}"
        );
    }
    assert!(import_error(&serde_json::json!([1, 2])).contains("one JSON object"));
    let mut cfg = fixture_config("llama");
    cfg.as_object_mut().unwrap().remove("vocab_size");
    assert!(import_error(&cfg).contains("field `vocab_size`: is required"));
}

#[test]
fn cli_imports_and_reports() {
    let out = std::env::temp_dir().join(format!("archc-import-{}.arch", std::process::id()));
    let o = out.to_string_lossy().into_owned();
    let (status, stdout, stderr) = archc(&[
        "import",
        "hf",
        "tests/fixtures/hf/jamba/config.json",
        "-o",
        &o,
    ]);
    assert_eq!(status, 0, "{stderr}");
    assert!(
        stdout.starts_with(&format!("wrote {o}\nmodel jamba\n  parameters: 60,356")),
        "{stdout}"
    );
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .contains("every(2, 1, attention_mixer"));
    std::fs::remove_file(&out).ok();
    let bad = std::env::temp_dir().join(format!("archc-import-{}.json", std::process::id()));
    std::fs::write(&bad, "{ not json").unwrap();
    let (status, _, stderr) = archc(&["import", "hf", &bad.to_string_lossy(), "-o", &o]);
    assert_eq!(status, 1);
    assert!(stderr.contains("not valid JSON"), "{stderr}");
    std::fs::remove_file(&bad).ok();
    let (status, _, _) = archc(&["import", "hf", "no/such/config.json", "-o", &o]);
    assert_eq!(status, 2);
}

/// Runs `archc import hf` on `config` written to a file named `name`; returns the status, the
/// written `.arch` (empty on failure) and stderr.
fn import_cli(name: &str, config: &serde_json::Value) -> (i32, String, String) {
    let dir = std::env::temp_dir().join(format!("archc-import-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join(name);
    std::fs::write(&json, config.to_string()).unwrap();
    let out = dir.join("out.arch");
    std::fs::remove_file(&out).ok();
    let (status, _, stderr) = archc(&[
        "import",
        "hf",
        &json.to_string_lossy(),
        "-o",
        &out.to_string_lossy(),
    ]);
    let arch = std::fs::read_to_string(&out).unwrap_or_default();
    std::fs::remove_dir_all(&dir).ok();
    (status, arch, stderr)
}

/// A fixture's config with some top-level fields replaced (null removes one).
fn with(case: &str, fields: serde_json::Value) -> serde_json::Value {
    let mut cfg = fixture_config(case);
    for (k, v) in fields.as_object().unwrap() {
        if v.is_null() {
            cfg.as_object_mut().unwrap().remove(k);
        } else {
            cfg[k] = v.clone();
        }
    }
    cfg
}

#[test]
fn cli_refuses_bad_rope_eps_and_top_k() {
    use serde_json::json;
    let cases = [
        (
            with(
                "llama",
                json!({"rope_parameters": {"rope_type": "default", "rope_theta": 0.0}}),
            ),
            "field `rope_parameters.rope_theta`: must be positive",
        ),
        (
            with(
                "llama",
                json!({"rope_parameters": null, "rope_theta": -5.0}),
            ),
            "field `rope_theta`: must be positive",
        ),
        (
            with("llama", json!({"rope_theta": 500000.0})),
            "field `rope_theta`: is 500000, but `rope_parameters.rope_theta` is 10000",
        ),
        (
            with(
                "llama",
                json!({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}),
            ),
            "field `rope_scaling`: is given together with `rope_parameters`",
        ),
        (
            with(
                "llama",
                json!({"rope_parameters": {"rope_type": "llama3", "rope_theta": 1e4, "factor": 8.0}}),
            ),
            "field `rope_parameters.low_freq_factor`: is required",
        ),
        (
            with(
                "llama",
                json!({"rope_parameters": {"rope_type": "linear", "factor": -2.0}}),
            ),
            "field `rope_parameters.factor`: must be positive",
        ),
        (
            with(
                "zamba2_rope",
                json!({"rope_parameters": {"rope_type": "longrope"}}),
            ),
            "rope_type `longrope` is not supported",
        ),
        (
            with(
                "llama_rope_yarn",
                json!({"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "beta_fast": -1.0}}),
            ),
            "field `rope_parameters.beta_fast`: must be positive",
        ),
        (
            with("llama", json!({"rms_norm_eps": 0.0})),
            "field `rms_norm_eps`: must be positive",
        ),
        (
            with("bert", json!({"layer_norm_eps": -1e-12})),
            "field `layer_norm_eps`: must be positive",
        ),
        (
            with("gpt2", json!({"layer_norm_epsilon": 0})),
            "field `layer_norm_epsilon`: must be positive",
        ),
        (
            with("jamba", json!({"num_experts_per_tok": 5})),
            "field `num_experts_per_tok`: 5 is above num_experts 4",
        ),
        (
            with(
                "qwen2",
                json!({"layer_types": ["full_attention", "chunked_attention"]}),
            ),
            "layer type `chunked_attention` is not supported",
        ),
        (
            with("mistral", json!({"sliding_window": 0})),
            "field `sliding_window`: must be a positive integer",
        ),
        (
            with("qwen2", json!({"sliding_window": null})),
            "field `sliding_window`: is required by the sliding_attention layers",
        ),
        (
            with("qwen3", json!({"layer_types": ["full_attention"]})),
            "field `layer_types`: must list one type per layer",
        ),
        (
            with("llama", json!({"rope_parameters": 10000.0})),
            "field `rope_parameters`: must be an object",
        ),
        (
            with(
                "llama",
                json!({"rope_parameters": {"full_attention": {"rope_type": "default"}}}),
            ),
            "per-layer-type rope parameters are not supported",
        ),
    ];
    for (config, fragment) in cases {
        let (status, _, stderr) = import_cli("config.json", &config);
        assert_eq!(status, 1, "{fragment}: {stderr}");
        assert!(
            stderr.contains(fragment),
            "expected `{fragment}` in: {stderr}"
        );
    }
}

#[test]
fn cli_accepts_legacy_rope_scaling_and_odd_file_names() {
    let legacy = with(
        "llama",
        serde_json::json!({"rope_parameters": null, "rope_theta": 500000.0,
                           "rope_scaling": {"type": "linear", "factor": 2.0}}),
    );
    let (status, arch, stderr) = import_cli("config.json", &legacy);
    assert_eq!(status, 0, "{stderr}");
    assert!(arch.contains("rope_theta = 500000.0"), "{arch}");
    assert!(
        arch.contains("inv_freq = rope_frequencies(rope_theta, head_dim) / 2.0"),
        "{arch}"
    );
    // A line break in the name would end the header comment and splice the rest in as source.
    let (status, arch, stderr) = import_cli("con\nfig\r.json", &fixture_config("llama"));
    assert_eq!(status, 0, "{stderr}");
    assert!(
        arch.starts_with("# Imported by `archc import hf` from con\\nfig\\r.json (model_type"),
        "{arch}"
    );
    compile("odd", &arch).unwrap_or_else(|(_, r)| panic!("{r}"));
}
