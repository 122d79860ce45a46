//! `canonicalize`: constant folding, identity removal, common-subexpression elimination and
//! dead-code elimination. Later passes match patterns on its output, so it makes one spelling
//! of each computation: `x.shape[1]` of a constant dim is a constant, `stop_grad(x)` is `x`
//! (it only matters for training), a reshape to the same shape is gone, and so is a flip that
//! undoes a flip or reverses a single element.

use std::collections::HashMap;

use archc_runtime::{Data, Tensor};
use petgraph::graph::NodeIndex;

use super::rewrite::Rewriter;
use crate::graph::{BinaryOp, Graph, Ieee64, Op, TensorType, UnaryOp};

/// Runs the pass.
pub fn run(g: &Graph) -> Graph {
    dead_code(&fold(g))
}

/// The constant a node holds, if it is one.
fn constant(g: &Graph, n: NodeIndex) -> Option<f64> {
    match g.dag[n].op {
        Op::Const(v) => Some(v.value()),
        _ => None,
    }
}

/// Evaluates an op on constant operands with the interpreter's own semantics, so folding
/// never changes a result.
fn evaluate(
    op: &Op,
    values: &[f64],
    operand_types: &[&TensorType],
    ty: &TensorType,
) -> Option<f64> {
    let scalars: Vec<Tensor> = values
        .iter()
        .zip(operand_types)
        .map(|(v, t)| crate::interp::scalar(*v, t.dtype))
        .collect();
    let refs: Vec<&Tensor> = scalars.iter().collect();
    let out = crate::interp::eval(op, &refs, ty, &[], &HashMap::new()).ok()?;
    match out.data {
        Data::F32(v) => v.first().map(|x| f64::from(*x)),
        Data::I64(v) => v.first().map(|x| *x as f64),
        Data::Bool(v) => v.first().map(|x| f64::from(u8::from(*x))),
    }
}

/// What a node simplifies to, given its (already rewritten) operands in the new graph.
enum Simplified {
    /// The value of an existing new node.
    Same(NodeIndex),
    /// A constant of the node's type.
    Const(f64),
    /// The node itself (with this op), on these operands.
    Node(Op, Vec<NodeIndex>),
}

fn simplify(g: &Graph, op: &Op, ty: &TensorType, ins: &[NodeIndex]) -> Simplified {
    let consts: Option<Vec<f64>> = ins.iter().map(|&i| constant(g, i)).collect();
    let same_type = |i: usize| g.ty(ins[i]) == ty;
    match op {
        Op::Size(d) => {
            if let Some(v) = d.as_const() {
                return Simplified::Const(v as f64);
            }
        }
        Op::Unary(UnaryOp::StopGrad) | Op::Reshape | Op::Cast if same_type(0) => {
            return Simplified::Same(ins[0])
        }
        Op::Reshape => {
            if let Op::Reshape = g.dag[ins[0]].op {
                return simplify(g, &Op::Reshape, ty, &g.operands(ins[0]));
            }
        }
        Op::Permute(p) if p.iter().enumerate().all(|(i, &a)| i == a) => {
            return Simplified::Same(ins[0])
        }
        Op::Permute(p) => {
            if let Op::Permute(inner) = &g.dag[ins[0]].op {
                let composed: Vec<usize> = p.iter().map(|&a| inner[a]).collect();
                let x = g.operands(ins[0])[0];
                return simplify(g, &Op::Permute(composed), ty, &[x]);
            }
        }
        // Reversing an axis of one element, or reversing twice, changes nothing.
        Op::Flip { axis } if ty.shape[*axis] == crate::graph::Dim::constant(1) => {
            return Simplified::Same(ins[0])
        }
        Op::Flip { axis } if g.dag[ins[0]].op == (Op::Flip { axis: *axis }) => {
            return Simplified::Same(g.operands(ins[0])[0]);
        }
        Op::Concat { axis } => {
            // concat(slice(x, 0..a), slice(x, a..n)) along the sliced axis is x (rope's halves).
            let mut next = crate::graph::Dim::constant(0);
            let mut source = None;
            for &i in ins {
                match &g.dag[i].op {
                    Op::Slice {
                        axis: a,
                        start,
                        end,
                    } if a == axis && *start == next => {
                        let x = g.operands(i)[0];
                        if source.is_some_and(|s| s != x) {
                            source = None;
                            break;
                        }
                        source = Some(x);
                        next = end.clone();
                    }
                    _ => {
                        source = None;
                        break;
                    }
                }
            }
            if let Some(x) = source.filter(|x| g.ty(*x) == ty) {
                return Simplified::Same(x);
            }
        }
        Op::Binary(b) => {
            // x + 0, x − 0, x · 1, x / 1 (when the constant does not widen x).
            let unit = |i: usize, v: f64| constant(g, ins[i]) == Some(v);
            let keep = match b {
                BinaryOp::Add if unit(1, 0.0) && same_type(0) => Some(0),
                BinaryOp::Add if unit(0, 0.0) && same_type(1) => Some(1),
                BinaryOp::Sub if unit(1, 0.0) && same_type(0) => Some(0),
                BinaryOp::Mul if unit(1, 1.0) && same_type(0) => Some(0),
                BinaryOp::Mul if unit(0, 1.0) && same_type(1) => Some(1),
                BinaryOp::Div if unit(1, 1.0) && same_type(0) => Some(0),
                _ => None,
            };
            if let Some(i) = keep {
                return Simplified::Same(ins[i]);
            }
        }
        _ => {}
    }
    let foldable = matches!(
        op,
        Op::Unary(_) | Op::Binary(_) | Op::Select | Op::Cast | Op::Reshape | Op::Permute(_)
    ) || matches!(op, Op::Slice { .. });
    if let (true, Some(values)) = (foldable && !ins.is_empty(), consts) {
        let types: Vec<&TensorType> = ins.iter().map(|&i| g.ty(i)).collect();
        let folded = match op {
            // Layout ops of a splat are the same splat.
            Op::Reshape | Op::Permute(_) | Op::Slice { .. } => Some(values[0]),
            _ => evaluate(op, &values, &types, &TensorType::new(ty.dtype, vec![])),
        };
        if let Some(v) = folded {
            return Simplified::Const(v);
        }
    }
    Simplified::Node(op.clone(), ins.to_vec())
}

fn fold(g: &Graph) -> Graph {
    let mut r = Rewriter::new(g);
    // Common subexpressions: (op, operands, type) → the first node computing it.
    let mut seen: HashMap<(Op, Vec<NodeIndex>, TensorType), NodeIndex> = HashMap::new();
    for n in g.dag.node_indices() {
        let node = &g.dag[n];
        if matches!(node.op, Op::Input(_) | Op::Param(_)) {
            r.copy(n);
            continue;
        }
        let ins: Vec<NodeIndex> = g.operands(n).iter().map(|o| r.at(*o)).collect();
        let (op, operands) = match simplify(&r.new, &node.op, &node.ty, &ins) {
            Simplified::Same(m) => {
                r.set(n, m);
                continue;
            }
            Simplified::Const(v) => (Op::Const(Ieee64::new(v)), vec![]),
            Simplified::Node(op, operands) => (op, operands),
        };
        let key = match op {
            Op::Fused(_) | Op::Call(_) => None,
            _ => Some((op.clone(), operands.clone(), node.ty.clone())),
        };
        if let Some(&m) = key.as_ref().and_then(|k| seen.get(k)) {
            r.set(n, m);
            continue;
        }
        let m = r.new.add_like(node, op, &operands);
        if let Some(k) = key {
            seen.insert(k, m);
        }
        r.set(n, m);
    }
    r.finish()
}

/// Drops nodes no output depends on. Inputs and weights stay: a checkpoint is checked against
/// every weight the model declares, used or not.
pub(crate) fn dead_code(g: &Graph) -> Graph {
    let mut live = vec![false; g.dag.node_count()];
    let mut stack: Vec<NodeIndex> = g.outputs.values().copied().collect();
    while let Some(n) = stack.pop() {
        if !std::mem::replace(&mut live[n.index()], true) {
            stack.extend(g.operands(n));
        }
    }
    let mut r = Rewriter::new(g);
    for n in g.dag.node_indices() {
        if live[n.index()] || matches!(g.dag[n].op, Op::Input(_) | Op::Param(_)) {
            r.copy(n);
        }
    }
    r.finish()
}
