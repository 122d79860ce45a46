//! `archc run` with bad weights and inputs: each case is a clear error naming the file and
//! tensor, with exit status 1, never a panic or an out-of-bounds read.

use crate::common;

use std::path::{Path, PathBuf};

use archc_runtime::{write_tensors, DType, Tensor};
use common::{archc, repo};

struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("archc-run-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
    fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

const MODEL: &str = "model m {
  input x: f32[batch, 4]
  output y = linear(x, 3) @encoder.proj
}
";

fn write(dir: &Scratch, name: &str, tensors: &[(&str, Tensor)]) -> String {
    let list: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect();
    let p = dir.path(name);
    write_tensors(Path::new(&p), &list).unwrap();
    p
}

fn good_weights() -> Vec<(&'static str, Tensor)> {
    vec![
        (
            "encoder.proj.weight",
            Tensor::f32(vec![3, 4], vec![0.5; 12]),
        ),
        ("encoder.proj.bias", Tensor::f32(vec![3], vec![1.0; 3])),
    ]
}

fn run_model(dir: &Scratch, extra: &[&str]) -> (i32, String, String) {
    let arch = dir.path("m.arch");
    std::fs::write(&arch, MODEL).unwrap();
    let mut args = vec!["run", arch.as_str()];
    args.extend_from_slice(extra);
    archc(&args)
}

fn expect_error(dir: &Scratch, extra: &[&str], fragments: &[&str]) {
    let (status, stdout, stderr) = run_model(dir, extra);
    assert_eq!(status, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    for f in fragments {
        assert!(stderr.contains(f), "expected `{f}` in:\n{stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn good_files_run_and_write_outputs() {
    let d = Scratch::new("good");
    let w = write(&d, "w.safetensors", &good_weights());
    let i = write(
        &d,
        "in.safetensors",
        &[("x", Tensor::f32(vec![2, 4], vec![1.0; 8]))],
    );
    let o = d.path("out.safetensors");
    let (status, stdout, stderr) =
        run_model(&d, &["--weights", &w, "--inputs", &i, "--outputs", &o]);
    assert_eq!(status, 0, "{stderr}");
    assert!(stdout.contains("wrote 1 outputs"), "{stdout}");
    let out = archc_runtime::TensorFile::open(Path::new(&o))
        .unwrap()
        .read_any("y")
        .unwrap();
    assert_eq!(
        out,
        Tensor::f32(vec![2, 3], vec![3.0; 6]),
        "x·Wᵀ + b = 4·0.5 + 1"
    );
}

#[test]
fn missing_tensor_is_named_with_the_closest_names() {
    let d = Scratch::new("missing");
    let w = write(
        &d,
        "w.safetensors",
        &[
            ("encoder.proj.bias", Tensor::f32(vec![3], vec![0.0; 3])),
            (
                "decoder.proj.weight",
                Tensor::f32(vec![3, 4], vec![0.0; 12]),
            ),
        ],
    );
    expect_error(
        &d,
        &["--weights", &w],
        &[
            "tensor `encoder.proj.weight` is missing",
            "w.safetensors",
            "closest names in the file are: decoder.proj.weight",
        ],
    );
}

#[test]
fn wrong_shape_says_expected_and_found() {
    let d = Scratch::new("shape");
    let mut ws = good_weights();
    ws[0].1 = Tensor::f32(vec![4, 3], vec![0.0; 12]);
    let w = write(&d, "w.safetensors", &ws);
    expect_error(
        &d,
        &["--weights", &w],
        &["`encoder.proj.weight`", "shape [4, 3]", "expects [3, 4]"],
    );
}

#[test]
fn wrong_dtype_is_refused() {
    let d = Scratch::new("dtype");
    let mut ws = good_weights();
    ws[0].1 = Tensor::int(DType::I32, vec![3, 4], vec![1; 12]);
    let w = write(&d, "w.safetensors", &ws);
    expect_error(
        &d,
        &["--weights", &w],
        &["`encoder.proj.weight`", "dtype I32", "expects f32"],
    );
}

#[test]
fn truncated_file_is_refused() {
    let d = Scratch::new("trunc");
    let full = std::fs::read(repo("tests/fixtures/hf/llama/model.safetensors")).unwrap();
    for cut in [full.len() - 1, full.len() / 2, 100, 7, 0] {
        let p = d.path("cut.safetensors");
        std::fs::write(&p, &full[..cut]).unwrap();
        let (status, _, stderr) = run_model(&d, &["--weights", &p]);
        assert_eq!(status, 1, "cut at {cut}: {stderr}");
        assert!(stderr.contains("cut.safetensors"), "{stderr}");
        assert!(
            stderr.contains("truncated or corrupt") || stderr.contains("not a safetensors file"),
            "{stderr}"
        );
    }
}

#[test]
fn corrupt_header_and_non_safetensors_files_are_refused() {
    let d = Scratch::new("corrupt");
    let text = d.path("notes.txt");
    std::fs::write(
        &text,
        "these are not tensors, just a long enough line of text",
    )
    .unwrap();
    expect_error(
        &d,
        &["--weights", &text],
        &["notes.txt` is not a safetensors file"],
    );
    let mut bad = 20u64.to_le_bytes().to_vec();
    bad.extend_from_slice(b"{\"w\": {\"dtype\": 7}} ");
    let p = d.path("bad.safetensors");
    std::fs::write(&p, &bad).unwrap();
    expect_error(
        &d,
        &["--weights", &p],
        &["bad.safetensors` is not a safetensors file"],
    );
    // A header whose offsets point past the end of the data.
    let header = br#"{"encoder.proj.weight":{"dtype":"F32","shape":[3,4],"data_offsets":[0,48]}}"#;
    let mut lying = (header.len() as u64).to_le_bytes().to_vec();
    lying.extend_from_slice(header);
    lying.extend_from_slice(&[0u8; 16]);
    let p = d.path("lying.safetensors");
    std::fs::write(&p, &lying).unwrap();
    expect_error(
        &d,
        &["--weights", &p],
        &["lying.safetensors` is truncated or corrupt"],
    );
}

#[test]
fn bad_inputs_are_named() {
    let d = Scratch::new("inputs");
    let w = write(&d, "w.safetensors", &good_weights());
    let cases: [(&str, (&str, Tensor), &[&str]); 3] = [
        (
            "none.safetensors",
            ("z", Tensor::f32(vec![2, 4], vec![0.0; 8])),
            &["tensor `x` is missing", "none.safetensors"],
        ),
        (
            "shape.safetensors",
            ("x", Tensor::f32(vec![2, 5], vec![0.0; 10])),
            &["input `x` has shape [2, 5]", "axis 1 should be 4"],
        ),
        (
            "dtype.safetensors",
            ("x", Tensor::int(DType::I64, vec![2, 4], vec![0; 8])),
            &["input `x` has dtype i64", "declares f32"],
        ),
    ];
    for (file, tensor, fragments) in cases {
        let i = write(&d, file, &[tensor]);
        expect_error(&d, &["--weights", &w, "--inputs", &i], fragments);
    }
}

#[test]
fn token_ids_past_the_vocabulary_are_an_error() {
    let d = Scratch::new("ids");
    let fixture = repo("tests/fixtures/hf/llama");
    let arch = d.path("llama.arch");
    let (status, _, stderr) = archc(&[
        "import",
        "hf",
        &fixture.join("config.json").to_string_lossy(),
        "-o",
        &arch,
    ]);
    assert_eq!(status, 0, "{stderr}");
    let i = write(
        &d,
        "ids.safetensors",
        &[(
            "input_ids",
            Tensor::int(DType::I64, vec![1, 3], vec![1, 96, 2]),
        )],
    );
    let w = fixture
        .join("model.safetensors")
        .to_string_lossy()
        .into_owned();
    // The GPU simulator defers launches that cannot fail, as the CUDA launcher does: the
    // gather's failure is still its own launch's.
    let mut how: Vec<[&str; 2]> = common::run_backends()
        .into_iter()
        .map(|b| ["--backend", b])
        .collect();
    how.push(["--device", "cuda-sim"]);
    for flags in how {
        let mut args = vec!["run", &arch, "--weights", &w, "--inputs", &i];
        args.extend(flags);
        let (status, _, stderr) = archc(&args);
        assert_eq!(status, 1, "{flags:?}: {stderr}");
        assert!(
            stderr.contains("out of range for axis 0 of size 96"),
            "{flags:?}: {stderr}"
        );
    }
}

#[test]
fn seeded_runs_are_deterministic_and_print_a_summary() {
    let (status, a, stderr) = archc(&[
        "run",
        "examples/mamba.arch",
        "--seed",
        "3",
        "--dim",
        "seq=5",
    ]);
    assert_eq!(status, 0, "{stderr}");
    assert!(a.contains("logits: f32[1, 5, 512] mean="), "{a}");
    assert!(a.contains("dims: batch=1, seq=5"), "{a}");
    let (_, b, _) = archc(&[
        "run",
        "examples/mamba.arch",
        "--seed",
        "3",
        "--dim",
        "seq=5",
    ]);
    let strip = |s: &str| {
        s.lines()
            .filter(|l| !l.contains("time:"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&a), strip(&b));
    let (_, c, _) = archc(&[
        "run",
        "examples/mamba.arch",
        "--seed",
        "4",
        "--dim",
        "seq=5",
    ]);
    assert_ne!(strip(&a), strip(&c));
    let (status, _, stderr) = archc(&["run", "examples/mamba.arch", "--dim", "seq=0"]);
    assert_eq!(status, 2, "{stderr}");
}

#[test]
fn absurd_dims_are_an_error_not_an_abort() {
    for backend in common::run_backends() {
        for seq in ["200000000", "9000000000000"] {
            let dim = format!("seq={seq}");
            let (status, _, stderr) = archc(&[
                "run",
                "examples/llama.arch",
                "--dim",
                &dim,
                "--backend",
                backend,
            ]);
            assert_eq!(status, 1, "{backend} {seq}: {stderr}");
            assert!(
                stderr.contains("cannot be allocated") || stderr.contains("too large"),
                "{backend}: {stderr}"
            );
        }
    }
}
