//! `tile_attention`: attention written as math becomes one tiled kernel.
//!
//! It finds `matmul(q, permute(k))` → pointwise score modifications → `softmax` over the key
//! axis → `matmul(·, v)`, where nothing but this chain uses the scores, and outlines it into an
//! attention region. The modifications (a scale, a tanh softcap, a causal or padding mask, a
//! bias) stay in the body as the user wrote them; the kernel evaluates them per score inside
//! its online softmax, so no `[…, s, t]` tensor is ever stored. Index arithmetic feeding the
//! modifications (the causal mask's iotas) is copied into the region; other values they read
//! (a padding mask) are region inputs. When the last modification is a causal
//! `where(query ≥ key, ·, very negative)`, the region is causal: key blocks above the diagonal
//! are skipped.

use std::collections::HashSet;

use petgraph::graph::NodeIndex;

use super::op_kinds::{cheap, pointwise, users};
use super::outline::{replace, Match};
use crate::graph::{AttentionInfo, BinaryOp, Graph, Op, ReduceOp, RegionKind, UnaryOp};

/// Keys per block of the online softmax: one block of scores lives in a thread-private array.
const BLOCK: usize = 64;

/// Fills at or below this count as masking (the prelude uses −3.4·10³⁸, users often −1e30).
const MASKED: f64 = -1e29;

/// What the kernel needs to know of an attention found in the graph.
struct Found {
    scores: NodeIndex,
    logits: NodeIndex,
    q: NodeIndex,
    k: NodeIndex,
    v: NodeIndex,
    causal: bool,
}

/// Runs the pass.
pub fn run(g: &Graph) -> Graph {
    let users = users(g);
    let cheap = cheap(g);
    let found: Vec<Match<Found>> = g
        .dag
        .node_indices()
        .filter_map(|o| find(g, &users, &cheap, o))
        .collect();
    replace(g, &found, |f, out| {
        RegionKind::Attention(AttentionInfo {
            scores: out.map[&f.scores],
            logits: out.map[&f.logits],
            qkv: [out.slot(f.q), out.slot(f.k), out.slot(f.v)],
            causal: f.causal,
            block: BLOCK,
        })
    })
}

fn op(g: &Graph, n: NodeIndex) -> &Op {
    &g.dag[n].op
}

/// `n`'s operands if it is `op(…)` of `arity` operands.
fn operands_of(g: &Graph, n: NodeIndex, want: &Op) -> Option<Vec<NodeIndex>> {
    (op(g, n) == want).then(|| g.operands(n))
}

/// The operand of a last-axis `keepdim` reduction.
fn reduced(g: &Graph, n: NodeIndex, which: ReduceOp) -> Option<NodeIndex> {
    match op(g, n) {
        Op::Reduce {
            op,
            axes,
            keepdim: true,
        } if *op == which && axes.as_slice() == [g.ty(n).rank() - 1] => Some(g.operands(n)[0]),
        _ => None,
    }
}

/// The axis, counted from the right, along which `n` (an iota, possibly cast or reshaped)
/// counts, and its length.
fn iota_axis(g: &Graph, n: NodeIndex) -> Option<(usize, &crate::graph::Dim)> {
    match op(g, n) {
        Op::Iota => Some((0, &g.ty(n).shape[0])),
        Op::Cast => iota_axis(g, g.operands(n)[0]),
        Op::Reshape => {
            let (_, len) = iota_axis(g, g.operands(n)[0])?;
            let shape = &g.ty(n).shape;
            let real: Vec<usize> = (0..shape.len())
                .filter(|&a| shape[a].as_const() != Some(1))
                .collect();
            match real.as_slice() {
                [a] => Some((shape.len() - 1 - a, len)),
                [] if len.as_const() == Some(1) => Some((0, len)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether `cond` is `query index ≥ key index` over scores of shape `[…, s, t]`.
fn is_causal(g: &Graph, cond: NodeIndex, scores: NodeIndex) -> bool {
    let shape = &g.ty(scores).shape;
    let (s, t) = (&shape[shape.len() - 2], &shape[shape.len() - 1]);
    let (query, key) = match op(g, cond) {
        Op::Binary(BinaryOp::Ge) => (g.operands(cond)[0], g.operands(cond)[1]),
        Op::Binary(BinaryOp::Le) => (g.operands(cond)[1], g.operands(cond)[0]),
        _ => return false,
    };
    matches!(
        (iota_axis(g, query), iota_axis(g, key)),
        (Some((1, ls)), Some((0, lt))) if ls == s && lt == t
    )
}

/// The value of a constant node.
fn constant(g: &Graph, n: NodeIndex) -> Option<f64> {
    match op(g, n) {
        Op::Const(v) => Some(*v),
        _ => None,
    }
}

/// Matches the attention whose `matmul(p, v)` is `o`.
fn find(g: &Graph, users: &[Vec<NodeIndex>], cheap: &[bool], o: NodeIndex) -> Option<Match<Found>> {
    let [p, v] = operands_of(g, o, &Op::MatMul)?[..] else {
        return None;
    };
    // softmax(x) = e / Σe with e = exp(x − max x), all over the last axis.
    let [e, sum] = operands_of(g, p, &Op::Binary(BinaryOp::Div))?[..] else {
        return None;
    };
    if reduced(g, sum, ReduceOp::Sum)? != e {
        return None;
    }
    let [d] = operands_of(g, e, &Op::Unary(UnaryOp::Exp))?[..] else {
        return None;
    };
    let [x, max] = operands_of(g, d, &Op::Binary(BinaryOp::Sub))?[..] else {
        return None;
    };
    if reduced(g, max, ReduceOp::Max)? != x {
        return None;
    }
    // Back from the logits through pointwise ops of the scores' shape to `matmul(q, kᵀ)`.
    let shape = g.ty(x).shape.clone();
    let mut spine = vec![x];
    let mut side = Vec::new();
    let mut cur = x;
    let scores = loop {
        if let Op::MatMul = op(g, cur) {
            break cur;
        }
        if !pointwise(op(g, cur)) {
            return None;
        }
        let ins = g.operands(cur);
        let on_spine: Vec<NodeIndex> = ins
            .iter()
            .copied()
            .filter(|i| g.ty(*i).shape == shape && !cheap[i.index()])
            .collect();
        let [next] = on_spine[..] else {
            return None;
        };
        side.extend(ins.into_iter().filter(|i| *i != next));
        spine.push(next);
        cur = next;
    };
    let [q, kt] = g.operands(scores)[..] else {
        return None;
    };
    let rank = g.ty(kt).rank();
    let mut swap: Vec<usize> = (0..rank).collect();
    swap.swap(rank - 1, rank - 2);
    let [k] = operands_of(g, kt, &Op::Permute(swap))?[..] else {
        return None;
    };
    // The kernel keeps one output row of v's width in registers and reads rows of q, k, v.
    let (qt, kt_, vt, ot) = (g.ty(q), g.ty(k), g.ty(v), g.ty(o));
    let dv = vt.shape.last()?.as_const()?;
    if !(1..=256).contains(&dv)
        || qt.shape.last() != kt_.shape.last()
        || ot.shape[..ot.rank() - 2] != shape[..shape.len() - 2]
        || !qt.dtype.is_float()
    {
        return None;
    }
    // Every intermediate must be used by the chain alone.
    let mut owned: Vec<NodeIndex> = spine.clone();
    owned.extend([max, d, e, sum, p, o]);
    // The kernel reads k untransposed, so the transpose must be the region's own.
    if users[kt.index()] != [scores] {
        return None;
    }
    owned.push(kt);
    let mut copied = Vec::new();
    let mut stack: Vec<NodeIndex> = side.into_iter().filter(|n| cheap[n.index()]).collect();
    while let Some(n) = stack.pop() {
        if !copied.contains(&n) {
            copied.push(n);
            stack.extend(g.operands(n));
        }
    }
    let within: HashSet<NodeIndex> = owned.iter().chain(&copied).copied().collect();
    for &n in &owned {
        if n != o && users[n.index()].iter().any(|u| !within.contains(u)) {
            return None;
        }
    }
    if g.outputs
        .values()
        .any(|out| owned.contains(out) && *out != o)
    {
        return None;
    }
    // Causal: the logits are where(query ≥ key, ·, fill), and every other mask fills with
    // more than that. Then each row's max is above the fill, and the keys the causal mask
    // hides add exp(fill − max) = 0: skipping them changes nothing. (Were the fills equal, a
    // row whose visible keys are all padding would spread its weight over the hidden ones.)
    let causal = match op(g, x) {
        Op::Select => {
            let [cond, _, fill] = g.operands(x)[..] else {
                return None;
            };
            let fill_value = constant(g, fill);
            is_causal(g, cond, scores)
                && fill_value.is_some_and(|f| f <= MASKED)
                && spine[1..].iter().all(|&n| match op(g, n) {
                    Op::Select => match constant(g, g.operands(n)[2]) {
                        Some(other) if other <= MASKED => Some(other) > fill_value,
                        _ => true,
                    },
                    _ => true,
                })
        }
        _ => false,
    };
    Some(Match {
        root: o,
        owned,
        copied,
        info: Found {
            scores,
            logits: x,
            q,
            k,
            v,
            causal,
        },
    })
}
