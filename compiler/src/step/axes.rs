//! Which positions of each axis a derived value covers, and how an op passes that on to its
//! operands.
//!
//! A value's *mask* has bit `i` set when its axis `i` is a stream axis that covers the whole
//! context (`past + seq` positions: *full*); a clear bit on a stream axis means only the new
//! positions (`seq`: *new*). Attention's scores are new along the queries and full along the
//! keys; a KV cache is full; everything between the embedding and the logits is new.

use petgraph::graph::NodeIndex;

use super::StepError;
use crate::graph::{Dim, Graph, Op};

/// Axes of a value as a bit set (ranks stay far below 64).
pub type Mask = u64;

/// The bit of axis `i` (0 for axes past 63, which no shape reaches).
pub fn bit(i: usize) -> Mask {
    1u64.checked_shl(i as u32).unwrap_or(0)
}

/// The stream's symbol and the dim of the positions before the new ones.
pub struct Stream {
    /// The symbol of the stream's length (`seq`).
    pub symbol: String,
    /// What precedes the new positions: the symbol `past` for a step, 0 for a prefill.
    pub past: Dim,
}

impl Stream {
    /// Whether an extent counts positions along the stream.
    pub fn on(&self, d: &Dim) -> bool {
        d.symbols().any(|s| s == self.symbol)
    }

    /// The stream axes of a node, as a mask.
    pub fn axes(&self, g: &Graph, v: NodeIndex) -> Mask {
        g.ty(v)
            .shape
            .iter()
            .enumerate()
            .filter(|(_, d)| self.on(d))
            .fold(0, |m, (i, _)| m | bit(i))
    }

    /// `d` over the whole context: the stream's symbol replaced by `past + seq`.
    pub fn full(&self, d: &Dim) -> Option<Dim> {
        let whole = self.past.add(&Dim::symbol(&self.symbol))?;
        d.terms().try_fold(Dim::constant(0), |acc, (symbols, c)| {
            let term = symbols.iter().try_fold(Dim::constant(c), |p, s| {
                p.mul(&if *s == self.symbol {
                    whole.clone()
                } else {
                    Dim::symbol(s)
                })
            })?;
            acc.add(&term)
        })
    }

    /// A shape with the axes in `mask` over the whole context.
    pub fn shape(&self, shape: &[Dim], mask: Mask) -> Option<Vec<Dim>> {
        shape
            .iter()
            .enumerate()
            .map(|(i, d)| {
                if mask & bit(i) != 0 {
                    self.full(d)
                } else {
                    Some(d.clone())
                }
            })
            .collect()
    }
}

/// The masks node `v`'s operands need so that `v` can be computed over `mask`, for ops that
/// read their operands position by position along the stream (or contract over it, which
/// needs the whole context). Ops that shift along the stream in new mode are the caller's.
pub fn operand_masks(
    g: &Graph,
    stream: &Stream,
    v: NodeIndex,
    mask: Mask,
) -> Result<Vec<Mask>, StepError> {
    let ops = g.operands(v);
    let rank = |o: NodeIndex| g.ty(o).rank();
    let out_rank = g.ty(v).rank();
    // Right-aligned broadcasting: operand axis j is output axis j + (R − r).
    let aligned = |o: NodeIndex| -> Mask {
        let shift = out_rank.saturating_sub(rank(o));
        (0..rank(o))
            .filter(|j| mask & bit(j + shift) != 0)
            .fold(0, |m, j| m | bit(j))
    };
    let every = |_: NodeIndex| Mask::MAX;
    let node = &g.dag[v];
    let masks = match &node.op {
        Op::Unary(_) | Op::Binary(_) | Op::Select | Op::Cast | Op::Scan { .. } => {
            ops.iter().map(|&o| aligned(o)).collect()
        }
        Op::Slice { .. } | Op::Pad { .. } | Op::Flip { .. } | Op::Concat { .. } => {
            ops.iter().map(|_| mask).collect()
        }
        Op::Permute(perm) => {
            let m = perm
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & bit(*i) != 0)
                .fold(0, |m, (_, &p)| m | bit(p));
            vec![m]
        }
        Op::Reduce { axes, keepdim, .. } => {
            let Some(&x) = ops.first() else {
                return Ok(Vec::new());
            };
            let mut m = 0;
            let mut out = 0;
            for j in 0..rank(x) {
                if axes.contains(&j) {
                    // A sum or max over the stream reads every position before.
                    m |= bit(j);
                    if *keepdim {
                        out += 1;
                    }
                } else {
                    if mask & bit(out) != 0 {
                        m |= bit(j);
                    }
                    out += 1;
                }
            }
            vec![m]
        }
        Op::MatMul => {
            let (&a, &b) = match ops.as_slice() {
                [a, b] if rank(*a) >= 2 && rank(*b) >= 2 => (a, b),
                _ => return Err(StepError::unsupported(g, v, "a matmul of vectors")),
            };
            let (ra, rb) = (rank(a), rank(b));
            // Batch axes broadcast; the contraction reads every position of a stream axis.
            let batch = |r: usize| -> Mask {
                (0..r - 2)
                    .filter(|j| mask & bit(j + out_rank - r) != 0)
                    .fold(0, |m, j| m | bit(j))
            };
            let mut ma = batch(ra) | bit(ra - 1);
            if mask & bit(out_rank - 2) != 0 {
                ma |= bit(ra - 2);
            }
            let mut mb = batch(rb) | bit(rb - 2);
            if mask & bit(out_rank - 1) != 0 {
                mb |= bit(rb - 1);
            }
            vec![ma, mb]
        }
        Op::Reshape => {
            let x = ops.first().copied().unwrap_or(v);
            vec![reshape_mask(g, stream, v, x, mask)?]
        }
        Op::SvdVals => {
            let x = ops.first().copied().unwrap_or(v);
            let r = rank(x);
            // Each matrix's values read all of it: its two axes over the whole context.
            let batch = (0..r.saturating_sub(2))
                .filter(|j| mask & bit(*j) != 0)
                .fold(0, |m, j| m | bit(j));
            vec![batch | bit(r - 2) | bit(r - 1)]
        }
        Op::Gather { axis } => {
            let (&x, &idx) = match ops.as_slice() {
                [x, i] => (x, i),
                _ => return Ok(ops.iter().map(|&o| every(o)).collect()),
            };
            let ri = rank(idx);
            let mut mx = 0;
            for j in 0..rank(x) {
                let out = if j < *axis {
                    Some(j)
                } else if j > *axis {
                    Some(j - axis - 1 + ri)
                } else {
                    None
                };
                match out {
                    Some(o) if mask & bit(o) != 0 => mx |= bit(j),
                    Some(_) => {}
                    // The gathered axis: the whole context unless the caller windows it.
                    None => mx |= bit(j),
                }
            }
            let mi = (0..ri)
                .filter(|&j| mask & bit(j) != 0)
                .fold(0, |m, j| m | bit(j));
            vec![mx, mi]
        }
        Op::Input(_) | Op::Param(_) | Op::Const(_) | Op::Iota | Op::Size(_) => Vec::new(),
        Op::Fused(_) | Op::Call(_) => {
            return Err(StepError::unsupported(
                g,
                v,
                "a fused region (the step is derived before fusion)",
            ))
        }
    };
    Ok(masks)
}

/// A reshape keeps the order of the stream axes: the k-th stream axis of the result is the
/// k-th of the operand (a merge of two stream axes has no such pairing).
fn reshape_mask(
    g: &Graph,
    stream: &Stream,
    v: NodeIndex,
    x: NodeIndex,
    mask: Mask,
) -> Result<Mask, StepError> {
    let stream_axes = |n: NodeIndex| -> Vec<usize> {
        let ty = g.ty(n);
        (0..ty.rank())
            .filter(|&i| stream.on(&ty.shape[i]))
            .collect()
    };
    let (ins, outs) = (stream_axes(x), stream_axes(v));
    if ins.len() != outs.len() {
        return Err(StepError::unsupported(
            g,
            v,
            "a reshape that merges or splits stream axes",
        ));
    }
    Ok(outs
        .iter()
        .zip(&ins)
        .filter(|(o, _)| mask & bit(**o) != 0)
        .fold(0, |m, (_, &i)| m | bit(i)))
}
