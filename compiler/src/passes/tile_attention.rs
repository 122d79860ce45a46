//! `tile_attention`: attention written as math becomes one tiled kernel.
//!
//! It finds `matmul(q, permute(k))` → pointwise score modifications → `softmax` over the key
//! axis → `matmul(·, v)`, where nothing but this chain uses the scores, and outlines it into an
//! attention region. The modifications (a scale, a tanh softcap, a causal, window or padding
//! mask, an ALiBi or T5 bias) stay in the body as the user wrote them; the kernel evaluates
//! them per score inside its online softmax, so no `[…, s, t]` tensor is ever stored. Index
//! arithmetic feeding the modifications (the masks' iotas), and every fusible value as large as
//! the scores (a bias gathered from a per-head table by `j − i`), are copied into the region;
//! other values they read (a padding mask, per-head slopes) are region inputs. When the
//! outermost modifications are range masks `where(lo ≤ j − i ≤ hi, ·, very negative)` (causal,
//! a sliding window), the region records the range and the kernel visits only the key blocks
//! that meet it.

use std::collections::HashSet;

use petgraph::graph::NodeIndex;

use super::explain::Note;
use super::key_range::{intersect, key_range, Axes};
use super::op_kinds::{cheap, fusible, pointwise, users};
use super::outline::{replace, Match};
use crate::graph::{
    AttentionInfo, BinaryOp, Dim, Graph, KeyRange, Op, ReduceOp, RegionKind, TensorType, UnaryOp,
};

/// Fills at or below this count as masking (the prelude uses −3.4·10³⁸, users often −1e30).
const MASKED: f64 = -1e29;

/// What the kernel needs to know of an attention found in the graph.
struct Found {
    scores: NodeIndex,
    logits: NodeIndex,
    q: NodeIndex,
    k: NodeIndex,
    v: NodeIndex,
    keys: KeyRange,
    k_order: Vec<usize>,
}

/// The pass's name.
pub const NAME: &str = "tile_attention";

/// Runs the pass.
pub fn run(g: &Graph) -> Graph {
    tile(g, |_| true)
}

/// Runs the pass on a graph about to be differentiated (`needs[n]`: a gradient flows through
/// node n). Only attentions whose backward can be streamed too are tiled: their score
/// modifications read nothing a gradient flows to (the kernels do not reduce over scores for
/// a trained bias), and their head widths are constants up to 256 (held in registers).
pub fn run_for_gradient(g: &Graph, needs: &[bool]) -> Graph {
    tile(g, |m| {
        let members: HashSet<NodeIndex> = m.owned.iter().chain(&m.copied).copied().collect();
        let qkv = [m.info.q, m.info.k, m.info.v];
        let side_needs = members
            .iter()
            .flat_map(|n| g.operands(*n))
            .any(|x| !members.contains(&x) && !qkv.contains(&x) && needs[x.index()]);
        let width = g.ty(m.info.q).shape.last().and_then(|d| d.as_const());
        !side_needs && width.is_some_and(|d| (1..=256).contains(&d))
    })
}

/// Tiles the attentions `keep` accepts.
fn tile(g: &Graph, keep: impl Fn(&Match<Found>) -> bool) -> Graph {
    let users = users(g);
    let cheap = cheap(g);
    let found: Vec<Match<Found>> = g
        .dag
        .node_indices()
        .filter_map(|o| find(g, &users, &cheap, o).ok())
        .filter(&keep)
        .collect();
    replace(g, &found, |f, out| {
        RegionKind::Attention(AttentionInfo {
            scores: out.map[&f.scores],
            logits: out.map[&f.logits],
            qkv: [out.slot(f.q), out.slot(f.k), out.slot(f.v)],
            keys: f.keys.clone(),
            k_order: f.k_order.clone(),
        })
    })
}

/// A note on every `matmul(softmax(·), v)` of `g`: tiled, or why not.
pub fn notes(g: &Graph) -> Vec<Note> {
    let users = users(g);
    let cheap = cheap(g);
    let mut notes = Vec::new();
    for o in g.dag.node_indices() {
        let note = match find(g, &users, &cheap, o) {
            Ok(m) => {
                let keys = m.info.keys.to_string();
                let text = match keys.strip_prefix(", ") {
                    Some(k) => format!("is tiled ({k})"),
                    None => "is tiled".to_string(),
                };
                Note::on(g, o, "attention", true, text)
            }
            Err(Miss::NotAttention) => continue,
            Err(Miss::Because(reason, user)) => Note {
                used_at: user.map(|u| g.dag[u].at.clone()).unwrap_or_default(),
                ..Note::on(g, o, "attention", false, format!("is not tiled: {reason}"))
            },
        };
        notes.push(note);
    }
    notes
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

/// The value of a constant node.
fn constant(g: &Graph, n: NodeIndex) -> Option<f64> {
    match op(g, n) {
        Op::Const(v) => Some(v.value()),
        _ => None,
    }
}

/// The nodes of `softmax(x)` over the last axis, from the probabilities `p` back:
/// `[p, sum, e, d, max, x]` for `p = e / Σe`, `e = exp(d)`, `d = x − max x`.
fn softmax_of(g: &Graph, p: NodeIndex) -> Option<[NodeIndex; 6]> {
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
    (reduced(g, max, ReduceOp::Max)? == x).then_some([p, sum, e, d, max, x])
}

/// The path back from the logits `x` through pointwise ops of `shape` to a matmul (the
/// scores, last), and the other operands of the ops on it. Where two operands have the
/// scores' shape (a bias as large as the scores), the one that leads to a matmul is the
/// spine. A depth-first search with an explicit stack, each node explored once: chains as
/// long as a hostile file makes them neither overflow the stack nor take exponential time.
fn walk(
    g: &Graph,
    cheap: &[bool],
    x: NodeIndex,
    shape: &[Dim],
) -> Option<(Vec<NodeIndex>, Vec<NodeIndex>)> {
    let mut dead: HashSet<NodeIndex> = HashSet::new();
    // Each node on the path, with how many of its operands were tried.
    let mut path: Vec<(NodeIndex, usize)> = vec![(x, 0)];
    while let Some((cur, tried)) = path.last_mut() {
        let cur = *cur;
        if let Op::MatMul = op(g, cur) {
            break;
        }
        let ins = if pointwise(op(g, cur)) {
            g.operands(cur)
        } else {
            Vec::new()
        };
        let next = ins
            .iter()
            .enumerate()
            .skip(*tried)
            .find(|(_, i)| g.ty(**i).shape == shape && !cheap[i.index()] && !dead.contains(*i));
        match next {
            Some((k, n)) => {
                *tried = k + 1;
                path.push((*n, 0));
            }
            None => {
                dead.insert(cur);
                path.pop();
            }
        }
    }
    let spine: Vec<NodeIndex> = path.into_iter().map(|(n, _)| n).collect();
    if spine.is_empty() {
        return None;
    }
    let side = spine
        .windows(2)
        .flat_map(|w| g.operands(w[0]).into_iter().filter(move |i| *i != w[1]))
        .collect();
    Some((spine, side))
}

/// Whether a tensor of type `ty` has both a query axis and a key axis: as large as the
/// scores, so it is computed per score in the kernel, never stored.
fn score_sized(ty: &TensorType, axes: &Axes) -> bool {
    let s = ty.shape.iter().position(|d| d == axes.s);
    let t = ty.shape.iter().rposition(|d| d == axes.t);
    matches!((s, t), (Some(s), Some(t)) if s != t)
}

/// The side values of the score modifications that the region computes itself: cheap index
/// arithmetic, and every fusible value as large as the scores (an ALiBi or T5 bias, from a
/// small table and the iotas). Other values, small or not fusible, are region inputs.
fn copies(g: &Graph, cheap: &[bool], side: Vec<NodeIndex>, axes: &Axes) -> Vec<NodeIndex> {
    let copyable =
        |n: &NodeIndex| cheap[n.index()] || (fusible(op(g, *n)) && score_sized(g.ty(*n), axes));
    let mut copied = Vec::new();
    let mut seen = HashSet::new();
    let mut stack: Vec<NodeIndex> = side.into_iter().filter(copyable).collect();
    while let Some(n) = stack.pop() {
        if seen.insert(n) {
            copied.push(n);
            stack.extend(g.operands(n).into_iter().filter(copyable));
        }
    }
    copied
}

/// The keys every query can see, from range masks at the top of the spine (`spine[0]` is the
/// logits). Each is `where(cond, ·, fill)` with `cond` a range of `j − i` holding the
/// diagonal and one fill at or below `MASKED`; every other mask must fill with more. Then
/// each row's max is above the fill, and the hidden keys add `exp(fill − max) = 0`: skipping
/// them changes nothing. (Were the fills equal, a row whose visible keys are all padding
/// would spread its weight over the hidden ones.) A lower bound needs `s = t`, so that every
/// row keeps its diagonal key.
fn visible_keys(g: &Graph, spine: &[NodeIndex], axes: &Axes) -> KeyRange {
    let mut keys = KeyRange::default();
    let mut fill = None;
    let mut rest = spine;
    while let [n, next, ..] = rest {
        let Op::Select = op(g, *n) else { break };
        let [cond, value, fill_node] = g.operands(*n)[..] else {
            break;
        };
        let f = constant(g, fill_node).filter(|f| *f <= MASKED);
        let range = key_range(g, cond, axes);
        match (f, range) {
            (Some(f), Some(r)) if value == *next && fill.is_none_or(|had| had == f) => {
                fill = Some(f);
                keys = intersect(keys, r);
            }
            _ => break,
        }
        rest = &rest[1..];
    }
    let Some(fill) = fill else {
        return KeyRange::default();
    };
    let others_fill_more = rest.iter().all(|&n| match op(g, n) {
        Op::Select => constant(g, g.operands(n)[2]).is_none_or(|f| f > fill),
        _ => true,
    });
    let diagonal = keys.lo.is_none_or(|lo| lo <= 0) && keys.hi.is_none_or(|hi| hi >= 0);
    if !others_fill_more || !diagonal || (keys.lo.is_some() && axes.s != axes.t) {
        return KeyRange::default();
    }
    keys
}

/// Why a `matmul(softmax(x), v)` was not tiled.
enum Miss {
    /// It is not that pattern: nothing to say.
    NotAttention,
    /// The reason, and the node whose use of an intermediate prevented the fusion.
    Because(String, Option<NodeIndex>),
}

fn because(reason: &str) -> Miss {
    Miss::Because(reason.to_string(), None)
}

/// What the intermediates of the chain are called in notes.
fn role(n: NodeIndex, spine: &[NodeIndex], kt: NodeIndex, p: NodeIndex) -> &'static str {
    if n == kt {
        "kᵀ is"
    } else if n == p {
        "the probabilities are"
    } else if spine.contains(&n) {
        "the scores are"
    } else {
        "the softmax's max and sum are"
    }
}

/// Matches the attention whose `matmul(p, v)` is `o`.
fn find(
    g: &Graph,
    users: &[Vec<NodeIndex>],
    cheap: &[bool],
    o: NodeIndex,
) -> Result<Match<Found>, Miss> {
    let [p, v] = operands_of(g, o, &Op::MatMul).ok_or(Miss::NotAttention)?[..] else {
        return Err(Miss::NotAttention);
    };
    let [p, sum, e, d, max, x] = softmax_of(g, p).ok_or(Miss::NotAttention)?;
    // Back from the logits through pointwise ops of the scores' shape to `matmul(q, kᵀ)`.
    let shape = g.ty(x).shape.clone();
    let (spine, side) = walk(g, cheap, x, &shape).ok_or_else(|| {
        because("the softmax's input is not matmul(q, kᵀ) and elementwise ops of its shape")
    })?;
    let scores = *spine.last().ok_or(Miss::NotAttention)?;
    let [q, kt] = g.operands(scores)[..] else {
        return Err(Miss::NotAttention);
    };
    // kᵀ is a permute of some `r` with k = permute(k_order)(r) and r's rows contiguous.
    let Op::Permute(order) = op(g, kt) else {
        return Err(because("the scores' right operand is not a transpose of k"));
    };
    let rank = order.len();
    let mut k_order = order.clone();
    k_order.swap(rank - 1, rank - 2);
    if k_order[rank - 1] != rank - 1 {
        return Err(because("kᵀ is not a transpose of rows of k"));
    }
    let k = g.operands(kt)[0];
    // The kernel keeps one output row of v's width in registers and reads rows of q, k, v.
    let (qt, kt_, vt, ot) = (g.ty(q), g.ty(k), g.ty(v), g.ty(o));
    if !vt
        .shape
        .last()
        .and_then(|d| d.as_const())
        .is_some_and(|dv| (1..=256).contains(&dv))
    {
        return Err(because("v's width is not a constant from 1 to 256"));
    }
    if qt.shape.last() != kt_.shape.last()
        || ot.shape[..ot.rank() - 2] != shape[..shape.len() - 2]
        || !qt.dtype.is_float()
    {
        return Err(because(
            "q, k and v do not have the shapes of one attention",
        ));
    }
    // Every intermediate must be used by the chain alone.
    let mut owned: Vec<NodeIndex> = spine.clone();
    owned.extend([max, d, e, sum, p, o]);
    owned.push(kt);
    let axes = Axes {
        s: &shape[shape.len() - 2],
        t: &shape[shape.len() - 1],
    };
    let copied = copies(g, cheap, side, &axes);
    let within: HashSet<NodeIndex> = owned.iter().chain(&copied).copied().collect();
    // The kernel reads k untransposed, so the transpose must be the region's own.
    let outside = |n: NodeIndex| {
        users[n.index()]
            .iter()
            .copied()
            .find(|u| !within.contains(u) || (n == kt && *u != scores))
    };
    for &n in &owned {
        if n == o {
            continue;
        }
        if let Some(u) = outside(n) {
            let what = role(n, &spine, kt, p);
            let reason = format!("{what} also used by `{}`", op(g, u));
            return Err(Miss::Because(reason, Some(u)));
        }
        if g.outputs.values().any(|out| *out == n) {
            let what = role(n, &spine, kt, p);
            return Err(Miss::Because(format!("{what} also an output"), None));
        }
    }
    let keys = visible_keys(g, &spine, &axes);
    Ok(Match {
        root: o,
        owned,
        copied,
        info: Found {
            scores,
            logits: x,
            q,
            k,
            v,
            keys,
            k_order,
        },
    })
}
