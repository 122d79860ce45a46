//! Parity with Hugging Face transformers: every fixture under tests/fixtures/hf/ is imported
//! from its config.json, run by the reference interpreter on its weights and inputs, and each
//! output must match transformers' within a relative error of 1e-4 (‖got − want‖ / ‖want‖).
//! scripts/make_hf_fixtures.py made the fixtures.

mod common;

use std::collections::HashMap;

use archc_compiler::import::import_hf;
use archc_compiler::interp::{bind_dims, interpret, WeightSource};
use archc_runtime::{DType, Tensor, TensorFile};
use common::{compile, repo};

/// The f32 parity tolerance the project holds every backend to.
pub const TOLERANCE: f64 = 1e-4;

struct FileWeights(TensorFile);

impl WeightSource for FileWeights {
    fn weight(&mut self, name: &str, dtype: DType, shape: &[usize]) -> Result<Tensor, String> {
        self.0.read(name, dtype, shape).map_err(|e| e.to_string())
    }
}

fn rel_err(got: &Tensor, want: &Tensor) -> f64 {
    assert_eq!(got.shape, want.shape);
    let (g, w) = (got.to_f32(), want.to_f32());
    let num: f64 = g
        .iter()
        .zip(&w)
        .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
        .sum();
    let den: f64 = w.iter().map(|b| f64::from(*b).powi(2)).sum();
    (num / den).sqrt()
}

fn check_case(case: &str) -> Vec<(String, f64)> {
    let dir = repo(&format!("tests/fixtures/hf/{case}"));
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let arch = import_hf(&config, "config.json").unwrap_or_else(|e| panic!("{case}: {e}"));
    let graph = compile(&format!("{case}.arch"), &arch)
        .unwrap_or_else(|(_, r)| panic!("{case}:\n{r}\n{arch}"));
    let inputs_file = TensorFile::open(&dir.join("inputs.safetensors")).unwrap();
    let inputs: HashMap<String, Tensor> = graph
        .inputs
        .keys()
        .map(|n| (n.clone(), inputs_file.read_any(n).unwrap()))
        .collect();
    let dims = bind_dims(&graph, &inputs, &HashMap::new()).unwrap();
    let mut weights = FileWeights(TensorFile::open(&dir.join("model.safetensors")).unwrap());
    let got =
        interpret(&graph, &dims, &inputs, &mut weights).unwrap_or_else(|e| panic!("{case}: {e}"));
    let want = TensorFile::open(&dir.join("outputs.safetensors")).unwrap();
    want.names()
        .into_iter()
        .map(|name| {
            let g = got
                .get(&name)
                .unwrap_or_else(|| panic!("{case}: no output `{name}`"));
            let err = rel_err(g, &want.read_any(&name).unwrap());
            (name, err)
        })
        .collect()
}

#[test]
fn every_family_matches_transformers() {
    let dir = repo("tests/fixtures/hf");
    let mut cases: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    cases.sort();
    for family in [
        "gpt2", "llama", "bert", "mamba", "mamba2", "jamba", "zamba2", "bamba", "ijepa",
    ] {
        assert!(cases.iter().any(|c| c == family), "no fixture for {family}");
    }
    for case in &cases {
        for (output, err) in check_case(case) {
            println!("{case:16} {output:18} rel err {err:.2e}");
            assert!(
                err <= TOLERANCE,
                "{case}/{output}: relative error {err:.3e} > {TOLERANCE:e}"
            );
        }
    }
}
