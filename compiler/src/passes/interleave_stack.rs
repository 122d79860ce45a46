//! `interleave_stack`: each distinct layer of a stack is compiled once.
//!
//! Elaboration unrolls a stack: layer i is the nodes created while it was elaborated. The pass
//! outlines each layer into a body whose inputs are what the layer reads from outside: the
//! carried value, captured values (token embeddings, a padding mask) and its weights. Layers
//! whose bodies are the same graph (weights differ only in name) share one *layer kind*; the
//! top level keeps one `call` per layer, on that layer's own weights. Every later pass, the
//! lowering and the code generator then see a kind once, so compile time follows the number
//! of distinct kinds, not the depth; a `shared` block's weights are simply the same slot
//! arguments at several calls.
//!
//! Values computed from weights alone (a transposed weight) are left at the top level, where
//! they are prepared once when the weights load, and passed in like weights.

use std::collections::{HashMap, HashSet};

use petgraph::graph::NodeIndex;

use super::op_kinds::users;
use super::outline::outline;
use super::rewrite::Rewriter;
use crate::graph::{Graph, LayerKind, LayerSpan, Op, Structure};

/// Runs the pass.
pub fn run(g: &Graph) -> Graph {
    let users = users(g);
    let hoisted = hoisted(g);
    let mut kinds: Vec<LayerKind> = Vec::new();
    // Each kind's body without weight scopes: layers whose bodies have this structure share it.
    let mut signatures: Vec<Graph> = Vec::new();
    // Output node of each outlined layer → (its kind, the nodes its slots read).
    let mut calls: HashMap<NodeIndex, (usize, Vec<NodeIndex>)> = HashMap::new();
    let mut members: HashSet<NodeIndex> = HashSet::new();
    for stack in &g.stacks {
        for (i, span) in stack.spans.iter().enumerate() {
            let Some(layer) = layer_members(g, &users, &hoisted, span) else {
                continue;
            };
            // A stack inside a layer of another stack: the inner layers are outlined first,
            // and the outer layer stays unrolled around their calls.
            if layer.iter().any(|m| members.contains(m)) {
                continue;
            }
            let scope = format!("{}.{i}", stack.scope);
            let out = outline(g, &layer, span.output);
            let body = relative(out.body, &scope);
            let signature = without_scopes(&body);
            let k = match signatures
                .iter()
                .position(|s| Structure(s) == Structure(&signature))
            {
                Some(k) => k,
                None => {
                    signatures.push(signature);
                    let slots = out
                        .leaves
                        .iter()
                        .map(|l| slot_name(g, *l, span, &scope))
                        .collect();
                    kinds.push(LayerKind {
                        name: stack.layers[i].clone(),
                        body,
                        slots,
                        calls: 0,
                    });
                    kinds.len() - 1
                }
            };
            kinds[k].calls += 1;
            members.extend(layer);
            calls.insert(span.output, (k, out.leaves));
        }
    }
    let mut r = Rewriter::new(g);
    r.new.kinds = kinds;
    for v in g.dag.node_indices() {
        if let Some((k, leaves)) = calls.get(&v) {
            let operands: Vec<NodeIndex> = leaves.iter().map(|l| r.at(*l)).collect();
            let node = &g.dag[v];
            let n = r.new.add_like(node, Op::Call(*k), &operands);
            r.set(v, n);
        } else if !members.contains(&v) {
            r.copy(v);
        }
    }
    r.finish()
}

/// Nodes computed from weights alone (that read at least one weight): they stay at the top
/// level, prepared once, and reach the layers as slots.
fn hoisted(g: &Graph) -> Vec<bool> {
    let weight_only = g.weight_only();
    let mut reads_weight = vec![false; g.dag.node_count()];
    for v in g.dag.node_indices() {
        reads_weight[v.index()] = matches!(g.dag[v].op, Op::Param(_))
            || g.operands(v).iter().any(|o| reads_weight[o.index()]);
    }
    (0..g.dag.node_count())
        .map(|i| weight_only[i] && reads_weight[i])
        .collect()
}

/// The nodes of one layer that its body computes: those the layer created, that its result
/// depends on, other than weights and values of weights alone. None when the layer cannot be
/// outlined: a value inside it is used after it, or it returns a view rather than a value.
fn layer_members(
    g: &Graph,
    users: &[Vec<NodeIndex>],
    hoisted: &[bool],
    span: &LayerSpan,
) -> Option<Vec<NodeIndex>> {
    let inside = |n: NodeIndex| (span.start..span.end).contains(&n.index());
    if !inside(span.output)
        || matches!(
            g.dag[span.output].op,
            Op::Input(_) | Op::Param(_) | Op::Reshape
        )
    {
        return None;
    }
    let mut members = vec![span.output];
    let mut stack = vec![span.output];
    let mut seen = HashSet::from([span.output]);
    while let Some(v) = stack.pop() {
        for o in g.operands(v) {
            let computed = !matches!(g.dag[o].op, Op::Param(_)) && !hoisted[o.index()];
            if inside(o) && computed && seen.insert(o) {
                members.push(o);
                stack.push(o);
            }
        }
    }
    let outputs: HashSet<NodeIndex> = g.outputs.values().copied().collect();
    let escapes = members.iter().any(|&m| {
        m != span.output
            && (outputs.contains(&m) || users[m.index()].iter().any(|u| !seen.contains(u)))
    });
    (!escapes).then(|| {
        members.sort();
        members
    })
}

/// The body with scopes relative to the layer's (`model.layers.3.self_attn` → `self_attn`).
fn relative(mut body: Graph, scope: &str) -> Graph {
    let prefix = format!("{scope}.");
    for n in body.dag.node_weights_mut() {
        if n.scope == scope {
            n.scope.clear();
        } else if let Some(rest) = n.scope.strip_prefix(&prefix) {
            n.scope = rest.to_string();
        }
    }
    body
}

/// The body without scopes: two layers are one kind when these print the same.
fn without_scopes(body: &Graph) -> Graph {
    let mut b = body.clone();
    for n in b.dag.node_weights_mut() {
        n.scope.clear();
    }
    b
}

/// What a slot of the first layer of a kind reads, for dumps.
fn slot_name(g: &Graph, leaf: NodeIndex, span: &LayerSpan, scope: &str) -> String {
    if leaf == span.input {
        return "x (the carried value)".into();
    }
    let prefix = format!("{scope}.");
    match &g.dag[leaf].op {
        Op::Param(name) => name
            .strip_prefix(&prefix)
            .map_or(name.clone(), str::to_string),
        Op::Input(name) => format!("input {name}"),
        op => {
            let node = &g.dag[leaf];
            let at = node
                .scope
                .strip_prefix(&prefix)
                .unwrap_or(&node.scope)
                .to_string();
            format!("{op} @{at}")
        }
    }
}
