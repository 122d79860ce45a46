//! The deterministic text form of the Graph IR (`archc dump --stage graph`).

use std::fmt::Write;

use super::{Graph, ParamKind};

/// Prints a graph: inputs, weights, one line per node in creation order, then outputs.
pub fn print_graph(g: &Graph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "graph {}", g.name);
    if !g.symbols.is_empty() {
        let _ = writeln!(out, "symbols {}", g.symbols.join(", "));
    }
    for (name, kind) in g.params.iter().filter_map(|(n, (_, k))| match k {
        ParamKind::Ema { online, momentum } => Some((n, (online, momentum))),
        ParamKind::Trainable => None,
    }) {
        let _ = writeln!(out, "ema {name} <- {} momentum={:?}", kind.0, kind.1);
    }
    for n in g.dag.node_indices() {
        let node = &g.dag[n];
        let args: Vec<String> = g
            .operands(n)
            .iter()
            .map(|o| format!("%{}", o.index()))
            .collect();
        let args = if args.is_empty() {
            String::new()
        } else {
            format!("({})", args.join(", "))
        };
        let scope = if node.scope.is_empty() {
            String::new()
        } else {
            format!("  @{}", node.scope)
        };
        let _ = writeln!(
            out,
            "%{} = {}{args} : {}{scope}",
            n.index(),
            node.op,
            node.ty
        );
    }
    for (name, n) in &g.outputs {
        let _ = writeln!(out, "output {name} = %{} : {}", n.index(), g.dag[*n].ty);
    }
    out
}
