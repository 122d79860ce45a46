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

/// The launch API is safe: whatever buffers a caller passes, each launcher refuses those the
/// kernel would run past (too short, read-only where it writes, misaligned, too few, wrong
/// dims) with an error, and runs the right ones.
#[test]
fn launches_refuse_buffers_the_kernel_would_run_past() {
    use archc_compiler::codegen::kernel_interp::KernelInterp;
    use archc_runtime::{Arg, LaunchError, Launcher};
    let src = "model m {\n  input x: f32[n, 4]\n  output y = x * 2.0\n}\n";
    let g = common::compile("m.arch", src).unwrap_or_else(|(_, r)| panic!("{r}"));
    let all = archc_compiler::passes::PassOptions::all();
    let lowered =
        archc_compiler::passes::lower_optimized(&g, &all).unwrap_or_else(|e| panic!("{e}"));
    let [archc_runtime::Step::Kernel { kernel: k, .. }] = lowered.plan.steps[..] else {
        panic!("one kernel step: {:?}", lowered.plan.steps);
    };
    let mut launchers: Vec<(&str, Box<dyn Launcher>)> =
        vec![("interp", Box::new(KernelInterp(&lowered.kernels)))];
    for kind in common::backends() {
        launchers.push((kind.name(), common::jit(kind, &lowered)));
    }
    let x: Vec<u8> = (0..12).flat_map(|i| (i as f32).to_le_bytes()).collect();
    for (name, l) in &launchers {
        // Three rows: 12 elements in, 12 out.
        let mut out = vec![0u8; 48];
        let status = l.launch(k, &mut [Arg::Out(&mut out), Arg::In(&x)], &[3]);
        assert_eq!(status.map_err(|e| e.to_string()), Ok(0), "{name}");
        let y: Vec<f32> = out
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(y, (0..12).map(|i| i as f32 * 2.0).collect::<Vec<_>>());
        if *name == "interp" {
            // The interpreter checks every index as it runs instead; the rest is native code.
            continue;
        }
        let mut short = vec![0u8; 44];
        let err = l.launch(k, &mut [Arg::Out(&mut short), Arg::In(&x)], &[3]);
        assert!(
            matches!(
                err,
                Err(LaunchError::Short {
                    param: 0,
                    want: 48,
                    got: 44
                })
            ),
            "{name}: {err:?}"
        );
        let err = l.launch(k, &mut [Arg::Out(&mut out), Arg::In(&x[..40])], &[3]);
        assert!(
            matches!(err, Err(LaunchError::Short { param: 1, .. })),
            "{name}"
        );
        let err = l.launch(k, &mut [Arg::In(&x), Arg::In(&x)], &[3]);
        assert!(matches!(err, Err(LaunchError::ReadOnly(0))), "{name}");
        let mut wide = [0u8; 52];
        let skip = usize::from((wide.as_ptr() as usize).is_multiple_of(4));
        let odd = &mut wide[skip..skip + 48];
        let err = l.launch(k, &mut [Arg::Out(odd), Arg::In(&x)], &[3]);
        assert!(
            matches!(err, Err(LaunchError::Misaligned { param: 0, .. })),
            "{name}"
        );
        let err = l.launch(k, &mut [Arg::Out(&mut out)], &[3]);
        assert!(
            matches!(err, Err(LaunchError::Arity { want: 2, got: 1 })),
            "{name}"
        );
        let err = l.launch(k, &mut [Arg::Out(&mut out), Arg::In(&x)], &[]);
        assert!(matches!(err, Err(LaunchError::Dims { .. })), "{name}");
        let err = l.launch(7, &mut [], &[3]);
        assert!(matches!(err, Err(LaunchError::NoKernel(7))), "{name}");
    }
}
