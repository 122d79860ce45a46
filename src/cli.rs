//! The command line: clap's description of every command and flag, and what a flag's value
//! must be. `main.rs` runs the commands.

use std::path::PathBuf;

use archc_compiler::codegen::backend::BackendKind;
use archc_compiler::passes::PassOptions;
use archc_kernels::target::GpuArch;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::Failure;

/// archc compiles neural-network architectures written in the .arch language.
///
/// A .arch file declares a model: config constants, inputs, blocks built from primitives and the
/// prelude (attention, rmsnorm, mamba, ...), stacks of layers, and outputs. docs/LANGUAGE.md
/// describes the language; examples/ has one file per architecture family.
#[derive(Parser)]
#[command(name = "archc", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
    /// The most work elaboration may do (graph nodes made, expressions evaluated, list
    /// elements made) before it stops with an error; it keeps a few hundred bytes of nested
    /// stacks from taking all memory.
    #[arg(long, global = true, value_name = "N", default_value_t = archc_compiler::elaborate::DEFAULT_MAX_NODES)]
    pub(crate) max_nodes: u64,
    /// How many threads the native kernels use (run, bench), 1 to 1024; default: every core.
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub(crate) threads: Option<u16>,
}

/// The largest `.arch` or `config.json` archc reads (4 MiB): real ones are a few kilobytes.
pub(crate) const MAX_SOURCE_BYTES: u64 = 4 << 20;

/// The stack of the thread that compiles. The parser and elaborator recurse over nesting that
/// the parser bounds; this leaves them a wide margin whatever the platform's default is.
pub(crate) const COMPILER_STACK_BYTES: usize = 256 << 20;

/// Which passes run between elaboration and lowering.
#[derive(Args, Clone)]
pub(crate) struct PassFlags {
    /// Run no pass at all: one kernel per primitive op and one arena slot per buffer (the
    /// baseline the passes are measured against).
    #[arg(long)]
    pub(crate) no_fuse: bool,
    /// Turn one pass off (repeatable); the passes, in pipeline order, are listed below.
    #[arg(long = "disable-pass", value_name = "PASS", long_help = disable_pass_help())]
    pub(crate) disable: Vec<String>,
}

/// `--disable-pass`'s long help: the registry's passes with what each does.
pub(crate) fn disable_pass_help() -> String {
    let passes: Vec<String> = archc_compiler::passes::PASSES
        .iter()
        .map(|p| format!("  {}: {}", p.name(), p.description()))
        .collect();
    format!(
        "Turn one pass off (repeatable). The passes, in pipeline order:\n{}",
        passes.join("\n")
    )
}

/// An internal compiler error (a pass broke an invariant): status 1, with what broke.
pub(crate) fn internal(e: archc_compiler::passes::PassError) -> Failure {
    Failure::Input(format!("error: {e}\n"))
}

impl PassFlags {
    pub(crate) fn options(&self) -> Result<PassOptions, Failure> {
        // The names are checked even under --no-fuse: a misspelt pass is a mistake either way.
        let options = self
            .disable
            .iter()
            .try_fold(PassOptions::all(), |o, p| o.disable(p))
            .map_err(|e| Failure::Usage(anyhow::anyhow!(e)))?;
        Ok(if self.no_fuse {
            PassOptions::none()
        } else {
            options
        })
    }
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Parse, shape-check and elaborate a model, then print a summary.
    ///
    /// The summary gives the parameter count (equal to the Hugging Face model's for the
    /// examples), each stack's layer kinds with their counts, and the inputs and outputs with
    /// their dtypes and symbolic shapes. Errors point at file:line:col and exit with status 1.
    ///
    /// Check also runs the passes and notes, on standard error, each attention
    /// (matmul → softmax → matmul) that is not tiled and each scan whose state is stored,
    /// with file:line:col and the reason; `--explain-fusion` notes the fused ones too.
    ///
    /// Example: archc check examples/jamba.arch
    Check {
        /// The .arch file.
        file: PathBuf,
        /// Also note the attentions and scans that were fused, and how.
        #[arg(long)]
        explain_fusion: bool,
    },
    /// Run a model on inputs and weights, and write or summarise its outputs.
    ///
    /// Weights come from a safetensors checkpoint (`--weights`), looked up by the names the
    /// `@` scopes produce; f16 and bf16 weights are widened to f32. A sharded checkpoint is
    /// read through its `model.safetensors.index.json`, and repeated `--weights` files are
    /// merged (a tensor in two files is an error). Without `--weights`, the
    /// weights are deterministic random numbers from `--seed`. Inputs come from a safetensors
    /// file of named tensors (`--inputs`); token ids may be i32 or i64. Without `--inputs`,
    /// random inputs are made from the seed (ids stay inside the table they index). The
    /// inputs' shapes bind the symbolic dims; `--dim NAME=VALUE` binds one explicitly.
    ///
    /// With `--outputs`, the outputs are written as a safetensors file; otherwise a summary
    /// per output (shape, mean, std, first values) and the time taken are printed.
    ///
    /// Example: archc run examples/llama.arch --dim seq=16
    Run {
        /// The .arch file.
        file: PathBuf,
        /// Safetensors weights, or a sharded checkpoint's model.safetensors.index.json;
        /// repeat to merge files (default: random from --seed).
        #[arg(long)]
        weights: Vec<PathBuf>,
        /// Safetensors inputs, one tensor per model input (default: random from --seed).
        #[arg(long)]
        inputs: Option<PathBuf>,
        /// Where to write the outputs as safetensors (default: print a summary).
        #[arg(long)]
        outputs: Option<PathBuf>,
        /// Which executor runs the graph on the CPU.
        #[arg(long, value_enum, default_value_t = Backend::Cranelift)]
        backend: Backend,
        /// Where the kernels run: the CPU (with --backend), an NVIDIA GPU (`cuda`: archc
        /// built with `--features cuda`, and a driver), or the GPU kernels in the Kernel IR
        /// interpreter with a GPU's semantics, checking for races (`cuda-sim`: no GPU needed).
        #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
        device: DeviceKind,
        /// The GPU architecture the kernels are scheduled for: with `--device cuda-sim`, the
        /// one simulated (default sm_80); with `cuda`, the GPU's unless given (`sm_80` on a
        /// Hopper GPU runs Ampere's templates there, to compare them with Hopper's).
        #[arg(long, value_enum)]
        arch: Option<Arch>,
        /// How floats are stored: weights, inputs and every buffer between kernels (kernels
        /// compute in f32 and round what they store); outputs come out in this type.
        #[arg(long, value_enum, default_value_t = Storage::F32)]
        dtype: Storage,
        /// Seed for random weights and inputs.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Bind a symbolic dim, e.g. `--dim seq=128` (repeatable).
        #[arg(long = "dim", value_name = "NAME=VALUE", value_parser = parse_dim)]
        dims: Vec<(String, i64)>,
        #[command(flatten)]
        passes: PassFlags,
    },
    /// Generate tokens from a causal language model.
    ///
    /// Takes prompts as text (`--prompt`, or `--prompts FILE` with one per line; `--chat` puts
    /// each in the model's chat template) and prints the answer as it is generated, or as
    /// token ids (`--inputs`: `input_ids`, i32 or i64 [batch, t]). Appends up to
    /// `--max-new-tokens` tokens to each, greedily unless `--temperature` is above 0 (then
    /// sampled, with `--top-k`, `--top-p` and `--seed`). A row stops at an end-of-sequence
    /// token: `--eos-token-id`, else the GGUF file's, else `eos_token_id` of a
    /// generation_config.json or config.json beside the weights. `--outputs` gets
    /// `generated_ids` (i32 [batch, n], up to and including the end-of-sequence token; rows
    /// that stopped earlier are padded with the pad token, `pad_token_id` beside the weights
    /// or the end token) and `step_logits` (f32 [batch, n, vocab], the
    /// raw logits each token was chosen from). A model that reads later positions (BERT) is
    /// refused, naming the operation. The compiler derives the model's recurrent step: the
    /// prompt runs once (the prefill) and fills the State (KV caches, convolution windows,
    /// scan carries; `archc dump --stage step` shows it), then each step runs only the new
    /// token against it; the State's size is printed at the end, `--max-context` bounds it,
    /// and `--rerun` reruns the whole context at every step instead.
    ///
    /// Example: archc generate smollm2.arch --weights SmolLM2-135M-Instruct.Q4_1.gguf --prompt "What is the capital of France?" --chat
    ///
    /// Example: archc generate model.arch --weights model.safetensors --inputs ids.safetensors --outputs out.safetensors
    Generate(GenerateArgs),
    /// Compute the gradients of a model's outputs with respect to its weights.
    ///
    /// The compiler derives the gradient graph of `Σ over outputs of Σ (output ⊙ cotangent)`
    /// with respect to every trained weight (reverse-mode, one rule per primitive; `archc dump
    /// --stage grad` prints it), then runs it like any model: the same passes, any backend or
    /// device. `--cotangents` holds one tensor per output, named and shaped like it (all ones
    /// gives the gradient of the outputs' sum). `--outputs` gets one f32 tensor per trained
    /// weight, by its checkpoint name (EMA copies and values behind `stop_grad` get none);
    /// without it a summary is printed. Without `--inputs` and `--cotangents` both are random
    /// from `--seed`.
    ///
    /// Example: archc grad model.arch --weights W.safetensors --inputs IN.safetensors --cotangents COT.safetensors --outputs G.safetensors
    Grad(crate::grad::GradArgs),
    /// Train a model: minimise its loss over a data file, as its `train { ... }` section says.
    ///
    /// The model's `train` section (docs/LANGUAGE.md, section 12) gives the loss, the
    /// optimiser, the schedule, clipping and parameter groups; each flag below overrides one
    /// entry. The compiler derives the graph of a training step (the model's outputs and the
    /// gradient of the loss for every trained weight not frozen) and compiles it once. Each
    /// step runs it on `--batch` samples of `--data` (a safetensors file with one tensor per
    /// model input, samples along the first axis, shuffled per epoch from `--seed`), clips the
    /// gradients' norm, takes an optimiser step (AdamW or SGD with momentum, as torch defines
    /// them, per parameter group) and moves the EMA copies (`ema(...)` in the model) toward
    /// their online weights. `--checkpoint` saves the weights by their checkpoint names
    /// (`archc run --weights` loads them) and the optimiser state beside them, which
    /// `--resume` continues from; `--log` writes a JSON line per step and `--plot` a PNG of
    /// the curves. `archc dump --train` shows the step it compiles.
    ///
    /// Example: archc train examples/llama.arch --data ids.safetensors --steps 200 --checkpoint llama.safetensors --log train.jsonl --plot train.png
    Train(crate::train::TrainArgs),
    /// Measure compile time, run time and GFLOP/s.
    ///
    /// Reports the compile time by phase (parsing and elaboration, the passes and lowering,
    /// Cranelift), then times `--iters` runs of the native code after a warm-up (the median is
    /// reported) and, with `--interp`, the reference interpreter on the same inputs, so the
    /// table shows their ratio. GFLOP/s counts the matmuls. `--no-fuse` measures the
    /// unoptimised pipeline. With `--device cuda` a `kernels` row gives the GPU's own time
    /// for a run's kernels (CUDA events), without copying the inputs over and the outputs
    /// back, which the `cuda` row includes.
    ///
    /// Example: archc bench examples/jamba.arch --dim seq=512 --interp
    Bench {
        /// The .arch file.
        file: PathBuf,
        /// Safetensors weights or a sharded checkpoint's index; repeatable (default: random).
        #[arg(long)]
        weights: Vec<PathBuf>,
        /// Safetensors inputs (default: random).
        #[arg(long)]
        inputs: Option<PathBuf>,
        /// Bind a symbolic dim (repeatable).
        #[arg(long = "dim", value_name = "NAME=VALUE", value_parser = parse_dim)]
        dims: Vec<(String, i64)>,
        /// Timed runs.
        #[arg(long, default_value_t = 10)]
        iters: usize,
        /// Also time the reference interpreter.
        #[arg(long)]
        interp: bool,
        /// The code generator timed (its row in the table bears its name).
        #[arg(long, value_enum, default_value_t = Codegen::Cranelift)]
        backend: Codegen,
        /// Where the kernels run (as `archc run --device`): `cuda` times the GPU.
        #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
        device: DeviceKind,
        /// The GPU architecture the kernels are scheduled for: with `--device cuda-sim`, the
        /// one simulated (default sm_80); with `cuda`, the GPU's unless given (`sm_80` on a
        /// Hopper GPU runs Ampere's templates there, to compare them with Hopper's).
        #[arg(long, value_enum)]
        arch: Option<Arch>,
        /// How floats are stored (as `archc run --dtype`).
        #[arg(long, value_enum, default_value_t = Storage::F32)]
        dtype: Storage,
        #[command(flatten)]
        passes: PassFlags,
    },
    /// Compile a model into a standalone executable.
    ///
    /// The executable holds the native kernels (Cranelift, ahead of time), the plan and the
    /// runtime, and needs neither archc nor the source tree: copy it anywhere on a machine of
    /// the same kind. It runs like `archc run`:
    /// `BIN --weights W.safetensors --inputs IN.safetensors --outputs OUT.safetensors`, or with
    /// seed-random inputs and weights and a printed summary. Linking uses the system C
    /// compiler (`cc`) and the runner library archc carries inside itself (or the one the
    /// environment variable ARCHC_RUNNER_LIB names).
    ///
    /// Example: archc build examples/llama.arch -o llama && ./llama --dim seq=16
    Build {
        /// The .arch file.
        file: PathBuf,
        /// The executable to write.
        #[arg(short, long)]
        output: PathBuf,
        /// The C compiler that links the executable.
        #[arg(long, default_value = "cc")]
        cc: String,
        /// The code generator of the kernels.
        #[arg(long, value_enum, default_value_t = Codegen::Cranelift)]
        backend: Codegen,
        /// With `--backend llvm`: which CPUs the executable is for. Cranelift's code is
        /// always portable.
        #[arg(long, value_enum, default_value_t = Cpu::Native)]
        cpu: Cpu,
        /// `cuda`: the executable's kernels are PTX for NVIDIA GPUs (`--arch`; sm_80's runs on
        /// every GPU since Ampere), run through the CUDA driver where it runs (archc built with
        /// `--features cuda`). It needs neither Rust nor LLVM there, only the driver.
        #[arg(long, value_enum, default_value_t = BuildDevice::Cpu)]
        device: BuildDevice,
        /// With `--device cuda`: the GPU architecture of the PTX.
        #[arg(long, value_enum, default_value_t = Arch::Sm80)]
        arch: Arch,
        /// A GGUF checkpoint whose Q8_0/Q4_0/Q4_1 tensors the executable keeps in their blocks,
        /// as `archc run` and `generate` do with it (it then takes a file with those tensor
        /// types: `BIN generate --weights FILE.gguf`). Weights are not read or embedded.
        #[arg(long, value_name = "FILE.gguf")]
        weights: Option<PathBuf>,
        #[command(flatten)]
        passes: PassFlags,
    },
    /// Write a .arch file for a pretrained model's config.
    ///
    /// `archc import hf CONFIG.json -o MODEL.arch` reads a Hugging Face config.json and
    /// writes a .arch whose weight names match that checkpoint's model.safetensors, so that
    /// `archc run MODEL.arch --weights model.safetensors` runs the real model (a sharded one
    /// through its model.safetensors.index.json). Families: llama, mistral, qwen2, qwen3,
    /// gpt2, bert (BertModel), mamba, mamba2, jamba, bamba, zamba2, ijepa. A config option
    /// archc does not implement is an error that names the field.
    ///
    /// `archc import gguf FILE.gguf -o MODEL.arch` reads a llama.cpp GGUF checkpoint's
    /// metadata (Llama or Mamba) and writes its .arch, with Hugging Face's weight names:
    /// `archc run MODEL.arch --weights FILE.gguf` reads the file by them (F32, F16, BF16,
    /// Q8_0, Q4_0 and Q4_1 tensors, dequantized to f32 as they load; the query and key rows
    /// llama.cpp permutes for its rotary are put back).
    ///
    /// Example: archc import hf config.json -o model.arch
    ///
    /// Example: archc import gguf SmolLM2-135M-Instruct.Q4_1.gguf -o smollm2.arch
    Import {
        /// Where the model comes from: `hf` (a config.json) or `gguf` (a GGUF checkpoint).
        #[arg(value_enum)]
        format: ImportFormat,
        /// The config.json, or the .gguf file.
        config: PathBuf,
        /// The .arch file to write.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Print one stage of the pipeline as deterministic text.
    ///
    /// `ast` prints the parsed file in canonical form (it parses back to the same tree);
    /// `graph` prints the elaborated Graph IR: one primitive op per line with its result type
    /// and the weight scope it came from; `step` the recurrent step derived for generation
    /// (the State's parts, then its graph); `kernels` the Kernel IR loop nests; `plan` the
    /// execution plan with its arena laid out for the dims (first lines `arena_bytes: N` and
    /// `kernels: K`); `clif` the Cranelift IR of every kernel; `llvm` the LLVM IR of every kernel
    /// (with `--features llvm`); `ptx` the PTX of every kernel for an NVIDIA GPU (with
    /// `--features cuda`; `--stats` assembles it with ptxas). `--arch sm_80|sm_90a` schedules
    /// `kernels` and `plan` for that GPU: blocks of threads. `grad` prints the gradient graph
    /// `archc grad` runs, and `--grad` any later stage of it.
    ///
    /// Example: archc dump --stage plan examples/llama.arch --dim batch=1 --dim seq=4096
    ///
    /// Example: archc dump --stage ptx --arch sm_90a --stats examples/llama.arch
    Dump {
        /// Which stage to print.
        #[arg(long, value_enum, default_value_t = Stage::Graph)]
        stage: Stage,
        /// The .arch file.
        file: PathBuf,
        /// Bind a symbolic dim for the plan's arena layout (unbound: batch=1, others 8).
        #[arg(long = "dim", value_name = "NAME=VALUE", value_parser = parse_dim)]
        dims: Vec<(String, i64)>,
        /// Note on standard error each attention and scan pattern the passes looked at:
        /// fused or not, where (file:line:col), and why not.
        #[arg(long)]
        explain_fusion: bool,
        /// Instead of printing a stage, run the whole pipeline with the verifiers checking the
        /// graph, its regions, the kernels and the plan after every pass; print `verified: …`
        /// or what broke (status 1).
        #[arg(long)]
        verify: bool,
        /// Print the stage of the gradient graph (`archc grad`'s) instead of the model's:
        /// `--stage fused --grad` shows how the passes fused the backward pass.
        #[arg(long)]
        grad: bool,
        /// Print the stage of the training step `archc train` runs instead: the model
        /// compiled for training (its `train` section's loss), its outputs and the loss's
        /// gradient for every trained weight (`grad:NAME`).
        #[arg(long, conflicts_with = "grad")]
        train: bool,
        /// A GGUF checkpoint whose block-quantized weights the kernels and plan read in place,
        /// as `run` and `generate` compile them with it (weights are not loaded).
        #[arg(long, value_name = "FILE.gguf")]
        weights: Option<PathBuf>,
        /// Schedule for an NVIDIA GPU of this architecture: `kernels` and `plan` show the
        /// kernels split into blocks of threads, `ptx` is for it (default there: sm_80).
        #[arg(long, value_enum)]
        arch: Option<Arch>,
        /// With `--stage ptx`: assemble the PTX with ptxas (`$ARCHC_PTXAS` or `ptxas` on the
        /// PATH) and print each kernel's registers, stack frame and spills instead.
        #[arg(long)]
        stats: bool,
        /// How floats are stored (as `archc run --dtype`): with `--dtype bf16 --arch sm_80`,
        /// the kernels show matmuls on tensor cores (`mma.m16n8k16`).
        #[arg(long, value_enum, default_value_t = Storage::F32)]
        dtype: Storage,
        #[command(flatten)]
        passes: PassFlags,
    },
}

/// Where `archc run` runs the kernels.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DeviceKind {
    /// The CPU.
    Cpu,
    /// The machine's NVIDIA GPU (archc built with `--features cuda`).
    Cuda,
    /// The GPU kernels in the Kernel IR interpreter, with a GPU's semantics: no GPU needed.
    CudaSim,
}

/// A float storage type (`--dtype`).
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Storage {
    /// 32-bit floats.
    F32,
    /// bfloat16: f32's range, 8 bits of precision.
    Bf16,
    /// IEEE half precision.
    F16,
}

impl Storage {
    /// The dtype floats are stored as.
    pub(crate) fn dtype(self) -> archc_runtime::DType {
        match self {
            Storage::F32 => archc_runtime::DType::F32,
            Storage::Bf16 => archc_runtime::DType::BF16,
            Storage::F16 => archc_runtime::DType::F16,
        }
    }
}

/// Where a built executable runs its kernels.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BuildDevice {
    /// The CPU (with --backend).
    Cpu,
    /// An NVIDIA GPU.
    Cuda,
}

/// An NVIDIA GPU architecture.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Arch {
    /// Ampere (A100) and later: the baseline.
    #[value(name = "sm_80")]
    Sm80,
    /// Hopper (H100, H200), with its architecture-specific features.
    #[value(name = "sm_90a")]
    Sm90a,
}

impl DeviceKind {
    /// The executor: `backend` on the CPU, else the GPU or its simulator for `arch` (the
    /// simulator's default sm_80, the GPU's its own).
    pub(crate) fn engine(self, backend: Backend, arch: Option<Arch>) -> crate::run::Engine {
        use crate::run::Engine;
        match (self, backend) {
            (DeviceKind::Cuda, _) => Engine::Cuda(arch.map(Arch::gpu)),
            (DeviceKind::CudaSim, _) => Engine::GpuSim(arch.map_or(GpuArch::Sm80, Arch::gpu)),
            (DeviceKind::Cpu, Backend::Cranelift) => Engine::Native(BackendKind::Cranelift),
            (DeviceKind::Cpu, Backend::Llvm) => Engine::Native(BackendKind::Llvm),
            (DeviceKind::Cpu, Backend::Interp) => Engine::Interp,
        }
    }
}

impl Arch {
    pub(crate) fn gpu(self) -> GpuArch {
        match self {
            Arch::Sm80 => GpuArch::Sm80,
            Arch::Sm90a => GpuArch::Sm90a,
        }
    }
}

/// A pipeline stage with a text form.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Stage {
    /// The syntax tree, printed back as canonical .arch text.
    Ast,
    /// The Graph IR after elaboration.
    Graph,
    /// The Graph IR after the passes: fused regions by kind, layer kinds compiled once.
    Fused,
    /// The recurrent step `archc generate` derives for a causal model: the State's parts
    /// (caches appended to, windows and scan carries replaced), then the step's Graph IR,
    /// which reads `seq` new positions after `past` earlier ones.
    Step,
    /// The Kernel IR: one loop nest per kernel.
    Kernels,
    /// The gradient graph `archc grad` runs: the forward graph, then the gradient of the
    /// outputs (weighted by cotangent inputs named like them) for every trained weight.
    Grad,
    /// The execution plan: buffers, arena offsets, steps.
    Plan,
    /// The Cranelift IR of every kernel.
    Clif,
    /// The LLVM IR of every kernel, before LLVM optimises it (archc built with
    /// `--features llvm`).
    Llvm,
    /// The PTX of every kernel for an NVIDIA GPU (`--arch`, default sm_80), from LLVM's NVPTX
    /// backend (archc built with `--features cuda`); `--stats` assembles it with ptxas.
    Ptx,
}

/// A source of model configs for `archc import`.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ImportFormat {
    /// A Hugging Face transformers config.json.
    Hf,
    /// A llama.cpp GGUF checkpoint (its metadata).
    Gguf,
}

/// An executor for `archc run`.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Backend {
    /// Native code from Cranelift, on all cores.
    Cranelift,
    /// Native code from LLVM for this CPU's full vectors (archc built with `--features llvm`).
    Llvm,
    /// The reference interpreter of the Graph IR: naive f32 loops, the oracle.
    Interp,
}

/// A native code generator for `archc bench`, `build` and `dump`.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Codegen {
    /// Cranelift: fast to compile, 128-bit vectors.
    Cranelift,
    /// LLVM: this CPU's full vectors (archc built with `--features llvm`).
    Llvm,
}

impl Codegen {
    pub(crate) fn kind(self) -> BackendKind {
        match self {
            Codegen::Cranelift => BackendKind::Cranelift,
            Codegen::Llvm => BackendKind::Llvm,
        }
    }
}

/// Which CPUs an executable built with LLVM runs on.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Cpu {
    /// The best x86-64 level this CPU has (AVX-512, or AVX2 and FMA): fastest here, and
    /// refused with a clear error on a CPU without those features.
    Native,
    /// The x86-64 baseline (SSE2): runs on every x86-64 CPU.
    Portable,
}

pub(crate) fn parse_dim(s: &str) -> Result<(String, i64), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, found `{s}`"))?;
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    if name.is_empty() || !name.chars().all(ident) || name.starts_with(|c: char| c.is_ascii_digit())
    {
        return Err(format!(
            "`{name}` is not a dim name (expected NAME=VALUE, e.g. seq=128)"
        ));
    }
    let v: i64 = value
        .parse()
        .map_err(|_| format!("`{value}` is not an integer"))?;
    if v <= 0 {
        return Err(format!("dim `{name}` must be positive, found {v}"));
    }
    Ok((name.to_string(), v))
}

/// The flags of `archc generate`.
#[derive(Args)]
pub(crate) struct GenerateArgs {
    /// The .arch file of a model with one token input and a `logits` output.
    pub(crate) file: PathBuf,
    /// Safetensors weights (repeatable) or one GGUF file (default: random from --seed).
    #[arg(long)]
    pub(crate) weights: Vec<PathBuf>,
    /// Safetensors file with the prompts' `input_ids` [batch, t].
    #[arg(long, required_unless_present_any = ["prompt", "prompts"], conflicts_with_all = ["prompt", "prompts"])]
    pub(crate) inputs: Option<PathBuf>,
    /// A prompt as text (tokenized by --tokenizer, or the GGUF file's tokenizer); the
    /// answer is printed as it is generated.
    #[arg(long, conflicts_with = "prompts")]
    pub(crate) prompt: Option<String>,
    /// A text file of prompts, one per line (empty lines skipped), of any lengths, decoded as
    /// one batch (each runs alone until as long as the longest, then all step together); the
    /// answers follow `[0]`, `[1]`, ...
    #[arg(long)]
    pub(crate) prompts: Option<PathBuf>,
    /// Put each prompt in the model's chat template (one user message) first.
    #[arg(long, conflicts_with = "inputs")]
    pub(crate) chat: bool,
    /// A Hugging Face tokenizer.json (its tokenizer_config.json beside it gives the chat
    /// template).
    #[arg(long, conflicts_with = "inputs")]
    pub(crate) tokenizer: Option<PathBuf>,
    /// Where to write `generated_ids` and `step_logits` (default: print the ids).
    #[arg(long)]
    pub(crate) outputs: Option<PathBuf>,
    /// The most new tokens per row.
    #[arg(long, default_value_t = 32)]
    pub(crate) max_new_tokens: usize,
    /// Mask the end-of-sequence tokens until this many new tokens exist.
    #[arg(long, default_value_t = 0)]
    pub(crate) min_new_tokens: usize,
    /// The most positions (prompt and new tokens) the State's caches hold (default: the
    /// longest prompt plus --max-new-tokens).
    #[arg(long)]
    pub(crate) max_context: Option<usize>,
    /// Rerun the whole context at every step instead of the derived step (slower; for
    /// comparing the two).
    #[arg(long)]
    pub(crate) rerun: bool,
    /// Dequantize a GGUF checkpoint's Q8_0/Q4_0/Q4_1 tensors to f32 as they load, instead of
    /// keeping their blocks in memory for kernels that dequantize in registers (more memory
    /// and slower decoding; for comparing the two).
    #[arg(long)]
    pub(crate) f32_weights: bool,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) temperature: f32,
    /// Sample from the k most likely tokens only (0: all).
    #[arg(long, default_value_t = 0)]
    pub(crate) top_k: usize,
    /// Sample from the most likely tokens whose probability sums to p (1: all).
    #[arg(long, default_value_t = 1.0)]
    pub(crate) top_p: f32,
    /// Seed of the sampling (and of random weights).
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// An end-of-sequence token id (repeatable).
    #[arg(long = "eos-token-id")]
    pub(crate) eos: Vec<i64>,
    /// Which executor runs the model on the CPU.
    #[arg(long, value_enum, default_value_t = Backend::Cranelift)]
    pub(crate) backend: Backend,
    /// Where the prefill's and the steps' kernels run (as `archc run --device`): the CPU,
    /// an NVIDIA GPU (`cuda`), or the GPU kernels in the Kernel IR interpreter (`cuda-sim`).
    /// The sampling runs on the CPU, on the logits the kernels hand back.
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub(crate) device: DeviceKind,
    /// The GPU architecture the kernels are scheduled for, as `archc run --arch`.
    #[arg(long, value_enum)]
    pub(crate) arch: Option<Arch>,
    #[command(flatten)]
    pub(crate) passes: PassFlags,
}
