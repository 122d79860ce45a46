//! The short summary `archc check` prints: weights, layer kinds, inputs and outputs.

use std::fmt::Write;

use crate::graph::Graph;

/// Groups digits in threes: 1234567 → "1,234,567".
fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Layer kinds with their counts, in order of first appearance.
pub fn layer_kinds(layers: &[String]) -> Vec<(String, usize)> {
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for l in layers {
        match kinds.iter_mut().find(|(k, _)| k == l) {
            Some((_, n)) => *n += 1,
            None => kinds.push((l.clone(), 1)),
        }
    }
    kinds
}

/// The `archc check` text for a graph.
pub fn summary(g: &Graph) -> String {
    let mut out = String::new();
    let (trainable, ema) = g.param_counts();
    let _ = writeln!(out, "model {}", g.name);
    let _ = write!(out, "  parameters: {}", grouped(trainable));
    if ema > 0 {
        let _ = write!(out, " + {} in EMA target copies", grouped(ema));
    }
    let _ = writeln!(out, " ({} weights)", g.params.len());
    // A stack inside a shared block runs once per call; list it once, with the count.
    let mut stacks: Vec<(&crate::graph::StackInfo, usize)> = Vec::new();
    for s in &g.stacks {
        match stacks
            .iter_mut()
            .find(|(t, _)| t.scope == s.scope && t.layers == s.layers)
        {
            Some((_, n)) => *n += 1,
            None => stacks.push((s, 1)),
        }
    }
    for (s, applied) in stacks {
        let scope = if s.scope.is_empty() {
            "(root)"
        } else {
            &s.scope
        };
        let times = if applied > 1 {
            format!(", applied {applied} times")
        } else {
            String::new()
        };
        let n = s.layers.len();
        let plural = if n == 1 { "" } else { "s" };
        let _ = writeln!(out, "  stack {scope}: {n} layer{plural}{times}");
        for (kind, n) in layer_kinds(&s.layers) {
            let _ = writeln!(out, "    {n} × {kind}");
        }
    }
    for (name, n) in &g.inputs {
        let _ = writeln!(out, "  input  {name}: {}", g.ty(*n));
    }
    for (name, n) in &g.outputs {
        let _ = writeln!(out, "  output {name}: {}", g.ty(*n));
    }
    let _ = writeln!(out, "  graph: {} nodes", g.dag.node_count());
    out
}
