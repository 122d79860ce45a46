//! `archc grad`: the gradient of a model's outputs, weighted by cotangents, with respect to
//! every trained weight, computed by the gradient graph (`archc_compiler::grad`) on any
//! executor.

use std::path::PathBuf;

use archc_compiler::grad::gradient;
use clap::Args;

use crate::cli::{parse_dim, Arch, Backend, DeviceKind, PassFlags, Storage};
use crate::{check_dim_names, check_paths, load, run, Failure};

/// The arguments of `archc grad`.
#[derive(Args)]
pub(crate) struct GradArgs {
    /// The .arch file.
    file: PathBuf,
    /// Safetensors weights, or a sharded checkpoint's model.safetensors.index.json; repeat to
    /// merge files (default: random from --seed).
    #[arg(long)]
    weights: Vec<PathBuf>,
    /// Safetensors inputs, one tensor per model input (default: random from --seed, and then
    /// the cotangents are random too).
    #[arg(long, requires = "cotangents")]
    inputs: Option<PathBuf>,
    /// Safetensors cotangents, one f32 tensor per output, named and shaped like it.
    #[arg(long, requires = "inputs")]
    cotangents: Option<PathBuf>,
    /// Where to write the gradients, one f32 tensor per trained weight by its checkpoint name
    /// (default: print a summary).
    #[arg(long)]
    outputs: Option<PathBuf>,
    /// Which executor runs the gradient graph on the CPU.
    #[arg(long, value_enum, default_value_t = Backend::Cranelift)]
    backend: Backend,
    /// Where its kernels run, as for `archc run`: cpu, cuda-sim or cuda.
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    device: DeviceKind,
    /// The GPU architecture the kernels are scheduled for, as `archc run --arch`.
    #[arg(long, value_enum)]
    arch: Option<Arch>,
    /// How floats are stored: f32, or bf16/f16 (weights, activations and gradients rounded
    /// to it; arithmetic in f32), as `archc run --dtype` does for the forward pass.
    #[arg(long, value_enum, default_value_t = Storage::F32)]
    dtype: Storage,
    /// Seed for random weights, inputs and cotangents.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Bind a symbolic dim, e.g. `--dim seq=128` (repeatable).
    #[arg(long = "dim", value_name = "NAME=VALUE", value_parser = parse_dim)]
    dims: Vec<(String, i64)>,
    #[command(flatten)]
    passes: PassFlags,
}

/// Runs `archc grad`.
pub(crate) fn command(a: GradArgs, max_nodes: u64, threads: usize) -> Result<String, Failure> {
    let passes = a.passes.options()?;
    let mut reads = vec![
        ("the .arch source", Some(a.file.as_path())),
        ("the --inputs file", a.inputs.as_deref()),
        ("the --cotangents file", a.cotangents.as_deref()),
    ];
    reads.extend(
        a.weights
            .iter()
            .map(|w| ("a --weights file", Some(w.as_path()))),
    );
    check_paths(a.outputs.as_deref(), &reads)?;
    let (s, id) = load(&a.file, max_nodes)?;
    let (_, graph) = s.compile(id).map_err(|d| Failure::Input(s.render(&d)))?;
    check_dim_names(&a.dims, &graph.symbols)?;
    let grad = gradient(&graph, &passes).map_err(|e| Failure::Input(format!("error: {e}\n")))?;
    let grad = crate::narrowed(grad, a.dtype);
    let options = run::RunOptions {
        weights: a.weights,
        inputs: a.inputs.into_iter().chain(a.cotangents).collect(),
        outputs: a.outputs,
        seed: a.seed,
        dims: a.dims.into_iter().collect(),
        passes,
        threads,
        engine: a.device.engine(a.backend, a.arch),
    };
    run::run(&grad, &options).map_err(|e| Failure::Input(format!("error: {e}\n")))
}
