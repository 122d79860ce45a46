//! `archc generate`: autoregressive decoding of a causal language model, one token per row
//! and step, until `--max-new-tokens` or every row has produced an end-of-sequence token.
//!
//! The compiler derives the model's prefill and recurrent step (`archc_compiler::step`); the
//! prefill runs the prompt and fills the State (KV caches, convolution windows, scan carries),
//! and each step runs only the new token against it. A model whose step cannot be derived (or
//! `--rerun`) reruns its sequence plan over the whole context at every step instead.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;

use archc_compiler::graph::noncausal;
use archc_compiler::graph::Graph;
use archc_compiler::interp::{bind_dims, interpret};
use archc_compiler::lower::{same_weights, Lowered};
use archc_compiler::passes::{lower_optimized_for, optimize, PassOptions};
use archc_compiler::step::{derive, Derived, PartKind, Phase, StatePart};
use archc_runtime::state::{PartLayout, State, Update};
use archc_runtime::{
    block_formats, DType, Executor, Generation, Launcher, Tensor, TensorFile, WeightSource,
};

use crate::run::Engine;
use crate::text::Text;
use crate::{device, progress};
use archc_runtime::generation::{
    decode, last_rows, prompt_rows, special_beside, Decoding, Forward, Generated, Pass, Stateful,
    RERUNS, STEPS,
};
use archc_runtime::gguf::GgufFile;
use archc_runtime::ragged::decode_ragged;
use archc_runtime::sampling::Sampling;

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
    /// Where the kernels run: the CPU's code, the interpreter, the GPU or its simulator.
    pub engine: Engine,
    /// Which passes run before lowering.
    pub passes: PassOptions,
    /// How many threads the kernels use.
    pub threads: usize,
    /// The most positions the State holds (default: the longest prompt and `max_new`).
    pub max_context: Option<usize>,
    /// Rerun the whole context at every step instead of the derived step.
    pub rerun: bool,
    /// Dequantize a GGUF checkpoint's blocks as they load instead of keeping them.
    pub f32_weights: bool,
}

/// Where the prompts come from.
pub enum Prompt {
    /// A safetensors file's `input_ids`, i32 or i64 `[batch, t]`.
    Ids(PathBuf),
    /// One text, tokenized (and with `chat`, put in the model's chat template first).
    Text {
        /// The texts (they may differ in length: see `archc_runtime::ragged`).
        texts: Vec<String>,
        /// Whether to apply the chat template.
        chat: bool,
        /// A `tokenizer.json` (default: the GGUF weights' tokenizer).
        tokenizer: Option<PathBuf>,
    },
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
    let (groups, dtype, text) = prompts(&o.prompt, &input, &o.weights)?;
    let special = special_beside(&o.weights);
    let eos = if o.eos.is_empty() {
        special.eos
    } else {
        o.eos.clone()
    };
    let d = Decoding {
        max_new: o.max_new,
        min_new: o.min_new,
        sampling: o.sampling.clone(),
        seed: o.seed,
        eos: eos.clone(),
        pad: special.pad,
        keep_logits: o.outputs.is_some(),
    };
    let longest = groups.iter().flatten().map(Vec::len).max().unwrap_or(0);
    let model = Model {
        g,
        input: &input,
        output: &output,
        dtype,
        capacity: o.max_context.unwrap_or(longest + o.max_new),
    };
    let steps = if o.rerun {
        None
    } else {
        match derive(g, &input, &output, Phase::Prefill)
            .and_then(|p| Ok((p, derive(g, &input, &output, Phase::Step)?)))
        {
            Ok(both) => Some(both),
            Err(e) => {
                eprintln!("note: {e}; {RERUNS}");
                None
            }
        }
    };
    let (result, state) = match steps {
        Some((prefill, step)) => {
            let prefix = shared_prefix(&groups);
            let rows = single_rows(&groups);
            // Stacking States needs every part's first axis to be the batch.
            let batch = g.inputs.get(&input).and_then(|&n| g.ty(n).shape.first());
            let stackable = step.parts.iter().all(|p| p.shape.first() == batch);
            with_state(&model, o, (&prefill, &step), &prefix, |m| match rows {
                Some(rows) if stackable => run_ragged(m, &rows, &d, text.as_ref()),
                _ => run_groups(&mut |c| m.forward(c), groups, &d, text.as_ref()),
            })?
        }
        None => (
            rerunning(&model, o, |f| run_groups(f, groups, &d, text.as_ref()))?,
            String::new(),
        ),
    };
    let mut out = report(&result, o, &eos)?;
    out.push_str(&state);
    Ok(out)
}

/// What generation runs: the model, its token input and output.
struct Model<'g> {
    g: &'g Graph,
    input: &'g str,
    output: &'g str,
    /// The prompts' integer type.
    dtype: DType,
    /// The most positions the State holds.
    capacity: usize,
}

/// Decodes with `body` on a forward pass that reruns the sequence plan on the whole context.
fn rerunning(
    m: &Model,
    o: &GenerateOptions,
    body: impl FnOnce(&mut Forward) -> Result<Generated, String>,
) -> Result<Generated, String> {
    let as_inputs = |context: &[Vec<i64>]| {
        let flat: Vec<i64> = context.iter().flatten().copied().collect();
        let ids = Tensor::int(m.dtype, vec![context.len(), context[0].len()], flat);
        HashMap::from([(m.input.to_string(), ids)])
    };
    let compiled = Compiled::new(m.g, o)?;
    let mut run = compiled.runner(o)?;
    let mut forward = |context: &[Vec<i64>]| -> Result<Vec<Vec<f32>>, String> {
        let out = run(&as_inputs(context), &HashMap::new())?;
        last_rows(&out, m.output, context.len())
    };
    body(&mut forward)
}

/// Decodes with `body` on the derived prefill and step and a State; returns the generation
/// and a line on the State's size.
fn with_state(
    m: &Model,
    o: &GenerateOptions,
    (prefill, step): (&Derived, &Derived),
    prefix: &[i64],
    body: impl FnOnce(&mut Stateful) -> Result<Generated, String>,
) -> Result<(Generated, String), String> {
    let (first, next) = (
        Compiled::new(&prefill.graph, o)?,
        Compiled::new(&step.graph, o)?,
    );
    let (mut run_prefill, mut run_step) = prefill_and_step(&first, &next, o)?;
    let mut run =
        |pass: Pass, inputs: &HashMap<String, Tensor>, dims: &HashMap<String, i64>| match pass {
            Pass::Prefill => run_prefill(inputs, dims),
            Pass::Step => run_step(inputs, dims),
        };
    let layout = step.parts.iter().map(part_layout).collect();
    let state = State::new(layout, m.capacity);
    let mut model = Stateful::new(&mut run, state, m.input, m.output, m.dtype);
    let mut notes = String::new();
    if !prefix.is_empty() {
        let started = std::time::Instant::now();
        model.prime(&[prefix.to_vec()])?;
        notes = format!(
            "the prompts' first {} tokens were run once ({:.1} ms), and each prompt stepped on from their State\n",
            prefix.len(),
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    let mut g = body(&mut model)?;
    g.how = STEPS;
    notes.push_str(&model.state_summary());
    Ok((g, notes))
}

/// The prompts, when there are several and each is one row (texts, of any lengths).
fn single_rows(groups: &[Vec<Vec<i64>>]) -> Option<Vec<Vec<i64>>> {
    let rows: Option<Vec<Vec<i64>>> = groups
        .iter()
        .map(|g| match g.as_slice() {
            [row] => Some(row.clone()),
            _ => None,
        })
        .collect();
    rows.filter(|r| r.len() > 1)
}

/// The tokens every prompt starts with (a chat template's system turn), when there are
/// several one-row prompts and each has at least one token past them; else none.
fn shared_prefix(groups: &[Vec<Vec<i64>>]) -> Vec<i64> {
    let Some(rows) = single_rows(groups) else {
        return Vec::new();
    };
    let shortest = rows.iter().map(|r| r.len()).min().unwrap_or(0);
    let common = (0..shortest)
        .take_while(|&i| rows.iter().all(|r| r[i] == rows[0][i]))
        .count();
    // Each prompt keeps a token of its own to step on.
    rows[0][..common.min(shortest.saturating_sub(1))].to_vec()
}

/// The runtime's form of a State part.
pub fn part_layout(p: &StatePart) -> PartLayout {
    PartLayout {
        name: p.name.clone(),
        update: match p.kind {
            PartKind::Append { axis } => Update::Append(axis),
            PartKind::Replace { .. } => Update::Replace,
        },
    }
}

/// Runs a graph on inputs and explicit dims.
type Runner<'a> = Box<
    dyn FnMut(
            &HashMap<String, Tensor>,
            &HashMap<String, i64>,
        ) -> Result<Vec<(String, Tensor)>, String>
        + 'a,
>;

/// A graph compiled for an engine, with what its executor borrows.
struct Compiled<'g> {
    g: &'g Graph,
    lowered: Lowered,
    /// The native code (none for the interpreter).
    jit: Option<Box<dyn Launcher>>,
    weights: WeightSource,
}

impl<'g> Compiled<'g> {
    /// Lowers and compiles `g` for `o`'s engine and opens its weights.
    fn new(g: &'g Graph, o: &GenerateOptions) -> Result<Compiled<'g>, String> {
        let gpu = match o.engine {
            Engine::Cuda(arch) => Some(device::open_gpu(arch)?),
            _ => None,
        };
        // The interpreter binds the weights itself; its plan only names them.
        let target = device::target(o.engine, gpu.as_ref());
        let blocks = match o.f32_weights {
            true => Default::default(),
            false => block_formats(&o.weights, g.params.keys())?,
        };
        let passes = o.passes.clone().with_blocks(blocks);
        let lowered = progress::spin("lowering", || lower_optimized_for(g, &passes, &target))
            .map_err(|e| e.to_string())?;
        let jit = match o.engine {
            Engine::Interp => None,
            e => Some(progress::spin("compiling", || {
                device::launcher(e, &lowered, o.threads, gpu.as_ref())
            })?),
        };
        let weights = WeightSource::open(&lowered.plan, &o.weights, o.seed)?;
        Ok(Compiled {
            g,
            lowered,
            jit,
            weights,
        })
    }

    /// Loads the weights and returns what runs the graph.
    fn runner(&self, o: &GenerateOptions) -> Result<Runner<'_>, String> {
        let g = self.g;
        let Some(jit) = &self.jit else {
            let mut weights = WeightSource::open(&self.lowered.plan, &o.weights, o.seed)?;
            return Ok(Box::new(move |inputs, explicit| {
                let dims = bind_dims(g, inputs, explicit).map_err(|e| e.to_string())?;
                let out = interpret(g, &dims, inputs, &mut weights).map_err(|e| e.to_string())?;
                Ok(out.into_iter().collect())
            }));
        };
        let exec = self.executor(jit.as_ref(), None)?;
        Ok(native(exec, jit.as_ref()))
    }

    /// Loads the weights (sharing a donor's alike) and runs the prepare steps.
    fn executor(
        &self,
        jit: &dyn Launcher,
        donor: Option<progress::Donor<'_, '_>>,
    ) -> Result<Executor<'_>, String> {
        let mut exec = progress::load_weights(&self.lowered.plan, &self.weights, donor)?;
        exec.prepare(jit).map_err(|e| e.to_string())?;
        Ok(exec)
    }
}

/// Runs an executor's plan on native code.
fn native<'a>(mut exec: Executor<'a>, jit: &'a dyn Launcher) -> Runner<'a> {
    Box::new(move |inputs, explicit| exec.run(jit, inputs, explicit).map_err(|e| e.to_string()))
}

/// Runners of a prefill and a step; natively, the step's executor shares the prefill's
/// weights (loaded and packed alike), so the model's weights are held once in host memory.
/// (On a GPU each launcher keeps its own copies there: twice.)
fn prefill_and_step<'a>(
    first: &'a Compiled,
    next: &'a Compiled,
    o: &'a GenerateOptions,
) -> Result<(Runner<'a>, Runner<'a>), String> {
    let (Some(a), Some(b)) = (&first.jit, &next.jit) else {
        return Ok((first.runner(o)?, next.runner(o)?));
    };
    let mut prefill = first.executor(a.as_ref(), None)?;
    let pairs = same_weights(&first.lowered, &next.lowered);
    let step = next.executor(b.as_ref(), Some((&mut prefill, &pairs)))?;
    Ok((native(prefill, a.as_ref()), native(step, b.as_ref())))
}

/// The derived step of a causal model `g` (for `dump --stage step`).
pub fn derive_step(g: &Graph, phase: Phase) -> Result<Derived, String> {
    let input = token_input(g)?;
    causal(g, &input)?;
    let output = logits_output(g)?;
    derive(g, &input, &output, phase).map_err(|e| e.to_string())
}

/// Whether a built binary of `g` can generate, and from which input and output.
pub fn generation(g: &Graph) -> Generation {
    let found = token_input(g).and_then(|input| {
        causal(g, &input)?;
        Ok((input, logits_output(g)?))
    });
    match found {
        Ok((input, output)) if g.inputs.len() == 1 => Generation::Causal { input, output },
        Ok((input, _)) => Generation::Refused(format!(
            "model `{}` has inputs besides `{input}`; generate feeds only the tokens",
            g.name
        )),
        Err(e) => Generation::Refused(e),
    }
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

/// The prompts' rows of ids in groups decoded together (all the rows of `--inputs`, or one
/// text each), their dtype, and the tokenizer that made them from text.
type Prompts = (Vec<Vec<Vec<i64>>>, DType, Option<Text>);

/// The prompts of `p`, for the model's token input `input`.
fn prompts(p: &Prompt, input: &str, weights: &[PathBuf]) -> Result<Prompts, String> {
    match p {
        Prompt::Ids(path) => {
            let file = TensorFile::open(path).map_err(|e| e.to_string())?;
            let t = file
                .read_any(input)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let rows = prompt_rows(&t).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok((vec![rows], t.dtype, None))
        }
        Prompt::Text {
            texts,
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
            let mut groups = Vec::with_capacity(texts.len());
            for text in texts {
                let text = if *chat { tok.chat(text)? } else { text.clone() };
                let ids = tok.encode(&text)?;
                if ids.is_empty() {
                    return Err(format!("the prompt `{text}` has no tokens"));
                }
                groups.push(vec![ids]);
            }
            Ok((groups, DType::I64, Some(tok)))
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

/// Decodes one-row prompts of any lengths as one batch ([`decode_ragged`]), then prints each
/// text's answer under a header.
fn run_ragged(
    model: &mut Stateful,
    rows: &[Vec<i64>],
    d: &Decoding,
    text: Option<&Text>,
) -> Result<Generated, String> {
    let (g, together) = decode_ragged(model, rows, d)?;
    let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
    println!(
        "{together} of {} prompts decoded as one batch, each after running alone until as \
         long as the longest ({longest} tokens)",
        rows.len()
    );
    if let Some(t) = text {
        for (i, ids) in g.ids.iter().enumerate() {
            // Up to its end of sequence: what follows is padding.
            let end = ids
                .iter()
                .position(|x| d.eos.contains(x))
                .map_or(ids.len(), |e| e + 1);
            println!("[{i}]\n{}", t.decode(&ids[..end]));
        }
    }
    Ok(g)
}

/// Decodes each group of rows in turn (a header before each of several texts) and gathers the
/// rows.
fn run_groups(
    forward: &mut Forward,
    groups: Vec<Vec<Vec<i64>>>,
    d: &Decoding,
    text: Option<&Text>,
) -> Result<Generated, String> {
    let many = groups.len() > 1;
    let mut parts = Vec::with_capacity(groups.len());
    for (i, rows) in groups.into_iter().enumerate() {
        if many {
            println!("[{i}]");
        }
        parts.push(run_decode(forward, rows, d, text)?);
    }
    Ok(Generated::concat(
        parts,
        d.pad.or(d.eos.first().copied()).unwrap_or(0),
    ))
}

/// Decodes, streaming the text of a text prompt.
fn run_decode(
    forward: &mut Forward,
    rows: Vec<Vec<i64>>,
    d: &Decoding,
    text: Option<&Text>,
) -> Result<Generated, String> {
    let mut stream = Stream::default();
    let mut shown = |ids: &[Vec<i64>]| {
        if let (Some(t), [row]) = (text, ids) {
            stream.show(&t.decode(row));
        }
    };
    let g = decode(forward, rows, d, &mut shown)?;
    if text.is_some() {
        println!();
    }
    Ok(g)
}

/// Writes the outputs (or not) and says what was generated, how fast.
fn report(g: &Generated, o: &GenerateOptions, eos: &[i64]) -> Result<String, String> {
    let mut text = String::new();
    if let Some(path) = &o.outputs {
        text.push_str(&g.write(path)?);
    }
    // Text prompts had their answer printed as it came.
    if let Prompt::Ids(_) = o.prompt {
        text.push_str(&g.rows_text());
    }
    text.push_str(&g.summary(eos));
    Ok(text)
}
