//! Storing a model's floats in half precision (`archc run --dtype bf16|f16`): every f32 value
//! of the graph, its weights, inputs and intermediates, becomes a value of the narrower type.
//!
//! Types are all this changes. Kernels compute every value in f32 registers and round only
//! what they store (`archc_kernels::storage`), so a fused region's internals (attention's
//! scores, a scan's states) stay f32 and only the buffers between kernels are narrow: bf16
//! or f16 storage with f32 arithmetic. The reference interpreter computes such a graph in
//! f32 throughout, which makes it the reference a narrow run is compared with.
//!
//! Values computed from the model's structure alone (constants, `iota`, sizes: rotary
//! frequencies and angles, masks, position tables) stay f32, as transformers keeps its rotary
//! embedding in f32 under bf16: a frequency rounded to 8 bits, times a position, turns a
//! position's angle by whole percents. Only values of weights or inputs are narrowed.

use archc_runtime::DType;

use super::{Graph, LayerSpan, NodeIndex, Op, Region, TensorType};
use crate::passes::rewrite::Rewriter;

/// `g`, an elaborated graph (before the passes), with every f32 value of its weights and
/// inputs stored as `dtype` (a float type). Where such a value meets a structural f32 one, the
/// structural one is cast to `dtype` (a cast that fuses into its user, whose registers are
/// f32 anyway). The layers' spans follow the new numbering, so stacks still compile each
/// layer kind once.
pub fn with_float_storage(g: &Graph, dtype: DType) -> Graph {
    narrowed(g, dtype, &|_| false).0
}

/// [`with_float_storage`], with the inputs `stays_f32` names counted as structural: a fused
/// region's body (gradient graphs hold attention regions), whose inputs narrow exactly where
/// its operands did.
/// Also returns each old node's new index.
fn narrowed(g: &Graph, dtype: DType, stays_f32: &dyn Fn(&str) -> bool) -> (Graph, Vec<NodeIndex>) {
    let count = g.dag.node_count();
    // Node indices are a topological order: operands come first.
    let mut structural = vec![false; count];
    let mut narrow = vec![false; count];
    let mut w = Rewriter::new(g);
    // The first new node made for each old one (a cast made for it comes before it).
    let mut first = vec![0; count + 1];
    for n in g.dag.node_indices() {
        let i = n.index();
        let operands = g.operands(n);
        structural[i] = match &g.dag[n].op {
            Op::Const(_) | Op::Iota | Op::Size(_) => true,
            Op::Input(name) => stays_f32(name),
            Op::Param(_) | Op::Call(_) => false,
            _ => operands.iter().all(|o| structural[o.index()]),
        };
        narrow[i] = g.ty(n).dtype == DType::F32 && !structural[i];
        first[i] = w.new.dag.node_count();
        // A narrow node (one operand not structural: a `where` on a mask from the inputs, a
        // gradient's select of a value or zero) takes its structural f32 operands cast too.
        let meets_narrow = narrow[i] || operands.iter().any(|o| narrow[o.index()]);
        let node = &g.dag[n];
        let mapped: Vec<_> = operands
            .iter()
            .map(|&o| {
                let m = w.at(o);
                if !meets_narrow || narrow[o.index()] || g.ty(o).dtype != DType::F32 {
                    return m;
                }
                let ty = TensorType::new(dtype, g.ty(o).shape.clone());
                let cast = w.new.add(Op::Cast, ty, &node.scope, &[m]);
                w.new.dag[cast].at = node.at.clone();
                cast
            })
            .collect();
        let op = match &node.op {
            Op::Fused(r) => {
                let f32_slot = |name: &str| {
                    name.parse::<usize>()
                        .is_ok_and(|s| operands.get(s).is_some_and(|o| !narrow[o.index()]))
                };
                let (body, map) = narrowed(&r.body, dtype, &f32_slot);
                Op::Fused(Box::new(Region {
                    kind: r.kind.map_nodes(|n| map[n.index()]),
                    body,
                }))
            }
            op => op.clone(),
        };
        let new = w.new.add_like(node, op, &mapped);
        if narrow[i] {
            w.new.dag[new].ty.dtype = dtype;
        }
        w.set(n, new);
    }
    first[count] = w.new.dag.node_count();
    let map: Vec<_> = g.dag.node_indices().map(|n| w.at(n)).collect();
    let mut out = w.finish();
    for (new, old) in out.stacks.iter_mut().zip(&g.stacks) {
        new.spans = old
            .spans
            .iter()
            .map(|s| LayerSpan {
                start: first[s.start.min(count)],
                end: first[s.end.min(count)],
                input: map[s.input.index()],
                output: map[s.output.index()],
            })
            .collect();
    }
    (out, map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Op, TensorType};
    use archc_runtime::Dim;

    #[test]
    fn values_of_the_structure_alone_stay_f32() {
        let mut g = Graph::default();
        let f = TensorType::new(DType::F32, vec![Dim::constant(4)]);
        let x = g.add(Op::Input("x".into()), f.clone(), "", &[]);
        let pos = g.add(Op::Iota, f.clone(), "", &[]);
        let angle = g.add(Op::Unary(crate::graph::UnaryOp::Sin), f.clone(), "", &[pos]);
        let y = g.add(Op::Binary(crate::graph::BinaryOp::Mul), f, "", &[x, angle]);
        let narrow = with_float_storage(&g, DType::BF16);
        assert_eq!(narrow.ty(angle).dtype, DType::F32);
        assert_eq!(narrow.ty(y).dtype, DType::BF16);
    }

    #[test]
    fn floats_narrow_and_other_types_stay() {
        let mut g = Graph::default();
        let f = TensorType::new(DType::F32, vec![Dim::constant(4)]);
        let i = TensorType::new(DType::I64, vec![Dim::constant(4)]);
        let x = g.add(Op::Input("x".into()), f.clone(), "", &[]);
        let ids = g.add(Op::Input("ids".into()), i, "", &[]);
        let narrow = with_float_storage(&g, DType::BF16);
        assert_eq!(narrow.ty(x).dtype, DType::BF16);
        assert_eq!(narrow.ty(ids).dtype, DType::I64);
        assert_eq!(g.ty(x).dtype, DType::F32);
    }
}
