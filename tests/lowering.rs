//! Lowering is checked against the reference interpreter: the kernels the lowering makes, run
//! by the Kernel IR interpreter, give the Graph IR interpreter's outputs.

mod common;

use std::collections::HashMap;

use archc_compiler::codegen::kernel_interp::KernelInterp;
use archc_compiler::lower::lower;
use archc_runtime::{Executor, TensorFile};
use common::{rel_err, repo, FileWeights};

#[test]
fn kernel_interpreter_matches_hf_fixtures() {
    for case in [
        "gpt2", "llama", "bert", "mamba", "mamba2", "jamba", "zamba2", "bamba", "ijepa",
    ] {
        let dir = repo(&format!("tests/fixtures/hf/{case}"));
        let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
        let arch = archc_compiler::import::import_hf(&config, "config.json").unwrap();
        let g = common::compile(case, &arch).unwrap_or_else(|(_, r)| panic!("{r}"));
        let lowered = lower(&g);
        let mut weights = FileWeights(TensorFile::open(&dir.join("model.safetensors")).unwrap());
        let mut exec = Executor::new(&lowered.plan, |n, d, s| {
            archc_compiler::interp::WeightSource::weight(&mut weights, n, d, s)
        })
        .unwrap();
        let inputs_file = TensorFile::open(&dir.join("inputs.safetensors")).unwrap();
        let inputs: HashMap<_, _> = g
            .inputs
            .keys()
            .map(|n| (n.clone(), inputs_file.read_any(n).unwrap()))
            .collect();
        let got = exec
            .run(&KernelInterp(&lowered.kernels), &inputs, &HashMap::new())
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let want = TensorFile::open(&dir.join("outputs.safetensors")).unwrap();
        for (name, t) in got {
            let err = rel_err(&t, &want.read_any(&name).unwrap());
            println!("{case:8} {name:18} rel err {err:.2e}");
            assert!(err <= 1e-4, "{case}/{name}: {err:.3e}");
        }
    }
}
