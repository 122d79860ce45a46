//! `archc`: compile and inspect neural-network architectures written in `.arch`.

use std::path::Path;
use std::process::ExitCode;

use archc_compiler::codegen::backend::BackendKind;
use archc_compiler::codegen::{self, cranelift::CodegenError};
use archc_compiler::graph::print_graph;
use archc_compiler::passes::{optimize, optimize_explained, PassOptions};
use archc_compiler::step::{print_step, Phase};
use archc_compiler::summary::summary;
use archc_compiler::syntax::print_file;
use archc_compiler::Session;
use archc_kernels::target::{GpuArch, Target, X86Level};
use archc_runtime::files;
use clap::Parser;

use cli::*;

mod bench;
mod build;
mod cli;
mod device;
mod generate;
mod grad;
mod progress;
mod run;

mod text;
mod train;

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

/// The block formats a GGUF checkpoint (`--weights`, if given) keeps `graph`'s weights in.
fn blocks_of(
    weights: Option<std::path::PathBuf>,
    graph: &archc_compiler::graph::Graph,
) -> Result<std::collections::BTreeMap<String, archc_runtime::quant::BlockFormat>, Failure> {
    let gguf = |p: &std::path::Path| {
        p.extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    };
    if let Some(p) = weights.as_deref().filter(|p| !gguf(p)) {
        return Err(Failure::Usage(anyhow::anyhow!(
            "--weights {} is not a GGUF checkpoint (FILE.gguf): here it only says which weights \
             stay in their quantized blocks",
            p.display()
        )));
    }
    let files: Vec<std::path::PathBuf> = weights.into_iter().collect();
    archc_runtime::block_formats(&files, graph.params.keys())
        .map_err(|e| Failure::Input(format!("error: {e}\n")))
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
            device,
            arch,
            dtype,
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
            let graph = narrowed(graph, dtype);
            let options = run::RunOptions {
                weights,
                inputs: inputs.into_iter().collect(),
                outputs,
                seed,
                dims: dims.into_iter().collect(),
                passes,
                threads,
                engine: device.engine(backend, arch),
            };
            run::run(&graph, &options).map_err(|e| Failure::Input(format!("error: {e}\n")))
        }
        Command::Generate(args) => generate_command(args, max_nodes, threads),
        Command::Grad(args) => grad::command(args, max_nodes, threads),
        Command::Train(args) => train::command(args, max_nodes, threads),
        Command::Bench {
            file,
            weights,
            inputs,
            dims,
            iters,
            interp,
            backend,
            device,
            arch,
            dtype,
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
            let graph = narrowed(graph, dtype);
            let options = bench::BenchOptions {
                weights,
                inputs,
                dims: dims.into_iter().collect(),
                iters,
                with_interp: interp,
                engine: match backend {
                    Codegen::Cranelift => device.engine(Backend::Cranelift, arch),
                    Codegen::Llvm => device.engine(Backend::Llvm, arch),
                },
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
            device,
            arch,
            weights,
            passes,
        } => {
            check_paths(Some(&output), &[("the .arch source", Some(&file))])?;
            let (s, id) = load(&file, max_nodes)?;
            let (_, graph) = s.compile(id).map_err(|d| Failure::Input(s.render(&d)))?;
            let passes = passes.options()?.with_blocks(blocks_of(weights, &graph)?);
            let target = match (device, backend, cpu) {
                (BuildDevice::Cuda, ..) => Target::cuda(arch.gpu()),
                (_, Codegen::Cranelift, _) => Target::cranelift_x86_64(),
                (_, Codegen::Llvm, Cpu::Native) => Target::host(),
                (_, Codegen::Llvm, Cpu::Portable) => Target::x86_64(X86Level::Baseline),
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
            grad,
            train,
            weights,
            arch,
            stats,
            dtype,
            passes,
        } => {
            let passes = passes.options()?;
            let passes = if verify { passes.verified() } else { passes };
            let (mut s, id) = load(&file, max_nodes)?;
            s.for_training = train;
            if let Stage::Ast = stage {
                let ast = s.parse(id).map_err(|d| Failure::Input(s.render(&d)))?;
                return Ok(print_file(&ast));
            }
            let (_, graph) = s.compile(id).map_err(|d| Failure::Input(s.render(&d)))?;
            let graph = narrowed(graph, dtype);
            let grad_passes = passes.clone();
            let gradient = |g| {
                archc_compiler::grad::gradient(g, &grad_passes)
                    .map_err(|e| Failure::Input(format!("error: {e}\n")))
            };
            let graph = if grad { gradient(&graph)? } else { graph };
            let graph = if train {
                let loss = graph.training.as_ref().and_then(|t| t.loss.clone());
                archc_compiler::grad::loss_gradient(
                    &graph,
                    loss.as_deref().unwrap_or("loss"),
                    &passes,
                )
                .map_err(|e| Failure::Input(format!("error: {e}\n")))?
            } else {
                graph
            };
            let passes = passes.with_blocks(blocks_of(weights, &graph)?);
            check_dim_names(&dims, &graph.symbols)?;
            if explain_fusion {
                print_notes(
                    &optimize_explained(&graph, &passes).map_err(internal)?.1,
                    true,
                );
            }
            // `dump --stage llvm` shows the kernels as LLVM gets them: scheduled for this CPU;
            // `--arch` schedules them for a GPU.
            let gpu = match (stage, arch) {
                (Stage::Ptx, None) => Some(GpuArch::Sm80),
                (_, a) => a.map(Arch::gpu),
            };
            let target = match (stage, gpu) {
                (_, Some(a)) => Target::cuda(a),
                (Stage::Llvm, None) => BackendKind::Llvm.target(),
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
                // With --train the graph is already the step's: its gradient graph.
                Stage::Grad if train => Ok(print_graph(&graph)),
                Stage::Grad => Ok(print_graph(&gradient(&graph)?)),
                Stage::Step => {
                    let derived = generate::derive_step(&graph, Phase::Step)
                        .map_err(|e| Failure::Input(format!("error: {e}\n")))?;
                    Ok(print_step(&derived))
                }
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
                Stage::Ptx => {
                    let l = lowered()?;
                    let arch = gpu.unwrap_or(GpuArch::Sm80);
                    let fail = |e: CodegenError| Failure::Input(format!("error: {e}\n"));
                    let ptx = codegen::ptx(&l.kernels, l.plan.symbols.len(), arch).map_err(fail)?;
                    if !stats {
                        return Ok(ptx);
                    }
                    let ptxas = codegen::ptxas::find_ptxas()
                        .ok_or_else(|| Failure::Input(codegen::ptxas::MISSING.to_string()))?;
                    let mut stats = codegen::ptxas::assemble(&ptxas, &ptx, arch).map_err(fail)?;
                    stats.count_dynamic_shared(&l.kernels);
                    Ok(codegen::ptxas::report(&stats, arch))
                }
            }
        }
    }
}

/// `graph` with its floats stored as `dtype` (`--dtype`).
pub(crate) fn narrowed(
    graph: archc_compiler::graph::Graph,
    dtype: Storage,
) -> archc_compiler::graph::Graph {
    match dtype {
        Storage::F32 => graph,
        narrow => archc_compiler::graph::with_float_storage(&graph, narrow.dtype()),
    }
}

/// `archc generate`.
fn generate_command(args: GenerateArgs, max_nodes: u64, threads: usize) -> Result<String, Failure> {
    let GenerateArgs {
        file,
        weights,
        inputs,
        prompt,
        prompts,
        chat,
        tokenizer,
        outputs,
        max_new_tokens,
        min_new_tokens,
        max_context,
        rerun,
        f32_weights,
        temperature,
        top_k,
        top_p,
        seed,
        eos,
        backend,
        device,
        arch,
        passes,
    } = args;
    let passes = passes.options()?;
    let mut reads = vec![
        ("the .arch source", Some(file.as_path())),
        ("the --inputs file", inputs.as_deref()),
        ("the --prompts file", prompts.as_deref()),
        ("the --tokenizer file", tokenizer.as_deref()),
    ];
    reads.extend(
        weights
            .iter()
            .map(|w| ("a --weights file", Some(w.as_path()))),
    );
    check_paths(outputs.as_deref(), &reads)?;
    let valid = temperature.is_finite() && temperature >= 0.0 && top_p > 0.0 && top_p <= 1.0;
    if !valid {
        return Err(Failure::Usage(anyhow::anyhow!(
            "--temperature must be ≥ 0 and --top-p in (0, 1] (got {temperature} and {top_p})"
        )));
    }
    let (s, id) = load(&file, max_nodes)?;
    let (_, graph) = s.compile(id).map_err(|d| Failure::Input(s.render(&d)))?;
    let prompt = match (inputs, prompt, prompts) {
        (Some(path), ..) => generate::Prompt::Ids(path),
        (None, text, file) => {
            let texts = match (text, file) {
                (Some(t), _) => vec![t],
                (None, Some(f)) => read_text(&f)?
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_string)
                    .collect(),
                (None, None) => Vec::new(),
            };
            if texts.is_empty() {
                return Err(Failure::Usage(anyhow::anyhow!("--prompts holds no prompt")));
            }
            generate::Prompt::Text {
                texts,
                chat,
                tokenizer,
            }
        }
    };
    let options = generate::GenerateOptions {
        weights,
        prompt,
        outputs,
        max_new: max_new_tokens,
        min_new: min_new_tokens,
        max_context,
        rerun,
        f32_weights,
        sampling: archc_runtime::sampling::Sampling {
            temperature,
            top_k,
            top_p,
        },
        seed,
        eos,
        engine: device.engine(backend, arch),
        passes,
        threads,
    };
    generate::generate(&graph, &options).map_err(|e| Failure::Input(format!("error: {e}\n")))
}
