//! The region-contract verifier: a fused node or a layer call against the body that gives it
//! its meaning. It checks:
//!
//! 1. **Well-formed bodies**: each region body and layer kind body passes the graph verifier
//!    ([`super::graph`]) itself.
//! 2. **Interface**: the body's inputs are exactly `"0"`, `"1"`, … for the node's operands,
//!    each of the operand's type; its one output is `"out"` (a region) or `"out"` among its
//!    outputs (a kind), of the node's type. A `call` names an existing kind.
//! 3. **Anchors**: the body nodes a region's kind names exist and are what it says: a reduce
//!    region's anchor is a reduce, a matmul region's a matmul, attention's scores a matmul and
//!    its q/k/v slots operands of the node, a scan region's scan a scan and its read-out a
//!    reduce, and an SSD's x, B and C nodes of the body.

use petgraph::graph::NodeIndex;

use super::graph::{in_body, place};
use super::{Ir, Problem};
use crate::graph::{AttentionPart, Graph, Op, Region, RegionKind};

/// Checks the fused node `n` of `g` (at `path`) against its region `r`.
pub(super) fn fused(g: &Graph, n: NodeIndex, r: &Region, path: &str, out: &mut Vec<(Ir, Problem)>) {
    let inner = format!("{path}%{}/", n.index());
    in_body(&r.body, &inner, out);
    let mut problems = interface(g, n, &r.body, true);
    problems.extend(anchors(r, g.operands(n).len()));
    report(g, n, path, problems, out);
}

/// Checks the call node `n` of `g` (at `path`) against layer kind `k`.
pub(super) fn call(g: &Graph, n: NodeIndex, k: usize, path: &str, out: &mut Vec<(Ir, Problem)>) {
    let problems = match g.kinds.get(k) {
        Some(kind) => interface(g, n, &kind.body, false),
        None => vec![format!(
            "calls kind{k}, but there are {} kinds",
            g.kinds.len()
        )],
    };
    report(g, n, path, problems, out);
}

fn report(
    g: &Graph,
    n: NodeIndex,
    path: &str,
    problems: Vec<String>,
    out: &mut Vec<(Ir, Problem)>,
) {
    out.extend(problems.into_iter().map(|what| {
        (
            Ir::Regions,
            Problem {
                at: place(g, path, n),
                what,
            },
        )
    }));
}

/// What does not match between node `n`'s operands and type and `body`'s inputs and output.
fn interface(g: &Graph, n: NodeIndex, body: &Graph, region: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let ops = g.operands(n);
    let names: Vec<String> = (0..ops.len()).map(|i| i.to_string()).collect();
    if body.inputs.keys().ne(names.iter()) {
        let have: Vec<&String> = body.inputs.keys().collect();
        problems.push(format!(
            "the body's inputs are {have:?}, not one per operand (0..{})",
            ops.len()
        ));
    }
    for (i, o) in ops.iter().enumerate() {
        let Some(b) = body.inputs.get(&i.to_string()) else {
            continue;
        };
        match body.dag.node_weight(*b) {
            Some(w) if w.ty == *g.ty(*o) => {}
            Some(w) => problems.push(format!(
                "body input {i} is {}, but operand {i} is {}",
                w.ty,
                g.ty(*o)
            )),
            None => problems.push(format!("body input {i} is not a node of the body")),
        }
    }
    if region && body.outputs.len() != 1 {
        problems.push(format!(
            "the body has {} outputs, not one (`out`)",
            body.outputs.len()
        ));
    }
    match body
        .outputs
        .get("out")
        .and_then(|o| body.dag.node_weight(*o))
    {
        Some(w) if w.ty == g.dag[n].ty => {}
        Some(w) => problems.push(format!(
            "the body's output is {}, but the node is {}",
            w.ty, g.dag[n].ty
        )),
        None => problems.push("the body has no output `out`".into()),
    }
    problems
}

/// A body node a region kind names: what it is for, the node, and which ops it may be.
type Want = (&'static str, NodeIndex, fn(&Op) -> bool);

/// What the region's kind names that the body does not have.
fn anchors(r: &Region, operands: usize) -> Vec<String> {
    let b = &r.body;
    let is =
        |n: NodeIndex, want: fn(&Op) -> bool| b.dag.node_weight(n).is_some_and(|w| want(&w.op));
    let reduce: fn(&Op) -> bool = |op| matches!(op, Op::Reduce { .. });
    let matmul: fn(&Op) -> bool = |op| matches!(op, Op::MatMul);
    let any: fn(&Op) -> bool = |_| true;
    let mut wants: Vec<Want> = Vec::new();
    match &r.kind {
        RegionKind::Elementwise => {}
        RegionKind::Reduce { anchor } => wants.push(("anchor (a reduce)", *anchor, reduce)),
        RegionKind::MatMul { anchor } => wants.push(("anchor (a matmul)", *anchor, matmul)),
        RegionKind::Attention(a) => {
            wants.push(("scores (a matmul)", a.scores, matmul));
            wants.push(("logits", a.logits, any));
            if let Some(s) = a.qkv.iter().find(|s| **s >= operands) {
                return vec![format!("attention reads slot {s} of {operands} operands")];
            }
        }
        RegionKind::AttentionGrad(a) => {
            wants.push(("scores (a matmul)", a.scores, matmul));
            wants.push(("logits", a.logits, any));
            let streamed = a.part != AttentionPart::Stats;
            let nodes = [
                ("dp", a.dprobs, streamed),
                ("ds", a.dscores, streamed),
                ("p", a.probs, a.part == AttentionPart::KeysValues),
            ];
            for (what, n, needed) in nodes {
                match n {
                    Some(n) if what == "dp" => wants.push(("dp (a matmul)", n, matmul)),
                    Some(n) => wants.push((what, n, any)),
                    None if needed => {
                        return vec![format!("its {} part has no {what}", r.kind.name())]
                    }
                    None => {}
                }
            }
            let slots = [Some(a.q), Some(a.k), a.v, a.dout];
            if streamed && slots.iter().any(Option::is_none) {
                return vec![format!("its {} part reads no v or dO", r.kind.name())];
            }
            if let Some(s) = slots.into_iter().flatten().find(|s| *s >= operands) {
                return vec![format!(
                    "attention's backward reads slot {s} of {operands} operands"
                )];
            }
        }
        RegionKind::Scan(s) => {
            wants.push(("scan", s.scan, |op| matches!(op, Op::Scan { .. })));
            if let Some(r) = s.readout {
                wants.push(("readout (a reduce)", r, reduce));
            }
            if let Some(d) = &s.ssd {
                wants.extend([("x", d.x, any), ("B", d.b, any), ("C", d.c, any)]);
            }
        }
        RegionKind::ScanGrad(s) => {
            wants.push(("scan", s.scan, |op| matches!(op, Op::Scan { .. })));
            wants.push(("seed", s.seed, any));
            wants.push(("lambda", s.lambda, any));
            wants.extend(s.h_prev.map(|n| ("h_prev", n, any)));
            wants.extend(s.grads.iter().map(|n| ("gradient", *n, any)));
        }
        RegionKind::Moe(m) => {
            if let Some(s) = [m.x, m.w].into_iter().find(|s| *s >= operands) {
                return vec![format!("the mixture reads slot {s} of {operands} operands")];
            }
        }
    }
    wants
        .into_iter()
        .filter(|(_, n, want)| !is(*n, *want))
        .map(|(what, n, _)| match b.dag.node_weight(n) {
            Some(w) => format!("its {what} is %{}, a `{}`", n.index(), w.op),
            None => format!("its {what} is %{}, which the body does not have", n.index()),
        })
        .collect()
}
