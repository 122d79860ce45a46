//! `archc build`: a standalone executable from a model — native kernels from
//! cranelift-object, the plan, and the runtime (the runner library), linked by the system C
//! compiler.

use std::path::{Path, PathBuf};
use std::process::Command;

use archc_compiler::codegen::{self, backend::BackendKind};
use archc_compiler::graph::Graph;
use archc_compiler::lower::{same_weights, Lowered};
use archc_compiler::passes::{lower_optimized_for, PassOptions};
use archc_compiler::step::{derive, Derived, Phase};
use archc_kernels::target::Target;
use archc_runtime::{files, plan_to_json, Generation, Plan, StatefulPlans};

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

/// The runner library, built with archc (see `build.rs`) and carried inside it.
static EMBEDDED_RUNNER: &[u8] = include_bytes!(env!("ARCHC_EMBEDDED_RUNNER"));

/// A runner library file to link: `ARCHC_RUNNER_LIB` if set, else the embedded library written
/// to a temporary file (removed when the returned guard drops).
fn runner_library() -> Result<RunnerLib, String> {
    if let Some(p) = std::env::var_os("ARCHC_RUNNER_LIB") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(RunnerLib {
                path: p,
                temporary: false,
            })
        } else {
            Err(format!(
                "ARCHC_RUNNER_LIB points at {}, which is not a file",
                p.display()
            ))
        };
    }
    let path = std::env::temp_dir().join(format!("archc-runner-{}.a", std::process::id()));
    std::fs::write(&path, EMBEDDED_RUNNER)
        .map_err(|e| format!("cannot write the runner library to {}: {e}", path.display()))?;
    Ok(RunnerLib {
        path,
        temporary: true,
    })
}

/// A runner library on disk; a temporary copy is removed on drop.
struct RunnerLib {
    path: PathBuf,
    temporary: bool,
}

impl Drop for RunnerLib {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// How `archc build` compiles and links.
pub struct How<'a> {
    /// The C compiler that links.
    pub cc: &'a str,
    /// The code generator of the kernels.
    pub backend: BackendKind,
    /// The machine the executable is for.
    pub target: Target,
    /// Which passes run before lowering.
    pub passes: &'a PassOptions,
}

/// Adds a causal model's derived prefill and step to `lowered` for `BIN generate`: their plans
/// inside its plan, their kernels (renamed `prefill_…`, `step_…`) after its own, and every
/// plan's dims padded to the widest. A model whose step cannot be derived is left as it is:
/// its binary reruns the whole context at each step.
fn add_stateful(g: &Graph, how: &How, lowered: &mut Lowered) -> Result<(), String> {
    let Generation::Causal { input, output } = &lowered.plan.generation else {
        return Ok(());
    };
    let derived = derive(g, input, output, Phase::Prefill)
        .and_then(|p| Ok((p, derive(g, input, output, Phase::Step)?)));
    let Ok((prefill, step)) = derived else {
        return Ok(());
    };
    let lower = |d: &Derived| lower_optimized_for(&d.graph, how.passes, &how.target);
    let (first, next) = (
        lower(&prefill).map_err(|e| e.to_string())?,
        lower(&step).map_err(|e| e.to_string())?,
    );
    // The step's executor shares the prefill's weights, loaded and prepared alike.
    let shared = same_weights(&first, &next);
    let kernels = &mut lowered.kernels;
    let mut append = |l: Lowered, prefix: &str| -> (Plan, usize) {
        let start = kernels.len();
        for mut k in l.kernels {
            k.name = format!("{prefix}{}", k.name);
            kernels.push(k);
        }
        let mut plan = l.plan;
        for name in &mut plan.kernels {
            *name = format!("{prefix}{name}");
        }
        (plan, start)
    };
    let (mut first, prefill_kernels) = append(first, "prefill_");
    let (mut next, step_kernels) = append(next, "step_");
    let plan = &mut lowered.plan;
    let width = [&plan.symbols, &first.symbols, &next.symbols]
        .iter()
        .map(|s| s.len())
        .max()
        .unwrap_or(0);
    for p in [&mut *plan, &mut first, &mut next] {
        p.dims_width = width;
    }
    plan.stateful = Some(Box::new(StatefulPlans {
        prefill: first,
        step: next,
        parts: step
            .parts
            .iter()
            .map(crate::generate::part_layout)
            .collect(),
        prefill_kernels,
        step_kernels,
        shared,
    }));
    Ok(())
}

/// Compiles `g` into the executable `out`; returns a report.
pub fn build(g: &Graph, out: &Path, how: &How) -> Result<String, String> {
    let cc = how.cc;
    let mut lowered = lower_optimized_for(g, how.passes, &how.target).map_err(|e| e.to_string())?;
    let gpu = how.target.gpu_arch();
    if gpu.is_none() {
        // Generation runs on the CPU: a binary for a GPU runs the sequence plan only.
        lowered.plan.generation = crate::generate::generation(g);
        add_stateful(g, how, &mut lowered)?;
    }
    let json = plan_to_json(&lowered.plan);
    let width = lowered.plan.symbols.len().max(lowered.plan.dims_width);
    let object = crate::progress::spin("compiling", || match gpu {
        Some(arch) => codegen::ptx(&lowered.kernels, width, arch)
            .and_then(|ptx| codegen::object::build_object(&[], width, &json, &ptx)),
        None => how
            .backend
            .object(&lowered.kernels, width, &json, &how.target),
    })
    .map_err(|e| e.to_string())?;
    let runner = runner_library()?;
    // The object and the linked binary are made under hidden temporary names beside `out`,
    // and `out` is replaced only once the link has produced a file: a failed link, or a
    // "compiler" that writes nothing, leaves whatever was at `out` untouched.
    let obj_path = files::temporary_path(&out.with_extension("o"));
    let linked = files::temporary_path(out);
    files::write_atomically(&obj_path, &object).map_err(|e| e.to_string())?;
    let status = crate::progress::spin("linking", || {
        Command::new(cc)
            .arg(&obj_path)
            .arg(&runner.path)
            .arg("-o")
            .arg(&linked)
            .args(NATIVE_LIBS)
            .output()
    });
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
    let by = match gpu {
        Some(_) => "PTX".to_string(),
        None => format!("by {}", how.backend),
    };
    Ok(format!(
        "wrote {} ({} kernels {by} for {}, {} KiB of code and plan)\n",
        out.display(),
        lowered.kernels.len(),
        how.target.cpu,
        object.len() / 1024
    ))
}
