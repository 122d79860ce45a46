//! Bounds of integer index values relative to their own position along the stream: a causal
//! convolution's windows `iota(seq) + iota(k)` lie in `position ..= position + k − 1`.

use petgraph::graph::NodeIndex;

use super::axes::Stream;
use crate::graph::{BinaryOp, Graph, Op};

/// A bound of an index value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// The element's position along the stream plus this.
    Relative(i64),
    /// This constant.
    Absolute(i64),
}

/// Index expressions are small; deeper ones have no bounds.
const DEPTH: usize = 32;

/// The least and greatest value of index node `v`, when they are known.
pub fn bounds(g: &Graph, stream: &Stream, v: NodeIndex) -> Option<(Bound, Bound)> {
    walk(g, stream, v, DEPTH)
}

fn walk(g: &Graph, stream: &Stream, v: NodeIndex, depth: usize) -> Option<(Bound, Bound)> {
    let depth = depth.checked_sub(1)?;
    let node = &g.dag[v];
    let ops = g.operands(v);
    match &node.op {
        Op::Iota => {
            let axis = node.ty.shape.first()?;
            if stream.on(axis) {
                Some((Bound::Relative(0), Bound::Relative(0)))
            } else {
                Some((Bound::Absolute(0), Bound::Absolute(axis.as_const()? - 1)))
            }
        }
        Op::Const(c) if c.value().fract() == 0.0 && c.value().abs() < 1e15 => {
            let c = c.value() as i64;
            Some((Bound::Absolute(c), Bound::Absolute(c)))
        }
        Op::Reshape | Op::Cast | Op::Permute(_) => walk(g, stream, *ops.first()?, depth),
        Op::Binary(BinaryOp::Add) => {
            let (a, b) = (
                walk(g, stream, *ops.first()?, depth)?,
                walk(g, stream, *ops.get(1)?, depth)?,
            );
            Some((add(a.0, b.0)?, add(a.1, b.1)?))
        }
        _ => None,
    }
}

fn add(a: Bound, b: Bound) -> Option<Bound> {
    match (a, b) {
        (Bound::Absolute(x), Bound::Absolute(y)) => Some(Bound::Absolute(x.checked_add(y)?)),
        (Bound::Relative(x), Bound::Absolute(y)) | (Bound::Absolute(y), Bound::Relative(x)) => {
            Some(Bound::Relative(x.checked_add(y)?))
        }
        (Bound::Relative(_), Bound::Relative(_)) => None,
    }
}
