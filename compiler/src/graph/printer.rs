//! The deterministic text form of the Graph IR (`archc dump --stage graph` and `fused`).

use std::fmt::Write;

use super::{Graph, Op, ParamKind};

/// Prints a graph: inputs, weights, one line per node in creation order, then outputs. Layer
/// kinds come first, and a fused region's body follows its node, indented with `|`.
pub fn print_graph(g: &Graph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "graph {}", g.name);
    if !g.symbols.is_empty() {
        let _ = writeln!(out, "symbols {}", g.symbols.join(", "));
    }
    for (name, kind) in g.params.iter().filter_map(|(n, (_, k))| match k {
        ParamKind::Ema {
            online,
            momentum,
            end,
        } => Some((n, (online, momentum, end))),
        ParamKind::Trainable => None,
    }) {
        let (online, momentum, end) = kind;
        let _ = write!(out, "ema {name} <- {online} momentum={momentum:?}");
        if end != momentum {
            let _ = write!(out, " end={end:?}");
        }
        out.push('\n');
    }
    if let Some(t) = &g.training {
        t.print(&mut out);
    }
    for (i, k) in g.kinds.iter().enumerate() {
        let _ = writeln!(out, "kind{i} {} ({} calls) {{", k.name, k.calls);
        for (s, name) in k.slots.iter().enumerate() {
            let _ = writeln!(out, "  slot {s}: {name}");
        }
        body(&mut out, &k.body, "  ");
        let _ = writeln!(out, "}}");
    }
    body(&mut out, g, "");
    out
}

fn body(out: &mut String, g: &Graph, pad: &str) {
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
            "{pad}%{} = {}{args} : {}{scope}",
            n.index(),
            node.op,
            node.ty
        );
        if let Op::Fused(r) = &node.op {
            body(out, &r.body, &format!("{pad}  | "));
            if let super::RegionKind::Moe(m) = &r.kind {
                for (e, x) in m.experts.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "{pad}  | expert {e} on its rows, in1.. = {:?}",
                        x.slots
                    );
                    body(out, &x.body, &format!("{pad}  |   "));
                }
            }
        }
    }
    for (name, n) in &g.outputs {
        let _ = writeln!(
            out,
            "{pad}output {name} = %{} : {}",
            n.index(),
            g.dag[*n].ty
        );
    }
}
