//! The recurrent step, derived from a model's sequence graph.
//!
//! A causal model's output at the new positions depends on the earlier positions only through
//! a few values, and this module finds them from the graph alone, following what every axis of
//! every value covers along the stream (see [`axes`]):
//! - a value read over the whole context (attention's keys and values, read by a contraction
//!   over the keys) keeps its history: a *cache* part, appended to at every step;
//! - a causal convolution (a pad of `k − 1` before the new positions, read by a gather of
//!   windows `position + j`) keeps its last `k − 1` inputs: a *window* part;
//! - a `scan` (Mamba's selective scan, cumulative sums) keeps its last value: a *carry* part;
//! - positions from `iota(seq)` (rotary tables, learned position tables, the causal mask's
//!   query side) gain the offset `past`.
//!
//! [`derive`] builds two graphs with the same parts: [`Phase::Prefill`] runs the prompt from an
//! empty State, and [`Phase::Step`] runs `seq` new positions after `past` earlier ones, with
//! the State as inputs. Each part's new value is an output of the same name (a cache part
//! outputs only its new positions, which the runtime appends). Both are ordinary graphs: the
//! passes fuse them (attention against the cache, the single-step scan) and every backend
//! runs them. The derivation works before fusion, on the elaborated graph.

mod axes;
mod derive;
mod index_bounds;

use std::fmt;

use archc_runtime::DType;
use thiserror::Error;

use crate::graph::{Dim, Graph, Ieee64, NodeIndex, TypeError};

pub use derive::derive;

/// Which of the two derived graphs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The prompt, from an empty State: no state inputs, positions from 0.
    Prefill,
    /// New positions after `past` earlier ones, whose State is given.
    Step,
}

/// A derived graph and the State its inputs and outputs carry.
#[derive(Clone, Debug)]
pub struct Derived {
    /// The graph: the token input and the output chosen from, plus one input (step only) and
    /// one output per part.
    pub graph: Graph,
    /// The State's parts, in program order.
    pub parts: Vec<StatePart>,
}

/// One tensor of the State.
#[derive(Clone, Debug, PartialEq)]
pub struct StatePart {
    /// The input and output name, from the weight scope: `model.layers.0.self_attn.cache0`.
    pub name: String,
    /// How the step's output updates it.
    pub kind: PartKind,
    /// Element type.
    pub dtype: DType,
    /// Shape as the step reads it (a cache's stream axis is `past` long).
    pub shape: Vec<Dim>,
    /// The operation whose value it keeps, for messages.
    pub origin: String,
}

/// How a part changes with each step.
#[derive(Clone, Debug, PartialEq)]
pub enum PartKind {
    /// The history of a value: the step's output (its new positions) is appended along `axis`.
    Append {
        /// The stream axis.
        axis: usize,
    },
    /// A fixed-size state the step's output replaces; before the first step it is `fill`.
    Replace {
        /// The value of a fresh State.
        fill: Ieee64,
    },
}

impl fmt::Display for StatePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shape: Vec<String> = self.shape.iter().map(Dim::to_string).collect();
        // Bytes of the constant dims: per row of the batch, and per position for a cache.
        let bytes: i64 = self
            .shape
            .iter()
            .filter_map(Dim::as_const)
            .product::<i64>()
            .saturating_mul(self.dtype.size_bytes() as i64);
        let how = match &self.kind {
            PartKind::Append { axis } => {
                format!("append along axis {axis}, {bytes} B per row and position")
            }
            PartKind::Replace { fill } => {
                format!("replace, fresh {:?}, {bytes} B per row", fill.value())
            }
        };
        write!(
            f,
            "state {} : {}[{}]  {how}",
            self.name,
            self.dtype,
            shape.join(", ")
        )
    }
}

/// Why a step cannot be derived.
#[derive(Debug, Error)]
pub enum StepError {
    /// The token input is not an input of the model.
    #[error("the model has no input `{0}`")]
    NoInput(String),
    /// The output is not an output of the model.
    #[error("the model has no output `{0}`")]
    NoOutput(String),
    /// An operation the derivation cannot carry over to new positions.
    #[error("cannot derive a recurrent step: {origin} is {what}")]
    Unsupported {
        /// The operation (`Node::origin`).
        origin: String,
        /// What it is.
        what: String,
    },
    /// A derived node does not type-check (a bug of the derivation).
    #[error("the derived step does not type-check at {origin}: {error:?}")]
    Type {
        /// The operation.
        origin: String,
        /// The error.
        error: TypeError,
    },
}

impl StepError {
    fn unsupported(g: &Graph, v: NodeIndex, what: &str) -> StepError {
        StepError::Unsupported {
            origin: g.dag[v].origin(),
            what: what.to_string(),
        }
    }
}

/// The text of `dump --stage step`: the State's parts, then the step graph.
pub fn print_step(d: &Derived) -> String {
    let mut out = String::new();
    for p in &d.parts {
        out.push_str(&p.to_string());
        out.push('\n');
    }
    out.push_str(&crate::graph::print_graph(&d.graph));
    out
}
