//! Hostile runs, through the binaries under time and memory limits (`common::limited`): NaN and
//! infinities, dims that make a slice or a size invalid, absurd weights, ids that do not fit,
//! output paths that would destroy something, and flags that used to be accepted silently.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use archc_runtime::{Data, TensorFile};

use crate::common::{archc_limited, limited, repo, scratch_dir, write_safetensors};

fn put(dir: &Path, name: &str, text: &str) -> String {
    std::fs::write(dir.join(name), text).expect("scratch is writable");
    name.to_string()
}

fn read_output(path: &Path, name: &str) -> Vec<f32> {
    let f = TensorFile::open(path).expect("the output is a safetensors file");
    match f.read_any(name).expect("the output has the tensor").data {
        Data::F32(v) => v,
        other => panic!("{name} is not f32: {other:?}"),
    }
}

/// Same NaN positions, same infinities, finite values within 1e-5 relative.
fn same_values(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let ok = (x.is_nan() && y.is_nan())
            || x == y
            || (x.is_finite() && y.is_finite() && (x - y).abs() <= 1e-5 * x.abs().max(1.0));
        assert!(ok, "{what}[{i}]: {x} vs {y}");
    }
}

const NAN_MODEL: &str = "model m {
  input x: f32[batch, 5]
  output soft = softmax(x, -1)
  output e = exp(x)
  output s = silu(x)
  output g = gelu(x)
  output sg = sigmoid(x)
  output w = where(x > 0.0, exp(x), silu(x))
  output n = rmsnorm(x, -1.0) @norm
}
";

#[test]
fn nan_and_infinities_propagate_alike_on_every_backend() {
    let d = scratch_dir("nan");
    let f = put(&d, "nan.arch", NAN_MODEL);
    let x = vec![
        f32::NAN,
        1.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.5,
        -2.0,
        3.0,
        100.0,
        -200.0,
        88.5,
    ];
    write_safetensors(&d.join("in.safetensors"), &[("x", vec![2, 5], x)], &[]);
    let reference = "interp.safetensors";
    archc_limited(
        &[
            "run",
            &f,
            "--inputs",
            "in.safetensors",
            "--backend",
            "interp",
            "--outputs",
            reference,
        ],
        &d,
    )
    .expect(0, &[]);
    archc_limited(&["build", &f, "-o", "nan-bin"], &d).expect(0, &[]);
    let runs: [(&str, Vec<&str>); 3] = [
        (
            "fused.safetensors",
            vec!["run", &f, "--inputs", "in.safetensors"],
        ),
        (
            "unfused.safetensors",
            vec!["run", &f, "--inputs", "in.safetensors", "--no-fuse"],
        ),
        ("bin.safetensors", vec![]),
    ];
    for (out, args) in runs {
        if args.is_empty() {
            limited(
                &d.join("nan-bin"),
                &["--inputs", "in.safetensors", "--outputs", out],
                &d,
            )
            .expect(0, &[]);
        } else {
            let mut args = args.clone();
            args.extend(["--outputs", out]);
            archc_limited(&args, &d).expect(0, &[]);
        }
        for name in ["soft", "e", "s", "g", "sg", "w", "n"] {
            same_values(
                &read_output(&d.join(out), name),
                &read_output(&d.join(reference), name),
                &format!("{out}: {name}"),
            );
        }
    }
    let e = read_output(&d.join("fused.safetensors"), "e");
    assert!(
        e[0].is_nan() && e[2] == f32::INFINITY && e[3] == 0.0,
        "{e:?}"
    );
}

#[test]
fn slices_and_sizes_are_checked_against_the_bound_dims() {
    let d = scratch_dir("slice-dims");
    let never = put(&d, "never.arch", "model m {\n  input x: f32[batch, seq, 4]\n  output y = slice(x, 1, seq - 4, seq + 100)\n}\n");
    archc_limited(&["check", &never], &d).expect(1, &["E0208", "never.arch:3:14"]);
    let negative = put(
        &d,
        "negative.arch",
        "model m {\n  input x: f32[batch, seq, 4]\n  output y = slice(x, 1, seq, 1)\n}\n",
    );
    archc_limited(&["check", &negative], &d).expect(1, &["E0208"]);
    let open = put(
        &d,
        "open.arch",
        "model m {\n  input x: f32[batch, seq, 4]\n  output y = slice(x, 1, 2, seq - 4) * 2.0\n}\n",
    );
    archc_limited(&["build", &open, "-o", "open-bin"], &d).expect(0, &[]);
    let message = ["seq - 4", "open.arch:3:14", "seq=6"];
    for backend in crate::common::run_backends() {
        archc_limited(&["run", &open, "--dim", "seq=6", "--backend", backend], &d)
            .expect(1, &message);
        archc_limited(&["run", &open, "--dim", "seq=7", "--backend", backend], &d).expect(0, &[]);
    }
    limited(&d.join("open-bin"), &["--dim", "seq=6"], &d).expect(1, &message);
}

#[test]
fn weights_too_large_to_allocate_are_an_error() {
    let d = scratch_dir("huge-weights");
    let f = put(
        &d,
        "big.arch",
        "model m {\n  input x: f32[batch, 8]\n  output y = linear(x, 4000000000) @head\n}\n",
    );
    for backend in crate::common::run_backends() {
        archc_limited(&["run", &f, "--backend", backend], &d).expect(1, &["head.weight"]);
    }
    archc_limited(&["build", &f, "-o", "big-bin"], &d).expect(0, &[]);
    // Each weight is read before memory is taken for it, so the random source refuses first.
    limited(&d.join("big-bin"), &[], &d).expect(1, &["head.weight", "too large to generate"]);
}

/// Runs `llama` on `ids.safetensors` in `d` on both backends; each must fail with `want`.
fn llama_on_ids(d: &Path, llama: &str, want: &[&str]) {
    for backend in crate::common::run_backends() {
        let args = [
            "run",
            llama,
            "--inputs",
            "ids.safetensors",
            "--backend",
            backend,
        ];
        archc_limited(&args, d).expect(1, want);
    }
}

#[test]
fn ids_that_do_not_fit_the_declared_dtype_are_refused() {
    let d = scratch_dir("wide-ids");
    write_safetensors(
        &d.join("ids.safetensors"),
        &[],
        &[("input_ids", vec![1, 3], vec![1, (1 << 32) + 1, 2])],
    );
    let llama = repo("examples/llama.arch");
    let llama = llama.to_str().expect("utf-8 path");
    llama_on_ids(&d, llama, &["input_ids", "4294967297", "i32"]);
}

#[test]
fn random_ids_do_not_depend_on_the_passes() {
    let d = scratch_dir("random-ids");
    let llama = repo("examples/llama.arch");
    let llama = llama.to_str().expect("utf-8 path");
    archc_limited(
        &[
            "run",
            llama,
            "--dim",
            "seq=16",
            "--outputs",
            "fused.safetensors",
        ],
        &d,
    )
    .expect(0, &[]);
    archc_limited(
        &[
            "run",
            llama,
            "--dim",
            "seq=16",
            "--no-fuse",
            "--outputs",
            "plain.safetensors",
        ],
        &d,
    )
    .expect(0, &[]);
    same_values(
        &read_output(&d.join("fused.safetensors"), "logits"),
        &read_output(&d.join("plain.safetensors"), "logits"),
        "logits",
    );
}

/// `m.arch` (y = 2x over `f32[batch, 4]`) and `in.safetensors` (x of ones) in `d`; returns the
/// model's file name.
fn doubling_model(d: &Path) -> String {
    write_safetensors(
        &d.join("in.safetensors"),
        &[("x", vec![1, 4], vec![1.0; 4])],
        &[],
    );
    put(
        d,
        "m.arch",
        "model m {\n  input x: f32[batch, 4]\n  output y = x * 2.0\n}\n",
    )
}

#[test]
fn outputs_never_destroy_inputs_or_special_files() {
    let d = scratch_dir("outputs");
    let f = doubling_model(&d);
    write_safetensors(
        &d.join("w.safetensors"),
        &[("unused", vec![1], vec![0.0])],
        &[],
    );
    let before = std::fs::read(d.join("in.safetensors")).expect("written");
    fn run(out: &str) -> Vec<&str> {
        vec![
            "run",
            "m.arch",
            "--inputs",
            "in.safetensors",
            "--weights",
            "w.safetensors",
            "--outputs",
            out,
        ]
    }
    archc_limited(&run("in.safetensors"), &d).expect(2, &["--inputs"]);
    archc_limited(&run("w.safetensors"), &d).expect(2, &["--weights"]);
    archc_limited(&run("m.arch"), &d).expect(2, &[".arch source"]);
    assert_eq!(
        std::fs::read(d.join("in.safetensors")).expect("still there"),
        before
    );
    archc_limited(&["build", &f, "-o", "m.arch"], &d).expect(2, &[".arch source"]);
    let config = d.join("config.json");
    std::fs::copy(repo("tests/fixtures/hf/llama/config.json"), &config).expect("copied");
    archc_limited(&["import", "hf", "config.json", "-o", "config.json"], &d).expect(2, &["config"]);
    std::os::unix::fs::symlink("in.safetensors", d.join("link")).expect("symlink");
    archc_limited(&run("link"), &d).expect(2, &["symbolic link"]);
    archc_limited(&run("/dev/full"), &d).expect(2, &["is a device"]);
    // An existing output keeps its mode, and no temporary file is left behind.
    let out = d.join("out.safetensors");
    std::fs::write(&out, b"old").expect("written");
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    archc_limited(&run("out.safetensors"), &d).expect(0, &[]);
    let mode = std::fs::metadata(&out)
        .expect("exists")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o640);
    assert_eq!(read_output(&out, "y"), vec![2.0; 4]);
    let leftovers: Vec<_> = std::fs::read_dir(&d)
        .expect("listable")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("archc-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A write that fails says so.
    std::fs::create_dir(d.join("ro")).expect("mkdir");
    std::fs::set_permissions(d.join("ro"), std::fs::Permissions::from_mode(0o500)).expect("chmod");
    if std::fs::write(d.join("ro/probe"), b"").is_err() {
        archc_limited(&run("ro/out.safetensors"), &d).expect(1, &["cannot write"]);
    }
}

#[test]
fn flags_are_checked_not_silently_accepted() {
    let d = scratch_dir("flags");
    let llama = repo("examples/llama.arch");
    let llama = llama.to_str().expect("utf-8 path");
    archc_limited(&["run", llama, "--dim", "=5"], &d).expect(2, &["not a dim name"]);
    archc_limited(&["run", llama, "--dim", "SEQ=5"], &d).expect(2, &["no dim `SEQ`", "`seq`"]);
    archc_limited(&["run", llama, "--dim", "sequence=16"], &d)
        .expect(2, &["no dim `sequence`", "batch, seq"]);
    archc_limited(
        &["dump", "--stage", "plan", llama, "--dim", "sequence=16"],
        &d,
    )
    .expect(2, &["no dim"]);
    archc_limited(
        &["run", llama, "--no-fuse", "--disable-pass", "nonsense"],
        &d,
    )
    .expect(2, &["no pass `nonsense`"]);
    std::fs::write(d.join("llama-bin"), b"keep").expect("written");
    archc_limited(
        &["build", llama, "-o", "llama-bin", "--cc", "/bin/true"],
        &d,
    )
    .expect(1, &["wrote no executable"]);
    assert_eq!(
        std::fs::read(d.join("llama-bin")).expect("untouched"),
        b"keep"
    );
    // Unreadable weights are a usage error, as an unreadable source is.
    archc_limited(&["run", llama, "--weights", "missing.safetensors"], &d)
        .expect(2, &["cannot read"]);
    archc_limited(&["run", llama, "--weights", "."], &d).expect(2, &["is a directory"]);
}

#[test]
fn run_time_errors_and_profiles_name_the_source() {
    let d = scratch_dir("origins");
    write_safetensors(
        &d.join("ids.safetensors"),
        &[],
        &[("input_ids", vec![1, 3], vec![1, 600, 2])],
    );
    let llama = repo("examples/llama.arch");
    let llama = llama.to_str().expect("utf-8 path");
    let want = [
        "llama.arch:30:7",
        "model.embed_tokens",
        "out of range for axis 0 of size 512",
    ];
    llama_on_ids(&d, llama, &want);
    archc_limited(&["build", llama, "-o", "llama-bin"], &d).expect(0, &[]);
    limited(&d.join("llama-bin"), &["--inputs", "ids.safetensors"], &d).expect(1, &want);
    let profiled = std::process::Command::new(env!("CARGO_BIN_EXE_archc"))
        .args(["run", llama, "--dim", "seq=8"])
        .env("ARCHC_PROFILE", "1")
        .output()
        .expect("archc runs");
    let profile = String::from_utf8_lossy(&profiled.stderr);
    // Each kernel is named with its source location and the block it came from.
    assert!(
        profile.contains("profile:")
            && profile.contains("llama.arch:")
            && profile.contains("(matmul in `"),
        "{profile}"
    );
}

#[test]
fn built_binaries_refuse_outputs_over_their_inputs() {
    let d = scratch_dir("bin-outputs");
    let f = doubling_model(&d);
    let before = std::fs::read(d.join("in.safetensors")).expect("written");
    archc_limited(&["build", &f, "-o", "m-bin"], &d).expect(0, &[]);
    let bin = d.join("m-bin");
    limited(
        &bin,
        &["--inputs", "in.safetensors", "--outputs", "in.safetensors"],
        &d,
    )
    .expect(2, &["--inputs"]);
    limited(
        &bin,
        &["--inputs", "in.safetensors", "--outputs", "/dev/full"],
        &d,
    )
    .expect(2, &["is a device"]);
    assert_eq!(
        std::fs::read(d.join("in.safetensors")).expect("still there"),
        before
    );
}

#[test]
fn threads_change_nothing_but_speed_and_timings_are_reported_by_phase() {
    let d = scratch_dir("threads");
    let jamba = repo("examples/jamba.arch");
    let jamba = jamba.to_str().expect("utf-8 path");
    let run = |threads: &str, out: &str| {
        archc_limited(
            &[
                "run",
                jamba,
                "--dim",
                "seq=12",
                "--threads",
                threads,
                "--outputs",
                out,
            ],
            &d,
        )
        .expect(0, &[]);
        read_output(&d.join(out), "logits")
    };
    assert_eq!(run("1", "one.safetensors"), run("3", "three.safetensors"));
    let summary = archc_limited(&["run", jamba, "--dim", "seq=12"], &d);
    let summary = &summary.expect(0, &[]).stdout;
    for phase in ["compile", "load", "prepare", "run", "threads"] {
        assert!(summary.contains(phase), "{phase} not in {summary}");
    }
    let bench = archc_limited(&["bench", jamba, "--dim", "seq=12", "--iters", "2"], &d);
    assert!(
        bench.expect(0, &[]).stdout.contains("peak memory"),
        "{}",
        bench.stdout
    );
    archc_limited(&["run", jamba, "--threads", "0"], &d).expect(2, &["--threads"]);
    archc_limited(&["build", jamba, "-o", "jamba-bin"], &d).expect(0, &[]);
    limited(
        &d.join("jamba-bin"),
        &["--threads", "1", "--dim", "seq=12"],
        &d,
    )
    .expect(0, &[]);
    limited(&d.join("jamba-bin"), &["--threads", "0"], &d).expect(2, &["--threads"]);
}

#[test]
fn kernels_with_large_thread_private_arrays_run_or_are_refused() {
    let d = scratch_dir("locals");
    let source = std::fs::read_to_string(repo("examples/mamba2.arch")).expect("example exists");
    assert!(source.contains("head_dim = 16,"));
    // Megabytes of SSD chunk arrays per thread: more than a default thread stack holds.
    let wide = put(
        &d,
        "wide.arch",
        &source.replace("head_dim = 16,", "head_dim = 12000,"),
    );
    archc_limited(&["run", &wide, "--dim", "seq=5"], &d).expect(0, &[]);
    archc_limited(&["build", &wide, "-o", "wide-bin"], &d).expect(0, &[]);
    limited(&d.join("wide-bin"), &["--dim", "seq=5"], &d).expect(0, &[]);
    // Gigabytes: refused before anything runs.
    let huge = put(
        &d,
        "huge.arch",
        &source.replace("head_dim = 16,", "head_dim = 10000000,"),
    );
    archc_limited(&["run", &huge, "--dim", "seq=5"], &d).expect(1, &["thread-private memory"]);
}

#[test]
fn empty_tensors_are_a_located_error() {
    let d = scratch_dir("empty");
    let source = std::fs::read_to_string(repo("examples/llama.arch")).expect("example exists");
    let zero = put(
        &d,
        "zero.arch",
        &source.replace(
            "attention(h, heads, kv_heads,",
            "attention(h, heads, kv_heads, rotary_dim = 0,",
        ),
    );
    for backend in crate::common::run_backends() {
        archc_limited(&["run", &zero, "--dim", "seq=6", "--backend", backend], &d)
            .expect(1, &["E0208", "the size `0` must be positive"]);
    }
}
