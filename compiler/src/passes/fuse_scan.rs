//! `fuse_scan`: a `scan` with its inputs' computation and its read-out becomes one region.
//!
//! The scan's decay `a` and input `b` are usually broadcasts of smaller tensors (Mamba:
//! `a = exp(Δ·A)`, `b = Δ·x ⊗ B`, both `[batch, seq, channels, state]`), and its output is
//! usually contracted right away (`Σₙ h·C`, then `+ D·x` and the gate). The pass takes the
//! scan, the pointwise chain from it to a sum over state axes (the read-out), the pointwise
//! chain after that (the epilogue), and every fusible node feeding them that nothing else
//! uses. Weight-only values (`−exp(A_log)`) stay outside: they are computed once, when the
//! weights load. Without a read-out the region still fuses `a` and `b` and stores `h`.

use std::collections::HashSet;

use petgraph::graph::NodeIndex;

use super::explain::Note;
use super::op_kinds::{cheap, fusible, pointwise, users};
use super::outline::{replace, Match};
use crate::graph::{BinaryOp, Graph, Op, ReduceOp, RegionKind, ScanFrames, ScanInfo, SsdInfo};

/// The most state elements per channel the kernel keeps in its private array.
const MAX_STATE: i64 = 16384;

/// What the kernel needs to know of a scan found in the graph.
struct Found {
    scan: NodeIndex,
    readout: Option<NodeIndex>,
    /// For the SSD form: the x, B and C factors.
    ssd: Option<[NodeIndex; 3]>,
}

/// The pass's name in the registry.
pub const NAME: &str = "fuse_scan";

/// Runs the pass.
pub fn run(g: &Graph) -> Graph {
    fuse(g, false)
}

/// The pass before differentiation (`grad`): only the scans with a read-out, whose backward
/// is then one region that recomputes the states (`grad/scan_region.rs`). The region takes
/// only the values that vary along every channel of the state: one that does not (Mamba's B
/// and C, shared by the channels, and a norm of them) gets its gradient summed over the
/// channels, which the backward's kernel adds up as it goes, but cannot differentiate further.
/// Reshapes stay outside as well (where they are free), so that every input of the region
/// lines up with the state or its read-out.
pub fn run_for_gradient(g: &Graph) -> Graph {
    fuse(g, true)
}

/// Fuses the scans (for a gradient: see [`run_for_gradient`]).
fn fuse(g: &Graph, gradient: bool) -> Graph {
    let facts = Facts {
        users: users(g),
        weights: g.weight_only(),
        cheap: cheap(g),
    };
    let found: Vec<Match<Found>> = g
        .dag
        .node_indices()
        .filter_map(|s| find(g, &facts, s, gradient))
        .filter(|m| !gradient || m.info.readout.is_some())
        .collect();
    replace(g, &found, |f, out| {
        RegionKind::Scan(ScanInfo {
            scan: out.map[&f.scan],
            readout: f.readout.map(|n| out.map[&n]),
            // (Before a gradient, x, B and C may be left out of the region.)
            ssd: f.ssd.and_then(|[x, b, c]| {
                Some(SsdInfo {
                    x: *out.map.get(&x)?,
                    b: *out.map.get(&b)?,
                    c: *out.map.get(&c)?,
                })
            }),
        })
    })
}

/// The read-out of the scan `s` along `axis`: pointwise ops of h's shape, each the one user
/// of the last, then a sum over state axes; or why there is none.
fn readout_of(
    g: &Graph,
    users: &[Vec<NodeIndex>],
    outputs: &[NodeIndex],
    s: NodeIndex,
    axis: usize,
) -> Result<(Vec<NodeIndex>, NodeIndex), String> {
    let shape = &g.ty(s).shape;
    let mut chain = Vec::new();
    let mut cur = s;
    loop {
        if outputs.contains(&cur) {
            return Err("the state is an output".into());
        }
        let [u] = users[cur.index()][..] else {
            return Err(format!(
                "the state has {} users, not one",
                users[cur.index()].len()
            ));
        };
        match &g.dag[u].op {
            op if pointwise(op) && g.ty(u).shape == *shape => {
                chain.push(u);
                cur = u;
            }
            Op::Reduce {
                op: ReduceOp::Sum,
                axes,
                ..
            } => {
                let state = axes
                    .iter()
                    .try_fold(1i64, |p, &a| Some(p * shape[a].as_const()?));
                return match state {
                    _ if axes.contains(&axis) => Err("the sum reads it along the scan axis".into()),
                    Some(n) if n <= MAX_STATE => Ok((chain, u)),
                    _ => Err(format!(
                        "the state axes are not constants of at most {MAX_STATE} elements"
                    )),
                };
            }
            op => return Err(format!("it is read by `{op}`, not a sum over state axes")),
        }
    }
}

/// A note on every scan of `g`: whether its state stays in the kernel, and why not.
pub fn notes(g: &Graph) -> Vec<Note> {
    let users = users(g);
    let outputs: Vec<NodeIndex> = g.outputs.values().copied().collect();
    g.dag
        .node_indices()
        .filter_map(|s| {
            let Op::Scan { axis } = g.dag[s].op else {
                return None;
            };
            let (fused, text) = match readout_of(g, &users, &outputs, s, axis) {
                Ok(_) => (true, "is fused with its read-out".to_string()),
                Err(why) => (false, format!("is fused but stores its whole state: {why}")),
            };
            Some(Note::on(g, s, "scan", fused, text))
        })
        .collect()
}

/// What the pass knows about each node.
struct Facts {
    users: Vec<Vec<NodeIndex>>,
    weights: Vec<bool>,
    cheap: Vec<bool>,
}

fn find(g: &Graph, facts: &Facts, s: NodeIndex, gradient: bool) -> Option<Match<Found>> {
    let users = &facts.users;
    let Op::Scan { axis } = g.dag[s].op else {
        return None;
    };
    let outputs: Vec<NodeIndex> = g.outputs.values().copied().collect();
    let (chain, readout) = match readout_of(g, users, &outputs, s, axis) {
        Ok((chain, ro)) => (chain, Some(ro)),
        Err(_) => (Vec::new(), None),
    };
    let mut owned = vec![s];
    let mut root = s;
    // Before a gradient, reshapes stay outside too (free there), so that every input lines up
    // with the state or its read-out.
    let spans = |n: NodeIndex| match readout.map(|r| &g.dag[r].op) {
        Some(Op::Reduce { axes, keepdim, .. }) if gradient => {
            !matches!(g.dag[n].op, Op::Reshape) && spans_channels(g, (s, axis), (axes, *keepdim), n)
        }
        _ => true,
    };
    if let Some(ro) = readout {
        owned.extend(&chain);
        owned.push(ro);
        // The epilogue: pointwise ops of the read-out's shape.
        root = ro;
        let out_shape = &g.ty(ro).shape;
        while !outputs.contains(&root) {
            let [u] = users[root.index()][..] else {
                break;
            };
            if !pointwise(&g.dag[u].op) || &g.ty(u).shape != out_shape {
                break;
            }
            owned.push(u);
            root = u;
        }
    }
    // The operand trees: fusible nodes only the region uses, and cheap ones (copied).
    let mut copied: Vec<NodeIndex> = Vec::new();
    loop {
        let members: HashSet<NodeIndex> = owned.iter().chain(&copied).copied().collect();
        let mut grew = false;
        for m in members.iter().copied().collect::<Vec<_>>() {
            for o in g.operands(m) {
                if members.contains(&o) || owned.contains(&o) || copied.contains(&o) {
                    continue;
                }
                if facts.cheap[o.index()] {
                    copied.push(o);
                    grew = true;
                } else if fusible(&g.dag[o].op)
                    && !facts.weights[o.index()]
                    && !outputs.contains(&o)
                    && users[o.index()].iter().all(|u| members.contains(u))
                    && spans(o)
                {
                    owned.push(o);
                    grew = true;
                }
            }
        }
        if !grew {
            break;
        }
    }
    owned.sort();
    copied.sort();
    Some(Match {
        root,
        owned,
        copied,
        info: Found {
            scan: s,
            readout,
            ssd: ssd(g, s, readout),
        },
    })
}

/// Whether `n`'s value lines up with the state of scan `s` (or its read-out, which sums the
/// state axes `state`) and varies along each of the state's channel axes.
fn spans_channels(
    g: &Graph,
    (s, axis): (NodeIndex, usize),
    (state, keepdim): (&[usize], bool),
    n: NodeIndex,
) -> bool {
    let h = &g.ty(s).shape;
    let frames = ScanFrames { h, state, keepdim };
    let shape = &g.ty(n).shape;
    let one = crate::graph::Dim::constant(1);
    frames.axes_of(shape).is_some_and(|(_, axes)| {
        (0..h.len())
            .filter(|c| *c != axis && !state.contains(c))
            .all(|c| axes.iter().zip(shape).any(|(a, d)| *a == c && *d != one))
    })
}

/// Whether `n`'s value is the same along every one of `axes` of the state `h` (it broadcasts
/// against h from the right, with size 1 or no axis there).
fn constant_along(g: &Graph, n: NodeIndex, h_rank: usize, axes: &[usize]) -> bool {
    let shape = &g.ty(n).shape;
    let offset = h_rank - shape.len();
    axes.iter()
        .all(|&x| x < offset || shape[x - offset].as_const() == Some(1))
}

/// The operands of `n` if it is a product.
fn product(g: &Graph, n: NodeIndex) -> Option<[NodeIndex; 2]> {
    match (&g.dag[n].op, &g.operands(n)[..]) {
        (Op::Binary(BinaryOp::Mul), [x, y]) => Some([*x, *y]),
        _ => None,
    }
}

/// Mamba-2's structure: a decay constant over the channels of a head (the `P` axes) and the
/// state axes, an input `x ⊗ B` and a read-out `Σ h·C`, with constant channel and state
/// sizes. Returns the x, B, C nodes; the chunk length is the schedule's
/// (`lower::schedule`).
fn ssd(g: &Graph, s: NodeIndex, readout: Option<NodeIndex>) -> Option<[NodeIndex; 3]> {
    let ro = readout?;
    let (Op::Scan { axis }, Op::Reduce { axes: state, .. }) = (&g.dag[s].op, &g.dag[ro].op) else {
        return None;
    };
    let h = g.ty(s);
    let rank = h.rank();
    let [a, b] = g.operands(s)[..] else {
        return None;
    };
    let p_axes: Vec<usize> = (0..rank)
        .filter(|x| x != axis && !state.contains(x) && constant_along(g, a, rank, &[*x]))
        .collect();
    if p_axes.is_empty() || !constant_along(g, a, rank, state) {
        return None;
    }
    let [b0, b1] = product(g, b)?;
    let along = |n: NodeIndex, axes: &[usize]| constant_along(g, n, rank, axes);
    let (x, bm) = if along(b0, state) && along(b1, &p_axes) {
        (b0, b1)
    } else if along(b1, state) && along(b0, &p_axes) {
        (b1, b0)
    } else {
        return None;
    };
    let [r0, r1] = product(g, g.operands(ro)[0])?;
    let c = match (r0 == s, r1 == s) {
        (true, false) => r1,
        (false, true) => r0,
        _ => return None,
    };
    if !along(c, &p_axes) {
        return None;
    }
    let size = |axes: &[usize]| {
        axes.iter()
            .try_fold(1i64, |p, &x| Some(p * h.shape[x].as_const()?))
    };
    size(&p_axes)?;
    size(state)?;
    Some([x, bm, c])
}
