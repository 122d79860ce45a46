//! Structural equality and hashing of graphs: what CSE of fused regions, region equality and
//! `interleave_stack`'s layer signatures compare.
//!
//! Two graphs are the same structure when their names, symbols, nodes (op, type, weight scope
//! and operands, in creation order), inputs, outputs, weights and layer kinds are. Source
//! locations (`Node::at`), dim checks and stack spans are not part of it: they are what the
//! text dump leaves out too, so two graphs with the same structure print the same.

use std::hash::{Hash, Hasher};

use super::{Graph, LayerKind, ParamKind};

/// A graph seen as its structure, for `==` and hashing.
#[derive(Clone, Copy, Debug)]
pub struct Structure<'a>(pub &'a Graph);

impl Structure<'_> {
    /// Feeds every compared part to `f`, in a fixed order; equality and hashing both use it,
    /// so they cannot disagree.
    fn parts(&self, state: &mut impl Hasher) {
        let g = self.0;
        g.name.hash(state);
        g.symbols.hash(state);
        g.dag.node_count().hash(state);
        for n in g.dag.node_indices() {
            let node = &g.dag[n];
            (&node.op, &node.ty, &node.scope, g.operands(n)).hash(state);
        }
        for (name, n) in g.inputs.iter().chain(&g.outputs) {
            (name, n).hash(state);
        }
        for (name, (n, kind)) in &g.params {
            (name, n, param_key(kind)).hash(state);
        }
        g.kinds.len().hash(state);
        for k in &g.kinds {
            kind_parts(k, state);
        }
    }
}

/// A weight's kind with its momenta as bits, so that equality and hashing agree.
fn param_key(kind: &ParamKind) -> Option<(&str, (u64, u64))> {
    match kind {
        ParamKind::Trainable => None,
        ParamKind::Ema {
            online,
            momentum,
            end,
        } => Some((online, (momentum.to_bits(), end.to_bits()))),
    }
}

fn kind_parts(k: &LayerKind, state: &mut impl Hasher) {
    (&k.name, &k.slots, k.calls).hash(state);
    Structure(&k.body).parts(state);
}

impl PartialEq for Structure<'_> {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.0, other.0);
        a.name == b.name
            && a.symbols == b.symbols
            && a.dag.node_count() == b.dag.node_count()
            && a.dag.node_indices().all(|n| {
                let (x, y) = (&a.dag[n], &b.dag[n]);
                x.op == y.op && x.ty == y.ty && x.scope == y.scope && a.operands(n) == b.operands(n)
            })
            && a.inputs == b.inputs
            && a.outputs == b.outputs
            && a.params.len() == b.params.len()
            && a.params
                .iter()
                .zip(&b.params)
                .all(|((x, (m, kx)), (y, (n, ky)))| (x, m, param_key(kx)) == (y, n, param_key(ky)))
            && a.kinds.len() == b.kinds.len()
            && a.kinds.iter().zip(&b.kinds).all(|(x, y)| {
                x.name == y.name
                    && x.slots == y.slots
                    && x.calls == y.calls
                    && Structure(&x.body) == Structure(&y.body)
            })
    }
}

impl Eq for Structure<'_> {}

impl Hash for Structure<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts(state);
    }
}
