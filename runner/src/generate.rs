//! `BIN generate`: decoding with the model compiled into a built binary, as `archc generate
//! --inputs` does it (token ids in, `generated_ids` and `step_logits` out).

use std::collections::HashMap;
use std::path::PathBuf;

use archc_runtime::generation::{
    decode, last_rows, prompt_rows, special_beside, Decoding, Generated, Pass, Stateful, STEPS,
};
use archc_runtime::sampling::Sampling;
use archc_runtime::state::State;
use archc_runtime::{
    CpuKernels, DType, Executor, Generation, Launcher, Plan, StatefulPlans, Tensor, TensorFile,
    WeightSource,
};

/// The usage of `BIN generate`.
pub const USAGE: &str = "usage: BIN generate --inputs IN.safetensors [--weights W]... \
[--outputs OUT.safetensors] [--max-new-tokens N] [--min-new-tokens M] [--temperature T] \
[--top-k K] [--top-p P] [--seed S] [--eos-token-id ID]... [--threads N]

Appends up to --max-new-tokens (default 32) tokens to each row of IN's `input_ids` [batch, t],
greedily unless --temperature is above 0. A row stops at an end-of-sequence token:
--eos-token-id, else the GGUF file's, else `eos_token_id` of a config.json beside the weights.
--outputs gets `generated_ids` and `step_logits`, as `archc generate` writes them.";

/// The flags of `BIN generate`.
pub struct Options {
    /// Weights files.
    pub weights: Vec<PathBuf>,
    /// The prompts' ids.
    pub inputs: PathBuf,
    /// Where the tokens and logits go.
    pub outputs: Option<PathBuf>,
    /// How to decode (its `eos` as given; empty: found beside the weights).
    pub decoding: Decoding,
    /// Threads for the kernels.
    pub threads: Option<usize>,
}

/// Parses the flags after `generate`.
pub fn parse(args: &[String]) -> Result<Options, String> {
    let mut inputs = None;
    let mut o = Options {
        weights: Vec::new(),
        inputs: PathBuf::new(),
        outputs: None,
        decoding: Decoding {
            max_new: 32,
            min_new: 0,
            sampling: Sampling::default(),
            seed: 0,
            eos: Vec::new(),
            pad: None,
            keep_logits: false,
        },
        threads: None,
    };
    const FLAGS: &[&str] = &[
        "--weights",
        "--inputs",
        "--outputs",
        "--max-new-tokens",
        "--min-new-tokens",
        "--top-k",
        "--seed",
        "--eos-token-id",
        "--temperature",
        "--top-p",
        "--threads",
    ];
    for (flag, value) in crate::flags(args, FLAGS)? {
        let flag = flag.as_str();
        let number = |what: &str| format!("{flag} needs {what}, found `{value}`");
        let d = &mut o.decoding;
        match flag {
            "--weights" => o.weights.push(value.into()),
            "--inputs" if inputs.is_none() => inputs = Some(PathBuf::from(value)),
            "--outputs" if o.outputs.is_none() => o.outputs = Some(value.into()),
            "--inputs" | "--outputs" => return Err(format!("{flag} given more than once")),
            "--max-new-tokens" => d.max_new = value.parse().map_err(|_| number("a count"))?,
            "--min-new-tokens" => d.min_new = value.parse().map_err(|_| number("a count"))?,
            "--top-k" => d.sampling.top_k = value.parse().map_err(|_| number("a count"))?,
            "--seed" => d.seed = value.parse().map_err(|_| number("an integer"))?,
            "--eos-token-id" => d.eos.push(value.parse().map_err(|_| number("a token id"))?),
            "--temperature" => match value.parse::<f32>() {
                Ok(t) if t.is_finite() && t >= 0.0 => d.sampling.temperature = t,
                _ => return Err(number("a number ≥ 0")),
            },
            "--top-p" => match value.parse::<f32>() {
                Ok(p) if p > 0.0 && p <= 1.0 => d.sampling.top_p = p,
                _ => return Err(number("a number in (0, 1]")),
            },
            "--threads" => match value.parse::<usize>() {
                Ok(n) if n >= 1 => o.threads = Some(n),
                _ => return Err(number("a positive integer")),
            },
            _ => return Err(format!("unknown argument `{flag}`")),
        }
    }
    o.inputs = inputs.ok_or("--inputs is required: a safetensors file with `input_ids`")?;
    o.decoding.keep_logits = o.outputs.is_some();
    Ok(o)
}

/// A causal model's derived prefill and step, with their kernels.
pub type Steps<'p> = (&'p StatefulPlans, CpuKernels, CpuKernels);

/// Generates with the plan's kernels (with `steps`, by the derived prefill and step); returns
/// the text to print.
pub fn run(
    plan: &Plan,
    kernels: &dyn Launcher,
    steps: Option<&Steps>,
    o: &Options,
) -> Result<String, String> {
    let (input, output) = match &plan.generation {
        Generation::Causal { input, output } => (input.clone(), output.clone()),
        Generation::Refused(why) => return Err(format!("this binary cannot generate: {why}")),
        Generation::Unknown => {
            return Err("this binary was built before `generate` existed; rebuild it".into())
        }
    };
    let file = TensorFile::open(&o.inputs).map_err(|e| e.to_string())?;
    let ids = file
        .read_any(&input)
        .map_err(|e| format!("{}: {e}", o.inputs.display()))?;
    let rows = prompt_rows(&ids).map_err(|e| format!("{}: {e}", o.inputs.display()))?;
    let mut d = o.decoding.clone();
    let special = special_beside(&o.weights);
    if d.eos.is_empty() {
        d.eos = special.eos;
    }
    d.pad = special.pad;
    let (g, state) = match steps {
        Some(steps) => {
            let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
            let model = (input.as_str(), output.as_str(), ids.dtype);
            with_state(steps, model, longest + d.max_new, rows, &d, &o.weights)?
        }
        None => {
            let weights = WeightSource::open(plan, &o.weights, d.seed)?;
            let mut exec = Executor::new(plan, |n, t, s| weights.weight(n, t, s))
                .map_err(|e| e.to_string())?;
            let mut forward = |context: &[Vec<i64>]| -> Result<Vec<Vec<f32>>, String> {
                let flat: Vec<i64> = context.iter().flatten().copied().collect();
                let t = Tensor::int(ids.dtype, vec![context.len(), context[0].len()], flat);
                let inputs = HashMap::from([(input.clone(), t)]);
                let out = exec
                    .run(kernels, &inputs, &HashMap::new())
                    .map_err(|e| e.to_string())?;
                last_rows(&out, &output, context.len())
            };
            (decode(&mut forward, rows, &d, &mut |_| {})?, String::new())
        }
    };
    let mut text = String::new();
    if let Some(path) = &o.outputs {
        text.push_str(&g.write(path)?);
    }
    text.push_str(&g.rows_text());
    text.push_str(&g.summary(&d.eos));
    text.push_str(&state);
    Ok(text)
}

/// Decodes `rows` by the derived prefill and step, keeping a State of at most `capacity`
/// positions; returns the generation and a line on the State.
fn with_state(
    (plans, prefill_kernels, step_kernels): &Steps,
    (input, output, dtype): (&str, &str, DType),
    capacity: usize,
    rows: Vec<Vec<i64>>,
    d: &Decoding,
    weights: &[PathBuf],
) -> Result<(Generated, String), String> {
    let open = |plan: &Plan| WeightSource::open(plan, weights, d.seed);
    let (first_weights, next_weights) = (open(&plans.prefill)?, open(&plans.step)?);
    let mut first = Executor::new(&plans.prefill, |n, t, s| first_weights.weight(n, t, s))
        .map_err(|e| e.to_string())?;
    first.prepare(prefill_kernels).map_err(|e| e.to_string())?;
    // The step's weights, loaded and prepared alike, are the prefill's.
    let source = |n: &str, t, s: &[usize]| next_weights.weight(n, t, s);
    let mut next = Executor::sharing(&plans.step, source, &mut first, &plans.shared)
        .map_err(|e| e.to_string())?;
    let mut run = |pass: Pass, inputs: &HashMap<String, Tensor>, dims: &HashMap<String, i64>| {
        match pass {
            Pass::Prefill => first.run(prefill_kernels, inputs, dims),
            Pass::Step => next.run(step_kernels, inputs, dims),
        }
        .map_err(|e| e.to_string())
    };
    let state = State::new(plans.parts.clone(), capacity);
    let mut model = Stateful::new(&mut run, state, input, output, dtype);
    let mut g = decode(
        &mut |context: &[Vec<i64>]| model.forward(context),
        rows,
        d,
        &mut |_| {},
    )?;
    g.how = STEPS;
    Ok((g, model.state_summary()))
}
