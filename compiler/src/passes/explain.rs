//! Notes on what the fusion passes did with the patterns they look for: an attention
//! (`matmul → softmax → matmul`) that was not tiled, or a scan whose state is stored, with the
//! reason, at the source of the op. A missed fusion can cost a `seq × seq` buffer, so
//! `archc check` prints these notes; `--explain-fusion` adds the fusions that happened.

use petgraph::graph::NodeIndex;

use crate::graph::{Graph, Node};

/// One fusion decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    /// The pattern: `attention` or `scan`.
    pub what: &'static str,
    /// Where the pattern's op was written (`Node::at`: the user's call site, then the prelude
    /// location; empty for ops the passes made).
    pub at: String,
    /// The weight scope of the op, for ops without a span.
    pub scope: String,
    /// Whether the pattern was fused.
    pub fused: bool,
    /// What was decided and why: `is not tiled: the scores are also used by `add``.
    pub text: String,
    /// Where the value that prevented the fusion is used, when that is the reason (empty
    /// otherwise).
    pub used_at: String,
}

impl Note {
    /// A note on the node `n` of `g`.
    pub fn on(g: &Graph, n: NodeIndex, what: &'static str, fused: bool, text: String) -> Note {
        let node: &Node = &g.dag[n];
        Note {
            what,
            at: node.at.clone(),
            scope: node.scope.clone(),
            fused,
            text,
            used_at: String::new(),
        }
    }

    /// The note as one line: `note: attention at model.arch:12:5 is not tiled: …`.
    pub fn render(&self) -> String {
        let place = match self.at.as_str() {
            "" if self.scope.is_empty() => "model level".to_string(),
            "" => format!("@{}", self.scope),
            at => at.to_string(),
        };
        let used = match self.used_at.as_str() {
            "" => String::new(),
            at => format!(" at {at}"),
        };
        format!("note: {} at {place} {}{used}", self.what, self.text)
    }
}
