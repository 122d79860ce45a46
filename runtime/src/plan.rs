//! The Plan: everything the runtime needs to execute a compiled model, and nothing of the
//! compiler. It is serde-serialisable, so `archc build` can embed it in a standalone binary.
//!
//! A plan has a top level and layer kinds. Each is a *frame*: buffers and the steps that
//! compute them. A top-level `Call` step runs a kind's steps with the kind's slot buffers bound
//! to the call's arguments, so a stack of 64 layers of 3 kinds has 3 compiled bodies and 64
//! calls, each binding its own layer's weights.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::{DType, Dim};

/// Where a buffer's memory comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Storage {
    /// A slot in the run's arena (activations and copied-in inputs).
    Arena,
    /// Memory that lives as long as the executor: a loaded weight, or a value computed from
    /// weights once, by the plan's prepare steps.
    Weight,
    /// The same memory as another buffer of the frame, seen with another shape (a reshape).
    Alias(usize),
    /// In a layer kind: the memory of the call's argument `i` (0 is the call's result).
    Slot(usize),
}

/// One buffer of a frame.
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
    /// For a weight kept block-quantized in memory (a GGUF tensor's blocks, read by kernels
    /// that dequantize as they load): its format. None: stored as `dtype` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<crate::quant::BlockFormat>,
    /// For an arena buffer, the steps of its frame from the one that writes it to the last one
    /// that reads it (set by the `plan_memory` pass): buffers whose lifetimes do not overlap
    /// share memory. None: the buffer has memory of its own for the whole run.
    #[serde(default)]
    pub live: Option<(usize, usize)>,
}

/// A named tensor bound to a buffer: an input, a weight or an output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Binding {
    /// The input, checkpoint or output name.
    pub name: String,
    /// The buffer.
    pub buffer: usize,
}

impl Buffer {
    /// The bytes `n` of its elements take: whole blocks of its block format, or `n` of its
    /// dtype's storage (saturating).
    pub fn bytes(&self, n: usize) -> usize {
        match self.blocks {
            Some(q) => q.bytes(n),
            None => n.saturating_mul(storage_bytes(self.dtype)),
        }
    }
}

/// One step of a frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Step {
    /// Launch kernel `kernel` (an index into `Plan::kernels`) on buffers in its parameter
    /// order (the status word is appended). It writes its first buffer and only reads the
    /// others (the executor relies on that to let kernels read weights from read-only mapped
    /// files), but for a scratch buffer it works in, passed last.
    Kernel {
        /// The kernel.
        kernel: usize,
        /// Its buffers.
        args: Vec<usize>,
        /// The source location, op and weight scope it computes (kernels are shared between
        /// steps, so this is the step's): what a failure or a profile names.
        #[serde(default)]
        origin: String,
        /// The grid and block it runs as, from its axis kinds (None: not known, e.g. plans
        /// written before launch geometry existed).
        #[serde(default)]
        launch: Option<crate::Launch>,
        /// Whether the last buffer is an arena buffer the kernel writes before it reads it
        /// (`scan_grad`'s checkpoints), live during this step only.
        #[serde(default)]
        scratch: bool,
    },
    /// Run layer kind `kind` with its slots bound to `args` (the result first).
    Call {
        /// The kind.
        kind: usize,
        /// The buffers its slots are.
        args: Vec<usize>,
    },
}

impl Step {
    /// The buffers a step reads or writes.
    pub fn args(&self) -> &[usize] {
        match self {
            Step::Kernel { args, .. } | Step::Call { args, .. } => args,
        }
    }

    /// Whether argument `i` is one the step writes: its output, or its scratch buffer.
    pub fn writes(&self, i: usize) -> bool {
        match self {
            Step::Kernel { args, scratch, .. } => i == 0 || (*scratch && i + 1 == args.len()),
            Step::Call { .. } => i == 0,
        }
    }
}

/// A layer kind: a frame whose slot buffers are bound by each call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Kind {
    /// The layer's description.
    pub name: String,
    /// Its buffers; `Storage::Slot(i)` ones are the calls' arguments.
    pub buffers: Vec<Buffer>,
    /// Its steps (kernel launches).
    pub steps: Vec<Step>,
}

/// A compiled model's execution plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The model's name.
    pub model: String,
    /// The symbolic dims, in the order kernels read them from `dims`.
    pub symbols: Vec<String>,
    /// The top level's buffers.
    pub buffers: Vec<Buffer>,
    /// Model inputs.
    pub inputs: Vec<Binding>,
    /// Weights by checkpoint name.
    pub weights: Vec<Binding>,
    /// Model outputs.
    pub outputs: Vec<Binding>,
    /// Kernel names, in the order the code module defines them.
    pub kernels: Vec<String>,
    /// Steps that compute values from the weights alone (transposes, `−exp(A_log)`): run once,
    /// after the weights load, into `Storage::Weight` buffers.
    pub prepare: Vec<Step>,
    /// The top level's steps, in order.
    pub steps: Vec<Step>,
    /// The layer kinds `Call` steps run.
    pub kinds: Vec<Kind>,
    /// The most thread-private memory (bytes of locals) any kernel uses: kernel threads get
    /// stacks this much larger.
    #[serde(default)]
    pub kernel_local_bytes: usize,
    /// Messages for kernel check codes (index = code − 1).
    pub checks: Vec<String>,
    /// Whether each kernel has checks, so that a launch of it may fail. A GPU's batches of
    /// launches end at such a launch (`crate::cuda_graphs`). Empty in a plan written before
    /// it was: every kernel is then taken to have some.
    #[serde(default)]
    pub fallible: Vec<bool>,
    /// Bytes of dynamic shared memory each kernel's blocks take on a GPU: its shared arrays
    /// when they exceed what a kernel may declare statically (`archc_kernels::shared`), else
    /// 0. Empty in a plan written before it was: none then takes any.
    #[serde(default)]
    pub dynamic_shared: Vec<u32>,
    /// Conditions on the dims checked once the dims are bound (see [`crate::DimCheck`]).
    #[serde(default)]
    pub dim_checks: Vec<crate::DimCheck>,
    /// Integer inputs that index a table, with the table's size (random ids stay below it).
    pub index_bounds: std::collections::BTreeMap<String, u64>,
    /// EMA weights and the online weights they start from when a checkpoint lacks them.
    pub ema_sources: std::collections::BTreeMap<String, String>,
    /// Whether `BIN generate` can decode the model (set by `archc build`).
    #[serde(default)]
    pub generation: Generation,
    /// How many dims its kernels were compiled to read (0: as many as `symbols`). Plans built
    /// into one binary share the widest, and a launch pads the missing dims with zeros.
    #[serde(default)]
    pub dims_width: usize,
    /// The derived prefill and step of a causal model, built into the binary beside it.
    #[serde(default)]
    pub stateful: Option<Box<StatefulPlans>>,
}

/// A causal model's derived prefill and step, for `BIN generate`: their kernels follow the
/// sequence plan's in the binary's kernel table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatefulPlans {
    /// The prompt, from an empty State.
    pub prefill: Plan,
    /// New positions against the State.
    pub step: Plan,
    /// The State's parts.
    pub parts: Vec<crate::state::PartLayout>,
    /// Where the prefill's kernels start in the kernel table.
    pub prefill_kernels: usize,
    /// Where the step's kernels start in the kernel table.
    pub step_kernels: usize,
    /// Weight buffers the step's executor shares with the prefill's: (step's buffer, prefill's).
    #[serde(default)]
    pub shared: Vec<(usize, usize)>,
}

/// Whether a built binary's model can generate, as `archc build` found it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Generation {
    /// Not examined (a plan lowered for `run`).
    #[default]
    Unknown,
    /// A causal model: tokens in `input` (`[batch, seq]`), logits out of `output`.
    Causal {
        /// The token input.
        input: String,
        /// The logits output.
        output: String,
    },
    /// Why the model cannot generate.
    Refused(String),
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
        DType::F32 => 4,
        DType::F16 | DType::BF16 => 2,
        DType::I32 | DType::I64 => 8,
        DType::Bool => 1,
    }
}

/// Arena offsets are aligned to a cache line.
pub const ALIGN: usize = 64;

/// Element count of a buffer for these dims (saturating: an absurd size stays absurd instead
/// of wrapping).
pub fn numel(b: &Buffer, dims: &HashMap<String, i64>) -> usize {
    b.shape
        .iter()
        .map(|d| d.eval(&|s| dims.get(s).copied()).unwrap_or(i64::MAX).max(0) as usize)
        .fold(1usize, usize::saturating_mul)
}

/// The buffer whose memory a buffer of a frame uses (following aliases).
pub fn root(buffers: &[Buffer], mut buffer: usize) -> usize {
    while let Storage::Alias(of) = buffers[buffer].storage {
        buffer = of;
    }
    buffer
}

/// Bytes of a buffer in the arena, rounded up to the alignment. An empty buffer (a slice of
/// a sequence of one, `seq - 1` long) gets one alignment's worth too: kernels that select
/// between a load and a constant (padding) load at a clamped index before they select, so
/// even an empty buffer must point at readable memory.
fn arena_bytes(b: &Buffer, dims: &HashMap<String, i64>) -> usize {
    numel(b, dims)
        .saturating_mul(storage_bytes(b.dtype))
        .max(1)
        .div_ceil(ALIGN)
        .saturating_mul(ALIGN)
}

/// Offsets for blocks of `(bytes, lifetime)`, and the bytes they span.
///
/// Blocks with lifetimes go first, largest first, each at the lowest offset where it overlaps
/// no placed block whose lifetime overlaps its own; the rest get memory of their own after
/// them. Deterministic: ties go by position.
pub fn pack(blocks: &[(usize, Option<(usize, usize)>)]) -> (Vec<usize>, usize) {
    let mut offsets = vec![0; blocks.len()];
    let mut shared: Vec<usize> = (0..blocks.len())
        .filter(|&i| blocks[i].1.is_some())
        .collect();
    shared.sort_by_key(|&i| (std::cmp::Reverse(blocks[i].0), i));
    // (offset, end, lifetime) of the placed blocks, by offset.
    let mut placed: Vec<(usize, usize, (usize, usize))> = Vec::new();
    let mut top = 0usize;
    for i in shared {
        let (size, live) = (blocks[i].0, blocks[i].1.expect("filtered on lifetimes"));
        let mut at = 0usize;
        for &(start, end, other) in &placed {
            let overlaps_in_time = live.0 <= other.1 && other.0 <= live.1;
            if overlaps_in_time && at < end && start < at.saturating_add(size) {
                at = end;
            }
        }
        let pos = placed.partition_point(|p| p.0 <= at);
        placed.insert(pos, (at, at.saturating_add(size), live));
        offsets[i] = at;
        top = top.max(at.saturating_add(size));
    }
    for (i, b) in blocks.iter().enumerate() {
        if b.1.is_none() {
            offsets[i] = top;
            top = top.saturating_add(b.0);
        }
    }
    (offsets, top)
}

/// Arena offsets of a frame's arena buffers (None for others) and the bytes they span:
/// buffers with lifetimes share memory when they are not live at once (see [`pack`]).
pub fn layout(buffers: &[Buffer], dims: &HashMap<String, i64>) -> (Vec<Option<usize>>, usize) {
    let arena: Vec<usize> = (0..buffers.len())
        .filter(|&i| buffers[i].storage == Storage::Arena)
        .collect();
    let blocks: Vec<(usize, Option<(usize, usize)>)> = arena
        .iter()
        .map(|&i| (arena_bytes(&buffers[i], dims), buffers[i].live))
        .collect();
    let (at, size) = pack(&blocks);
    let mut offsets = vec![None; buffers.len()];
    for (k, &i) in arena.iter().enumerate() {
        offsets[i] = Some(at[k]);
    }
    (offsets, size)
}

/// Where every arena buffer of a plan lives for some dims.
#[derive(Clone, Debug, PartialEq)]
pub struct ArenaLayout {
    /// Offsets of the top level's buffers.
    pub top: Vec<Option<usize>>,
    /// Offsets of each kind's buffers, from the start of a call's region.
    pub kinds: Vec<Vec<Option<usize>>>,
    /// Where the region of each top-level `Call` step starts (by step; 0 for kernel steps).
    pub calls: Vec<usize>,
    /// The arena's size in bytes.
    pub bytes: usize,
}

impl Plan {
    /// The values of the symbols, in `symbols` order.
    pub fn dim_values(&self, dims: &HashMap<String, i64>) -> Vec<i64> {
        let mut values: Vec<i64> = self
            .symbols
            .iter()
            .map(|s| dims.get(s).copied().unwrap_or(0))
            .collect();
        values.resize(self.dims_width.max(values.len()), 0);
        values
    }

    /// Element count of a top-level buffer for these dims.
    pub fn numel(&self, buffer: usize, dims: &HashMap<String, i64>) -> usize {
        numel(&self.buffers[buffer], dims)
    }

    /// The arena for these dims. A call's kind needs a region for its own buffers while the
    /// call runs: with lifetimes, that region is one more block, live at the call's step, and
    /// shares memory like any buffer; without, one region after the top level serves all.
    pub fn layout(&self, dims: &HashMap<String, i64>) -> ArenaLayout {
        let mut kinds = Vec::new();
        let mut regions = Vec::new();
        for k in &self.kinds {
            let (offsets, size) = layout(&k.buffers, dims);
            kinds.push(offsets);
            regions.push(size.div_ceil(ALIGN).saturating_mul(ALIGN));
        }
        let arena: Vec<usize> = (0..self.buffers.len())
            .filter(|&i| self.buffers[i].storage == Storage::Arena)
            .collect();
        let shared = arena.iter().any(|&i| self.buffers[i].live.is_some());
        let mut blocks: Vec<(usize, Option<(usize, usize)>)> = arena
            .iter()
            .map(|&i| (arena_bytes(&self.buffers[i], dims), self.buffers[i].live))
            .collect();
        let calls: Vec<(usize, usize)> = self
            .steps
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Step::Call { kind, .. } => Some((i, regions[*kind])),
                Step::Kernel { .. } => None,
            })
            .collect();
        if shared {
            blocks.extend(calls.iter().map(|&(i, size)| (size, Some((i, i)))));
        } else {
            blocks.push((regions.iter().copied().max().unwrap_or(0), None));
        }
        let (at, bytes) = pack(&blocks);
        let mut top = vec![None; self.buffers.len()];
        for (k, &i) in arena.iter().enumerate() {
            top[i] = Some(at[k]);
        }
        let mut call_at = vec![0; self.steps.len()];
        for (k, &(i, _)) in calls.iter().enumerate() {
            call_at[i] = at[arena.len() + if shared { k } else { 0 }];
        }
        ArenaLayout {
            top,
            kinds,
            calls: call_at,
            bytes,
        }
    }

    /// Whether every arena buffer's size grows (or stays) as any dim grows: each of its
    /// extents is a polynomial without negative coefficients. Then an arena laid out for some
    /// dims holds the buffers of any dims no larger.
    pub fn sizes_grow(&self) -> bool {
        let frames = std::iter::once(&self.buffers).chain(self.kinds.iter().map(|k| &k.buffers));
        frames
            .flatten()
            .filter(|b| b.storage == Storage::Arena)
            .flat_map(|b| &b.shape)
            .all(|d| d.terms().all(|(_, c)| c >= 0))
    }

    /// The top-level buffer whose memory a buffer uses (following aliases).
    pub fn root(&self, buffer: usize) -> usize {
        root(&self.buffers, buffer)
    }
}
