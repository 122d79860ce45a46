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
    let out = Command::new(env!("CARGO_BIN_EXE_archc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("archc runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
