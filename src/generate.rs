//! `archc generate`: autoregressive decoding of a causal language model, one token per row
//! and step, until `--max-new-tokens` or every row has produced an end-of-sequence token.
//!
//! Each step runs the model's sequence plan on the whole context so far and takes the logits
//! of its last position: the prefill and the step are the same plan. The compiler does not yet
//! derive a recurrent step with a State (KV cache, conv and SSM states), so a step costs a
//! forward pass over the context rather than over one position.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use archc_compiler::codegen::backend::BackendKind;
use archc_compiler::graph::noncausal;
use archc_compiler::graph::Graph;
use archc_compiler::interp::{bind_dims, interpret};
use archc_compiler::passes::{lower_optimized_for, optimize, PassOptions};
use archc_runtime::{write_tensors, DType, Data, SplitMix64, Tensor, TensorFile, WeightSource};

use crate::progress;
use crate::run::Engine;
use crate::sampling::Sampling;
use crate::text::Text;
use archc_runtime::gguf::GgufFile;

/// Options of one generation.
pub struct GenerateOptions {
    /// The weights (safetensors files, or one GGUF file).
    pub weights: Vec<PathBuf>,
    /// The prompts.
    pub prompt: Prompt,
    /// Where `generated_ids` and `step_logits` go.
    pub outputs: Option<PathBuf>,
    /// The most tokens each row gets.
    pub max_new: usize,
    /// End-of-sequence tokens are masked until each row has this many.
    pub min_new: usize,
    /// How tokens are chosen.
    pub sampling: Sampling,
    /// Seed of the sampling.
    pub seed: u64,
    /// End-of-sequence token ids given on the command line (else found beside the weights).
    pub eos: Vec<i64>,
    /// The executor.
    pub engine: Engine,
    /// Which passes run before lowering.
    pub passes: PassOptions,
    /// How many threads the kernels use.
    pub threads: usize,
}

/// Where the prompts come from.
pub enum Prompt {
    /// A safetensors file's `input_ids`, i32 or i64 `[batch, t]`.
    Ids(PathBuf),
    /// One text, tokenized (and with `chat`, put in the model's chat template first).
    Text {
        /// The text.
        text: String,
        /// Whether to apply the chat template.
        chat: bool,
        /// A `tokenizer.json` (default: the GGUF weights' tokenizer).
        tokenizer: Option<PathBuf>,
    },
}

/// The tokens and logits of a generation.
struct Generated {
    /// Per row, the tokens chosen.
    ids: Vec<Vec<i64>>,
    /// Per step, per row, the raw logits the token was chosen from.
    logits: Vec<Vec<Vec<f32>>>,
    /// The first step (the prompt) and the rest.
    prefill: Duration,
    decode: Duration,
}

/// Generates from the prompts in `o.inputs`; returns the text to print.
pub fn generate(g: &Graph, o: &GenerateOptions) -> Result<String, String> {
    let input = token_input(g)?;
    causal(g, &input)?;
    let output = logits_output(g)?;
    if g.inputs.len() > 1 {
        return Err(format!(
            "model `{}` has inputs besides `{input}`; generate feeds only the tokens",
            g.name
        ));
    }
    let (rows, dtype, text) = prompts(&o.prompt, &input, &o.weights)?;
    let eos = if o.eos.is_empty() {
        eos_beside(&o.weights)
    } else {
        o.eos.clone()
    };
    let as_inputs = |context: &[Vec<i64>]| {
        let flat: Vec<i64> = context.iter().flatten().copied().collect();
        let ids = Tensor::int(dtype, vec![context.len(), context[0].len()], flat);
        HashMap::from([(input.clone(), ids)])
    };
    let kind = match o.engine {
        Engine::Native(kind) => kind,
        Engine::Interp => {
            // The interpreter binds the weights itself; its plan only names them.
            let plan = lower_optimized_for(g, &o.passes, &BackendKind::Cranelift.target())
                .map_err(|e| e.to_string())?
                .plan;
            let mut weights = WeightSource::open(&plan, &o.weights, o.seed)?;
            let mut forward = |context: &[Vec<i64>]| -> Result<Vec<Vec<f32>>, String> {
                let inputs = as_inputs(context);
                let dims = bind_dims(g, &inputs, &HashMap::new()).map_err(|e| e.to_string())?;
                let out = interpret(g, &dims, &inputs, &mut weights).map_err(|e| e.to_string())?;
                last_rows(&out.into_iter().collect::<Vec<_>>(), &output, context.len())
            };
            let result = decode(&mut forward, rows, (&eos, text.as_ref()), o)?;
            return report(&result, o, &eos);
        }
    };
    let lowered = progress::spin("lowering", || {
        lower_optimized_for(g, &o.passes, &kind.target())
    })
    .map_err(|e| e.to_string())?;
    let jit =
        progress::spin("compiling", || kind.jit(&lowered, o.threads)).map_err(|e| e.to_string())?;
    let weights = WeightSource::open(&lowered.plan, &o.weights, o.seed)?;
    let mut exec = progress::load_weights(&lowered.plan, &weights)?;
    exec.prepare(jit.as_ref()).map_err(|e| e.to_string())?;
    let mut forward = |context: &[Vec<i64>]| -> Result<Vec<Vec<f32>>, String> {
        let out = exec
            .run(jit.as_ref(), &as_inputs(context), &HashMap::new())
            .map_err(|e| e.to_string())?;
        last_rows(&out, &output, context.len())
    };
    let result = decode(&mut forward, rows, (&eos, text.as_ref()), o)?;
    report(&result, o, &eos)
}

/// Refuses a model whose output at a position reads later positions, naming the operation
/// (found on the fully fused graph, where attention's masks are known as key ranges).
fn causal(g: &Graph, input: &str) -> Result<(), String> {
    let fused = optimize(g, &PassOptions::all()).map_err(|e| e.to_string())?;
    let first = fused
        .outputs
        .keys()
        .find_map(|output| noncausal(&fused, input, output));
    match first {
        None => Ok(()),
        Some(at) => Err(format!(
            "model `{}` is not causal: {} reads {}, and generation adds one position at a time",
            g.name,
            at.origin,
            match at.by {
                Some(n) => format!("{n} positions ahead of its own"),
                None => "every later position".to_string(),
            }
        )),
    }
}

/// The prompts' rows of ids and their dtype, and the tokenizer that made them from text.
type Prompts = (Vec<Vec<i64>>, DType, Option<Text>);

/// The prompts of `p`, for the model's token input `input`.
fn prompts(p: &Prompt, input: &str, weights: &[PathBuf]) -> Result<Prompts, String> {
    match p {
        Prompt::Ids(path) => {
            let file = TensorFile::open(path).map_err(|e| e.to_string())?;
            let t = file
                .read_any(input)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let rows = prompt_rows(&t).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok((rows, t.dtype, None))
        }
        Prompt::Text {
            text,
            chat,
            tokenizer,
        } => {
            let tok =
                match (tokenizer, weights) {
                    (Some(path), _) => Text::from_file(path)?,
                    (None, [w])
                        if w.extension()
                            .is_some_and(|e| e.eq_ignore_ascii_case("gguf")) =>
                    {
                        Text::from_gguf(&GgufFile::open(w).map_err(|e| e.to_string())?)?
                    }
                    _ => return Err(
                        "--prompt needs a tokenizer: --tokenizer tokenizer.json, or GGUF weights"
                            .into(),
                    ),
                };
            let text = if *chat { tok.chat(text)? } else { text.clone() };
            let ids = tok.encode(&text)?;
            if ids.is_empty() {
                return Err("the prompt has no tokens".into());
            }
            Ok((vec![ids], DType::I64, Some(tok)))
        }
    }
}

/// The model's token input: an integer input `[batch, seq]` (named `input_ids` when there
/// are several).
fn token_input(g: &Graph) -> Result<String, String> {
    let ints: Vec<&String> = g
        .inputs
        .iter()
        .filter(|(_, n)| {
            let t = g.ty(**n);
            t.dtype.is_int() && t.rank() == 2
        })
        .map(|(name, _)| name)
        .collect();
    let input = match ints.as_slice() {
        [one] => (*one).clone(),
        _ if g.inputs.contains_key("input_ids") => "input_ids".to_string(),
        _ => {
            return Err(format!(
                "model `{}` has no token input: generate needs one integer input [batch, seq] (or one named `input_ids`)",
                g.name
            ))
        }
    };
    Ok(input)
}

/// The output tokens are chosen from: `logits` (or the only output), `[batch, seq, vocab]`.
fn logits_output(g: &Graph) -> Result<String, String> {
    let output = if g.outputs.contains_key("logits") || g.outputs.len() != 1 {
        "logits".to_string()
    } else {
        g.outputs.keys().next().cloned().unwrap_or_default()
    };
    match g.outputs.get(&output) {
        Some(&n) if g.ty(n).rank() == 3 && g.ty(n).dtype.is_float() => Ok(output),
        _ => Err(format!(
            "model `{}` has no output `logits` [batch, seq, vocab] to choose tokens from",
            g.name
        )),
    }
}

/// The prompts as rows of token ids.
fn prompt_rows(t: &Tensor) -> Result<Vec<Vec<i64>>, String> {
    let Data::I64(v) = &t.data else {
        return Err("input_ids must be i32 or i64".into());
    };
    match t.shape[..] {
        [b, len] if b > 0 && len > 0 => Ok(v.chunks(len).map(<[i64]>::to_vec).collect()),
        _ => Err(format!(
            "input_ids must be [batch, t] with batch and t ≥ 1, not {:?}",
            t.shape
        )),
    }
}

/// The last position's logits of each row.
fn last_rows(out: &[(String, Tensor)], output: &str, rows: usize) -> Result<Vec<Vec<f32>>, String> {
    let t = out
        .iter()
        .find(|(n, _)| n == output)
        .map(|(_, t)| t)
        .ok_or_else(|| format!("the model did not produce `{output}`"))?;
    let vocab = *t.shape.last().unwrap_or(&0);
    let values = t.to_f32();
    let per_row = values.len() / rows.max(1);
    Ok((0..rows)
        .map(|r| values[r * per_row + per_row - vocab..(r + 1) * per_row].to_vec())
        .collect())
}

/// One forward pass: the rows of token ids so far → the last position's logits of each.
type Forward<'a> = dyn FnMut(&[Vec<i64>]) -> Result<Vec<Vec<f32>>, String> + 'a;

/// The decoding loop: choose, append, stop rows at an end-of-sequence token (they are fed
/// that token from then on, as transformers pads them), stop when all rows have.
fn decode(
    forward: &mut Forward,
    mut context: Vec<Vec<i64>>,
    (eos, text): (&[i64], Option<&Text>),
    o: &GenerateOptions,
) -> Result<Generated, String> {
    let rows = context.len();
    let mut rng = SplitMix64::new(o.seed, "generate");
    let mut done = vec![false; rows];
    let mut g = Generated {
        ids: vec![Vec::new(); rows],
        logits: Vec::new(),
        prefill: Duration::ZERO,
        decode: Duration::ZERO,
    };
    let pad = eos.first().copied().unwrap_or(0);
    let mut stream = Stream::default();
    for step in 0..o.max_new {
        let started = Instant::now();
        let logits = forward(&context)?;
        let banned: Vec<usize> = if step < o.min_new {
            eos.iter()
                .filter_map(|&e| usize::try_from(e).ok())
                .collect()
        } else {
            Vec::new()
        };
        for (r, row) in logits.iter().enumerate() {
            let token = if done[r] {
                pad
            } else {
                o.sampling.choose(row, &banned, &mut rng) as i64
            };
            g.ids[r].push(token);
            context[r].push(token);
            done[r] = done[r] || eos.contains(&token);
        }
        g.logits.push(logits);
        let spent = started.elapsed();
        if step == 0 {
            g.prefill = spent;
        } else {
            g.decode += spent;
        }
        if let (1, Some(t)) = (rows, text) {
            stream.show(&t.decode(&g.ids[0]));
        }
        if done.iter().all(|&d| d) {
            break;
        }
    }
    if text.is_some() {
        println!();
    }
    Ok(g)
}

/// Text printed as it is generated.
#[derive(Default)]
struct Stream {
    /// What is on the screen.
    shown: String,
}

impl Stream {
    /// Prints what `text` adds to what is shown. A token that ends inside a character decodes
    /// to a replacement character until the next one completes it: such text waits.
    fn show(&mut self, text: &str) {
        if let Some(new) = text.strip_prefix(self.shown.as_str()) {
            if !new.ends_with('\u{fffd}') {
                let mut out = std::io::stdout();
                let _ = write!(out, "{new}");
                let _ = out.flush();
                self.shown = text.to_string();
            }
        }
    }
}

/// Writes the outputs (or not) and says what was generated, how fast.
fn report(g: &Generated, o: &GenerateOptions, eos: &[i64]) -> Result<String, String> {
    let (rows, n) = (g.ids.len(), g.logits.len());
    let mut text = String::new();
    if let Some(path) = &o.outputs {
        let ids: Vec<i64> = g.ids.iter().flatten().copied().collect();
        let vocab = g.logits.first().and_then(|s| s.first()).map_or(0, Vec::len);
        let mut logits = Vec::with_capacity(rows * n * vocab);
        for r in 0..rows {
            for step in &g.logits {
                logits.extend(&step[r]);
            }
        }
        let tensors = [
            (
                "generated_ids".to_string(),
                Tensor::int(DType::I32, vec![rows, n], ids),
            ),
            (
                "step_logits".to_string(),
                Tensor::f32(vec![rows, n, vocab], logits),
            ),
        ];
        write_tensors(path, &tensors).map_err(|e| e.to_string())?;
        text.push_str(&format!(
            "wrote generated_ids and step_logits to {}\n",
            path.display()
        ));
    }
    // Text prompts had their answer printed as it came.
    if let Prompt::Ids(_) = o.prompt {
        for (r, ids) in g.ids.iter().enumerate() {
            let shown: Vec<String> = ids.iter().map(i64::to_string).collect();
            text.push_str(&format!("row {r}: {}\n", shown.join(" ")));
        }
    }
    let per_s = |tokens: usize, d: Duration| tokens as f64 / d.as_secs_f64().max(1e-9);
    text.push_str(&format!(
        "{n} steps × {rows} rows ({}); first step {:.1} ms, then {:.1} tokens/s (each step reruns the whole context)\n",
        if eos.is_empty() {
            "no end-of-sequence token known: --eos-token-id sets one".to_string()
        } else {
            format!("end of sequence: {eos:?}")
        },
        g.prefill.as_secs_f64() * 1e3,
        per_s(rows * n.saturating_sub(1), g.decode),
    ));
    Ok(text)
}

/// End-of-sequence ids from what sits beside the weights: a GGUF file's
/// `tokenizer.ggml.eos_token_id`, or `eos_token_id` (a number or a list) of a
/// `generation_config.json` or `config.json` in the weights' directory.
pub fn eos_beside(weights: &[PathBuf]) -> Vec<i64> {
    let Some(first) = weights.first() else {
        return Vec::new();
    };
    if first
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        return archc_runtime::gguf::GgufFile::open(first)
            .ok()
            .and_then(|f| f.int("tokenizer.ggml.eos_token_id"))
            .into_iter()
            .collect();
    }
    let dir = first.parent().unwrap_or(Path::new("."));
    for name in ["generation_config.json", "config.json"] {
        let Ok(text) = archc_runtime::files::read_text(&dir.join(name), 1 << 20) else {
            continue;
        };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        match json.get("eos_token_id") {
            Some(serde_json::Value::Number(n)) => return n.as_i64().into_iter().collect(),
            Some(serde_json::Value::Array(a)) => {
                return a.iter().filter_map(serde_json::Value::as_i64).collect()
            }
            _ => {}
        }
    }
    Vec::new()
}
