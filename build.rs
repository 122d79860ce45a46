//! Builds the runner library (the `main` of the executables `archc build` writes) and hands
//! its path to the compiler, which carries the library inside the archc binary: an installed
//! `archc` (`cargo install --path .`) needs no file beside it to build executables.
//!
//! The library is a separate crate of type `staticlib`, which a dependency cannot provide on
//! stable Cargo, so this script runs Cargo on it, in its own target directory `runner-lib`
//! beside the outer build's profile folders (the outer build holds the main one's lock), with
//! the outer build's profile. The directory is shared by the feature sets of the outer build
//! that leave the runner alone: `--features llvm` reuses its build instead of compiling its
//! dependencies again (a second copy cost CI ~900 MB of disk). `--features cuda` builds the
//! runner with CUDA support (binaries built for a GPU load the driver), in `runner-lib-cuda`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    // OUT_DIR is <target>/<profile>/build/archc-<hash>/out; a missing ancestor (a layout
    // Cargo never makes) falls back to OUT_DIR itself.
    let cuda = std::env::var_os("CARGO_FEATURE_CUDA").is_some();
    let dir = if cuda {
        "runner-lib-cuda"
    } else {
        "runner-lib"
    };
    let target_dir = out
        .ancestors()
        .nth(4)
        .map_or_else(|| out.join("runner"), |t| t.join(dir));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "--offline",
        "--locked",
        "-p",
        "archc-runner",
    ])
    .arg("--target-dir")
    .arg(&target_dir)
    .current_dir(&manifest)
    // Settings meant for the outer build (its target directory, its build script) must
    // not leak into the inner one.
    .env_remove("CARGO_TARGET_DIR")
    .env_remove("CARGO_BUILD_TARGET_DIR")
    .env_remove("RUSTC_WRAPPER");
    if release {
        cmd.arg("--release");
    }
    if cuda {
        cmd.args(["--features", "cuda"]);
    }
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("building the runner library failed ({s}); run `cargo build -p archc-runner` to see why"),
        Err(e) => panic!("cannot run cargo to build the runner library: {e}"),
    }
    let lib = target_dir
        .join(if release { "release" } else { "debug" })
        .join("libarchc_runner.a");
    println!("cargo:rustc-env=ARCHC_EMBEDDED_RUNNER={}", lib.display());
    for dir in ["runner", "runtime", "kernels"] {
        println!("cargo:rerun-if-changed={}", manifest.join(dir).display());
    }
    println!("cargo:rerun-if-changed=Cargo.lock");
}
