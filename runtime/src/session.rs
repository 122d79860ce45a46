//! What `archc run` and standalone binaries share: where weights and inputs come from, and
//! how outputs are summarised.

use std::collections::{BTreeMap, HashMap, HashSet};

use std::path::PathBuf;

use crate::gguf_names::GgufWeights;
use crate::quant::BlockFormat;
use crate::{random_tensor, Checkpoint, DType, Data, Plan, Tensor, TensorFile, WeightData};

/// Where a run's weights come from.
pub enum WeightSource {
    /// Safetensors files; EMA copies they lack start equal to their online weights.
    File(Box<Checkpoint>, HashMap<String, String>),
    /// A GGUF checkpoint, read by Hugging Face names: the weights the plan keeps
    /// block-quantized (named here) as the file's blocks, the others dequantized as they load.
    Gguf(Box<GgufWeights>, HashSet<String>),
    /// Deterministic random weights from a seed.
    Random(u64),
}

/// The weights of `names` that a GGUF checkpoint (`files`: one `.gguf` file) holds in a block
/// format kernels read in place (see [`GgufWeights::format`]); none for other checkpoints.
pub fn block_formats<'n>(
    files: &[PathBuf],
    names: impl Iterator<Item = &'n String>,
) -> Result<BTreeMap<String, BlockFormat>, String> {
    let [one] = files else {
        return Ok(BTreeMap::new());
    };
    if !one
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        return Ok(BTreeMap::new());
    }
    let weights = GgufWeights::open(one).map_err(|e| e.to_string())?;
    Ok(names
        .filter_map(|n| Some((n.clone(), weights.format(n)?)))
        .collect())
}

impl WeightSource {
    /// Weights from the files (safetensors, or sharded checkpoints' index JSON; see
    /// [`Checkpoint::open`]), or random from `seed` when there are none.
    pub fn open(plan: &Plan, files: &[PathBuf], seed: u64) -> Result<WeightSource, String> {
        if files.is_empty() {
            return Ok(WeightSource::Random(seed));
        }
        let gguf = |p: &PathBuf| {
            p.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        };
        if files.iter().any(gguf) {
            let [one] = files else {
                return Err("a GGUF checkpoint is one file: pass it alone to --weights".into());
            };
            let weights = GgufWeights::open(one).map_err(|e| e.to_string())?;
            let blocks = plan
                .weights
                .iter()
                .filter(|w| {
                    plan.buffers
                        .get(w.buffer)
                        .is_some_and(|b| b.blocks.is_some())
                })
                .map(|w| w.name.clone())
                .collect();
            return Ok(WeightSource::Gguf(Box::new(weights), blocks));
        }
        let checkpoint = Checkpoint::open(files).map_err(|e| e.to_string())?;
        Ok(WeightSource::File(
            Box::new(checkpoint),
            plan.ema_sources.clone().into_iter().collect(),
        ))
    }

    /// The weight `name` with this dtype and shape for an executor: a checkpoint's bytes in
    /// place where kernels can read them so (f32 for a float weight, i64 for an integer one),
    /// otherwise a tensor to copy (widened f16/bf16, i32, random weights, EMA copies the
    /// checkpoint lacks: an EMA copy is a weight of its own, not an alias of its online one).
    pub fn weight(
        &self,
        name: &str,
        dtype: DType,
        shape: &[usize],
    ) -> Result<WeightData<'_>, String> {
        if let WeightSource::Gguf(g, blocks) = self {
            if blocks.contains(name) {
                return g
                    .blocks(name, shape)
                    .map(WeightData::Bytes)
                    .map_err(|e| e.to_string());
            }
        }
        if let WeightSource::File(f, _) = self {
            if f.contains(name) {
                let e = |e: crate::TensorFileError| e.to_string();
                let file = f.file_of(name).map_err(e)?;
                return match file.in_place(name, dtype, shape).map_err(e)? {
                    Some(bytes) => Ok(WeightData::InPlace { bytes, file }),
                    // Converted (f16, bf16, i32): the executor keeps the copy, not the pages.
                    None => file
                        .read_once(name, dtype, shape)
                        .map(WeightData::Tensor)
                        .map_err(e),
                };
            }
        }
        self.tensor(name, dtype, shape).map(WeightData::Tensor)
    }

    /// The weight `name` with this dtype and shape, as a tensor.
    pub fn tensor(&self, name: &str, dtype: DType, shape: &[usize]) -> Result<Tensor, String> {
        match self {
            WeightSource::File(f, online) => {
                let source = match online.get(name) {
                    Some(o) if !f.contains(name) => o.as_str(),
                    _ => name,
                };
                f.read(source, dtype, shape).map_err(|e| e.to_string())
            }
            WeightSource::Gguf(g, _) => g.read(name, dtype, shape).map_err(|e| e.to_string()),
            WeightSource::Random(_)
                if shape
                    .iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(d))
                    .is_none_or(|n| n > MAX_RANDOM_ELEMENTS) =>
            {
                Err(format!(
                    "random weight `{name}` of shape {shape:?} is too large to generate (more than {MAX_RANDOM_ELEMENTS} elements)"
                ))
            }
            WeightSource::Random(seed) => {
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

/// The most elements one random input may have (1 GiB of f32).
const MAX_RANDOM_ELEMENTS: usize = 1 << 28;

/// The size random inputs give a symbol no input or `--dim` binds.
pub fn default_dim(symbol: &str) -> i64 {
    if symbol == "batch" {
        1
    } else {
        8
    }
}

/// Inputs from files (by name, from the first file that has it: `archc grad` reads the
/// model's inputs and the cotangents from two), or, when no file is given, random ones from
/// the seed with unbound dims defaulted.
/// Returns the inputs and the `name=value` defaults that were applied.
pub fn load_inputs(
    plan: &Plan,
    files: &[TensorFile],
    seed: u64,
    dims: &HashMap<String, i64>,
) -> Result<(HashMap<String, Tensor>, Vec<String>), String> {
    let mut inputs = HashMap::new();
    let mut notes = Vec::new();
    if let Some(first) = files.first() {
        for b in &plan.inputs {
            // The first file that has it; a name in none is reported against the first file.
            let f = files.iter().find(|f| f.contains(&b.name)).unwrap_or(first);
            inputs.insert(
                b.name.clone(),
                f.read_any(&b.name).map_err(|e| e.to_string())?,
            );
        }
        return Ok((inputs, notes));
    }
    let mut dims = dims.clone();
    for s in &plan.symbols {
        if !dims.contains_key(s) {
            dims.insert(s.clone(), default_dim(s));
            notes.push(format!("{s}={}", default_dim(s)));
        }
    }
    for b in &plan.inputs {
        let buf = &plan.buffers[b.buffer];
        let shape = buf
            .shape
            .iter()
            .map(|d| d.eval(&|s| dims.get(s).copied()).map(|v| v as usize))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| format!("cannot size input `{}`", b.name))?;
        let n = shape.iter().fold(1usize, |a, &d| a.saturating_mul(d));
        if n > MAX_RANDOM_ELEMENTS {
            return Err(format!(
                "random input `{}` of shape {shape:?} would need {n} elements, which cannot be allocated",
                b.name
            ));
        }
        let bound = plan.index_bounds.get(&b.name).copied().unwrap_or(2);
        inputs.insert(
            b.name.clone(),
            random_tensor(seed, &b.name, buf.dtype, &shape, 1.0, bound),
        );
    }
    Ok((inputs, notes))
}

/// The model a plan runs, as a built binary's `--help` shows it: inputs and outputs with their
/// dtypes and symbolic shapes, and the dims that `--dim` or the inputs bind.
pub fn describe_plan(plan: &Plan) -> String {
    let show = |b: &crate::Binding| {
        let buf = &plan.buffers[b.buffer];
        let dims: Vec<String> = buf.shape.iter().map(|d| d.to_string()).collect();
        format!("    {}: {}[{}]\n", b.name, buf.dtype, dims.join(", "))
    };
    let mut text = format!("model {}\n  inputs:\n", plan.model);
    plan.inputs.iter().for_each(|b| text.push_str(&show(b)));
    text.push_str("  outputs:\n");
    plan.outputs.iter().for_each(|b| text.push_str(&show(b)));
    if plan.symbols.is_empty() {
        text.push_str("  dims: none\n");
    } else {
        let defaults: Vec<String> = plan
            .symbols
            .iter()
            .map(|s| format!("{s} (random inputs: {})", default_dim(s)))
            .collect();
        text.push_str(&format!("  dims: {}\n", defaults.join(", ")));
    }
    text
}

/// `name=value, ...` for bound dims, in the plan's symbol order.
pub fn show_dims(symbols: &[String], dims: &HashMap<String, i64>) -> String {
    symbols
        .iter()
        .filter_map(|s| dims.get(s).map(|v| format!("{s}={v}")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `name: dtype[shape] mean=… std=… first=[…]`
pub fn summarize(name: &str, t: &Tensor) -> String {
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
