//! Reverse-mode gradients (`archc grad`) against PyTorch autograd on the Hugging Face
//! fixtures: the gradient of Σ (output · cotangent) with respect to every weight, with the
//! cotangents and torch's gradients recorded by scripts/make_grad_fixtures.py.
//!
//! A gradient's error is max |archc − torch| over the tensor, divided by its largest |torch|
//! value; where a gradient is nearly zero throughout (attention's key bias: softmax does not
//! see a shift shared by all keys, so torch's value is rounding noise), by one millionth of the
//! model's largest gradient instead. The bound is 1e-4, on every executor.

use std::collections::HashMap;

use crate::common;
use archc_runtime::{Tensor, TensorFile};
use common::{archc, import_fixture, repo, scratch_dir};

/// The fixtures, as tests/all/lowering.rs lists them.
const CASES: &[&str] = &[
    "gpt2",
    "llama",
    "llama_tied_bf16",
    "llama_rope_llama3",
    "llama_rope_linear",
    "llama_rope_dynamic",
    "llama_rope_yarn",
    "mistral",
    "qwen2",
    "qwen3",
    "bert",
    "mamba",
    "mamba2",
    "jamba",
    "zamba2",
    "zamba2_rope",
    "bamba",
    "ijepa",
];

fn floats(t: &Tensor) -> Vec<f64> {
    t.to_f32().into_iter().map(f64::from).collect()
}

/// The worst error of `got` against `want` (see the module doc), and the weight it is in.
fn worst(got: &TensorFile, want: &TensorFile) -> (f64, String) {
    let want: HashMap<String, Vec<f64>> = want
        .names()
        .into_iter()
        .map(|n| {
            let t = want.read_any(&n).unwrap();
            (n, floats(&t))
        })
        .collect();
    let largest = want
        .values()
        .flat_map(|v| v.iter().map(|x| x.abs()))
        .fold(0.0, f64::max);
    let mut worst = (0.0, String::new());
    for name in got.names() {
        let w = want
            .get(&name)
            .unwrap_or_else(|| panic!("torch has no gradient for `{name}`"));
        let g = floats(&got.read_any(&name).unwrap());
        assert_eq!(g.len(), w.len(), "{name}: sizes differ");
        let scale = w.iter().map(|x| x.abs()).fold(largest * 1e-6, f64::max);
        let err = g
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
            / scale;
        if err > worst.0 {
            worst = (err, name);
        }
    }
    worst
}

#[test]
fn gradients_match_torch_autograd() {
    let dir = scratch_dir("grad");
    let mut failures = Vec::new();
    for case in CASES {
        let fixture = repo(&format!("tests/fixtures/hf/{case}"));
        let arch = import_fixture(case, &dir);
        let path = |f: &str| fixture.join(f).to_string_lossy().into_owned();
        let want = TensorFile::open(&fixture.join("grads.safetensors")).unwrap();
        for backend in common::run_backends() {
            let out = dir.join(format!("{case}-{backend}.safetensors"));
            let out_s = out.to_string_lossy().into_owned();
            let (status, _, stderr) = archc(&[
                "grad",
                &arch,
                "--weights",
                &path("model.safetensors"),
                "--inputs",
                &path("inputs.safetensors"),
                "--cotangents",
                &path("cotangents.safetensors"),
                "--outputs",
                &out_s,
                "--backend",
                backend,
            ]);
            assert_eq!(status, 0, "{case} {backend}: {stderr}");
            let (err, name) = worst(&TensorFile::open(&out).unwrap(), &want);
            println!("{case:20} {backend:10} worst gradient rel err {err:.2e} ({name})");
            if err > 1e-4 {
                failures.push(format!("{case} {backend}: {name} {err:.2e}"));
            }
        }
    }
    assert!(failures.is_empty(), "gradients off torch's: {failures:#?}");
}
