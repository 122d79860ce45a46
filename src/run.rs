//! `archc run`: bind inputs and weights, execute the graph, write or summarise the outputs.

use std::collections::HashMap;
use std::fmt::Write;
use std::path::PathBuf;
use std::time::Instant;

use archc_compiler::graph::{Graph, Op, ParamKind};
use archc_compiler::interp::{bind_dims, interpret, InterpError, WeightSource};
use archc_runtime::{random_tensor, write_tensors, DType, Data, Tensor, TensorFile};

/// Where a run's weights come from.
pub enum Weights {
    /// A safetensors checkpoint; EMA copies it lacks start equal to their online weights.
    File(Box<TensorFile>, HashMap<String, String>),
    /// Deterministic random weights from a seed.
    Random(u64),
}

impl Weights {
    /// Weights from a file, or random from `seed` when there is none.
    pub fn new(g: &Graph, file: Option<TensorFile>, seed: u64) -> Weights {
        match file {
            Some(f) => {
                let online = g
                    .params
                    .iter()
                    .filter_map(|(name, (_, kind))| match kind {
                        ParamKind::Ema { online, .. } => Some((name.clone(), online.clone())),
                        ParamKind::Trainable => None,
                    })
                    .collect();
                Weights::File(Box::new(f), online)
            }
            None => Weights::Random(seed),
        }
    }
}

impl WeightSource for Weights {
    fn weight(&mut self, name: &str, dtype: DType, shape: &[usize]) -> Result<Tensor, String> {
        match self {
            Weights::File(f, online) => {
                let source = match online.get(name) {
                    Some(o) if !f.contains(name) => o.as_str(),
                    _ => name,
                };
                f.read(source, dtype, shape).map_err(|e| e.to_string())
            }
            Weights::Random(seed) => {
                // Fan-in scaling keeps activations O(1) through deep random stacks.
                let scale = match shape {
                    [.., k] if shape.len() >= 2 => 1.0 / (*k as f32).sqrt(),
                    _ => 0.5,
                };
                Ok(random_tensor(*seed, name, dtype, shape, scale, 0))
            }
        }
    }
}

/// The size of the table an integer input indexes, if it feeds a gather (token ids, patch
/// indices), so that random ids stay in range.
fn index_bound(g: &Graph, input: &str) -> Option<usize> {
    let mut frontier = vec![*g.inputs.get(input)?];
    let mut bound: Option<usize> = None;
    while let Some(n) = frontier.pop() {
        for user in g.users(n) {
            match &g.dag[user].op {
                Op::Cast | Op::Reshape => frontier.push(user),
                Op::Gather { axis } if g.operands(user).get(1) == Some(&n) => {
                    let x = g.operands(user)[0];
                    if let Some(size) = g.ty(x).shape[*axis].as_const() {
                        bound = Some(bound.map_or(size as usize, |b| b.min(size as usize)));
                    }
                }
                _ => {}
            }
        }
    }
    bound
}

/// Symbols no input binds get these sizes when inputs are random.
fn default_dim(symbol: &str) -> i64 {
    if symbol == "batch" {
        1
    } else {
        8
    }
}

/// Inputs from a file, or random ones from the seed.
pub fn load_inputs(
    g: &Graph,
    file: Option<&TensorFile>,
    seed: u64,
    dims: &HashMap<String, i64>,
) -> Result<(HashMap<String, Tensor>, Vec<String>), String> {
    let mut inputs = HashMap::new();
    let mut notes = Vec::new();
    match file {
        Some(f) => {
            for name in g.inputs.keys() {
                inputs.insert(name.clone(), f.read_any(name).map_err(|e| e.to_string())?);
            }
        }
        None => {
            let mut dims = dims.clone();
            for s in &g.symbols {
                if !dims.contains_key(s) {
                    dims.insert(s.clone(), default_dim(s));
                    notes.push(format!("{s}={}", default_dim(s)));
                }
            }
            for (name, &n) in &g.inputs {
                let ty = g.ty(n);
                let shape = ty
                    .shape
                    .iter()
                    .map(|d| d.eval(&|s| dims.get(s).copied()).map(|v| v as usize))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| format!("cannot size input `{name}`"))?;
                let bound = index_bound(g, name).unwrap_or(2) as u64;
                inputs.insert(
                    name.clone(),
                    random_tensor(seed, name, ty.dtype, &shape, 1.0, bound),
                );
            }
        }
    }
    Ok((inputs, notes))
}

/// Options of one run.
pub struct RunOptions {
    /// Safetensors weights, or random from the seed.
    pub weights: Option<PathBuf>,
    /// Safetensors inputs, or random from the seed.
    pub inputs: Option<PathBuf>,
    /// Where to write the outputs; a summary is printed otherwise.
    pub outputs: Option<PathBuf>,
    /// Seed for random weights and inputs.
    pub seed: u64,
    /// Explicit dim bindings.
    pub dims: HashMap<String, i64>,
}

/// Runs a graph with the reference interpreter; returns the text to print.
pub fn run(g: &Graph, o: &RunOptions) -> Result<String, String> {
    let open = |p: &PathBuf| TensorFile::open(p).map_err(|e| e.to_string());
    let input_file = o.inputs.as_ref().map(open).transpose()?;
    let weight_file = o.weights.as_ref().map(open).transpose()?;
    let (inputs, defaulted) = load_inputs(g, input_file.as_ref(), o.seed, &o.dims)?;
    let dims = bind_dims(g, &inputs, &o.dims).map_err(|e: InterpError| match &o.inputs {
        Some(p) => format!("{}: {e}", p.display()),
        None => e.to_string(),
    })?;
    let mut weights = Weights::new(g, weight_file, o.seed);
    let start = Instant::now();
    let outputs = interpret(g, &dims, &inputs, &mut weights).map_err(|e| e.to_string())?;
    let elapsed = start.elapsed();
    if let Some(path) = &o.outputs {
        let list: Vec<(String, Tensor)> = outputs.into_iter().collect();
        write_tensors(path, &list).map_err(|e| e.to_string())?;
        return Ok(format!(
            "wrote {} outputs to {}\n",
            list.len(),
            path.display()
        ));
    }
    let mut out = String::new();
    let mut bound: Vec<String> = dims.iter().map(|(k, v)| format!("{k}={v}")).collect();
    bound.sort();
    let _ = writeln!(out, "model {} (backend interp)", g.name);
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
    let _ = writeln!(out, "  time: {:.1} ms", elapsed.as_secs_f64() * 1e3);
    Ok(out)
}

/// `name: dtype[shape] mean=… std=… first=[…]`
fn summarize(name: &str, t: &Tensor) -> String {
    let v = match &t.data {
        Data::F32(v) => v.clone(),
        _ => t.to_f32(),
    };
    let n = v.len().max(1) as f64;
    let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = v
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / n;
    let first: Vec<String> = v.iter().take(5).map(|x| format!("{x:.5}")).collect();
    format!(
        "{name}: {}{:?} mean={mean:.6} std={:.6} first=[{}]",
        t.dtype,
        t.shape,
        var.sqrt(),
        first.join(", ")
    )
}
