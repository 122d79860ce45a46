//! Shared helpers for the integration tests.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use archc_compiler::graph::Graph;
use archc_compiler::Session;

/// The example models, by file stem.
pub const EXAMPLES: &[&str] = &[
    "gpt2", "llama", "mistral", "qwen2", "qwen3", "bert", "mamba", "mamba2", "jamba", "zamba2",
    "bamba", "ijepa",
];

/// The path of a file in the repository: the checkout the tests were built in, or
/// `$ARCHC_REPO` (a test binary carried to another machine, as scripts/gpu_check.sh runs it).
pub fn repo(path: &str) -> PathBuf {
    std::env::var_os("ARCHC_REPO")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join(path)
}

/// The archc binary the tests run: the one built with them, or `$ARCHC_BIN`.
pub fn archc_bin() -> PathBuf {
    std::env::var_os("ARCHC_BIN")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_archc")), PathBuf::from)
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
    let out = Command::new(archc_bin())
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

pub mod fused_gradient;
pub mod programs;

/// Random inputs for a program of `tests/common/programs.rs`: token ids below 11 and a 0/1
/// padding mask.
pub fn program_inputs(
    batch: usize,
    seq: usize,
    seed: u64,
) -> std::collections::HashMap<String, archc_runtime::Tensor> {
    use archc_runtime::{random_tensor, DType};
    [("ids", 11), ("m", 2)]
        .into_iter()
        .map(|(name, bound)| {
            (
                name.to_string(),
                random_tensor(seed, name, DType::I32, &[batch, seq], 1.0, bound),
            )
        })
        .collect()
}

/// Runs a graph with the reference interpreter on seed-random weights.
pub fn interpret_random(
    g: &Graph,
    inputs: &std::collections::HashMap<String, archc_runtime::Tensor>,
) -> Vec<(String, archc_runtime::Tensor)> {
    let dims = archc_compiler::interp::bind_dims(g, inputs, &Default::default()).unwrap();
    let mut w = archc_runtime::WeightSource::Random(5);
    archc_compiler::interp::interpret(g, &dims, inputs, &mut w)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .collect()
}

/// The native code generators this archc was built with: the conformance suite runs every
/// check on each (adding a backend adds it here).
pub fn backends() -> Vec<archc_compiler::codegen::backend::BackendKind> {
    archc_compiler::codegen::backend::BackendKind::ALL
        .into_iter()
        .filter(|b| b.available())
        .collect()
}

/// Whether this build runs the GPU simulator's long checks. `cuda-sim` is the Kernel IR
/// interpreter with a GPU's semantics: nothing in it depends on the cargo features, and
/// `.ci/run` runs the suite once per feature set, so those checks run in the default set (the
/// README's test command) and are skipped in the `llvm` and `cuda` sets. Short simulator
/// checks run everywhere.
pub const SIMULATOR_CHECKS: bool = !cfg!(feature = "llvm");

/// The `--backend` names of `archc run`: the interpreter and every native backend built.
pub fn run_backends() -> Vec<&'static str> {
    let mut names = vec!["interp"];
    names.extend(backends().iter().map(|b| b.name()));
    names
}

/// Compiles lowered kernels with a backend, on every core.
pub fn jit(
    kind: archc_compiler::codegen::backend::BackendKind,
    lowered: &archc_compiler::lower::Lowered,
) -> Box<dyn archc_runtime::Launcher> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    kind.jit(lowered, cores)
        .unwrap_or_else(|e| panic!("{kind}: {e}"))
}

/// Asserts that every run gave the first run's outputs within `tolerance` (relative; 0 asks
/// for equality bit for bit); returns the first run's outputs.
fn agree(
    runs: &[(&str, Vec<(String, archc_runtime::Tensor)>)],
    tolerance: f64,
    src: &str,
) -> Vec<(String, archc_runtime::Tensor)> {
    let (first, want) = &runs[0];
    for (backend, got) in &runs[1..] {
        for ((name, w), (_, g)) in want.iter().zip(got) {
            if tolerance == 0.0 {
                assert_eq!(w, g, "{name}: {backend} differs from {first}\n{src}");
                continue;
            }
            // NaN must come out where it did (some programs make it on purpose); the other
            // elements agree within the tolerance.
            let (wf, gf) = (w.to_f32(), g.to_f32());
            let nans = |v: &[f32]| v.iter().map(|x| x.is_nan()).collect::<Vec<_>>();
            assert_eq!(
                nans(&wf),
                nans(&gf),
                "{name}: {backend} puts NaN elsewhere\n{src}"
            );
            let finite = |v: &[f32]| {
                v.iter()
                    .map(|x| if x.is_nan() { 0.0 } else { *x })
                    .collect()
            };
            let (wt, gt) = (
                archc_runtime::Tensor::f32(w.shape.clone(), finite(&wf)),
                archc_runtime::Tensor::f32(g.shape.clone(), finite(&gf)),
            );
            let err = rel_err(&gt, &wt);
            assert!(
                err <= tolerance || err.is_nan(),
                "{name}: {backend} is {err:.2e} from {first}\n{src}"
            );
        }
    }
    want.clone()
}

/// Runs a graph through the passes, lowering for each native backend's target and its code
/// on seed-random weights; the backends agree within 1e-5 (their schedules may sum in other
/// orders).
pub fn native_random(
    g: &Graph,
    passes: &archc_compiler::passes::PassOptions,
    inputs: &std::collections::HashMap<String, archc_runtime::Tensor>,
) -> Vec<(String, archc_runtime::Tensor)> {
    native_random_within(g, passes, inputs, Within::EachTensor(1e-5))
}

/// How far apart the backends' outputs may be.
pub enum Within {
    /// Relative (L2) error of each tensor.
    EachTensor(f64),
    /// Max |difference| over the largest |value| of all outputs, as the gradient checks
    /// measure: a weight whose gradient cancels to rounding noise would otherwise compare
    /// noise with noise.
    Largest(f32),
}

/// [`native_random`] with the backends agreeing `within` a bound (a gradient sums many terms
/// that cancel: its relative error is larger than the outputs').
pub fn native_random_within(
    g: &Graph,
    passes: &archc_compiler::passes::PassOptions,
    inputs: &std::collections::HashMap<String, archc_runtime::Tensor>,
    within: Within,
) -> Vec<(String, archc_runtime::Tensor)> {
    let runs = native_runs(g, passes, inputs);
    match within {
        Within::EachTensor(tolerance) => agree(&runs, tolerance, &g.name),
        Within::Largest(tolerance) => agree_largest(&runs, tolerance),
    }
}

/// The largest |element| of `outputs` (at least 1e-12).
pub fn largest_value(outputs: &[(String, archc_runtime::Tensor)]) -> f32 {
    outputs
        .iter()
        .flat_map(|(_, t)| t.to_f32())
        .fold(1e-12f32, |m, x| m.max(x.abs()))
}

/// max |a − b| over the elements of two tensors of one shape.
pub fn max_difference(a: &archc_runtime::Tensor, b: &archc_runtime::Tensor) -> f32 {
    a.to_f32()
        .iter()
        .zip(b.to_f32())
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// [`Within::Largest`]: every run against the first; returns the first run's outputs.
fn agree_largest(
    runs: &[(&str, Vec<(String, archc_runtime::Tensor)>)],
    tolerance: f32,
) -> Vec<(String, archc_runtime::Tensor)> {
    let (first, want) = &runs[0];
    let largest = largest_value(want);
    for (backend, got) in &runs[1..] {
        for ((name, w), (_, g)) in want.iter().zip(got) {
            let diff = max_difference(w, g);
            assert!(
                diff / largest <= tolerance,
                "{name}: {backend} is {:.2e} (of the largest value) from {first}",
                diff / largest
            );
        }
    }
    want.clone()
}

/// Each native backend's outputs of `g` with `passes`, on seed-random weights.
fn native_runs(
    g: &Graph,
    passes: &archc_compiler::passes::PassOptions,
    inputs: &std::collections::HashMap<String, archc_runtime::Tensor>,
) -> Vec<(&'static str, Vec<(String, archc_runtime::Tensor)>)> {
    backends()
        .into_iter()
        .map(|kind| {
            let lowered = archc_compiler::passes::lower_optimized_for(g, passes, &kind.target())
                .unwrap_or_else(|e| panic!("{e}"));
            let launcher = jit(kind, &lowered);
            let w = archc_runtime::WeightSource::Random(5);
            let mut exec =
                archc_runtime::Executor::new(&lowered.plan, |n, d, s| w.weight(n, d, s)).unwrap();
            let out = exec
                .run(launcher.as_ref(), inputs, &Default::default())
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
            (kind.name(), out)
        })
        .collect()
}

/// Lowers a graph without passes for each native backend's target and runs it (no weights)
/// through the Kernel IR interpreter and the backend's code, asserting that the two agree bit
/// for bit; returns the last backend's outputs.
pub fn native_unfused(
    g: &Graph,
    inputs: &std::collections::HashMap<String, archc_runtime::Tensor>,
    src: &str,
) -> Vec<(String, archc_runtime::Tensor)> {
    use archc_compiler::codegen::kernel_interp::KernelInterp;
    use archc_runtime::{DType, Executor, Tensor};
    let mut last = Vec::new();
    for kind in backends() {
        let lowered = archc_compiler::lower::lower_for(g, &kind.target());
        let none =
            |_: &str, _: DType, _: &[usize]| -> Result<Tensor, String> { Err("no weights".into()) };
        let mut exec = Executor::new(&lowered.plan, none).unwrap();
        let no_dims = Default::default();
        let by_kernels = exec
            .run(&KernelInterp(&lowered.kernels), inputs, &no_dims)
            .unwrap();
        let launcher = jit(kind, &lowered);
        let native = exec.run(launcher.as_ref(), inputs, &no_dims).unwrap();
        let runs = [
            ("the Kernel IR interpreter", by_kernels),
            (kind.name(), native),
        ];
        agree(&runs, 0.0, src);
        last = runs
            .into_iter()
            .next_back()
            .map(|r| r.1)
            .unwrap_or_default();
    }
    last
}

/// Lowers a graph with every pass for a GPU (`Target::cuda(sm_80)`: its kernels split into
/// blocks of threads) and runs it (on seed-random weights, as [`interpret_random`]) with the
/// Kernel IR interpreter's GPU semantics, which fail on any race between threads.
pub fn gpu_sim(
    g: &Graph,
    inputs: &std::collections::HashMap<String, archc_runtime::Tensor>,
) -> Vec<(String, archc_runtime::Tensor)> {
    use archc_compiler::codegen::kernel_interp::GpuSim;
    use archc_kernels::target::{GpuArch, Target};
    use archc_runtime::Executor;
    let passes = archc_compiler::passes::PassOptions::all();
    let lowered =
        archc_compiler::passes::lower_optimized_for(g, &passes, &Target::cuda(GpuArch::Sm80))
            .unwrap_or_else(|e| panic!("{e}"));
    let w = archc_runtime::WeightSource::Random(5);
    let mut exec = Executor::new(&lowered.plan, |n, d, s| w.weight(n, d, s)).unwrap();
    exec.run(
        &GpuSim::new(lowered.kernels.clone()),
        inputs,
        &Default::default(),
    )
    .unwrap_or_else(|e| panic!("cuda-sim: {e}"))
}

/// Asserts that a pass leaves the interpreter's outputs bit for bit unchanged on a program
/// (the pass runs after `before`, the passes the pipeline runs ahead of it).
pub fn check_pass(
    before: &[fn(&Graph) -> Graph],
    pass: fn(&Graph) -> Graph,
    p: &programs::Program,
) {
    let g = compile("p.arch", &p.source).unwrap_or_else(|(_, r)| panic!("{r}\n{}", p.source));
    let g = before.iter().fold(g, |g, f| f(&g));
    let inputs = program_inputs(p.batch, p.seq, 1);
    let want = interpret_random(&g, &inputs);
    let rewritten = pass(&g);
    let got = interpret_random(&rewritten, &inputs);
    for ((name, t), (_, u)) in want.iter().zip(&got) {
        assert_eq!(
            t,
            u,
            "{name} changed under the pass\n{}\n{}",
            p.source,
            archc_compiler::graph::print_graph(&rewritten)
        );
    }
}

/// Asserts that a program compiled with `passes` gives the interpreter's outputs within 1e-4
/// (relative, per output).
pub fn check_native(passes: &archc_compiler::passes::PassOptions, p: &programs::Program) {
    let g = compile("p.arch", &p.source).unwrap_or_else(|(_, r)| panic!("{r}\n{}", p.source));
    let inputs = program_inputs(p.batch, p.seq, 1);
    let want = interpret_random(&g, &inputs);
    let got = native_random(&g, passes, &inputs);
    for ((name, w), (_, n)) in want.iter().zip(&got) {
        let err = rel_err(n, w);
        assert!(
            err <= 1e-4 || w.to_f32().iter().all(|v| v.abs() < 1e-6),
            "{name}: rel err {err:e}\n{}",
            p.source
        );
    }
}

/// A pass's snapshot text: the source, then the graph before and after the pass.
pub fn before_after(source: &str, before: &Graph, after: &Graph) -> String {
    use archc_compiler::graph::print_graph;
    format!(
        "{source}\n--- before ---\n{}\n--- after ---\n{}",
        print_graph(before),
        print_graph(after)
    )
}

/// Runs a program on random inputs (`batch` and every other symbol bound to `seq`) through
/// the interpreter and through all passes and native code; asserts that the optimised graph
/// contains `region` and that every output is within `tol` (relative) of the interpreter's.
pub fn check_fused(src: &str, region: &str, batch: usize, seq: usize, seed: u64, tol: f64) {
    use archc_compiler::passes::PassOptions;
    let g = compile("p.arch", src).unwrap_or_else(|(_, r)| panic!("{r}\n{src}"));
    let mut inputs = std::collections::HashMap::new();
    for (name, n) in &g.inputs {
        let shape: Vec<usize> = g
            .ty(*n)
            .shape
            .iter()
            .map(|d| match d.as_symbol() {
                Some("batch") => batch,
                Some(_) => seq,
                None => d.as_const().unwrap() as usize,
            })
            .collect();
        let t = archc_runtime::random_tensor(seed, name, g.ty(*n).dtype, &shape, 3.0, 2);
        inputs.insert(name.clone(), t);
    }
    let fused = archc_compiler::passes::optimize(&g, &PassOptions::all()).unwrap();
    let text = archc_compiler::graph::print_graph(&fused);
    assert!(text.contains(region), "no {region} in\n{text}\n{src}");
    let want = interpret_random(&g, &inputs);
    let got = native_random(&g, &PassOptions::all(), &inputs);
    for ((name, w), (_, n)) in want.iter().zip(&got) {
        let err = rel_err(n, w);
        assert!(err <= tol, "{name}: rel err {err:e}\n{src}");
    }
}

/// What a command run under [`limited`] did.
pub struct Outcome {
    /// The exit status (124 when the time limit killed it, 128 + N when signal N did).
    pub code: i32,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl Outcome {
    /// Asserts the command ended by itself with `code` (no signal, no time-out, no panic) and
    /// that its standard error mentions each of `needles`.
    pub fn expect(&self, code: i32, needles: &[&str]) -> &Outcome {
        assert_eq!(
            self.code, code,
            "exit status\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        for bad in [
            "panicked",
            "overflowed its stack",
            "RUST_BACKTRACE",
            "memory allocation of",
        ] {
            assert!(!self.stderr.contains(bad), "{bad}: {}", self.stderr);
        }
        for n in needles {
            assert!(self.stderr.contains(n), "`{n}` not in:\n{}", self.stderr);
        }
        self
    }
}

/// Runs `program args` in `dir` under a wall-clock limit (`timeout`) and an address-space
/// limit (`prlimit`), so that a hang or a runaway allocation fails the test quickly instead of
/// stalling the suite or taking the machine's memory.
pub fn limited(program: &std::path::Path, args: &[&str], dir: &std::path::Path) -> Outcome {
    const SECONDS: &str = "120";
    const ADDRESS_SPACE: &str = "--as=6000000000";
    let out = Command::new("timeout")
        .args(["-s", "KILL", SECONDS, "prlimit", ADDRESS_SPACE, "--"])
        .arg(program)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .current_dir(dir)
        .output()
        .expect("timeout and prlimit run");
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// [`limited`] on the archc binary.
pub fn archc_limited(args: &[&str], dir: &std::path::Path) -> Outcome {
    limited(&archc_bin(), args, dir)
}

/// A fresh scratch directory for one test.
pub fn scratch_dir(tag: &str) -> PathBuf {
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(sweep_scratch_dirs);
    let d = std::env::temp_dir().join(format!("archc-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("the temp dir is writable");
    d
}

/// Removes the scratch directories of earlier test runs whose process is gone (where
/// `/proc` says so), so that runs on a developer's machine do not fill its disk (a full run
/// leaves a few hundred MB: built binaries, outputs).
fn sweep_scratch_dirs() {
    if !std::path::Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix("archc-")
            .and_then(|rest| rest.rsplit('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
            if !alive && e.path().is_dir() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Writes a safetensors file of f32 (`shape`, values) tensors and i64 (`shape`, values) tensors.
pub fn write_safetensors(
    path: &std::path::Path,
    f32s: &[(&str, Vec<usize>, Vec<f32>)],
    i64s: &[(&str, Vec<usize>, Vec<i64>)],
) {
    let mut tensors = Vec::new();
    for (name, shape, v) in f32s {
        tensors.push((
            name.to_string(),
            archc_runtime::Tensor::f32(shape.clone(), v.clone()),
        ));
    }
    for (name, shape, v) in i64s {
        tensors.push((
            name.to_string(),
            archc_runtime::Tensor::int(archc_runtime::DType::I64, shape.clone(), v.clone()),
        ));
    }
    archc_runtime::write_tensors(path, &tensors).expect("the fixture is written");
}

/// Splits a safetensors file into two shards, `<dir>/model-00001-of-00002.safetensors` (the
/// names before `split`, in sorted order) and `...-00002-...` (the rest), and writes
/// `<dir>/model.safetensors.index.json` listing them as Hugging Face does. Returns the two
/// shards and the index.
pub fn shard(weights: &std::path::Path, dir: &std::path::Path) -> [PathBuf; 3] {
    let file = archc_runtime::TensorFile::open(weights).unwrap();
    let names = file.names();
    let half = names.len() / 2;
    let shards = [
        dir.join("model-00001-of-00002.safetensors"),
        dir.join("model-00002-of-00002.safetensors"),
    ];
    let mut map = serde_json::Map::new();
    for (i, part) in [&names[..half], &names[half..]].into_iter().enumerate() {
        let tensors: Vec<(String, archc_runtime::Tensor)> = part
            .iter()
            .map(|n| (n.clone(), file.read_any(n).unwrap()))
            .collect();
        archc_runtime::write_tensors(&shards[i], &tensors).unwrap();
        let shard_name = shards[i]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        for n in part {
            map.insert(n.clone(), serde_json::Value::String(shard_name.clone()));
        }
    }
    let index = dir.join("model.safetensors.index.json");
    let json = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(&index, json.to_string()).unwrap();
    let [a, b] = shards;
    [a, b, index]
}

/// Imports the Hugging Face fixture `case`'s config into `<dir>/<case>.arch`; returns that
/// path.
pub fn import_fixture(case: &str, dir: &std::path::Path) -> String {
    let arch = dir
        .join(format!("{case}.arch"))
        .to_string_lossy()
        .into_owned();
    let config = format!("tests/fixtures/hf/{case}/config.json");
    let (status, _, stderr) = archc(&["import", "hf", &config, "-o", &arch]);
    assert_eq!(status, 0, "{stderr}");
    arch
}

/// Runs `exec` on `launcher` and asserts that every output `want` names is within 1e-4 of it
/// (relative error), naming `context` when one is not.
pub fn assert_run_close<'w>(
    exec: &mut archc_runtime::Executor,
    launcher: &dyn archc_runtime::Launcher,
    inputs: &std::collections::HashMap<String, archc_runtime::Tensor>,
    want: impl IntoIterator<Item = (&'w String, &'w archc_runtime::Tensor)>,
    context: &str,
) {
    let got: std::collections::HashMap<String, archc_runtime::Tensor> = exec
        .run(launcher, inputs, &std::collections::HashMap::new())
        .unwrap()
        .into_iter()
        .collect();
    for (name, w) in want {
        let err = rel_err(&got[name], w);
        assert!(err <= 1e-4, "{context}, {name}: rel err {err:e}");
    }
}
