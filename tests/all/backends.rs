//! The code generators as the command line offers them: `--backend llvm` everywhere
//! `cranelift` goes (run, bench, build, dump), a clear error where this archc lacks LLVM, and
//! executables that refuse a CPU without the features they were compiled for.

use crate::common;

use archc_compiler::codegen::backend::BackendKind;
use common::{archc, archc_limited, limited, repo, scratch_dir};

const LLAMA: &str = "examples/llama.arch";

fn llama() -> String {
    repo(LLAMA).to_string_lossy().into_owned()
}

#[test]
fn llvm_without_the_feature_says_how_to_get_it() {
    if BackendKind::Llvm.available() {
        return;
    }
    let d = scratch_dir("no-llvm");
    let how = ["--features llvm", "llvm-22-dev"];
    archc_limited(&["run", &llama(), "--backend", "llvm"], &d).expect(1, &how);
    archc_limited(&["dump", "--stage", "llvm", &llama()], &d).expect(1, &how);
    archc_limited(&["build", &llama(), "--backend", "llvm", "-o", "b"], &d).expect(1, &how);
    assert!(!d.join("b").exists());
}

#[test]
fn dump_llvm_prints_one_function_per_kernel() {
    if !BackendKind::Llvm.available() {
        return;
    }
    let (s, ir, e) = archc(&["dump", "--stage", "llvm", &llama()]);
    assert_eq!(s, 0, "{e}");
    let (_, kernels, _) = archc(&["dump", "--stage", "kernels", &llama()]);
    let count = |text: &str, what: &str| text.lines().filter(|l| l.starts_with(what)).count();
    assert_eq!(count(&ir, "define void @"), count(&kernels, "kernel "));
    assert!(
        ir.contains("\"target-cpu\"=\"x86-64"),
        "{}",
        &ir[..400.min(ir.len())]
    );
    assert!(ir.contains("<4 x float>") && ir.contains("@llvm.fma."));
    // Deterministic, as every stage's text is.
    assert_eq!(archc(&["dump", "--stage", "llvm", &llama()]).1, ir);
}

#[test]
fn bench_names_its_row_after_the_backend() {
    for kind in common::backends() {
        let (s, out, e) = archc(&[
            "bench",
            &llama(),
            "--dim",
            "seq=8",
            "--iters",
            "2",
            "--backend",
            kind.name(),
        ]);
        assert_eq!(s, 0, "{e}");
        let row = out.lines().find(|l| l.starts_with(kind.name()));
        let ms: Option<f64> = row.and_then(|r| r.split_whitespace().nth(1)?.parse().ok());
        assert!(ms.is_some_and(|ms| ms > 0.0), "{out}");
    }
}

#[test]
fn executables_refuse_cpus_without_their_features() {
    if !BackendKind::Llvm.available() {
        return;
    }
    let d = scratch_dir("cpu-features");
    let l = llama();
    archc_limited(&["build", &l, "--backend", "llvm", "-o", "native"], &d).expect(0, &[]);
    let built = archc_limited(
        &[
            "build",
            &l,
            "--backend",
            "llvm",
            "--cpu",
            "portable",
            "-o",
            "portable",
        ],
        &d,
    );
    assert!(
        built.expect(0, &[]).stdout.contains("for x86-64,"),
        "{}",
        built.stdout
    );
    let args = ["--dim", "seq=4", "--seed", "3"];
    let native = limited(&d.join("native"), &args, &d);
    let portable = limited(&d.join("portable"), &args, &d);
    native.expect(0, &[]);
    assert!(
        native.stdout.contains("logits: f32[1, 4, 512]"),
        "{}",
        native.stdout
    );
    let logits = |o: &common::Outcome| {
        o.stdout
            .lines()
            .find(|l| l.contains("logits"))
            .map(String::from)
    };
    assert_eq!(logits(&native), logits(portable.expect(0, &[])));
    // A CPU without a feature the native code uses gets a sentence, not SIGILL.
    let hidden = std::process::Command::new(d.join("native"))
        .args(args)
        .env("ARCHC_HIDE_CPU_FEATURES", "avx2")
        .output()
        .unwrap();
    assert_eq!(hidden.status.code(), Some(1));
    let err = String::from_utf8_lossy(&hidden.stderr);
    assert!(
        err.contains("this CPU lacks avx2") && err.contains("--cpu portable"),
        "{err}"
    );
    let ok = std::process::Command::new(d.join("portable"))
        .args(args)
        .env("ARCHC_HIDE_CPU_FEATURES", "avx2")
        .output()
        .unwrap();
    assert!(ok.status.success());
    std::fs::remove_dir_all(&d).ok();
}
