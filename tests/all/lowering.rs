//! Compiled code is checked against the references: the kernels the lowering makes, run by
//! the Kernel IR interpreter and as Cranelift native code, give transformers' outputs on every
//! Hugging Face fixture within 1e-4. So do the kernels lowered for a GPU, split into blocks of
//! threads and run with the interpreter's GPU semantics (no races).

use crate::common;

use std::collections::HashMap;

use archc_compiler::codegen::kernel_interp::{GpuSim, KernelInterp};
use archc_compiler::lower::Lowered;
use archc_compiler::passes::{lower_optimized_for, PassOptions};
use archc_kernels::target::{GpuArch, Target};
use archc_runtime::{Executor, Launcher, TensorFile};
use common::{rel_err, repo, FileWeights};

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

fn check(
    backend: &str,
    target: &Target,
    passes: &PassOptions,
    launch: impl Fn(&Lowered) -> Box<dyn Launcher + '_>,
) {
    for case in CASES {
        let dir = repo(&format!("tests/fixtures/hf/{case}"));
        let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
        let arch = archc_compiler::import::import_hf(&config, "config.json").unwrap();
        let g = common::compile(case, &arch).unwrap_or_else(|(_, r)| panic!("{r}"));
        let lowered = lower_optimized_for(&g, passes, target).unwrap();
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
        let launcher = launch(&lowered);
        let got = exec
            .run(launcher.as_ref(), &inputs, &HashMap::new())
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let want = TensorFile::open(&dir.join("outputs.safetensors")).unwrap();
        for (name, t) in got {
            let err = rel_err(&t, &want.read_any(&name).unwrap());
            println!("{backend:10} {passes:?} {case:16} {name:18} rel err {err:.2e}");
            assert!(err <= 1e-4, "{backend} {case}/{name}: {err:.3e}");
        }
    }
}

#[test]
fn kernel_interpreter_matches_hf_fixtures() {
    for passes in [PassOptions::none(), PassOptions::all()] {
        check("kernels", &Target::cranelift_x86_64(), &passes, |l| {
            Box::new(KernelInterp(&l.kernels))
        });
    }
}

#[test]
fn gpu_schedule_matches_hf_fixtures() {
    for passes in [PassOptions::none(), PassOptions::all()] {
        check("cuda-sim", &Target::cuda(GpuArch::Sm80), &passes, |l| {
            Box::new(GpuSim(&l.kernels))
        });
    }
}

/// On a machine with an NVIDIA GPU and the `cuda` feature: the PTX kernels give the
/// fixtures' outputs (f32 within 1e-4). Skipped, saying why, anywhere else.
#[test]
fn cuda_matches_hf_fixtures() {
    #[cfg(feature = "cuda")]
    {
        use archc_compiler::codegen::cuda::{open, CudaLauncher};
        let (ctx, arch, name) = match open() {
            Ok(gpu) => gpu,
            Err(e) => return println!("skipped: {e}"),
        };
        println!("GPU: {name} ({})", arch.name());
        for passes in [PassOptions::none(), PassOptions::all()] {
            check("cuda", &Target::cuda(arch), &passes, |l| {
                let ptx = archc_compiler::codegen::ptx(&l.kernels, l.plan.symbols.len(), arch)
                    .unwrap_or_else(|e| panic!("{e}"));
                Box::new(
                    CudaLauncher::new(&ctx, &ptx, &l.kernels).unwrap_or_else(|e| panic!("{e}")),
                )
            });
        }
    }
    #[cfg(not(feature = "cuda"))]
    println!("skipped: archc was built without the `cuda` feature");
}

#[test]
fn native_backends_match_hf_fixtures() {
    for kind in common::backends() {
        for passes in [PassOptions::none(), PassOptions::all()] {
            check(kind.name(), &kind.target(), &passes, |l| {
                common::jit(kind, l)
            });
        }
    }
}
