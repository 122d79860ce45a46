//! `archc train`: minimise a model's loss output over a data file, step by step.
//!
//! The compiler derives one graph for a training step (`grad::loss_gradient`: the model's
//! outputs and the gradient of the loss for every trained weight), compiled once. Each step
//! runs it on a batch of samples with the current weights, then, on the host, clips the
//! gradients, takes an optimiser step (`runtime::optim`) and moves the EMA copies toward their
//! online weights. The weights live here between steps, as f32; the executor takes them anew
//! at each step (its prepare steps, a transposed weight say, are weight-dependent).

mod checkpoint;
mod data;
mod plot;
mod recipe;
mod report;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use archc_compiler::grad::{loss_gradient, GRAD_PREFIX};
use archc_compiler::graph::{Graph, ParamKind};
use archc_compiler::interp::{bind_dims, interpret, MapWeights};
use archc_compiler::lower::Lowered;
use archc_runtime::optim::{clip_grad_norm, ema_momentum, ema_update, OptimState};
use archc_runtime::{Executor, Launcher, Tensor, TensorFile};
use clap::{Args, ValueEnum};

use crate::cli::{parse_dim, Backend, DeviceKind, PassFlags};
use crate::run::Engine;
use crate::{check_dim_names, check_paths, device, load, progress, Failure};
use checkpoint::Weights;

/// The optimisers of `--optimizer`.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum OptimizerKind {
    /// Adam with decoupled weight decay (torch.optim.AdamW).
    Adamw,
    /// SGD with momentum (torch.optim.SGD).
    Sgd,
}

/// How the learning rate moves after the warmup.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum LrSchedule {
    /// Stays at --lr.
    Constant,
    /// A half cosine from --lr down to 0 at the last step.
    Cosine,
}

/// What is minimised.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Objective {
    /// The model's own output named by --loss.
    Output,
    /// Next-token cross-entropy of a causal language model: its output `logits` at each
    /// position against the next of its `input_ids` (added to the model as `output loss`).
    NextToken,
}

/// The arguments of `archc train`.
#[derive(Args)]
pub(crate) struct TrainArgs {
    /// The .arch file: a model with a float output to minimise (`--loss`).
    file: PathBuf,
    /// Safetensors samples: one tensor per model input, the samples along the first axis.
    #[arg(long)]
    data: PathBuf,
    /// Steps to take (after a checkpoint's, with --resume).
    #[arg(long)]
    steps: u64,
    /// Samples per step.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// The output to minimise, summed when it is not a scalar [default: the train section's
    /// `loss`, else `loss`].
    #[arg(long)]
    loss: Option<String>,
    /// What is minimised: the model's output (--loss), or, for a causal language model
    /// (`input_ids` → `logits`), the next-token cross-entropy, with --data holding token ids.
    #[arg(long, value_enum, default_value_t = Objective::Output)]
    objective: Objective,
    /// The optimiser [default: the train section's, else adamw]. Each flag below overrides
    /// what the model's `train { ... }` section says.
    #[arg(long, value_enum)]
    optimizer: Option<OptimizerKind>,
    /// The peak learning rate [default: the section's, else 1e-3].
    #[arg(long, value_parser = positive_f64)]
    lr: Option<f64>,
    /// Weight decay (AdamW: decoupled; SGD: added to the gradient) of the weights no group
    /// sets [default: the section's, else 0].
    #[arg(long, value_parser = non_negative_f64)]
    weight_decay: Option<f64>,
    /// SGD's momentum [default: the section's, else 0.9].
    #[arg(long, value_parser = fraction)]
    momentum: Option<f64>,
    /// AdamW's β₁ [default: the section's, else 0.9].
    #[arg(long, value_parser = fraction)]
    beta1: Option<f64>,
    /// AdamW's β₂ [default: the section's, else 0.999].
    #[arg(long, value_parser = fraction)]
    beta2: Option<f64>,
    /// AdamW's ε [default: the section's, else 1e-8].
    #[arg(long, value_parser = positive_f64)]
    eps: Option<f64>,
    /// Steps of linear warmup from 0 to --lr [default: the section's, else 0].
    #[arg(long)]
    warmup: Option<u64>,
    /// The learning rate after the warmup [default: the section's, else constant].
    #[arg(long, value_enum)]
    schedule: Option<LrSchedule>,
    /// Clip the gradients' global L2 norm to this [default: the section's `clip`, else none].
    #[arg(long, value_parser = positive_f64)]
    clip: Option<f64>,
    /// Initial weights (safetensors; default: random from --seed, EMA copies equal to their
    /// online weights).
    #[arg(long, conflicts_with = "resume")]
    weights: Vec<PathBuf>,
    /// Continue from a checkpoint: its weights, and its optimiser state beside it.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Where to save the weights (and NAME.optim.safetensors beside them): at the end, and
    /// every --every steps.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Save a checkpoint every this many steps.
    #[arg(long)]
    every: Option<u64>,
    /// A log of every step as JSON lines: step, loss, lr, grad_norm, seconds, and the model's
    /// other scalar outputs. With --resume an existing log is continued: its lines up to the
    /// checkpoint's step are kept.
    #[arg(long)]
    log: Option<PathBuf>,
    /// A PNG of the run's curves: the loss, the model's other scalar outputs (collapse
    /// metrics), the gradient norm and the learning rate, one panel each, over steps (with
    /// --resume and a continued --log, from the log's first step).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Seed of random initial weights and of the data order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Which executor runs the steps.
    #[arg(long, value_enum, default_value_t = Backend::Cranelift)]
    backend: Backend,
    /// Bind a symbolic dim the samples do not, e.g. `--dim seq=128` (repeatable).
    #[arg(long = "dim", value_name = "NAME=VALUE", value_parser = parse_dim)]
    dims: Vec<(String, i64)>,
    #[command(flatten)]
    passes: PassFlags,
}

/// A finite number > 0 (a flag's value).
fn positive_f64(s: &str) -> Result<f64, String> {
    number_where(s, |x| x > 0.0, "> 0")
}

/// A finite number ≥ 0.
fn non_negative_f64(s: &str) -> Result<f64, String> {
    number_where(s, |x| x >= 0.0, "≥ 0")
}

/// A number in [0, 1).
fn fraction(s: &str) -> Result<f64, String> {
    number_where(s, |x| (0.0..1.0).contains(&x), "in [0, 1)")
}

fn number_where(s: &str, ok: impl Fn(f64) -> bool, want: &str) -> Result<f64, String> {
    let x: f64 = s.parse().map_err(|e| format!("`{s}`: {e}"))?;
    if x.is_finite() && ok(x) {
        Ok(x)
    } else {
        Err(format!("`{s}` is not a number {want}"))
    }
}

fn input(e: impl std::fmt::Display) -> Failure {
    Failure::Input(format!("error: {e}\n"))
}

/// Runs `archc train`.
pub(crate) fn command(a: TrainArgs, max_nodes: u64, threads: usize) -> Result<String, Failure> {
    let passes = a.passes.options()?;
    let mut reads = vec![
        ("the .arch source", Some(a.file.as_path())),
        ("the --data file", Some(a.data.as_path())),
        ("the --resume checkpoint", a.resume.as_deref()),
    ];
    reads.extend(
        a.weights
            .iter()
            .map(|w| ("a --weights file", Some(w.as_path()))),
    );
    check_paths(a.checkpoint.as_deref(), &reads)?;
    check_paths(a.log.as_deref(), &reads)?;
    check_paths(a.plot.as_deref(), &reads)?;
    if a.batch == 0 || a.every == Some(0) {
        return Err(input("--batch and --every must be at least 1"));
    }
    let (mut s, id) = match a.objective {
        Objective::Output => load(&a.file, max_nodes)?,
        Objective::NextToken => with_next_token_loss(&a.file, max_nodes)?,
    };
    s.for_training = true;
    let (_, graph) = s.compile(id).map_err(|d| Failure::Input(s.render(&d)))?;
    check_dim_names(&a.dims, &graph.symbols)?;
    let recipe = recipe::Recipe::resolve(&a, graph.training.as_ref());
    let step_graph = loss_gradient(&graph, &recipe.loss, &passes).map_err(input)?;
    let engine = DeviceKind::Cpu.engine(a.backend, None);
    let target = device::target(engine, None);
    let lowered = progress::spin("compiling", || {
        archc_compiler::passes::lower_optimized_for(&step_graph, &passes, &target)
    })
    .map_err(input)?;
    let jit = match engine {
        Engine::Interp => None,
        _ => Some(device::launcher(engine, &lowered, threads, None).map_err(input)?),
    };
    let inputs: Vec<String> = graph.inputs.keys().cloned().collect();
    let samples = data::Samples::open(&a.data, &inputs, a.seed).map_err(input)?;
    let (mut weights, mut state) = initial(&graph, &lowered, &a)?;
    let mut run = Step {
        graph: &step_graph,
        lowered: &lowered,
        launcher: jit.as_deref(),
        dims: a.dims.iter().cloned().collect(),
        exec: None,
    };
    train(
        &a,
        &recipe,
        (&graph, &mut run),
        &samples,
        (&mut weights, &mut state),
    )
}

/// The statement `--objective next-token` adds to a causal language model.
const NEXT_TOKEN_LOSS: &str = "
  # Added by `archc train --objective next-token`: each position's logits against the next id.
  output loss = next_token_loss(logits, input_ids)
";

/// The model of `path` with [`NEXT_TOKEN_LOSS`] at the end of its body, in a session of its
/// own (the added line comes after the user's, so their positions are unchanged).
fn with_next_token_loss(
    path: &std::path::Path,
    max_nodes: u64,
) -> Result<(archc_compiler::Session, archc_compiler::syntax::SourceId), Failure> {
    use archc_compiler::syntax::ast::{Item, ModelItem};
    let (s, id) = load(path, max_nodes)?;
    let file = s.parse(id).map_err(|d| Failure::Input(s.render(&d)))?;
    let text = crate::read_text(path)?;
    let model = file.items.iter().find_map(|i| match i {
        Item::Model(m) => Some(m),
        Item::Block(_) => None,
    });
    let model = model.ok_or_else(|| input(format!("{}: no model", path.display())))?;
    let has = |want: &str, output: bool| {
        model.items.iter().any(|i| match i {
            ModelItem::Output(b) if output => b.name.name == want,
            ModelItem::Input(d) if !output => d.name.name == want,
            _ => false,
        })
    };
    let computes_loss = model.items.iter().any(|i| match i {
        ModelItem::Train(entries, _) => entries.iter().any(|e| e.name.name == "loss"),
        _ => false,
    });
    if computes_loss {
        return Err(input(format!(
            "{}: its `train` section computes the loss already; drop --objective",
            path.display()
        )));
    }
    if !has("logits", true) || !has("input_ids", false) || has("loss", true) {
        return Err(input(format!(
            "{}: --objective next-token needs a causal language model with an input `input_ids` \
             [batch, seq], an output `logits` [batch, seq, vocab] and no output `loss`",
            path.display()
        )));
    }
    let end = text[..(model.span.end as usize).min(text.len())]
        .rfind('}')
        .ok_or_else(|| input(format!("{}: the model's body has no end", path.display())))?;
    let text = format!("{}{NEXT_TOKEN_LOSS}{}", &text[..end], &text[end..]);
    let mut session = archc_compiler::Session::new().map_err(Failure::Input)?;
    session.max_nodes = max_nodes;
    let id = session.add(path.display().to_string(), text);
    Ok((session, id))
}

/// The compiled training step.
struct Step<'a> {
    graph: &'a Graph,
    lowered: &'a Lowered,
    /// None: the graph interpreter.
    launcher: Option<&'a dyn Launcher>,
    dims: HashMap<String, i64>,
    /// The executor of the previous step: its arena is reused, its weights reloaded.
    exec: Option<Executor<'a>>,
}

impl<'a> Step<'a> {
    /// The step graph's outputs for this batch and these weights.
    fn run(
        &mut self,
        weights: &Weights,
        inputs: &HashMap<String, Tensor>,
    ) -> Result<HashMap<String, Tensor>, String> {
        let missing = |n: &str| format!("no weight `{n}`");
        let out = match self.launcher {
            None => {
                let dims = bind_dims(self.graph, inputs, &self.dims).map_err(|e| e.to_string())?;
                let tensors: HashMap<String, Tensor> = weights
                    .values
                    .keys()
                    .filter_map(|n| Some((n.clone(), weights.tensor(n)?)))
                    .collect();
                interpret(self.graph, &dims, inputs, &mut MapWeights(&tensors))
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .collect()
            }
            Some(launcher) => {
                let source = |n: &str, _, _: &[usize]| weights.tensor(n).ok_or_else(|| missing(n));
                let exec = match self.exec.as_mut() {
                    Some(exec) => {
                        exec.reload(source).map_err(|e| e.to_string())?;
                        exec
                    }
                    None => {
                        let plan: &'a archc_runtime::Plan = &self.lowered.plan;
                        let exec = Executor::new(plan, source).map_err(|e| e.to_string())?;
                        self.exec.insert(exec)
                    }
                };
                exec.bind(inputs, &self.dims).map_err(|e| e.to_string())?;
                exec.prepare(launcher).map_err(|e| e.to_string())?;
                exec.run(launcher, inputs, &self.dims)
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .collect()
            }
        };
        Ok(out)
    }
}

/// The weights to start from, and the optimiser's state: a checkpoint's, given files', or
/// random ones (EMA copies start as their online weights).
fn initial(g: &Graph, lowered: &Lowered, a: &TrainArgs) -> Result<(Weights, OptimState), Failure> {
    let mut weights = Weights {
        values: HashMap::new(),
        shapes: HashMap::new(),
    };
    let resumed = a.resume.as_ref().map(|p| TensorFile::open(p)).transpose();
    let resumed = resumed.map_err(input)?;
    let mut source =
        archc_runtime::WeightSource::open(&lowered.plan, &a.weights, a.seed).map_err(input)?;
    for (name, (node, _)) in &g.params {
        let ty = g.ty(*node);
        let shape: Vec<usize> = ty
            .shape
            .iter()
            .map(|d| d.as_const().unwrap_or(0).max(0) as usize)
            .collect();
        let t = match &resumed {
            Some(f) => f.read(name, ty.dtype, &shape).map_err(input)?,
            None => {
                archc_compiler::interp::WeightSource::weight(&mut source, name, ty.dtype, &shape)
                    .map_err(input)?
            }
        };
        weights.values.insert(name.clone(), t.to_f32());
        weights.shapes.insert(name.clone(), shape);
    }
    if a.resume.is_none() && a.weights.is_empty() {
        for (name, (_, kind)) in &g.params {
            if let ParamKind::Ema { online, .. } = kind {
                if let Some(v) = weights.values.get(online).cloned() {
                    weights.values.insert(name.clone(), v);
                }
            }
        }
    }
    let state = match &a.resume {
        Some(p) => checkpoint::load_state(p)
            .map_err(input)?
            .unwrap_or_default(),
        None => OptimState::default(),
    };
    Ok((weights, state))
}

/// Opens the log for writing. A resumed run (`resuming`, from step `first`) keeps the log's
/// lines up to `first` and continues it; they go into `curves` too, so the plot shows the whole
/// run. A new run starts the file afresh. Returns the file and the first step it kept.
fn open_log(
    path: &std::path::Path,
    resuming: bool,
    first: u64,
    curves: &mut plot::Curves,
) -> Result<(std::fs::File, Option<u64>), Failure> {
    let earlier = if resuming {
        report::earlier_steps(path, first).map_err(input)?
    } else {
        Vec::new()
    };
    let mut f =
        std::fs::File::create(path).map_err(|e| input(format!("{}: {e}", path.display())))?;
    let from = earlier.first().map(|l| l.step);
    for l in earlier {
        for (name, v) in l.scalars {
            curves.record(l.step, &name, v);
        }
        writeln!(f, "{}", l.line).map_err(|e| input(format!("{}: {e}", path.display())))?;
    }
    Ok((f, from))
}

/// The loop: `a.steps` steps from `state.step`, logging and saving as asked; returns the
/// summary.
fn train(
    a: &TrainArgs,
    recipe: &recipe::Recipe,
    (g, step): (&Graph, &mut Step<'_>),
    samples: &data::Samples,
    (weights, state): (&mut Weights, &mut OptimState),
) -> Result<String, Failure> {
    let first = state.step;
    let total = first + a.steps;
    let schedule = recipe.schedule(total);
    let emas = ema_links(g);
    let mut curves = plot::Curves::default();
    let log = a
        .log
        .as_ref()
        .map(|p| open_log(p, a.resume.is_some(), first, &mut curves));
    let (mut log, from) = match log.transpose()? {
        Some((f, from)) => (Some(f), from),
        None => (None, None),
    };
    let bar = progress::bar(a.steps as usize, "training");
    let started = Instant::now();
    let mut losses = Vec::new();
    for _ in 0..a.steps {
        let batch = with_drawn(
            g,
            samples,
            samples.batch(state.step, a.batch),
            (state.step, &step.dims),
        )
        .map_err(input)?;
        let out = step
            .run(weights, &batch)
            .map_err(|e| input(format!("step {}: {e}", state.step + 1)))?;
        let loss: f64 = out[&recipe.loss]
            .to_f32()
            .iter()
            .map(|&x| f64::from(x))
            .sum();
        if !loss.is_finite() {
            return Err(input(format!(
                "step {}: the loss is {loss}: lower --lr, or --clip the gradients",
                state.step + 1
            )));
        }
        let lr = schedule.at(state.step + 1);
        let norm = update(recipe, &out, (lr, total, &emas), (weights, state));
        losses.push(loss);
        let values = report::scalars(&out, (loss, lr, norm), &recipe.loss);
        for (name, v) in &values {
            curves.record(state.step, name, *v);
        }
        if let Some(f) = log.as_mut() {
            let line = report::log_line(state.step, started.elapsed().as_secs_f64(), &values);
            writeln!(f, "{line}").map_err(|e| input(format!("the log: {e}")))?;
        }
        bar.set_message(format!("loss {loss:.4}"));
        bar.inc(1);
        if let (Some(p), Some(k)) = (&a.checkpoint, a.every) {
            if state.step % k == 0 {
                checkpoint::save(p, weights, state).map_err(input)?;
            }
        }
    }
    bar.finish_and_clear();
    if let Some(p) = &a.checkpoint {
        checkpoint::save(p, weights, state).map_err(input)?;
    }
    if let Some(p) = &a.plot {
        let title = format!(
            "archc train {}: steps {} to {}",
            a.file.display(),
            from.unwrap_or(first + 1),
            state.step
        );
        curves.draw(p, &title).map_err(input)?;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(report::summary(
        a,
        recipe,
        (samples.len(), first, state.step),
        &losses,
        secs,
    ))
}

/// An EMA weight, the online weight it follows, and its momentum's start and end.
struct EmaLink {
    target: String,
    online: String,
    momenta: (f64, f64),
}

/// The model's EMA links.
fn ema_links(g: &Graph) -> Vec<EmaLink> {
    g.params
        .iter()
        .filter_map(|(n, (_, k))| match k {
            ParamKind::Ema {
                online,
                momentum,
                end,
            } => Some(EmaLink {
                target: n.clone(),
                online: online.clone(),
                momenta: (*momentum, *end),
            }),
            ParamKind::Trainable => None,
        })
        .collect()
}

/// What the host does after a step's run: clips the gradients among the step's outputs,
/// takes the optimiser step at learning rate `lr` (per parameter group) and moves the EMA
/// copies (their momentum at this step of `total`); returns the gradients' norm before
/// clipping.
fn update(
    recipe: &recipe::Recipe,
    out: &HashMap<String, Tensor>,
    (lr, total, emas): (f64, u64, &[EmaLink]),
    (weights, state): (&mut Weights, &mut OptimState),
) -> f32 {
    let mut grads: HashMap<String, Vec<f32>> = out
        .iter()
        .filter_map(|(n, t)| Some((n.strip_prefix(GRAD_PREFIX)?.to_string(), t.to_f32())))
        .collect();
    let norm = clip_grad_norm(&mut grads, recipe.clip.map_or(f32::INFINITY, |c| c as f32));
    let momentum_step = state.step;
    state.update(
        recipe.optimizer,
        |name| recipe.hyper(name, lr),
        &mut weights.values,
        &grads,
    );
    for link in emas {
        if let Some(o) = weights.values.get(&link.online).cloned() {
            if let Some(t) = weights.values.get_mut(&link.target) {
                ema_update(t, &o, ema_momentum(link.momenta, momentum_step, total));
            }
        }
    }
    norm
}

/// `batch` with the inputs the data file lacks drawn for step `step`; their symbolic dims are
/// bound by the batch's tensors (by position in the declared shapes) and `--dim`.
fn with_drawn(
    g: &Graph,
    samples: &data::Samples,
    mut batch: HashMap<String, Tensor>,
    (step, explicit): (u64, &HashMap<String, i64>),
) -> Result<HashMap<String, Tensor>, String> {
    let mut dims = explicit.clone();
    for (name, t) in &batch {
        let Some(&node) = g.inputs.get(name) else {
            continue;
        };
        for (d, &n) in g.ty(node).shape.iter().zip(&t.shape) {
            if let Some(s) = d.as_symbol() {
                dims.entry(s.to_string()).or_insert(n as i64);
            }
        }
    }
    for (name, &node) in &g.inputs {
        if samples.has(name) {
            continue;
        }
        let ty = g.ty(node);
        let shape = ty
            .shape
            .iter()
            .map(|d| d.eval(&|s| dims.get(s).copied()).map(|v| v.max(0) as usize))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| {
                format!("input `{name}` is drawn at random, and its shape needs --dim for each dim the data does not bind")
            })?;
        batch.insert(name.clone(), samples.draw(name, ty.dtype, &shape, step));
    }
    Ok(batch)
}
