//! Causality along the sequence axis: how far ahead of its own position a value reads the
//! token stream. Generation appends positions one at a time, so a model whose output at
//! position `i` reads a token after `i` (BERT's bidirectional attention, I-JEPA's pooling)
//! cannot be decoded, and [`noncausal`] names the operation that looks ahead.
//!
//! The analysis gives each value that depends on the tokens a *lookahead* `L`: position `i`
//! of the value reads the tokens at positions up to `i + L` (0: causal). An axis is a sequence
//! axis when its extent mentions the stream's symbol (`seq`, or `batch*seq` once flattened).
//! - Elementwise ops, layouts, casts, scans (a recurrence runs forward) and mixtures of
//!   experts (routed token by token) keep the largest lookahead of their operands.
//! - A slice starting at `s` along a sequence axis reads `s` ahead; padding `b` before reads
//!   `b` behind (a causal convolution pads `k − 1` before, then slices).
//! - Attention reads keys up to `i + hi` for its key range's `hi` (0 when causal); without
//!   one, every key.
//! - A gather along a sequence axis reads up to its indices: Mamba's convolution gathers
//!   windows `iota(seq) + iota(k)` of the padded input. Integer values the tokens do not reach
//!   carry a bound ([`Index`]): at most `position + c` (`iota` along a sequence axis, plus
//!   constants) or at most `c`. A gather with indices of neither kind reads every position.
//! - A reduction, a matmul contraction, a flip or a concatenation along a sequence axis reads
//!   every position: unbounded.
//! - Layer kinds and fused regions are analysed through their bodies.
//!
//! Values the tokens do not reach (weights, rotary tables from `iota(seq)`, masks) have none.

use petgraph::graph::NodeIndex;

use super::{Dim, Graph, Op, RegionKind};

/// A lookahead: `None` for values the tokens do not reach; `Some(i64::MAX)` unbounded.
type Ahead = Option<i64>;

const UNBOUNDED: i64 = i64::MAX;

/// An upper bound of an index value the tokens do not reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Index {
    /// At most the element's position along the sequence axis plus this.
    Relative(i64),
    /// At most this.
    Absolute(i64),
}

impl Index {
    /// The bound of `a + b`.
    fn add(a: Index, b: Index) -> Option<Index> {
        match (a, b) {
            (Index::Absolute(x), Index::Absolute(y)) => Some(Index::Absolute(x.checked_add(y)?)),
            (Index::Relative(x), Index::Absolute(y)) | (Index::Absolute(y), Index::Relative(x)) => {
                Some(Index::Relative(x.checked_add(y)?))
            }
            (Index::Relative(_), Index::Relative(_)) => None,
        }
    }

    /// How far ahead of its position an element with this index reads.
    fn ahead(self) -> i64 {
        match self {
            Index::Relative(c) | Index::Absolute(c) => c,
        }
    }
}

/// Where a model looks ahead along its stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookAhead {
    /// The first operation (in program order) whose value reads past its own position: its
    /// source location and op, as `Node::origin` gives it.
    pub origin: String,
    /// How far it reads ahead (`None`: every later position).
    pub by: Option<i64>,
}

/// For a model whose token input is `input` (a `[batch, stream]` tensor), the first operation
/// through which output `output` reads positions after its own, or None if it is causal.
pub fn noncausal(g: &Graph, input: &str, output: &str) -> Option<LookAhead> {
    let &tokens = g.inputs.get(input)?;
    let shape = &g.ty(tokens).shape;
    let stream: Vec<String> = shape.get(1)?.symbols().map(str::to_string).collect();
    let seeds: Vec<(NodeIndex, Ahead)> = vec![(tokens, Some(0))];
    let mut first = None;
    let ahead = analyse(g, &seeds, &stream, &mut first);
    let out = *g.outputs.get(output)?;
    match ahead[out.index()] {
        Some(l) if l > 0 => first.or(Some(LookAhead {
            origin: g.dag[out].origin(),
            by: (l != UNBOUNDED).then_some(l),
        })),
        _ => None,
    }
}

/// The lookahead of every node of `g`, given those of some nodes (`seeds`: the token input,
/// or a body's inputs); records the first node that reads ahead in `first`.
fn analyse(
    g: &Graph,
    seeds: &[(NodeIndex, Ahead)],
    stream: &[String],
    first: &mut Option<LookAhead>,
) -> Vec<Ahead> {
    let mut ahead: Vec<Ahead> = vec![None; g.dag.node_count()];
    let mut index: Vec<Option<Index>> = vec![None; g.dag.node_count()];
    for &(n, a) in seeds {
        ahead[n.index()] = a;
    }
    let on_stream = |d: &Dim| d.symbols().any(|s| stream.iter().any(|t| t == s));
    // Node indices are a topological order: elaboration and the passes add operands first.
    for v in g.dag.node_indices() {
        if seeds.iter().any(|(n, _)| *n == v) {
            continue;
        }
        let ops = g.operands(v);
        let of = |i: usize| ops.get(i).and_then(|o| ahead[o.index()]);
        let most = ops.iter().filter_map(|o| ahead[o.index()]).max();
        let axis_on_stream = |i: usize, axis: usize| {
            ops.get(i)
                .and_then(|o| g.ty(*o).shape.get(axis))
                .is_some_and(&on_stream)
        };
        let everything = most.map(|_| UNBOUNDED);
        index[v.index()] = bound(g, v, &index, &on_stream);
        let a = match &g.dag[v].op {
            Op::Input(_) | Op::Param(_) | Op::Const(_) | Op::Iota | Op::Size(_) => None,
            Op::Reduce { axes, .. } if axes.iter().any(|&x| axis_on_stream(0, x)) => everything,
            Op::MatMul => {
                let k = ops.first().map_or(0, |a| g.ty(*a).rank().saturating_sub(1));
                if axis_on_stream(0, k) {
                    everything
                } else {
                    most
                }
            }
            Op::Gather { axis } if axis_on_stream(0, *axis) => {
                match ops.get(1).and_then(|i| index[i.index()]) {
                    Some(i) => of(0).map(|l| shift(l, i.ahead())),
                    None => everything,
                }
            }
            Op::Flip { axis } | Op::Concat { axis } if axis_on_stream(0, *axis) => everything,
            // Each matrix's values read all of it.
            Op::SvdVals => {
                let r = ops.first().map_or(0, |x| g.ty(*x).rank());
                if (r.saturating_sub(2)..r).any(|a| axis_on_stream(0, a)) {
                    everything
                } else {
                    most
                }
            }
            Op::Slice { axis, start, .. } if axis_on_stream(0, *axis) => {
                of(0).map(|l| shift(l, start.as_const().unwrap_or(UNBOUNDED)))
            }
            Op::Pad { axis, before, .. } if axis_on_stream(0, *axis) => {
                of(0).map(|l| shift(l, -*before))
            }
            Op::Fused(r) => match &r.kind {
                RegionKind::Attention(info) => {
                    let keys = info.qkv[1..]
                        .iter()
                        .filter_map(|&s| ahead_of_slot(g, v, s, &ahead))
                        .max();
                    let hi = info.keys.hi.unwrap_or(UNBOUNDED);
                    most.max(keys.map(|k| shift(k, hi)))
                }
                RegionKind::Scan(_) | RegionKind::Moe(_) => most,
                _ => body(&r.body, g, v, &ahead, stream, first),
            },
            Op::Call(kind) => match g.kinds.get(*kind) {
                Some(k) => body(&k.body, g, v, &ahead, stream, first),
                None => most,
            },
            _ => most,
        };
        ahead[v.index()] = a;
        if first.is_none() && a.is_some_and(|l| l > 0) {
            *first = Some(LookAhead {
                origin: g.dag[v].origin(),
                by: a.filter(|&l| l != UNBOUNDED),
            });
        }
    }
    ahead
}

/// The bound of node `v` if it is an index the tokens do not reach (see [`Index`]).
fn bound(
    g: &Graph,
    v: NodeIndex,
    index: &[Option<Index>],
    on_stream: &dyn Fn(&Dim) -> bool,
) -> Option<Index> {
    let ops = g.operands(v);
    let of = |i: usize| ops.get(i).and_then(|o| index[o.index()]);
    let node = &g.dag[v];
    match &node.op {
        Op::Iota => {
            let axis = node.ty.shape.first()?;
            if on_stream(axis) {
                Some(Index::Relative(0))
            } else {
                Some(Index::Absolute(axis.as_const()?.saturating_sub(1)))
            }
        }
        Op::Const(c) if c.value().fract() == 0.0 && c.value().abs() < 1e15 => {
            Some(Index::Absolute(c.value() as i64))
        }
        Op::Reshape | Op::Cast | Op::Permute(_) => of(0),
        Op::Binary(super::BinaryOp::Add) => Index::add(of(0)?, of(1)?),
        _ => None,
    }
}

/// The lookahead of region or call node `v`'s operand `slot`.
fn ahead_of_slot(g: &Graph, v: NodeIndex, slot: usize, ahead: &[Ahead]) -> Ahead {
    g.operands(v).get(slot).and_then(|o| ahead[o.index()])
}

/// The lookahead of node `v` (a call or fused region) of `g`, whose meaning is `body`: its
/// inputs `"0"`, `"1"`, … are `v`'s operands.
fn body(
    body: &Graph,
    g: &Graph,
    v: NodeIndex,
    ahead: &[Ahead],
    stream: &[String],
    first: &mut Option<LookAhead>,
) -> Ahead {
    let seeds: Vec<(NodeIndex, Ahead)> = body
        .inputs
        .iter()
        .filter_map(|(slot, &n)| Some((n, ahead_of_slot(g, v, slot.parse().ok()?, ahead))))
        .collect();
    let inner = analyse(body, &seeds, stream, first);
    body.outputs.get("out").and_then(|o| inner[o.index()])
}

/// `l + by`, unbounded staying unbounded.
fn shift(l: i64, by: i64) -> i64 {
    if l == UNBOUNDED || by == UNBOUNDED {
        UNBOUNDED
    } else {
        l.saturating_add(by)
    }
}
