//! Parity with Hugging Face transformers: every fixture under tests/fixtures/hf/ is imported
//! from its config.json, run by the reference interpreter on its weights and inputs, and each
//! output must match transformers' within a relative error of 1e-4 (‖got − want‖ / ‖want‖).
//! scripts/make_hf_fixtures.py made the fixtures.

use crate::common;

use common::{parity, repo};

#[test]
fn every_family_matches_transformers() {
    let dir = repo("tests/fixtures/hf");
    let mut cases: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    cases.sort();
    for family in [
        "gpt2", "llama", "mistral", "qwen2", "qwen3", "bert", "mamba", "mamba2", "jamba", "zamba2",
        "bamba", "ijepa",
    ] {
        assert!(cases.iter().any(|c| c == family), "no fixture for {family}");
    }
    for case in &cases {
        let d = dir.join(case);
        for (output, err) in parity(&d.join("config.json"), &d.join("model.safetensors"), &d) {
            println!("{case:16} {output:18} rel err {err:.2e}");
            assert!(
                err <= 1e-4,
                "{case}/{output}: relative error {err:.3e} > 1e-4"
            );
        }
    }
}
