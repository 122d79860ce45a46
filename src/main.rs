//! `archc`: compile and inspect neural-network architectures written in `.arch`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use archc_compiler::codegen::backend::BackendKind;
use archc_compiler::graph::print_graph;
use archc_compiler::passes::{optimize, optimize_explained, PassOptions};
use archc_compiler::summary::summary;
use archc_compiler::syntax::print_file;
use archc_compiler::Session;
use archc_kernels::target::{Target, X86Level};
use archc_runtime::files;
use clap::{Args, Parser, Subcommand, ValueEnum};

mod bench;
mod build;
mod generate;
mod progress;
mod run;
mod sampling;
mod text;

/// archc compiles neural-network architectures written in the .arch language.
///
/// A .arch file declares a model: config constants, inputs, blocks built from primitives and the
/// prelude (attention, rmsnorm, mamba, ...), stacks of layers, and outputs. docs/LANGUAGE.md
/// describes the language; examples/ has one file per architecture family.
#[derive(Parser)]
#[command(name = "archc", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// The most work elaboration may do (graph nodes made, expressions evaluated, list
    /// elements made) before it stops with an error; it keeps a few hundred bytes of nested
    /// stacks from taking all memory.
    #[arg(long, global = true, value_name = "N", default_value_t = archc_compiler::elaborate::DEFAULT_MAX_NODES)]
    max_nodes: u64,
    /// How many threads the native kernels use (run, bench), 1 to 1024; default: every core.
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
}

/// The largest `.arch` or `config.json` archc reads (4 MiB): real ones are a few kilobytes.
const MAX_SOURCE_BYTES: u64 = 4 << 20;

/// The stack of the thread that compiles. The parser and elaborator recurse over nesting that
/// the parser bounds; this leaves them a wide margin whatever the platform's default is.
const COMPILER_STACK_BYTES: usize = 256 << 20;

/// Which passes run between elaboration and lowering.
#[derive(Args, Clone)]
struct PassFlags {
    /// Run no pass at all: one kernel per primitive op and one arena slot per buffer (the
    /// baseline the passes are measured against).
    #[arg(long)]
    no_fuse: bool,
    /// Turn one pass off (repeatable); the passes, in pipeline order, are listed below.
    #[arg(long = "disable-pass", value_name = "PASS", long_help = disable_pass_help())]
    disable: Vec<String>,
}

/// `--disable-pass`'s long help: the registry's passes with what each does.
fn disable_pass_help() -> String {
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
fn internal(e: archc_compiler::passes::PassError) -> Failure {
    Failure::Input(format!("error: {e}\n"))
}

impl PassFlags {
    fn options(&self) -> Result<PassOptions, Failure> {
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
enum Command {
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
        /// Which executor runs the graph.
        #[arg(long, value_enum, default_value_t = Backend::Cranelift)]
        backend: Backend,
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
    /// Reads prompts as token ids (`--inputs`: `input_ids`, i32 or i64 [batch, t]) and appends
    /// up to `--max-new-tokens` tokens to each, greedily unless `--temperature` is above 0
    /// (then sampled, with `--top-k`, `--top-p` and `--seed`). A row stops at an
    /// end-of-sequence token: `--eos-token-id`, else the GGUF file's, else `eos_token_id` of
    /// a generation_config.json or config.json beside the weights. `--outputs` gets
    /// `generated_ids` (i32 [batch, n], up to and including the end-of-sequence token; rows
    /// that stopped earlier are padded with it) and `step_logits` (f32 [batch, n, vocab], the
    /// raw logits each token was chosen from). Each step reruns the model on the whole
    /// context: the compiler does not derive a recurrent step with a KV cache yet.
    ///
    /// Example: archc generate smollm2.arch --weights SmolLM2-135M-Instruct.Q4_1.gguf \
    ///              --inputs prompt.safetensors --max-new-tokens 32 --outputs out.safetensors
    Generate {
        /// The .arch file of a model with one token input and a `logits` output.
        file: PathBuf,
        /// Safetensors weights (repeatable) or one GGUF file (default: random from --seed).
        #[arg(long)]
        weights: Vec<PathBuf>,
        /// Safetensors file with the prompts' `input_ids` [batch, t].
        #[arg(long, required_unless_present = "prompt", conflicts_with = "prompt")]
        inputs: Option<PathBuf>,
        /// A prompt as text (tokenized by --tokenizer, or the GGUF file's tokenizer); the
        /// answer is printed as it is generated.
        #[arg(long)]
        prompt: Option<String>,
        /// Put the prompt in the model's chat template (one user message) first.
        #[arg(long, requires = "prompt")]
        chat: bool,
        /// A Hugging Face tokenizer.json (its tokenizer_config.json beside it gives the chat
        /// template).
        #[arg(long, requires = "prompt")]
        tokenizer: Option<PathBuf>,
        /// Where to write `generated_ids` and `step_logits` (default: print the ids).
        #[arg(long)]
        outputs: Option<PathBuf>,
        /// The most new tokens per row.
        #[arg(long, default_value_t = 32)]
        max_new_tokens: usize,
        /// Mask the end-of-sequence tokens until this many new tokens exist.
        #[arg(long, default_value_t = 0)]
        min_new_tokens: usize,
        /// Sampling temperature (0: greedy).
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        /// Sample from the k most likely tokens only (0: all).
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        /// Sample from the most likely tokens whose probability sums to p (1: all).
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        /// Seed of the sampling (and of random weights).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// An end-of-sequence token id (repeatable).
        #[arg(long = "eos-token-id")]
        eos: Vec<i64>,
        /// Which executor runs the model.
        #[arg(long, value_enum, default_value_t = Backend::Cranelift)]
        backend: Backend,
        #[command(flatten)]
        passes: PassFlags,
    },
    /// Measure compile time, run time and GFLOP/s.
    ///
    /// Reports the compile time by phase (parsing and elaboration, the passes and lowering,
    /// Cranelift), then times `--iters` runs of the native code after a warm-up (the median is
    /// reported) and, with `--interp`, the reference interpreter on the same inputs, so the
    /// table shows their ratio. GFLOP/s counts the matmuls. `--no-fuse` measures the
    /// unoptimised pipeline.
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
    /// metadata (Llama family) and writes its .arch, with Hugging Face's weight names:
    /// `archc run MODEL.arch --weights FILE.gguf` reads the file by them (F32, F16, BF16,
    /// Q8_0, Q4_0 and Q4_1 tensors, dequantized to f32 as they load; the query and key rows
    /// llama.cpp permutes for its rotary are put back).
    ///
    /// Examples: archc import hf config.json -o model.arch
    ///           archc import gguf SmolLM2-135M-Instruct.Q4_1.gguf -o smollm2.arch
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
    /// and the weight scope it came from; `kernels` the Kernel IR loop nests; `plan` the
    /// execution plan with its arena laid out for the dims (first lines `arena_bytes: N` and
    /// `kernels: K`); `clif` the Cranelift IR of every kernel; `llvm` the LLVM IR of every kernel
    /// (with `--features llvm`).
    ///
    /// Example: archc dump --stage plan examples/llama.arch --dim batch=1 --dim seq=4096
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
        #[command(flatten)]
        passes: PassFlags,
    },
}

/// A pipeline stage with a text form.
#[derive(Clone, Copy, ValueEnum)]
enum Stage {
    /// The syntax tree, printed back as canonical .arch text.
    Ast,
    /// The Graph IR after elaboration.
    Graph,
    /// The Graph IR after the passes: fused regions by kind, layer kinds compiled once.
    Fused,
    /// The Kernel IR: one loop nest per kernel.
    Kernels,
    /// The execution plan: buffers, arena offsets, steps.
    Plan,
    /// The Cranelift IR of every kernel.
    Clif,
    /// The LLVM IR of every kernel, before LLVM optimises it (archc built with
    /// `--features llvm`).
    Llvm,
}

/// A source of model configs for `archc import`.
#[derive(Clone, Copy, ValueEnum)]
enum ImportFormat {
    /// A Hugging Face transformers config.json.
    Hf,
    /// A llama.cpp GGUF checkpoint (its metadata).
    Gguf,
}

/// An executor for `archc run`.
#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    /// Native code from Cranelift, on all cores.
    Cranelift,
    /// Native code from LLVM for this CPU's full vectors (archc built with `--features llvm`).
    Llvm,
    /// The reference interpreter of the Graph IR: naive f32 loops, the oracle.
    Interp,
}

/// A native code generator for `archc bench`, `build` and `dump`.
#[derive(Clone, Copy, ValueEnum)]
enum Codegen {
    /// Cranelift: fast to compile, 128-bit vectors.
    Cranelift,
    /// LLVM: this CPU's full vectors (archc built with `--features llvm`).
    Llvm,
}

impl Codegen {
    fn kind(self) -> BackendKind {
        match self {
            Codegen::Cranelift => BackendKind::Cranelift,
            Codegen::Llvm => BackendKind::Llvm,
        }
    }
}

/// Which CPUs an executable built with LLVM runs on.
#[derive(Clone, Copy, ValueEnum)]
enum Cpu {
    /// The best x86-64 level this CPU has (AVX-512, or AVX2 and FMA): fastest here, and
    /// refused with a clear error on a CPU without those features.
    Native,
    /// The x86-64 baseline (SSE2): runs on every x86-64 CPU.
    Portable,
}

fn parse_dim(s: &str) -> Result<(String, i64), String> {
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

/// Why a command failed, and so with which status it exits.
enum Failure {
    /// A located error in the user's input: status 1.
    Input(String),
    /// A bad invocation (unreadable path, ...): status 2.
    Usage(anyhow::Error),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let worker = std::thread::Builder::new()
        .stack_size(COMPILER_STACK_BYTES)
        .spawn(move || run(cli));
    let result = match worker.map(|w| w.join()) {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(e) => Err(Failure::Usage(anyhow::anyhow!(
            "cannot start a thread: {e}"
        ))),
    };
    match result {
        Ok(text) => {
            // A closed pipe (`archc dump ... | head`) is not an error worth a panic.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(Failure::Input(rendered)) => {
            eprint!("{rendered}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Writes the fusion notes to standard error: the missed fusions, and with `all` the others.
fn print_notes(notes: &[archc_compiler::passes::explain::Note], all: bool) {
    for n in notes.iter().filter(|n| all || !n.fused) {
        eprintln!("{}", n.render());
    }
}

fn load(
    path: &Path,
    max_nodes: u64,
) -> Result<(Session, archc_compiler::syntax::SourceId), Failure> {
    let text = read_text(path)?;
    let mut session = Session::new().map_err(Failure::Input)?;
    session.max_nodes = max_nodes;
    let id = session.add(path.display().to_string(), text);
    Ok((session, id))
}

/// Reads a source or config file, refusing what is not a regular file of sensible size.
fn read_text(path: &Path) -> Result<String, Failure> {
    files::read_text(path, MAX_SOURCE_BYTES).map_err(|e| Failure::Usage(e.into()))
}

/// Checks the files a command reads can be opened (a usage error, status 2, like an
/// unreadable source), and that its output is none of them and not something other than a
/// regular file.
fn check_paths(output: Option<&Path>, inputs: &[(&str, Option<&Path>)]) -> Result<(), Failure> {
    let usage = |e: files::FileError| Failure::Usage(e.into());
    let given: Vec<(&str, &Path)> = inputs
        .iter()
        .filter_map(|(role, p)| p.map(|p| (*role, p)))
        .collect();
    for (_, p) in &given {
        files::open_regular(p).map_err(usage)?;
    }
    match output {
        Some(out) => files::check_output(out, &given).map_err(usage),
        None => Ok(()),
    }
}

/// Checks every `--dim` names a dim of the model, suggesting the closest.
fn check_dim_names(dims: &[(String, i64)], symbols: &[String]) -> Result<(), Failure> {
    archc_runtime::check_dim_names(dims.iter().map(|(n, _)| n), symbols)
        .map_err(|e| Failure::Usage(e.into()))
}

fn run(cli: Cli) -> Result<String, Failure> {
    let max_nodes = cli.max_nodes;
    let threads = cli.threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        usize::from,
    );
    match cli.command {
        Command::Check {
            file,
            explain_fusion,
        } => {
            let (s, id) = load(&file, max_nodes)?;
            let (_, graph) = s.compile(id).map_err(|d| Failure::Input(s.render(&d)))?;
            let (_, notes) = optimize_explained(&graph, &PassOptions::all()).map_err(internal)?;
            print_notes(&notes, explain_fusion);
            Ok(summary(&graph))
        }
        Command::Run {
            file,
            weights,
            inputs,
            outputs,
            backend,
            seed,
            dims,
            passes,
        } => {
            let passes = passes.options()?;
            let mut reads = vec![
                ("the .arch source", Some(file.as_path())),
                ("the --inputs file", inputs.as_deref()),
            ];
            reads.extend(
                weights
                    .iter()
                    .map(|w| ("a --weights file", Some(w.as_path()))),
            );
            check_paths(outputs.as_deref(), &reads)?;
            let (s, id) = load(&file, max_nodes)?;
            let (_, graph) = s.compile(id).map_err(|d| Failure::Input(s.render(&d)))?;
            check_dim_names(&dims, &graph.symbols)?;
            let options = run::RunOptions {
                weights,
                inputs,
                outputs,
                seed,
                dims: dims.into_iter().collect(),
                passes,
                threads,
                engine: match backend {
                    Backend::Cranelift => run::Engine::Native(BackendKind::Cranelift),
                    Backend::Llvm => run::Engine::Native(BackendKind::Llvm),
                    Backend::Interp => run::Engine::Interp,
                },
            };
            run::run(&graph, &options).map_err(|e| Failure::Input(format!("error: {e}\n")))
        }
        Command::Generate {
            file,
            weights,
            inputs,
            prompt,
            chat,
            tokenizer,
            outputs,
            max_new_tokens,
            min_new_tokens,
            temperature,
            top_k,
            top_p,
            seed,
            eos,
            backend,
            passes,
        } => {
            let passes = passes.options()?;
            let mut reads = vec![
                ("the .arch source", Some(file.as_path())),
                ("the --inputs file", inputs.as_deref()),
                ("the --tokenizer file", tokenizer.as_deref()),
            ];
            reads.extend(
                weights
                    .iter()
                    .map(|w| ("a --weights file", Some(w.as_path()))),
            );
            check_paths(outputs.as_deref(), &reads)?;
            let valid =
                temperature.is_finite() && temperature >= 0.0 && top_p > 0.0 && top_p <= 1.0;
            if !valid {
                return Err(Failure::Usage(anyhow::anyhow!(
                    "--temperature must be ≥ 0 and --top-p in (0, 1] (got {temperature} and {top_p})"
                )));
            }
            let (s, id) = load(&file, max_nodes)?;
            let (_, graph) = s.compile(id).map_err(|d| Failure::Input(s.render(&d)))?;
            let prompt = match (inputs, prompt) {
                (Some(path), _) => generate::Prompt::Ids(path),
                (None, text) => generate::Prompt::Text {
                    text: text.unwrap_or_default(),
                    chat,
                    tokenizer,
                },
            };
            let options = generate::GenerateOptions {
                weights,
                prompt,
                outputs,
                max_new: max_new_tokens,
                min_new: min_new_tokens,
                sampling: sampling::Sampling {
                    temperature,
                    top_k,
                    top_p,
                },
                seed,
                eos,
                engine: match backend {
                    Backend::Cranelift => run::Engine::Native(BackendKind::Cranelift),
                    Backend::Llvm => run::Engine::Native(BackendKind::Llvm),
                    Backend::Interp => run::Engine::Interp,
                },
                passes,
                threads,
            };
            generate::generate(&graph, &options)
                .map_err(|e| Failure::Input(format!("error: {e}\n")))
        }
        Command::Bench {
            file,
            weights,
            inputs,
            dims,
            iters,
            interp,
            backend,
            passes,
        } => {
            let passes = passes.options()?;
            let mut reads = vec![("the --inputs file", inputs.as_deref())];
            reads.extend(
                weights
                    .iter()
                    .map(|w| ("a --weights file", Some(w.as_path()))),
            );
            check_paths(None, &reads)?;
            let started = std::time::Instant::now();
            let (s, id) = load(&file, max_nodes)?;
            let (_, graph) = s.compile(id).map_err(|d| Failure::Input(s.render(&d)))?;
            check_dim_names(&dims, &graph.symbols)?;
            let options = bench::BenchOptions {
                weights,
                inputs,
                dims: dims.into_iter().collect(),
                iters,
                with_interp: interp,
                backend: backend.kind(),
                passes,
                front_end_ms: started.elapsed().as_secs_f64() * 1e3,
                threads,
            };
            bench::bench(&graph, &options).map_err(|e| Failure::Input(format!("error: {e}\n")))
        }
        Command::Build {
            file,
            output,
            cc,
            backend,
            cpu,
            passes,
        } => {
            let passes = passes.options()?;
            check_paths(Some(&output), &[("the .arch source", Some(&file))])?;
            let (s, id) = load(&file, max_nodes)?;
            let (_, graph) = s.compile(id).map_err(|d| Failure::Input(s.render(&d)))?;
            let target = match (backend, cpu) {
                (Codegen::Cranelift, _) => Target::cranelift_x86_64(),
                (Codegen::Llvm, Cpu::Native) => Target::host(),
                (Codegen::Llvm, Cpu::Portable) => Target::x86_64(X86Level::Baseline),
            };
            let how = build::How {
                cc: &cc,
                backend: backend.kind(),
                target,
                passes: &passes,
            };
            build::build(&graph, &output, &how).map_err(|e| Failure::Input(format!("error: {e}\n")))
        }
        Command::Import {
            format,
            config,
            output,
        } => {
            check_paths(Some(&output), &[("the model file", Some(&config))])?;
            let source = config.display().to_string();
            let arch = match format {
                ImportFormat::Hf => {
                    archc_compiler::import::import_hf(&read_text(&config)?, &source)
                }
                ImportFormat::Gguf => {
                    let file = archc_runtime::gguf::GgufFile::open(&config)
                        .map_err(|e| Failure::Input(format!("error: {e}\n")))?;
                    archc_compiler::import::import_gguf(&file, &source)
                }
            }
            .map_err(|e| Failure::Input(format!("error: {e}\n")))?;
            // Check what was written compiles, and say what it is.
            let mut s = Session::new().map_err(Failure::Input)?;
            s.max_nodes = max_nodes;
            let id = s.add(output.display().to_string(), arch.clone());
            let (_, graph) = s.compile(id).map_err(|d| Failure::Input(s.render(&d)))?;
            files::write_atomically(&output, arch.as_bytes())
                .map_err(|e| Failure::Usage(e.into()))?;
            Ok(format!("wrote {}\n{}", output.display(), summary(&graph)))
        }
        Command::Dump {
            stage,
            file,
            dims,
            explain_fusion,
            verify,
            passes,
        } => {
            let passes = passes.options()?;
            let passes = if verify { passes.verified() } else { passes };
            let (s, id) = load(&file, max_nodes)?;
            if let Stage::Ast = stage {
                let ast = s.parse(id).map_err(|d| Failure::Input(s.render(&d)))?;
                return Ok(print_file(&ast));
            }
            let (_, graph) = s.compile(id).map_err(|d| Failure::Input(s.render(&d)))?;
            check_dim_names(&dims, &graph.symbols)?;
            if explain_fusion {
                print_notes(
                    &optimize_explained(&graph, &passes).map_err(internal)?.1,
                    true,
                );
            }
            // `dump --stage llvm` shows the kernels as LLVM gets them: scheduled for this CPU.
            let target = match stage {
                Stage::Llvm => BackendKind::Llvm.target(),
                _ => BackendKind::Cranelift.target(),
            };
            let lowered = || {
                archc_compiler::passes::lower_optimized_for(&graph, &passes, &target)
                    .map_err(internal)
            };
            if verify {
                lowered()?;
                return Ok("verified: graph, regions, kernels, plan\n".into());
            }
            match stage {
                Stage::Ast => unreachable!("printed above"),
                Stage::Graph => Ok(print_graph(&graph)),
                Stage::Fused => Ok(print_graph(&optimize(&graph, &passes).map_err(internal)?)),
                Stage::Kernels => Ok(lowered()?
                    .kernels
                    .iter()
                    .map(archc_kernels::print_kernel)
                    .collect::<Vec<_>>()
                    .join("\n")),
                Stage::Plan => {
                    let mut bound: std::collections::HashMap<String, i64> =
                        dims.into_iter().collect();
                    for sym in &graph.symbols {
                        bound
                            .entry(sym.clone())
                            .or_insert_with(|| archc_runtime::default_dim(sym));
                    }
                    Ok(archc_runtime::print_plan(&lowered()?.plan, &bound))
                }
                Stage::Clif | Stage::Llvm => {
                    let kind = match stage {
                        Stage::Llvm => BackendKind::Llvm,
                        _ => BackendKind::Cranelift,
                    };
                    let l = lowered()?;
                    kind.text(&l.kernels, l.plan.symbols.len())
                        .map_err(|e| Failure::Input(format!("error: {e}\n")))
                }
            }
        }
    }
}
