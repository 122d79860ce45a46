//! Sharded and multi-file checkpoints: `--weights model.safetensors.index.json` reads every
//! shard the index lists, and repeated `--weights` files are merged, for `archc run` and
//! `archc bench` (built binaries: `build.rs`). A tensor in two files, an index naming a shard
//! that lacks a tensor and a missing shard are errors naming the files.

use crate::common;

use std::path::PathBuf;

use archc_runtime::TensorFile;
use common::{archc, import_fixture, rel_err, repo, shard};

/// A scratch directory holding the llama fixture's imported `.arch` and its weights in two
/// shards with an index.
struct Sharded {
    dir: PathBuf,
    arch: String,
    shards: [String; 3],
}

impl Sharded {
    fn new(tag: &str) -> Sharded {
        let dir = std::env::temp_dir().join(format!("archc-sharded-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let arch = import_fixture("llama", &dir);
        let shards = shard(&repo("tests/fixtures/hf/llama/model.safetensors"), &dir)
            .map(|p| p.to_string_lossy().into_owned());
        Sharded { dir, arch, shards }
    }

    /// `archc run` with these weight arguments, interpreted or native; the status, the
    /// logits' relative error against transformers' (when it succeeded) and stderr.
    fn run(&self, weights: &[&str], backend: &str) -> (i32, f64, String) {
        let out = self
            .dir
            .join("out.safetensors")
            .to_string_lossy()
            .into_owned();
        let inputs = "tests/fixtures/hf/llama/inputs.safetensors";
        let mut args = vec!["run", &self.arch, "--inputs", inputs, "--outputs", &out];
        args.extend(["--backend", backend]);
        for w in weights {
            args.extend(["--weights", w]);
        }
        let (status, _, stderr) = archc(&args);
        if status != 0 {
            return (status, f64::NAN, stderr);
        }
        let want = TensorFile::open(&repo("tests/fixtures/hf/llama/outputs.safetensors")).unwrap();
        let got = TensorFile::open(std::path::Path::new(&out)).unwrap();
        let err = rel_err(
            &got.read_any("logits").unwrap(),
            &want.read_any("logits").unwrap(),
        );
        (status, err, stderr)
    }
}

impl Drop for Sharded {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

#[test]
fn an_index_and_repeated_files_give_transformers_outputs() {
    let s = Sharded::new("ok");
    let [a, b, index] = &s.shards;
    for (weights, backend) in [
        (vec![index.as_str()], "interp"),
        (vec![index.as_str()], "cranelift"),
        (vec![a.as_str(), b.as_str()], "cranelift"),
    ] {
        let (status, err, stderr) = s.run(&weights, backend);
        assert_eq!(status, 0, "{weights:?}: {stderr}");
        assert!(
            err <= 1e-4,
            "{weights:?} {backend}: relative error {err:.3e}"
        );
    }
    // One shard alone lacks half the weights: the error names the file.
    let (status, _, stderr) = s.run(&[a.as_str()], "cranelift");
    assert_eq!(status, 1);
    assert!(
        stderr.contains(&format!("is missing from `{a}`")),
        "{stderr}"
    );
    let (status, out, stderr) = archc(&["bench", &s.arch, "--weights", index, "--iters", "1"]);
    assert_eq!(status, 0, "{stderr}");
    assert!(out.contains("cranelift"), "{out}");
}

#[test]
fn conflicting_or_broken_shards_are_errors_naming_the_files() {
    let s = Sharded::new("bad");
    let [a, b, index] = &s.shards;
    let whole = repo("tests/fixtures/hf/llama/model.safetensors");
    let whole = whole.to_string_lossy();
    let (status, _, stderr) = s.run(&[a.as_str(), &whole], "interp");
    assert_eq!(status, 1);
    assert!(
        stderr.contains(&format!("is in both `{a}` and `{whole}`")),
        "{stderr}"
    );
    // The index says a tensor of the first shard is in the second.
    let text = std::fs::read_to_string(index).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let first = TensorFile::open(std::path::Path::new(a)).unwrap().names()[0].clone();
    json["weight_map"][&first] = serde_json::json!("model-00002-of-00002.safetensors");
    std::fs::write(index, json.to_string()).unwrap();
    let (status, _, stderr) = s.run(&[index.as_str()], "interp");
    assert_eq!(status, 1);
    assert!(
        stderr.contains(&format!(
            "lists tensor `{first}` in `{b}`, which does not hold it"
        )),
        "{stderr}"
    );
    std::fs::remove_file(b).unwrap();
    let (status, _, stderr) = s.run(&[index.as_str()], "interp");
    assert_eq!(status, 1);
    assert!(stderr.contains(&format!("cannot read `{b}`")), "{stderr}");
    std::fs::write(index, "{\"metadata\": {}}").unwrap();
    let (status, _, stderr) = s.run(&[index.as_str()], "interp");
    assert_eq!(status, 1);
    assert!(stderr.contains("has no `weight_map` object"), "{stderr}");
}
