//! What a sparsely routed mixture of experts knows beside its dense body: which operands are
//! the tokens and the routing weights, and each expert as a graph over the rows routed to it.
//!
//! A `fused.moe` region's body is the prelude's reference form (every expert on every token,
//! weighted, summed), so it still says what the region means. The experts here are the same
//! computations over a symbolic row count [`ROUTED`]: the interpreter and the kernels bind it to
//! the number of tokens that give an expert a nonzero weight, and run the expert on those rows
//! only.

use std::fmt;

use super::{print_graph, Graph};

/// The symbol of an expert's row count: the tokens routed to it, known only at run time. It
/// cannot be a user's dim (those are identifiers).
pub const ROUTED: &str = "$routed";

/// One expert of a sparse mixture.
#[derive(Clone, Debug)]
pub struct Expert {
    /// The expert on its routed rows: input `"0"` is the rows `[ROUTED, dim]` gathered from the
    /// tokens, input `"i"` (i ≥ 1) is the region's operand `slots[i − 1]` (a weight or a
    /// constant), output `"out"` is `[ROUTED, dim]`.
    pub body: Graph,
    /// The region operand behind each body input after the first.
    pub slots: Vec<usize>,
}

/// A mixture of experts: `Σₑ w[…, e] · expertₑ(x)[…]` where only tokens with `w[…, e] ≠ 0`
/// run expert `e`.
#[derive(Clone, Debug)]
pub struct MoeInfo {
    /// The region operand holding the tokens `x: [rows…, dim]`.
    pub x: usize,
    /// The region operand holding the routing weights `w: [rows…, experts]` (zero: not routed).
    pub w: usize,
    /// The experts, in the order of `w`'s last axis.
    pub experts: Vec<Expert>,
}

impl PartialEq for MoeInfo {
    fn eq(&self, other: &MoeInfo) -> bool {
        // The printer is deterministic, so equal texts mean equal expert bodies.
        self.x == other.x
            && self.w == other.w
            && self.experts.len() == other.experts.len()
            && self
                .experts
                .iter()
                .zip(&other.experts)
                .all(|(a, b)| a.slots == b.slots && print_graph(&a.body) == print_graph(&b.body))
    }
}

impl Eq for MoeInfo {}

impl std::hash::Hash for MoeInfo {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // What `eq` compares, so equal values hash alike.
        self.x.hash(state);
        self.w.hash(state);
        for e in &self.experts {
            e.slots.hash(state);
            print_graph(&e.body).hash(state);
        }
    }
}

impl MoeInfo {
    /// The bracketed part of `fused.moe[…]` in dumps.
    pub fn fmt_kind(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "[x=in{}, w=in{}, experts={}]",
            self.x,
            self.w,
            self.experts.len()
        )
    }
}
