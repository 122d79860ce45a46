//! Ops whose meaning is a graph of their own: fused regions (one kernel each) and layer kinds
//! (one compiled body per distinct layer of a stack).
//!
//! A region's `body` is an ordinary Graph IR graph: its inputs are named `"0"`, `"1"`, … for
//! the fused node's operands in slot order, and its one output `"out"` is the node's value. The
//! reference interpreter runs the body as written, so a fusion pass is correct exactly when the
//! body computes what the nodes it replaced computed; the lowering derives one kernel from it.

use std::fmt;
use std::hash::{Hash, Hasher};

use petgraph::graph::NodeIndex;

use super::{Dim, Graph, Structure};

/// Tiled attention: the body is `matmul(q, permute(k))` → score modifications → `softmax` over
/// the key axis → `matmul(·, v)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AttentionInfo {
    /// The `matmul(q, kᵀ)` node: raw scores `[…, s, t]`.
    pub scores: NodeIndex,
    /// The softmax input: the scores after the user's modifications and masks.
    pub logits: NodeIndex,
    /// Body input slots of q `[…, s, d]`, k `[…, t, d]` and v `[…, t, dv]`.
    pub qkv: [usize; 3],
    /// The keys each query can see, as the pass proved from the outermost masks: blocks of
    /// keys wholly outside the range are skipped.
    pub keys: KeyRange,
    /// k's slot holds a tensor `r` with k = `permute(k_order)(r)` (the identity when k itself
    /// is the input); its last axis is r's last, so rows of k stay contiguous.
    pub k_order: Vec<usize>,
}

/// Which keys `j` a query `i` can see: `lo ≤ j − i ≤ hi`, each bound absent when unbounded.
/// A causal mask is `hi = 0`; Mistral's sliding window of `w` keys is `lo = 1 − w, hi = 0`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyRange {
    /// The lowest `j − i` visible.
    pub lo: Option<i64>,
    /// The highest `j − i` visible.
    pub hi: Option<i64>,
}

impl KeyRange {
    /// The causal range: every key up to the query.
    pub const CAUSAL: KeyRange = KeyRange {
        lo: None,
        hi: Some(0),
    };
}

impl fmt::Display for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match (self.lo, self.hi) {
            (None, None) => Ok(()),
            (None, Some(0)) => write!(f, ", causal"),
            // j − i as a Rust range: `keys=-3..=0` is a sliding window of 4.
            (lo, hi) => {
                write!(f, ", keys=")?;
                if let Some(lo) = lo {
                    write!(f, "{lo}")?;
                }
                write!(f, "..")?;
                match hi {
                    Some(hi) => write!(f, "={hi}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Which part of attention's backward a region computes (see `grad/attention.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttentionPart {
    /// The softmax's statistics of each query row `[…, s, 2]`: the logits' max `m` and
    /// `log Σ exp(x − m)`, recomputed so that the forward kernel stays as it is. (Kept apart:
    /// `m + log l` would lose `log l` against a masked row's `m` of −10³⁰.)
    Stats,
    /// dq `[…, s, d]`: one query row per parallel iteration, the visible keys streamed.
    Queries,
    /// dk and dv side by side, `[…, t, d + dv]`: one key row per parallel iteration, the
    /// queries that see it streamed.
    KeysValues,
}

/// FlashAttention's backward for one attention: the body recomputes the scores and logits
/// from q and k, the probabilities `p = exp(logits − m − log l)`, `dp = dO·vᵀ` and the score
/// gradient `ds` (the user's modifications differentiated); the kernel evaluates them one
/// score at a time, so no `[…, s, t]` tensor is stored.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AttentionGradInfo {
    /// What the region computes.
    pub part: AttentionPart,
    /// The `matmul(q, kᵀ)` node.
    pub scores: NodeIndex,
    /// The scores after the user's modifications (the forward softmax's input).
    pub logits: NodeIndex,
    /// The `matmul(dO, vᵀ)` node (not in the statistics part).
    pub dprobs: Option<NodeIndex>,
    /// The gradient of the raw scores (not in the statistics part).
    pub dscores: Option<NodeIndex>,
    /// The probabilities (the keys-and-values part).
    pub probs: Option<NodeIndex>,
    /// Body input slots of q `[…, s, d]` and k (held as `permute(k_order)` of the slot, as in
    /// [`AttentionInfo`]); of v and dO when the part reads them.
    pub q: usize,
    /// See `q`.
    pub k: usize,
    /// See `q`.
    pub v: Option<usize>,
    /// See `q`.
    pub dout: Option<usize>,
    /// The keys each query sees, as the forward attention's pass proved.
    pub keys: KeyRange,
    /// As [`AttentionInfo::k_order`].
    pub k_order: Vec<usize>,
}

/// A fused selective scan: `scan(a, b)` with `a` and `b` computed in the kernel from smaller
/// tensors, read out by a reduction over state axes (`Σₙ h·C`) and an elementwise epilogue, so
/// the state tensor is never stored.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ScanInfo {
    /// The `scan` node.
    pub scan: NodeIndex,
    /// The reduction that reads the state out, if any (without one the kernel stores h).
    pub readout: Option<NodeIndex>,
    /// The chunked SSD form, when the scan has Mamba-2's structure.
    pub ssd: Option<SsdInfo>,
}

/// Mamba-2's structured state-space duality: the decay is one scalar per head and step, the
/// input the outer product `x ⊗ B` of a per-channel value and a per-state one, and the
/// read-out `Σₙ h·C`. Then a chunk of steps is two small matmuls (`C·Bᵀ` masked by the decays,
/// times x) plus one pass over the chunk's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SsdInfo {
    /// The per-channel factor of the input (`Δ·x`).
    pub x: NodeIndex,
    /// The per-state factor of the input (`B`).
    pub b: NodeIndex,
    /// The per-state factor of the read-out (`C`).
    pub c: NodeIndex,
}

/// The backward of a fused scan ([`ScanInfo`] with a read-out), as Mamba's: the body is the
/// forward body, the read-out's and epilogue's gradients, the reverse-time scan of the state's
/// gradient `λ` and the gradients of the region's inputs, flattened and laid end to end. The
/// kernel walks each channel's sequence backwards chunk by chunk, recomputing the chunk's
/// states from checkpoints it saved, so no `[…, seq, …, state]` tensor is stored.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ScanGradInfo {
    /// The forward `scan` node (the state h, recomputed).
    pub scan: NodeIndex,
    /// The state before each step, h[t − 1] (a pad of a slice of h), when a gradient reads it.
    pub h_prev: Option<NodeIndex>,
    /// The gradient flowing into the state from the read-out, g[t].
    pub seed: NodeIndex,
    /// The state's total gradient λ[t] = g[t] + a[t + 1]·λ[t + 1] (its nodes are never
    /// evaluated: the kernel carries the recurrence).
    pub lambda: NodeIndex,
    /// The state axes the forward read-out sums (the trailing ones).
    pub state: Vec<usize>,
    /// Whether the read-out keeps them (as size 1).
    pub keepdim: bool,
    /// The axes of the state the kernel runs in parallel (one task per coordinate): every
    /// gradient keeps them, so no two tasks add into one element.
    pub parallel: Vec<usize>,
    /// The gradient of each input that needs one, in the order the output lays them out.
    pub grads: Vec<NodeIndex>,
}

/// How the values of a fused scan's body line up with the state `h`'s axes: the discretisation
/// broadcasts against h from the right; the read-out and the epilogue have h's shape without
/// its (trailing) state axes, or with them of size 1.
pub struct ScanFrames<'a> {
    /// The state's shape.
    pub h: &'a [Dim],
    /// The state axes (trailing).
    pub state: &'a [usize],
    /// Whether the read-out keeps the state axes.
    pub keepdim: bool,
}

impl ScanFrames<'_> {
    /// For a value of `shape`: the axes of its frame (the state's or the read-out's) and the
    /// state axis each of its axes stands for. A value of the state's rank is in the state's
    /// frame; a smaller one lines up with the read-out's from the right if it can, else with
    /// the state's. None: it fits neither.
    pub fn axes_of(&self, shape: &[Dim]) -> Option<(Vec<usize>, Vec<usize>)> {
        let one = Dim::constant(1);
        let h_axes: Vec<usize> = (0..self.h.len()).collect();
        let y_axes: Vec<usize> = if self.keepdim {
            h_axes.clone()
        } else {
            h_axes
                .iter()
                .copied()
                .filter(|a| !self.state.contains(a))
                .collect()
        };
        let fits = |frame: &[usize]| {
            let lead = frame.len().checked_sub(shape.len())?;
            let ok = shape
                .iter()
                .zip(&frame[lead..])
                .all(|(d, a)| *d == self.h[*a] || *d == one);
            ok.then(|| (frame.to_vec(), frame[lead..].to_vec()))
        };
        if shape.len() == self.h.len() {
            return fits(&h_axes);
        }
        fits(&y_axes).or_else(|| fits(&h_axes))
    }

    /// [`ScanFrames::axes_of`], or for a value that fits no frame but has the rank of one (an
    /// input sliced in the body, its gradient padded back) the axes of that frame.
    pub fn loose_axes_of(&self, shape: &[Dim]) -> Option<Vec<usize>> {
        if let Some((_, axes)) = self.axes_of(shape) {
            return Some(axes);
        }
        let h_axes: Vec<usize> = (0..self.h.len()).collect();
        let y_axes: Vec<usize> = h_axes
            .iter()
            .copied()
            .filter(|a| !self.state.contains(a))
            .collect();
        [h_axes, y_axes]
            .into_iter()
            .find(|f| f.len() == shape.len())
    }
}

/// Which kernel template a region becomes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RegionKind {
    /// One loop nest over the output: elementwise, broadcast and layout ops.
    Elementwise,
    /// A reduction (the anchor) with its operand computed in the reduction loop (prologue) and
    /// elementwise ops on its result (epilogue).
    Reduce {
        /// The reduction node in the body.
        anchor: NodeIndex,
    },
    /// A matmul (the anchor) with elementwise ops applied as its output is stored.
    MatMul {
        /// The matmul node in the body.
        anchor: NodeIndex,
    },
    /// Attention as one tiled kernel with an online softmax.
    Attention(AttentionInfo),
    /// A part of an attention's backward, streamed like the forward.
    AttentionGrad(AttentionGradInfo),
    /// A selective scan with its discretisation and read-out.
    Scan(ScanInfo),
    /// A fused scan's backward, its states recomputed chunk by chunk.
    ScanGrad(ScanGradInfo),
    /// A mixture of experts routed sparsely: each expert runs on the tokens routed to it.
    Moe(super::MoeInfo),
}

impl RegionKind {
    /// The same kind with every body node it names renamed by `f` (after a rewrite of the
    /// body renumbered its nodes).
    pub fn map_nodes(&self, f: impl Fn(NodeIndex) -> NodeIndex) -> RegionKind {
        let opt = |n: Option<NodeIndex>| n.map(&f);
        match self {
            RegionKind::Elementwise | RegionKind::Moe(_) => self.clone(),
            RegionKind::Reduce { anchor } => RegionKind::Reduce { anchor: f(*anchor) },
            RegionKind::MatMul { anchor } => RegionKind::MatMul { anchor: f(*anchor) },
            RegionKind::Attention(a) => RegionKind::Attention(AttentionInfo {
                scores: f(a.scores),
                logits: f(a.logits),
                ..a.clone()
            }),
            RegionKind::AttentionGrad(a) => RegionKind::AttentionGrad(AttentionGradInfo {
                scores: f(a.scores),
                logits: f(a.logits),
                dprobs: opt(a.dprobs),
                dscores: opt(a.dscores),
                probs: opt(a.probs),
                ..a.clone()
            }),
            RegionKind::ScanGrad(s) => RegionKind::ScanGrad(ScanGradInfo {
                scan: f(s.scan),
                h_prev: opt(s.h_prev),
                seed: f(s.seed),
                lambda: f(s.lambda),
                state: s.state.clone(),
                keepdim: s.keepdim,
                parallel: s.parallel.clone(),
                grads: s.grads.iter().map(|n| f(*n)).collect(),
            }),
            RegionKind::Scan(s) => RegionKind::Scan(ScanInfo {
                scan: f(s.scan),
                readout: opt(s.readout),
                ssd: s.ssd.as_ref().map(|d| SsdInfo {
                    x: f(d.x),
                    b: f(d.b),
                    c: f(d.c),
                }),
            }),
        }
    }

    /// The short name dumps show: `fused.<name>`.
    pub fn name(&self) -> &'static str {
        match self {
            RegionKind::Elementwise => "elementwise",
            RegionKind::Reduce { .. } => "reduce",
            RegionKind::MatMul { .. } => "matmul",
            RegionKind::Attention(_) => "attention",
            RegionKind::AttentionGrad(a) => match a.part {
                AttentionPart::Stats => "attention_stats",
                AttentionPart::Queries => "attention_dq",
                AttentionPart::KeysValues => "attention_dkv",
            },
            RegionKind::ScanGrad(_) => "scan_grad",
            RegionKind::Scan(ScanInfo { ssd: Some(_), .. }) => "ssd",
            RegionKind::Scan(_) => "scan",
            RegionKind::Moe(_) => "moe",
        }
    }
}

impl std::fmt::Display for RegionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fused.{}", self.name())?;
        match self {
            RegionKind::Elementwise => Ok(()),
            RegionKind::Reduce { anchor } | RegionKind::MatMul { anchor } => {
                write!(f, "[anchor=%{}]", anchor.index())
            }
            RegionKind::Attention(a) => write!(
                f,
                "[scores=%{}, logits=%{}, q/k/v=in{}/in{}/in{}{}{}]",
                a.scores.index(),
                a.logits.index(),
                a.qkv[0],
                a.qkv[1],
                a.qkv[2],
                k_permute(&a.k_order),
                a.keys
            ),
            RegionKind::AttentionGrad(a) => {
                let node =
                    |n: Option<NodeIndex>| n.map_or("-".to_string(), |n| format!("%{}", n.index()));
                let slot = |s: Option<usize>| s.map_or("-".to_string(), |s| format!("in{s}"));
                write!(
                    f,
                    "[scores=%{}, logits=%{}, dp={}, ds={}, p={}, q/k/v/dO=in{}/in{}/{}/{}{}{}]",
                    a.scores.index(),
                    a.logits.index(),
                    node(a.dprobs),
                    node(a.dscores),
                    node(a.probs),
                    a.q,
                    a.k,
                    slot(a.v),
                    slot(a.dout),
                    k_permute(&a.k_order),
                    a.keys
                )
            }
            RegionKind::Scan(s) => {
                write!(f, "[scan=%{}", s.scan.index())?;
                if let Some(r) = s.readout {
                    write!(f, ", readout=%{}", r.index())?;
                }
                if let Some(d) = &s.ssd {
                    write!(
                        f,
                        ", x=%{}, B=%{}, C=%{}",
                        d.x.index(),
                        d.b.index(),
                        d.c.index()
                    )?;
                }
                f.write_str("]")
            }
            RegionKind::ScanGrad(s) => {
                let h_prev = s
                    .h_prev
                    .map_or("-".to_string(), |n| format!("%{}", n.index()));
                let grads: Vec<String> =
                    s.grads.iter().map(|n| format!("%{}", n.index())).collect();
                write!(
                    f,
                    "[scan=%{}, h_prev={h_prev}, seed=%{}, lambda=%{}, state={:?}, parallel={:?}, grads={}]",
                    s.scan.index(),
                    s.seed.index(),
                    s.lambda.index(),
                    s.state,
                    s.parallel,
                    grads.join(" ")
                )
            }
            RegionKind::Moe(m) => m.fmt_kind(f),
        }
    }
}

/// `, k=permute[…]` when k is held permuted, else nothing.
fn k_permute(order: &[usize]) -> String {
    if order.iter().enumerate().all(|(i, a)| i == *a) {
        String::new()
    } else {
        format!(", k=permute{order:?}")
    }
}

/// A fused region: one kernel's worth of work, with its meaning as a body graph.
#[derive(Clone, Debug)]
pub struct Region {
    /// The template.
    pub kind: RegionKind,
    /// What it computes.
    pub body: Graph,
}

impl PartialEq for Region {
    fn eq(&self, other: &Region) -> bool {
        self.kind == other.kind && Structure(&self.body) == Structure(&other.body)
    }
}

impl Eq for Region {}

impl Hash for Region {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
        Structure(&self.body).hash(state);
    }
}

impl Region {
    /// The body output: the region's value.
    pub fn output(&self) -> NodeIndex {
        self.body.outputs["out"]
    }

    /// The body node that reads operand `slot`.
    pub fn input(&self, slot: usize) -> NodeIndex {
        self.body.inputs[&slot.to_string()]
    }
}

/// One distinct layer of a stack, compiled once and called at every depth that has it.
#[derive(Clone, Debug)]
pub struct LayerKind {
    /// The layer's description, e.g. `layer(mixer=mamba_mixer, ff=moe_ffn)`.
    pub name: String,
    /// The layer as a graph: inputs `"0"`, `"1"`, … are the call's operands (the carried value,
    /// captured values and the layer's weights), output `"out"` is the layer's result.
    pub body: Graph,
    /// Names for the body inputs in dumps (the first layer's weight names, relative to it).
    pub slots: Vec<String>,
    /// How many layers call it.
    pub calls: usize,
}
