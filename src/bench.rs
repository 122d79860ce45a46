//! `archc bench`: compile time, run time and GFLOP/s of a model, on both executors, in one
//! run — the interpreter is the peer the native code is measured against.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use crate::run::Engine;
use crate::{device, progress};
use archc_compiler::graph::{Graph, Op};
use archc_compiler::interp::{bind_dims, interpret};
use archc_compiler::passes::{lower_optimized_for, PassOptions};
use archc_runtime::{load_inputs, TensorFile, WeightSource};

/// Options of a benchmark.
pub struct BenchOptions {
    /// The executor timed: a code generator's, the GPU simulator or the GPU.
    pub engine: Engine,
    /// Safetensors weights or sharded checkpoints' index files, merged; random from the seed
    /// when empty.
    pub weights: Vec<PathBuf>,
    /// Safetensors inputs, or random from the seed.
    pub inputs: Option<PathBuf>,
    /// Explicit dims.
    pub dims: HashMap<String, i64>,
    /// Timed runs per executor (after one warm-up).
    pub iters: usize,
    /// Also time the reference interpreter.
    pub with_interp: bool,
    /// Which passes run before lowering.
    pub passes: PassOptions,
    /// How long parsing and elaboration took.
    pub front_end_ms: f64,
    /// How many threads the kernels use.
    pub threads: usize,
}

/// Multiply-adds of the graph's matmuls ×2, for these dims.
fn flops(g: &Graph, dims: &HashMap<String, i64>) -> f64 {
    let size =
        |d: &archc_compiler::graph::Dim| d.eval(&|s| dims.get(s).copied()).unwrap_or(0) as f64;
    g.dag
        .node_indices()
        .filter(|n| g.dag[*n].op == Op::MatMul)
        .map(|n| {
            let a = g.ty(g.operands(n)[0]);
            let k = size(&a.shape[a.rank() - 1]);
            2.0 * k * g.ty(n).shape.iter().map(size).product::<f64>()
        })
        .sum()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The process's peak resident memory so far (`VmHWM`), in bytes, where Linux reports it.
pub(crate) fn peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Runs the benchmark; returns the result table.
pub fn bench(g: &Graph, o: &BenchOptions) -> Result<String, String> {
    let open = |p: &PathBuf| TensorFile::open(p).map_err(|e| e.to_string());
    let gpu = match o.engine {
        Engine::Cuda(arch) => Some(device::open_gpu(arch)?),
        _ => None,
    };
    let t0 = Instant::now();
    let target = device::target(o.engine, gpu.as_ref());
    let lowered = lower_optimized_for(g, &o.passes, &target).map_err(|e| e.to_string())?;
    let lower_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t1 = Instant::now();
    let jit = progress::spin("compiling", || {
        device::launcher(o.engine, &lowered, o.threads, gpu.as_ref())
    })?;
    let jit = jit.as_ref();
    let codegen_ms = t1.elapsed().as_secs_f64() * 1e3;
    let input_file = o.inputs.as_ref().map(open).transpose()?;
    let (inputs, _) = load_inputs(&lowered.plan, input_file.as_slice(), 0, &o.dims)?;
    let weights = WeightSource::open(&lowered.plan, &o.weights, 0)?;
    let t2 = Instant::now();
    let mut exec = progress::load_weights(&lowered.plan, &weights, None)?;
    let load_ms = t2.elapsed().as_secs_f64() * 1e3;
    let t3 = Instant::now();
    exec.prepare(jit).map_err(|e| e.to_string())?;
    let prepare_ms = t3.elapsed().as_secs_f64() * 1e3;
    let dims = exec.bind(&inputs, &o.dims).map_err(|e| e.to_string())?;
    let work = flops(g, &dims);
    let mut rows: Vec<(String, f64)> = Vec::new();
    let iters = o.iters.max(1);
    exec.run(jit, &inputs, &o.dims).map_err(|e| e.to_string())?;
    let mut times = Vec::new();
    let mut kernel_times = Vec::new();
    let bar = progress::bar(iters, &format!("{} runs", o.engine));
    let _ = jit.kernel_seconds();
    for _ in 0..iters {
        bar.inc(1);
        let t = Instant::now();
        exec.run(jit, &inputs, &o.dims).map_err(|e| e.to_string())?;
        times.push(t.elapsed().as_secs_f64());
        kernel_times.extend(jit.kernel_seconds());
    }
    bar.finish_and_clear();
    rows.push((o.engine.name().into(), median(times)));
    if !kernel_times.is_empty() {
        // The device's own time for the run's kernels: what a peer timed by CUDA events on
        // inputs already on the GPU is compared with.
        rows.push(("kernels".into(), median(kernel_times)));
    }
    if o.with_interp {
        let mut ws = WeightSource::open(&lowered.plan, &o.weights, 0)?;
        let gdims = bind_dims(g, &inputs, &o.dims).map_err(|e| e.to_string())?;
        let runs = iters.min(3);
        let mut times = Vec::new();
        let bar = progress::bar(runs, "interpreter runs");
        for _ in 0..runs {
            bar.inc(1);
            let t = Instant::now();
            interpret(g, &gdims, &inputs, &mut ws).map_err(|e| e.to_string())?;
            times.push(t.elapsed().as_secs_f64());
        }
        bar.finish_and_clear();
        rows.push(("interp".into(), median(times)));
    }
    let mut bound: Vec<String> = dims.iter().map(|(k, v)| format!("{k}={v}")).collect();
    bound.sort();
    let mut out = String::new();
    let _ = writeln!(out, "model {} ({})", g.name, bound.join(", "));
    let _ = writeln!(
        out,
        "compile: front end {:.1} ms, passes and lowering {lower_ms:.1} ms, codegen {codegen_ms:.1} ms ({} kernels)",
        o.front_end_ms,
        lowered.kernels.len()
    );
    let _ = writeln!(
        out,
        "weights: load {load_ms:.1} ms, prepare {prepare_ms:.1} ms; threads: {}",
        o.threads
    );
    let held = exec.weight_bytes();
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    let _ = writeln!(
        out,
        "weights: {:.1} MiB mapped, {:.1} MiB owned (after prepare)",
        mib(held.mapped),
        mib(held.owned)
    );
    if let Some(peak) = peak_memory() {
        let _ = writeln!(
            out,
            "peak memory: {:.1} MiB (resident, whole process)",
            peak as f64 / (1 << 20) as f64
        );
    }
    let _ = writeln!(out, "matmul work: {:.3} GFLOP per run", work / 1e9);
    let _ = writeln!(
        out,
        "{:<10} {:>12} {:>10} {:>12}",
        "executor", "run ms", "GFLOP/s", "vs interp"
    );
    let interp = rows.iter().find(|r| r.0 == "interp").map(|r| r.1);
    for (name, secs) in &rows {
        let ratio = interp.map_or("-".to_string(), |t| format!("{:.2}x", t / secs));
        let _ = writeln!(
            out,
            "{name:<10} {:>12.3} {:>10.2} {ratio:>12}",
            secs * 1e3,
            work / secs / 1e9
        );
    }
    Ok(out)
}
