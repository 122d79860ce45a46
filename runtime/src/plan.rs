//! The Plan: everything the runtime needs to execute a compiled model, and nothing of the
//! compiler. It is serde-serialisable, so `archc build` can embed it in a standalone binary.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::{DType, Dim};

/// Where a buffer's memory comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Storage {
    /// A slot in the run's arena (activations and copied-in inputs).
    Arena,
    /// A weight, loaded once and shared by every run.
    Weight,
    /// The same memory as another buffer, seen with another shape (a reshape).
    Alias(usize),
}

/// One buffer of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Buffer {
    /// A name for dumps and errors (the graph node it holds).
    pub name: String,
    /// The declared element type; storage widens floats to f32 and integers to i64.
    pub dtype: DType,
    /// Its symbolic shape.
    pub shape: Vec<Dim>,
    /// Where its memory is.
    pub storage: Storage,
}

/// A named tensor bound to a buffer: an input, a weight or an output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Binding {
    /// The input, checkpoint or output name.
    pub name: String,
    /// The buffer.
    pub buffer: usize,
}

/// One kernel launch: which kernel, on which buffers (the status word is appended).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Index into `Plan::kernels`.
    pub kernel: usize,
    /// Buffers in the kernel's parameter order.
    pub args: Vec<usize>,
}

/// A compiled model's execution plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The model's name.
    pub model: String,
    /// The symbolic dims, in the order kernels read them from `dims`.
    pub symbols: Vec<String>,
    /// Every buffer.
    pub buffers: Vec<Buffer>,
    /// Model inputs.
    pub inputs: Vec<Binding>,
    /// Weights by checkpoint name.
    pub weights: Vec<Binding>,
    /// Model outputs.
    pub outputs: Vec<Binding>,
    /// Kernel names, in the order the code module defines them.
    pub kernels: Vec<String>,
    /// Kernel launches in order.
    pub steps: Vec<Step>,
    /// Messages for kernel check codes (index = code − 1).
    pub checks: Vec<String>,
    /// Integer inputs that index a table, with the table's size (random ids stay below it).
    pub index_bounds: std::collections::BTreeMap<String, u64>,
    /// EMA weights and the online weights they start from when a checkpoint lacks them.
    pub ema_sources: std::collections::BTreeMap<String, String>,
}

/// Reads a plan from its JSON form.
pub fn plan_from_json(bytes: &[u8]) -> Result<Plan, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// The JSON form of a plan.
pub fn plan_to_json(plan: &Plan) -> String {
    serde_json::to_string(plan).expect("plans contain only serialisable data")
}

/// Bytes per stored element of a dtype.
pub fn storage_bytes(d: DType) -> usize {
    match d {
        DType::F32 | DType::F16 | DType::BF16 => 4,
        DType::I32 | DType::I64 => 8,
        DType::Bool => 1,
    }
}

/// Arena offsets are aligned to a cache line.
pub const ALIGN: usize = 64;

impl Plan {
    /// The values of the symbols, in `symbols` order.
    pub fn dim_values(&self, dims: &HashMap<String, i64>) -> Vec<i64> {
        self.symbols
            .iter()
            .map(|s| dims.get(s).copied().unwrap_or(0))
            .collect()
    }

    /// Element count of a buffer for these dims (saturating: an absurd size stays absurd
    /// instead of wrapping).
    pub fn numel(&self, buffer: usize, dims: &HashMap<String, i64>) -> usize {
        self.buffers[buffer]
            .shape
            .iter()
            .map(|d| d.eval(&|s| dims.get(s).copied()).unwrap_or(i64::MAX).max(0) as usize)
            .fold(1usize, usize::saturating_mul)
    }

    /// Arena offsets of every arena buffer (None for others) and the arena size, for these
    /// dims. Each buffer gets its own slot; sharing by liveness is a later pass.
    pub fn layout(&self, dims: &HashMap<String, i64>) -> (Vec<Option<usize>>, usize) {
        let mut offsets = vec![None; self.buffers.len()];
        let mut top = 0usize;
        for (i, b) in self.buffers.iter().enumerate() {
            if b.storage == Storage::Arena {
                offsets[i] = Some(top);
                let bytes = self.numel(i, dims).saturating_mul(storage_bytes(b.dtype));
                top = top.saturating_add(bytes.div_ceil(ALIGN).saturating_mul(ALIGN));
            }
        }
        (offsets, top)
    }

    /// The buffer whose memory a buffer uses (following aliases).
    pub fn root(&self, mut buffer: usize) -> usize {
        while let Storage::Alias(of) = self.buffers[buffer].storage {
            buffer = of;
        }
        buffer
    }
}
