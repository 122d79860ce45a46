//! The `main` of standalone binaries made by `archc build`.
//!
//! `archc build` links an object file holding the kernels, a table of their addresses and the
//! plan as JSON with this static library. The binary runs like `archc run`:
//! `BIN [--weights W.safetensors]... [--inputs IN.safetensors] [--outputs OUT.safetensors]
//! [--seed N] [--dim NAME=VALUE]...`, each flag also as `--flag=VALUE`; `BIN generate ...`
//! decodes as `archc generate --inputs` does.

use std::collections::HashMap;
use std::ffi::{c_char, c_int};
use std::path::{Path, PathBuf};
use std::time::Instant;

mod generate;

use archc_runtime::{
    load_inputs, summarize, write_tensors, CpuKernels, Executor, KernelFn, Plan, TensorFile,
    WeightSource,
};

extern "C" {
    static archc_kernel_table: KernelFn;
    static archc_kernel_count: u64;
    static archc_plan_json: u8;
    static archc_plan_len: u64;
    static archc_cpu_features: c_char;
    static archc_ptx: u8;
    static archc_ptx_len: u64;
}

/// The PTX of a binary built for an NVIDIA GPU (`archc build --device cuda`), or None for one
/// built for the CPU.
fn embedded_ptx() -> Option<&'static str> {
    // SAFETY: the object file archc built defines `archc_ptx` as `archc_ptx_len` bytes of
    // text (then a NUL), written from a Rust string.
    let bytes = unsafe { std::slice::from_raw_parts(&raw const archc_ptx, archc_ptx_len as usize) };
    std::str::from_utf8(bytes).ok().filter(|p| !p.is_empty())
}

/// The launcher of `plan`'s kernels: the GPU's for a binary built for one, else the table's
/// CPU kernels on at most `threads` threads.
fn launcher(
    plan: &Plan,
    fns: &[KernelFn],
    threads: Option<usize>,
) -> Result<Box<dyn archc_runtime::Launcher>, String> {
    match embedded_ptx() {
        None => Ok(Box::new(kernels(plan, fns, 0, threads)?)),
        Some(ptx) => gpu(plan, ptx),
    }
}

#[cfg(feature = "cuda")]
fn gpu(plan: &Plan, ptx: &str) -> Result<Box<dyn archc_runtime::Launcher>, String> {
    use archc_runtime::cuda::{open, CudaLauncher};
    let (ctx, _, _) = open().map_err(|e| e.to_string())?;
    let launcher = CudaLauncher::new(&ctx, ptx, plan).map_err(|e| e.to_string())?;
    Ok(Box::new(launcher))
}

#[cfg(not(feature = "cuda"))]
fn gpu(_: &Plan, _: &str) -> Result<Box<dyn archc_runtime::Launcher>, String> {
    Err("this binary's kernels are PTX for an NVIDIA GPU, and its runner was built without CUDA support".into())
}

/// Refuses to run kernels compiled for CPU features this CPU lacks (an executable built with
/// `--backend llvm` for AVX-512, started on an AVX2 machine), instead of dying of SIGILL.
/// `ARCHC_HIDE_CPU_FEATURES=avx512f,...` makes features count as missing, to try a
/// deployment's error path on a machine that has them.
fn check_cpu() -> Result<(), String> {
    // SAFETY: the object file defines the symbol as a NUL-terminated string.
    let needed = unsafe { std::ffi::CStr::from_ptr(&raw const archc_cpu_features) };
    let needed = needed.to_string_lossy();
    let hidden = std::env::var("ARCHC_HIDE_CPU_FEATURES").unwrap_or_default();
    let hidden: Vec<&str> = hidden.split(',').collect();
    let missing: Vec<&str> = needed
        .split(',')
        .filter(|f| !f.is_empty())
        .filter(|f| hidden.contains(f) || !archc_kernels::target::has_feature(f))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "this executable was compiled for CPUs with {}, and this CPU lacks {}; rebuild it here, or with `archc build --backend llvm --cpu portable`",
        needed.replace(',', ", "),
        missing.join(", ")
    ))
}

// The scalar math the kernels call, under the names the code generators use.
archc_kernels::export_libcalls!();

const USAGE: &str = "usage: BIN [--weights W.safetensors]... [--inputs IN.safetensors] \
[--outputs OUT.safetensors] [--seed N] [--dim NAME=VALUE]... [--threads N]

Runs the model compiled into this binary by `archc build`. Without --weights the weights are
random from --seed; --weights may name a sharded checkpoint's model.safetensors.index.json, and
repeated --weights files are merged. Without --inputs the inputs are random too; without
--outputs a summary of each output is printed. --threads sets how many threads the kernels
use (default: every core). `--flag=VALUE` works like `--flag VALUE`.
`BIN generate --help` shows how to generate tokens with the model.";

struct Options {
    weights: Vec<PathBuf>,
    inputs: Option<PathBuf>,
    outputs: Option<PathBuf>,
    seed: u64,
    dims: HashMap<String, i64>,
    /// Threads for the kernels (default: every core).
    threads: Option<usize>,
}

/// Sets a flag given at most once (as archc's parser does, a second one is an error rather
/// than silently replacing the first).
fn once(slot: &mut Option<PathBuf>, flag: &str, value: String) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("{flag} given more than once"));
    }
    *slot = Some(value.into());
    Ok(())
}

/// The `(flag, value)` pairs of `args`, each `--flag VALUE` or `--flag=VALUE`, for flags in
/// `known`; `Err("")` asks for the usage (`-h`, `--help`).
fn flags(args: &[String], known: &[&str]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "-h" || a == "--help" {
            return Err(String::new());
        }
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        if !known.contains(&flag) {
            return Err(format!("unknown argument `{a}`"));
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))?,
        };
        out.push((flag.to_string(), value));
    }
    Ok(out)
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        weights: Vec::new(),
        inputs: None,
        outputs: None,
        seed: 0,
        dims: HashMap::new(),
        threads: None,
    };
    let known = [
        "--weights",
        "--inputs",
        "--outputs",
        "--seed",
        "--dim",
        "--threads",
    ];
    for (flag, value) in flags(args, &known)? {
        let flag = flag.as_str();
        match flag {
            "--weights" => o.weights.push(value.into()),
            "--inputs" => once(&mut o.inputs, flag, value)?,
            "--outputs" => once(&mut o.outputs, flag, value)?,
            "--seed" => {
                o.seed = value
                    .parse()
                    .map_err(|_| "--seed needs an integer".to_string())?
            }
            "--threads" => {
                o.threads = match value.parse::<usize>() {
                    Ok(n) if n >= 1 => Some(n),
                    _ => {
                        return Err(format!(
                            "--threads needs a positive integer, found `{value}`"
                        ))
                    }
                }
            }
            _ => {
                let (k, n) = value
                    .split_once('=')
                    .ok_or_else(|| format!("--dim needs NAME=VALUE, found `{value}`"))?;
                let n: i64 = n.parse().map_err(|_| format!("`{n}` is not an integer"))?;
                if n <= 0 {
                    return Err(format!("dim `{k}` must be positive"));
                }
                o.dims.insert(k.to_string(), n);
            }
        }
    }
    Ok(o)
}

fn embedded() -> Result<(Plan, Vec<KernelFn>), String> {
    // SAFETY: the object file archc built defines these symbols with these layouts.
    unsafe {
        let json = std::slice::from_raw_parts(&raw const archc_plan_json, archc_plan_len as usize);
        let plan: Plan = serde_json_from(json)?;
        let table =
            std::slice::from_raw_parts(&raw const archc_kernel_table, archc_kernel_count as usize);
        Ok((plan, table.to_vec()))
    }
}

fn serde_json_from(bytes: &[u8]) -> Result<Plan, String> {
    archc_runtime::plan_from_json(bytes).map_err(|e| format!("the embedded plan is damaged: {e}"))
}

/// Checks that `--outputs` is not one of the files the run reads and not a device, FIFO,
/// directory or symlink (a usage error, as in archc).
fn check_outputs(o: &Options) -> Result<(), String> {
    if let Some(out) = &o.outputs {
        let mut reads: Vec<(&str, &Path)> = o
            .inputs
            .iter()
            .map(|p| ("the --inputs file", p.as_path()))
            .collect();
        reads.extend(o.weights.iter().map(|p| ("a --weights file", p.as_path())));
        archc_runtime::files::check_output(out, &reads).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn run(o: &Options) -> Result<String, String> {
    check_cpu()?;
    let (plan, fns) = embedded()?;
    let open = |p: &PathBuf| TensorFile::open(p).map_err(|e| e.to_string());
    let input_file = o.inputs.as_ref().map(open).transpose()?;
    let (inputs, _) = load_inputs(&plan, input_file.as_slice(), o.seed, &o.dims)?;
    let weights = WeightSource::open(&plan, &o.weights, o.seed)?;
    let mut exec =
        Executor::new(&plan, |n, d, s| weights.weight(n, d, s)).map_err(|e| e.to_string())?;
    let kernels = launcher(&plan, &fns, o.threads)?;
    let dims = exec.bind(&inputs, &o.dims).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let outputs = exec
        .run(kernels.as_ref(), &inputs, &o.dims)
        .map_err(|e| e.to_string())?;
    let elapsed = start.elapsed();
    if let Some(path) = &o.outputs {
        write_tensors(path, &outputs).map_err(|e| e.to_string())?;
        return Ok(format!(
            "wrote {} outputs to {}\n",
            outputs.len(),
            path.display()
        ));
    }
    let mut text = format!(
        "model {} (built by archc)\n  dims: {}\n",
        plan.model,
        archc_runtime::show_dims(&plan.symbols, &dims)
    );
    for (name, t) in &outputs {
        text.push_str(&format!("  {}\n", summarize(name, t)));
    }
    text.push_str(&format!("  time: {:.1} ms\n", elapsed.as_secs_f64() * 1e3));
    Ok(text)
}

/// The embedded plan's kernels, on at most `threads` threads (default: every core).
/// The kernels of `plan`, which start at `from` in the binary's kernel table `fns` (a causal
/// model's prefill and step follow the sequence plan's).
fn kernels(
    plan: &Plan,
    fns: &[KernelFn],
    from: usize,
    threads: Option<usize>,
) -> Result<CpuKernels, String> {
    let fns = from
        .checked_add(plan.kernels.len())
        .and_then(|end| fns.get(from..end))
        .ok_or("the embedded kernel table is shorter than the plan")?
        .to_vec();
    let signatures = plan
        .signatures()
        .map_err(|e| format!("the embedded plan is damaged: {e}"))?;
    // SAFETY: the table holds this plan's kernels, compiled with the kernel ABI from Kernel IR
    // lowered with the plan, whose buffers are their signatures.
    let kernels = unsafe { CpuKernels::new(fns, signatures, plan.kernel_local_bytes) }
        .map_err(|e| e.to_string())?;
    match threads {
        Some(n) => kernels.with_threads(n).map_err(|e| e.to_string()),
        None => Ok(kernels),
    }
}

/// `BIN generate ...`: exit status 0, 1 (the run failed) or 2 (bad flags).
fn generate_main(args: &[String], program: &str) -> c_int {
    let usage = generate::USAGE.replace("BIN", program);
    let options = match generate::parse(args) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            println!("{usage}");
            return 0;
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{usage}");
            return 2;
        }
    };
    if let Some(out) = &options.outputs {
        let mut reads = vec![("the --inputs file", options.inputs.as_path())];
        reads.extend(
            options
                .weights
                .iter()
                .map(|p| ("a --weights file", p.as_path())),
        );
        if let Err(e) = archc_runtime::files::check_output(out, &reads) {
            eprintln!("error: {e}");
            return 2;
        }
    }
    let result = check_cpu()
        .and_then(|()| embedded())
        .and_then(|(plan, fns)| {
            if embedded_ptx().is_some() {
                return Err("this binary runs on an NVIDIA GPU, and generation runs on the CPU: build it without --device cuda to generate".into());
            }
            let k = kernels(&plan, &fns, 0, options.threads)?;
            let stateful = match &plan.stateful {
                Some(s) => Some((
                    &**s,
                    kernels(&s.prefill, &fns, s.prefill_kernels, options.threads)?,
                    kernels(&s.step, &fns, s.step_kernels, options.threads)?,
                )),
                None => None,
            };
            generate::run(&plan, &k, stateful.as_ref(), &options)
        });
    match result {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// The process entry point of a built binary.
///
/// # Safety
/// Called by the C runtime with valid `argc`/`argv`.
#[no_mangle]
pub unsafe extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    let mut args = std::env::args();
    let program = args
        .next()
        .and_then(|p| Some(Path::new(&p).file_name()?.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "BIN".to_string());
    let usage = USAGE.replace("BIN", &program);
    let args: Vec<String> = args.collect();
    if args.first().is_some_and(|a| a == "generate") {
        return generate_main(&args[1..], &program);
    }
    let options = match parse(&args).and_then(|o| check_outputs(&o).map(|()| o)) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            println!("{usage}\n");
            match embedded() {
                Ok((plan, _)) => print!("{}", archc_runtime::describe_plan(&plan)),
                Err(e) => eprintln!("error: {e}"),
            }
            return 0;
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{usage}");
            return 2;
        }
    };
    match run(&options) {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
