//! `archc run`: bind inputs and weights, execute the model, write or summarise the outputs.

use std::collections::HashMap;
use std::fmt::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::{device, progress};
use archc_compiler::codegen::backend::BackendKind;
use archc_compiler::graph::Graph;
use archc_compiler::interp::{bind_dims, interpret};
use archc_compiler::passes::{lower_optimized_for, PassOptions};
use archc_kernels::target::GpuArch;
use archc_runtime::{load_inputs, summarize, write_tensors, Tensor, TensorFile, WeightSource};

/// Which executor runs the model.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// The Graph IR reference interpreter.
    Interp,
    /// Native code from a code generator, on the CPU executor.
    Native(BackendKind),
    /// The kernels scheduled for a GPU of this architecture, run by the Kernel IR
    /// interpreter with a GPU's semantics (`--device cuda-sim`).
    GpuSim(GpuArch),
    /// PTX kernels on this machine's NVIDIA GPU (`--device cuda`), for its architecture or
    /// the one asked for.
    Cuda(Option<GpuArch>),
}

impl Engine {
    /// A one-word name, for tables.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Interp => "interp",
            Engine::Native(k) => k.name(),
            Engine::GpuSim(_) => "cuda-sim",
            Engine::Cuda(_) => "cuda",
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Engine::Interp => f.write_str("interp"),
            Engine::Native(k) => write!(f, "{k}"),
            Engine::GpuSim(a) => write!(f, "cuda-sim, {}", a.name()),
            Engine::Cuda(None) => f.write_str("cuda"),
            Engine::Cuda(Some(a)) => write!(f, "cuda, {}", a.name()),
        }
    }
}

/// Options of one run.
pub struct RunOptions {
    /// Safetensors weights or sharded checkpoints' index files, merged; random from the seed
    /// when empty.
    pub weights: Vec<PathBuf>,
    /// Safetensors inputs (each input from the first file that has it), or random from the
    /// seed when none is given.
    pub inputs: Vec<PathBuf>,
    /// Where to write the outputs; a summary is printed otherwise.
    pub outputs: Option<PathBuf>,
    /// Seed for random weights and inputs.
    pub seed: u64,
    /// Explicit dim bindings.
    pub dims: HashMap<String, i64>,
    /// The executor.
    pub engine: Engine,
    /// Which passes run before lowering.
    pub passes: PassOptions,
    /// How many threads the kernels use.
    pub threads: usize,
}

/// How long each phase of a run took.
#[derive(Default)]
struct Phases {
    /// Lowering and code generation.
    compile: Duration,
    /// Reading the weights into the executor.
    load: Duration,
    /// The prepare steps (values of the weights alone).
    prepare: Duration,
    /// The model itself.
    run: Duration,
}

/// Runs a graph; returns the text to print.
pub fn run(g: &Graph, o: &RunOptions) -> Result<String, String> {
    let open = |p: &PathBuf| TensorFile::open(p).map_err(|e| e.to_string());
    let input_files = o.inputs.iter().map(open).collect::<Result<Vec<_>, _>>()?;
    let mut time = Phases::default();
    let start = Instant::now();
    let gpu = match o.engine {
        Engine::Cuda(arch) => Some(device::open_gpu(arch)?),
        _ => None,
    };
    let target = device::target(o.engine, gpu.as_ref());
    // Native code reads a GGUF checkpoint's quantized blocks in place; GPUs get f32 weights.
    let blocks = match o.engine {
        Engine::Native(_) => archc_runtime::block_formats(&o.weights, g.params.keys())?,
        _ => Default::default(),
    };
    let passes = o.passes.clone().with_blocks(blocks);
    let lowered = progress::spin("lowering", || lower_optimized_for(g, &passes, &target))
        .map_err(|e| e.to_string())?;
    time.compile = start.elapsed();
    let (inputs, defaulted) = load_inputs(&lowered.plan, &input_files, o.seed, &o.dims)?;
    let mut weights = WeightSource::open(&lowered.plan, &o.weights, o.seed)?;
    let in_file = |e: String| match o.inputs.as_slice() {
        [] => e,
        files => {
            let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
            format!("{}: {e}", names.join(", "))
        }
    };
    let (outputs, dims) = match o.engine {
        Engine::Interp => {
            let dims = bind_dims(g, &inputs, &o.dims).map_err(|e| in_file(e.to_string()))?;
            let t = Instant::now();
            let out = progress::spin("interpreting", || {
                interpret(g, &dims, &inputs, &mut weights)
            })
            .map_err(|e| e.to_string())?;
            time.run = t.elapsed();
            (out.into_iter().collect::<Vec<(String, Tensor)>>(), dims)
        }
        engine => {
            let t = Instant::now();
            let jit = progress::spin("compiling", || {
                device::launcher(engine, &lowered, o.threads, gpu.as_ref())
            })?;
            let jit = jit.as_ref();
            time.compile += t.elapsed();
            let t = Instant::now();
            let mut exec = progress::load_weights(&lowered.plan, &weights, None)?;
            time.load = t.elapsed();
            let dims = exec
                .bind(&inputs, &o.dims)
                .map_err(|e| in_file(e.to_string()))?;
            let t = Instant::now();
            exec.prepare(jit).map_err(|e| e.to_string())?;
            time.prepare = t.elapsed();
            let t = Instant::now();
            let out = progress::spin("running", || exec.run(jit, &inputs, &o.dims))
                .map_err(|e| e.to_string())?;
            time.run = t.elapsed();
            (out, dims)
        }
    };
    if let Some(path) = &o.outputs {
        write_tensors(path, &outputs).map_err(|e| e.to_string())?;
        return Ok(format!(
            "wrote {} outputs to {}\n",
            outputs.len(),
            path.display()
        ));
    }
    let mut out = String::new();
    let mut bound: Vec<String> = dims.iter().map(|(k, v)| format!("{k}={v}")).collect();
    bound.sort();
    let engine = o.engine;
    match &gpu {
        Some(gpu) => {
            let _ = writeln!(out, "model {} (backend {engine}, {})", g.name, gpu.name);
        }
        None => {
            let _ = writeln!(out, "model {} (backend {engine})", g.name);
        }
    }
    let _ = writeln!(out, "  dims: {}", bound.join(", "));
    if !defaulted.is_empty() {
        let _ = writeln!(
            out,
            "  (random inputs; defaulted {} — set with --dim NAME=VALUE)",
            defaulted.join(", ")
        );
    }
    for (name, t) in &outputs {
        let _ = writeln!(out, "  {}", summarize(name, t));
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let _ = writeln!(
        out,
        "  time: compile {:.1} ms, load {:.1} ms, prepare {:.1} ms, run {:.1} ms (threads: {})",
        ms(time.compile),
        ms(time.load),
        ms(time.prepare),
        ms(time.run),
        o.threads
    );
    Ok(out)
}
