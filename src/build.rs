//! `archc build`: a standalone executable from a model — native kernels from
//! cranelift-object, the plan, and the runtime (the runner library), linked by the system C
//! compiler.

use std::path::{Path, PathBuf};
use std::process::Command;

use archc_compiler::codegen::object::build_object;
use archc_compiler::graph::Graph;
use archc_compiler::passes::{lower_optimized, PassOptions};
use archc_runtime::{files, plan_to_json};

/// The libraries Rust's standard library needs when linked statically on Linux (from
/// `rustc --print native-static-libs`).
const NATIVE_LIBS: &[&str] = &[
    "-lgcc_s",
    "-lutil",
    "-lrt",
    "-lpthread",
    "-lm",
    "-ldl",
    "-lc",
];

/// The runner library: `ARCHC_RUNNER_LIB` if set, else the one `cargo build` puts next to the
/// `archc` executable.
fn runner_library() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("ARCHC_RUNNER_LIB") {
        let p = PathBuf::from(p);
        return if p.exists() {
            Ok(p)
        } else {
            Err(format!(
                "ARCHC_RUNNER_LIB points at {}, which does not exist",
                p.display()
            ))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate archc: {e}"))?;
    let dir = exe.parent().ok_or("archc has no directory")?;
    for candidate in [
        dir.join("libarchc_runner.a"),
        dir.join("../libarchc_runner.a"),
    ] {
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    Err(format!(
        "libarchc_runner.a is not next to {}; build it with `cargo build --release` (it is a default workspace member)",
        exe.display()
    ))
}

/// Compiles `g` into the executable `out`; returns a report.
pub fn build(g: &Graph, out: &Path, cc: &str, passes: &PassOptions) -> Result<String, String> {
    let lowered = lower_optimized(g, passes);
    let json = plan_to_json(&lowered.plan);
    let object = build_object(&lowered.kernels, lowered.plan.symbols.len(), &json)
        .map_err(|e| e.to_string())?;
    let runner = runner_library()?;
    // The object and the linked binary are made under hidden temporary names beside `out`,
    // and `out` is replaced only once the link has produced a file: a failed link, or a
    // "compiler" that writes nothing, leaves whatever was at `out` untouched.
    let obj_path = files::temporary_path(&out.with_extension("o"));
    let linked = files::temporary_path(out);
    files::write_atomically(&obj_path, &object).map_err(|e| e.to_string())?;
    let status = Command::new(cc)
        .arg(&obj_path)
        .arg(&runner)
        .arg("-o")
        .arg(&linked)
        .args(NATIVE_LIBS)
        .output();
    std::fs::remove_file(&obj_path).ok();
    let status =
        status.map_err(|e| format!("cannot run the C compiler `{cc}` to link: {e} (set --cc)"))?;
    if !status.status.success() {
        std::fs::remove_file(&linked).ok();
        return Err(format!(
            "linking with `{cc}` failed:\n{}",
            String::from_utf8_lossy(&status.stderr)
        ));
    }
    match std::fs::metadata(&linked) {
        Ok(m) if m.is_file() && m.len() > 0 => {}
        _ => {
            std::fs::remove_file(&linked).ok();
            return Err(format!(
                "`{cc}` exited successfully but wrote no executable; is it a C compiler? (set --cc)"
            ));
        }
    }
    files::replace_with(out, &linked).map_err(|e| e.to_string())?;
    Ok(format!(
        "wrote {} ({} kernels, {} KiB of code and plan)\n",
        out.display(),
        lowered.kernels.len(),
        object.len() / 1024
    ))
}
