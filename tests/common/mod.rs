//! Shared helpers for the integration tests.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use archc_compiler::graph::Graph;
use archc_compiler::Session;

/// The nine example models, by file stem.
pub const EXAMPLES: &[&str] = &[
    "gpt2", "llama", "bert", "mamba", "mamba2", "jamba", "zamba2", "bamba", "ijepa",
];

/// The path of a file in the repository.
pub fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The text of an example.
pub fn example_source(name: &str) -> String {
    std::fs::read_to_string(repo(&format!("examples/{name}.arch"))).expect("example exists")
}

/// Compiles source text in a fresh session; an error comes back as its code and rendering.
pub fn compile(name: &str, text: &str) -> Result<Graph, (&'static str, String)> {
    let mut s = Session::new().expect("the prelude parses");
    let id = s.add(name, text);
    s.compile(id)
        .map(|(_, g)| g)
        .map_err(|d| (d.code, s.render(&d)))
}

/// Runs the archc binary; returns (status, stdout, stderr).
pub fn archc(args: &[&str]) -> (i32, String, String) {
    archc_with_env(args, &[])
}

/// Runs the archc binary with extra environment variables.
pub fn archc_with_env(args: &[&str], env: &[(&str, &std::path::Path)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_archc"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("archc runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Weights read from a safetensors file, checked against the declared dtype and shape.
pub struct FileWeights(pub archc_runtime::TensorFile);

impl archc_compiler::interp::WeightSource for FileWeights {
    fn weight(
        &mut self,
        name: &str,
        dtype: archc_runtime::DType,
        shape: &[usize],
    ) -> Result<archc_runtime::Tensor, String> {
        self.0.read(name, dtype, shape).map_err(|e| e.to_string())
    }
}

/// ‖got − want‖ / ‖want‖ in f64.
pub fn rel_err(got: &archc_runtime::Tensor, want: &archc_runtime::Tensor) -> f64 {
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

/// Imports a Hugging Face config, runs it with the interpreter on the given weights and
/// inputs, and returns each expected output's relative error.
pub fn parity(
    config: &std::path::Path,
    weights: &std::path::Path,
    dir: &std::path::Path,
) -> Vec<(String, f64)> {
    use archc_runtime::TensorFile;
    let text = std::fs::read_to_string(config).unwrap();
    let arch =
        archc_compiler::import::import_hf(&text, "config.json").unwrap_or_else(|e| panic!("{e}"));
    let graph = compile("imported.arch", &arch).unwrap_or_else(|(_, r)| panic!("{r}\n{arch}"));
    let inputs_file = TensorFile::open(&dir.join("inputs.safetensors")).unwrap();
    let inputs: std::collections::HashMap<String, archc_runtime::Tensor> = graph
        .inputs
        .keys()
        .map(|n| (n.clone(), inputs_file.read_any(n).unwrap()))
        .collect();
    let dims = archc_compiler::interp::bind_dims(&graph, &inputs, &Default::default()).unwrap();
    let mut w = FileWeights(TensorFile::open(weights).unwrap());
    let got = archc_compiler::interp::interpret(&graph, &dims, &inputs, &mut w)
        .unwrap_or_else(|e| panic!("{e}"));
    let want = TensorFile::open(&dir.join("outputs.safetensors")).unwrap();
    want.names()
        .into_iter()
        .map(|name| {
            let g = got
                .get(&name)
                .unwrap_or_else(|| panic!("no output `{name}`"));
            let err = rel_err(g, &want.read_any(&name).unwrap());
            (name, err)
        })
        .collect()
}
