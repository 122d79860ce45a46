//! NVIDIA GPUs, checked without one: every kernel of every example lowered for a GPU is
//! assembled by ptxas for sm_80 and sm_90a, `run --device cuda-sim` runs the GPU schedule in
//! the interpreter (races are errors) and gives the interpreter's outputs, and `--device
//! cuda` without a driver or without the `cuda` feature says so.

use crate::common;

use archc_compiler::codegen::{ptxas, CUDA_BUILT};
use archc_kernels::target::{GpuArch, Target};
use archc_runtime::{DType, TensorFile};
use common::{archc, archc_limited, example_source, rel_err, repo, scratch_dir, write_safetensors};

mod templates;

const EXAMPLES: &[&str] = &[
    "bamba", "bert", "gpt2", "ijepa", "jamba", "llama", "mamba", "mamba2", "mistral", "qwen2",
    "qwen3", "zamba2",
];

/// ptxas, or None with the reason printed; CI sets `ARCHC_REQUIRE_PTXAS` so that a missing
/// one fails there.
fn ptxas_or_skip() -> Option<std::path::PathBuf> {
    let found = ptxas::find_ptxas();
    if found.is_none() {
        assert!(
            std::env::var_os("ARCHC_REQUIRE_PTXAS").is_none(),
            "ARCHC_REQUIRE_PTXAS is set but no ptxas was found"
        );
        println!("skipped: no ptxas (set ARCHC_PTXAS or put it on the PATH)");
    }
    found
}

#[test]
fn every_example_assembles_for_both_architectures() {
    if !CUDA_BUILT {
        return;
    }
    let ptxas = ptxas_or_skip();
    for name in EXAMPLES {
        let g = common::compile(name, &example_source(name)).unwrap_or_else(|(_, r)| panic!("{r}"));
        for arch in GpuArch::ALL {
            let passes = archc_compiler::passes::PassOptions::all();
            let lowered =
                archc_compiler::passes::lower_optimized_for(&g, &passes, &Target::cuda(arch))
                    .unwrap_or_else(|e| panic!("{e}"));
            let ptx =
                archc_compiler::codegen::ptx(&lowered.kernels, lowered.plan.symbols.len(), arch)
                    .unwrap_or_else(|e| panic!("{name} {}: {e}", arch.name()));
            let entries = ptx
                .lines()
                .filter(|l| l.starts_with(".visible .entry "))
                .count();
            assert_eq!(entries, lowered.kernels.len(), "{name} {}", arch.name());
            // The CUDA launcher finds each entry by the plan's kernel name.
            for k in &lowered.plan.kernels {
                assert!(
                    ptx.contains(&format!(".visible .entry {k}(")),
                    "{name}: {k}"
                );
            }
            assert!(ptx.contains(&format!(".target {}", arch.name())));
            let Some(ptxas) = &ptxas else { continue };
            let assembled = ptxas::assemble(ptxas, &ptx, arch)
                .unwrap_or_else(|e| panic!("{name} {}: {e}", arch.name()));
            assert!(assembled.notes.is_empty(), "{name}: {:?}", assembled.notes);
            let stats = assembled.kernels;
            assert_eq!(stats.len(), lowered.kernels.len(), "{name} {}", arch.name());
            let worst = stats.iter().map(|k| k.registers).max().unwrap_or(0);
            let spills: u32 = stats.iter().map(|k| k.spill_stores).sum();
            println!(
                "{name:8} {}: {} kernels, at most {worst} registers, {spills} bytes spilled",
                arch.name(),
                stats.len()
            );
            assert!(stats.iter().all(|k| k.registers > 0), "{name}: {stats:?}");
        }
    }
}

#[test]
fn dump_ptx_names_every_kernel_and_reports_ptxas_figures() {
    let d = scratch_dir("dump-ptx");
    let llama = repo("examples/llama.arch").to_string_lossy().into_owned();
    if !CUDA_BUILT {
        let how = ["--features cuda"];
        archc_limited(&["dump", "--stage", "ptx", &llama], &d).expect(1, &how);
        return;
    }
    let (s, ptx, e) = archc(&["dump", "--stage", "ptx", "--arch", "sm_90a", &llama]);
    assert_eq!(s, 0, "{e}");
    let (_, kernels, _) = archc(&["dump", "--stage", "kernels", "--arch", "sm_90a", &llama]);
    let count = |text: &str, what: &str| text.lines().filter(|l| l.starts_with(what)).count();
    assert_eq!(count(&ptx, ".visible .entry "), count(&kernels, "kernel "));
    assert!(ptx.contains(".target sm_90a") && ptx.contains("%ctaid.x") && ptx.contains("%tid.x"));
    // Deterministic, as every stage's text is.
    assert_eq!(
        archc(&["dump", "--stage", "ptx", "--arch", "sm_90a", &llama]).1,
        ptx
    );
    if ptxas_or_skip().is_some() {
        let (s, table, e) = archc(&["dump", "--stage", "ptx", "--stats", &llama]);
        assert_eq!(s, 0, "{e}");
        assert!(
            table.starts_with("kernel (sm_80)") && table.contains("registers"),
            "{table}"
        );
        // A header, a row per kernel, the totals.
        assert_eq!(
            table.lines().count(),
            count(&kernels, "kernel ") + 2,
            "{table}"
        );
    }
}

#[test]
fn dump_kernels_for_a_gpu_shows_blocks_of_threads() {
    let llama = repo("examples/llama.arch").to_string_lossy().into_owned();
    let (s, gpu, e) = archc(&["dump", "--stage", "kernels", "--arch", "sm_80", &llama]);
    assert_eq!(s, 0, "{e}");
    let (_, cpu, _) = archc(&["dump", "--stage", "kernels", &llama]);
    assert!(!cpu.contains("thread for"));
    let kernels = gpu.lines().filter(|l| l.starts_with("kernel ")).count();
    let blocks = gpu
        .lines()
        .filter(|l| l.starts_with("    thread for "))
        .count();
    assert!(
        kernels > 0 && blocks >= kernels,
        "{kernels} kernels, {blocks} thread loops"
    );
    // RMSNorm's sum of squares: a block per row, partial sums through shared memory.
    let reduce = gpu
        .split("\n\n")
        .find(|k| k.contains("_reduce("))
        .unwrap_or_default();
    for part in [
        "shared b3: f32[128] partials",
        "barrier block",
        "thread for",
    ] {
        assert!(reduce.contains(part), "{part}:\n{reduce}");
    }
    let (s, plan, e) = archc(&["dump", "--stage", "plan", "--arch", "sm_80", &llama]);
    assert_eq!(s, 0, "{e}");
    assert!(plan.contains("block=[128]"), "{plan}");
}

#[test]
#[cfg_attr(
    feature = "llvm",
    ignore = "cuda-sim is feature-independent: the default feature set runs it"
)]
fn cuda_sim_runs_every_example_as_the_interpreter_does() {
    let d = scratch_dir("cuda-sim");
    for name in EXAMPLES {
        let file = repo(&format!("examples/{name}.arch"))
            .to_string_lossy()
            .into_owned();
        let mut outs = Vec::new();
        for (tag, how) in [
            ("interp", ["--backend", "interp"]),
            ("sim", ["--device", "cuda-sim"]),
        ] {
            let out = d.join(format!("{name}-{tag}.safetensors"));
            let o = out.to_string_lossy().into_owned();
            // Unbound dims take the defaults (batch 1, others 8).
            let mut args = vec!["run", &file, "--outputs", &o];
            args.extend(how);
            archc_limited(&args, &d).expect(0, &[]);
            outs.push(TensorFile::open(&out).unwrap());
        }
        let names = outs[0].names();
        assert!(!names.is_empty());
        for n in &names {
            let err = rel_err(&outs[1].read_any(n).unwrap(), &outs[0].read_any(n).unwrap());
            println!("{name:8} {n:12} cuda-sim rel err {err:.2e}");
            assert!(err <= 1e-4, "{name}/{n}: {err:e}");
        }
    }
}

/// `run`, `bench` and `generate` on `--device cuda` without a GPU (or without the feature)
/// say so and exit 1.
#[test]
fn cuda_without_a_gpu_says_so() {
    let d = scratch_dir("no-gpu");
    let llama = repo("examples/llama.arch").to_string_lossy().into_owned();
    let ids = d.join("ids.safetensors");
    write_safetensors(&ids, &[], &[("input_ids", vec![1, 3], vec![1, 2, 3])]);
    let ids = ids.to_string_lossy().into_owned();
    let why = if CUDA_BUILT {
        "no CUDA driver"
    } else {
        "--features cuda"
    };
    for args in [
        &["run", &llama, "--device", "cuda", "--dim", "seq=4"][..],
        &["bench", &llama, "--device", "cuda", "--dim", "seq=4"],
        &["bench", &llama, "--device", "cuda", "--arch", "sm_80"],
        &["generate", &llama, "--device", "cuda", "--inputs", &ids],
    ] {
        let out = archc_limited(args, &d);
        if out.code == 0 {
            // A GPU is here: scripts/gpu_check.sh checks it.
            return;
        }
        out.expect(1, &[why]);
    }
}

#[test]
fn dtype_bf16_stores_narrow_floats_on_every_device() {
    let d = scratch_dir("dtype");
    let llama = repo("examples/llama.arch").to_string_lossy().into_owned();
    let run = |tag: &str, extra: &[&str]| {
        let out = d.join(format!("{tag}.safetensors"));
        let o = out.to_string_lossy().into_owned();
        let mut args = vec!["run", &llama, "--dim", "seq=8", "--outputs", &o];
        args.extend(extra);
        archc_limited(&args, &d).expect(0, &[]);
        TensorFile::open(&out).unwrap().read_any("logits").unwrap()
    };
    let f32 = run("f32", &[]);
    for (tag, extra) in [
        ("cpu-bf16", &["--dtype", "bf16"][..]),
        ("sim-bf16", &["--dtype", "bf16", "--device", "cuda-sim"][..]),
        ("cpu-f16", &["--dtype", "f16"][..]),
    ] {
        let narrow = run(tag, extra);
        let want = if tag.ends_with("f16") && !tag.ends_with("bf16") {
            DType::F16
        } else {
            DType::BF16
        };
        assert_eq!(narrow.dtype, want, "{tag}");
        let err = rel_err(&narrow, &f32);
        println!("{tag}: rel err {err:.2e} against f32");
        assert!(err > 0.0 && err <= 1e-2, "{tag}: {err:e}");
    }
    archc_limited(&["run", &llama, "--dtype", "f8"], &d).expect(2, &["f8"]);
}

#[test]
fn build_for_a_gpu_embeds_ptx_and_needs_only_a_driver() {
    let d = scratch_dir("build-cuda");
    let llama = repo("examples/llama.arch").to_string_lossy().into_owned();
    let bin = d.join("llama_gpu");
    let b = bin.to_string_lossy().into_owned();
    let built = archc_limited(&["build", &llama, "--device", "cuda", "-o", &b], &d);
    if !CUDA_BUILT {
        built.expect(1, &["--features cuda"]);
        assert!(!bin.exists());
        return;
    }
    built.expect(0, &[]);
    let run = common::limited(&bin, &["--dim", "seq=4"], &d);
    if run.code != 0 {
        // No GPU here: the binary says so, as archc does.
        run.expect(1, &["no CUDA driver"]);
    }
    common::limited(&bin, &["generate", "--inputs", "ids.safetensors"], &d)
        .expect(1, &["generation runs on the CPU"]);
}
