//! The gradient of a fused scan, as Mamba's backward computes it: one region whose kernel
//! recomputes the states chunk by chunk instead of storing them.
//!
//! The scratch graph is the forward body, then its backward swept node by node with the
//! ordinary rules from the output's gradient `dy`: through the epilogue and the read-out to the
//! state's gradient (the seed g), the scan's own rule (λ, the reverse-time scan, and
//! `da = λ·h[t−1]`, `db = λ`), then back through the discretisation to every input. Each
//! input's gradient is flattened and the gradients are laid end to end as the region's one
//! output, sliced apart after; the interpreter runs the body as written.
//!
//! The kernel (`lower/scan_grad.rs`) gives each task the coordinates of the state's
//! *parallel* axes: the channel axes every input with a time axis has (Mamba: the batch).
//! It loops over the other channels itself, so a gradient summed over them (Mamba's `B` and
//! `C`, shared by all channels) is added into by one task only. An input that lacks a parallel
//! axis (a weight, `A` or `D`) is widened to have it: its gradient comes out per task and is
//! summed after the region.

use std::collections::HashMap;

use archc_runtime::Dim;

use super::emit::Emit;
use super::GradError;
use crate::graph::{
    infer, Graph, NodeIndex, Op, ReduceOp, Region, RegionKind, ScanFrames, ScanGradInfo, ScanInfo,
    TensorType,
};
use crate::passes::outline::outline;

/// The most state elements per channel the backward's kernel recomputes in a chunk: it keeps a
/// chunk's states, a multiple of this many steps, in thread-private memory.
const MAX_STATE: i64 = 128;

/// Where a fused scan's axes are: what the kernel needs of it, and why a region cannot have it.
pub(crate) struct Layout {
    /// The time axis of the state.
    axis: usize,
    /// The state's shape.
    h: Vec<Dim>,
    /// The state axes the read-out sums (the trailing ones).
    state: Vec<usize>,
    /// Whether the read-out keeps the state axes (as size 1).
    keepdim: bool,
    /// The parallel axes (see the module doc).
    parallel: Vec<usize>,
}

impl Layout {
    /// The layout of a scan region with a read-out, or why its backward is not fused.
    pub(crate) fn of(r: &Region, info: &ScanInfo) -> Result<Layout, String> {
        let b = &r.body;
        let Op::Scan { axis } = b.dag[info.scan].op else {
            return Err("its anchor is not a scan".into());
        };
        let ro = info.readout.ok_or("it has no read-out")?;
        let Op::Reduce {
            op: ReduceOp::Sum,
            axes,
            keepdim,
        } = &b.dag[ro].op
        else {
            return Err("its read-out is not a sum".into());
        };
        let h = b.ty(info.scan).shape.clone();
        let mut state = axes.clone();
        state.sort_unstable();
        let trailing: Vec<usize> = (h.len() - state.len()..h.len()).collect();
        if state != trailing {
            return Err("the read-out does not sum the state's trailing axes".into());
        }
        let size = state
            .iter()
            .try_fold(1i64, |p, &a| Some(p * h[a].as_const()?));
        if size.is_none_or(|n| n > MAX_STATE) {
            return Err(format!(
                "the state is not a constant of at most {MAX_STATE} elements"
            ));
        }
        let mut layout = Layout {
            axis,
            keepdim: *keepdim,
            h,
            state,
            parallel: Vec::new(),
        };
        let mut inputs = Vec::new();
        for n in b.inputs.values() {
            let shape = &b.ty(*n).shape;
            let axes = layout.frames().loose_axes_of(shape).ok_or_else(|| {
                format!("input {shape:?} broadcasts neither to the state nor to the read-out")
            })?;
            inputs.push((shape.clone(), axes));
        }
        // An input has an axis when it spans it whole (one sliced in the body may not).
        let one = Dim::constant(1);
        let h = layout.h.clone();
        let has = |(shape, axes): &(Vec<Dim>, Vec<usize>), x: usize| {
            axes.iter()
                .zip(shape)
                .any(|(a, d)| *a == x && *d != one && *d == h[x])
        };
        layout.parallel = (0..layout.h.len())
            .filter(|&c| c != axis && !layout.state.contains(&c))
            .filter(|&c| inputs.iter().filter(|i| has(i, axis)).all(|i| has(i, c)))
            .collect();
        Ok(layout)
    }

    /// The frames of the body's values.
    fn frames(&self) -> ScanFrames<'_> {
        ScanFrames {
            h: &self.h,
            state: &self.state,
            keepdim: self.keepdim,
        }
    }

    /// `shape` (an input's, in its frame) with every parallel axis at its full size, at the
    /// frame's rank; None when it has them all.
    fn widened(&self, shape: &[Dim]) -> Option<Vec<Dim>> {
        let (frame, axes) = self.frames().axes_of(shape)?;
        let one = Dim::constant(1);
        let present = |p: usize| axes.iter().zip(shape).any(|(a, d)| *a == p && *d != one);
        if self.parallel.iter().all(|p| present(*p)) {
            return None;
        }
        Some(
            frame
                .iter()
                .map(|a| match axes.iter().position(|x| x == a) {
                    _ if self.parallel.contains(a) => self.h[*a].clone(),
                    Some(i) => shape[i].clone(),
                    None => one.clone(),
                })
                .collect(),
        )
    }
}

/// Whether the backward of scan region `r` can be one `fused.scan_grad` region: its layout
/// fits and the body it would have, with every input differentiated, passes
/// `scan_terms::check`; or why not.
pub(crate) fn check(r: &Region, info: &ScanInfo) -> Result<(), String> {
    let layout = Layout::of(r, info)?;
    let slots: Vec<usize> = (0..r.body.inputs.len()).collect();
    let mut widened = HashMap::new();
    for &s in &slots {
        if let Some(shape) = layout.widened(&r.body.ty(r.input(s)).shape) {
            widened.insert(s, shape);
        }
    }
    Backward::build(r, info, &layout, &widened, &slots)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The contributions of fused scan `v`'s gradient `g` to its operands.
pub(super) fn vjp(
    e: &mut Emit<'_>,
    v: NodeIndex,
    region: &Region,
    info: &ScanInfo,
    g: NodeIndex,
    wants: &dyn Fn(NodeIndex) -> bool,
) -> Result<Vec<(NodeIndex, NodeIndex)>, GradError> {
    let layout = Layout::of(region, info).map_err(internal)?;
    let xs = e.g.operands(v);
    let wanted: Vec<usize> = (0..xs.len()).filter(|s| wants(xs[*s])).collect();
    // Inputs that lack a parallel axis are widened to have it, in the body and outside.
    let mut widened: HashMap<usize, Vec<Dim>> = HashMap::new();
    for &s in &wanted {
        if let Some(shape) = layout.widened(&e.ty(xs[s]).shape) {
            widened.insert(s, shape);
        }
    }
    let scratch = Backward::build(region, info, &layout, &widened, &wanted)?;
    let mut operands = Vec::new();
    for leaf in &scratch.leaves {
        operands.push(match leaf {
            Leaf::Slot(s) => match widened.get(s) {
                Some(shape) => e.expand(xs[*s], shape)?,
                None => xs[*s],
            },
            Leaf::Cotangent => g,
        });
    }
    let total = scratch.region.body.ty(scratch.region.output()).clone();
    let fused = e.typed(Op::Fused(Box::new(scratch.region)), total, &operands);
    let mut out = Vec::new();
    let mut offset = Dim::constant(0);
    for (&s, shape) in wanted.iter().zip(&scratch.shapes) {
        let size = Dim::product(shape).ok_or(GradError::Overflow)?;
        let end = offset.add(&size).ok_or(GradError::Overflow)?;
        let flat = e.slice(fused, 0, offset.clone(), end.clone())?;
        let grad = e.reshape(flat, shape.clone());
        out.push((xs[s], e.unbroadcast(grad, &e.ty(xs[s]).shape)?));
        offset = end;
    }
    Ok(out)
}

fn internal(why: String) -> GradError {
    GradError::Internal {
        op: "fused.scan".into(),
        why,
    }
}

/// A region input of the backward.
enum Leaf {
    /// The forward region's operand in this slot (widened when it lacks a parallel axis).
    Slot(usize),
    /// The gradient of the forward region's output.
    Cotangent,
}

/// The backward region of one fused scan.
struct Backward {
    region: Region,
    /// What each of the region's operands is.
    leaves: Vec<Leaf>,
    /// The shape of each wanted input's gradient (widened ones with their parallel axes).
    shapes: Vec<Vec<Dim>>,
}

impl Backward {
    fn build(
        region: &Region,
        info: &ScanInfo,
        layout: &Layout,
        widened: &HashMap<usize, Vec<Dim>>,
        wanted: &[usize],
    ) -> Result<Backward, GradError> {
        let mut g = widen(&region.body, widened)?;
        let out = g.outputs["out"];
        g.outputs.clear();
        let forward = g.dag.node_count();
        let dy = g.add(
            Op::Input("dy".into()),
            g.ty(out).clone(),
            &g.dag[out].scope.clone(),
            &[],
        );
        g.inputs.insert("dy".into(), dy);
        let mut e = Emit::new(&mut g);
        let (adjoint, parts) = sweep(&mut e, (out, dy, forward), info.scan, layout.axis, wanted)?;
        let (seed, lambda, h_prev) = parts;
        // Each wanted input's gradient, flattened, end to end.
        let mut grads = Vec::new();
        let mut flat = Vec::new();
        let mut shapes = Vec::new();
        for &s in wanted {
            let input = e.g.inputs[&s.to_string()];
            let ty = e.ty(input);
            let grad = match adjoint.get(&input) {
                Some(d) => *d,
                None => e.zeros(ty.clone()),
            };
            let size = Dim::product(&ty.shape).ok_or(GradError::Overflow)?;
            grads.push(grad);
            flat.push(e.reshape(grad, vec![size]));
            shapes.push(ty.shape);
        }
        let root = match &flat[..] {
            [one] => *one,
            _ => e.op(Op::Concat { axis: 0 }, &flat)?,
        };
        // The body: everything the gradients read, and the state (the kernel recomputes it
        // even when no gradient reads it, for λ's decay).
        let mut members = Vec::new();
        let mut stack = vec![root, info.scan];
        let mut seen = std::collections::HashSet::new();
        while let Some(n) = stack.pop() {
            if seen.insert(n) && !matches!(g.dag[n].op, Op::Input(_)) {
                members.push(n);
                stack.extend(g.operands(n));
            }
        }
        let cut = outline(&g, &members, root);
        let body_node = |n: NodeIndex| cut.map.get(&n).copied();
        let missing = |what: &str| internal(format!("the backward's body lacks its {what}"));
        let leaves = cut
            .leaves
            .iter()
            .map(|l| match slot_of(&g, *l) {
                Some(s) => Ok(Leaf::Slot(s)),
                None if *l == dy => Ok(Leaf::Cotangent),
                None => Err(internal(format!("the backward reads %{}", l.index()))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let info = ScanGradInfo {
            scan: body_node(info.scan).ok_or_else(|| missing("state"))?,
            h_prev: h_prev.and_then(body_node),
            seed: body_node(seed).ok_or_else(|| missing("seed"))?,
            lambda: body_node(lambda).ok_or_else(|| missing("λ"))?,
            state: layout.state.clone(),
            keepdim: layout.keepdim,
            parallel: layout.parallel.clone(),
            grads: grads
                .iter()
                .map(|n| body_node(*n).ok_or_else(|| missing("gradient")))
                .collect::<Result<_, _>>()?,
        };
        crate::graph::scan_terms::check(&cut.body, &info).map_err(internal)?;
        Ok(Backward {
            region: Region {
                kind: RegionKind::ScanGrad(info),
                body: cut.body,
            },
            leaves,
            shapes,
        })
    }
}

/// The body input slot `n` reads, if it is one.
fn slot_of(g: &Graph, n: NodeIndex) -> Option<usize> {
    match &g.dag[n].op {
        Op::Input(name) => name.parse::<usize>().ok(),
        _ => None,
    }
}

/// The state's parts of a backward: the seed g, λ, and h[t − 1] if read.
type Parts = (NodeIndex, NodeIndex, Option<NodeIndex>);

/// The backward sweep over the scratch graph's first `forward` nodes, from `out`'s gradient
/// `dy`: each node's gradient (as the sum of its users' contributions), for the nodes on a
/// path from a wanted input slot; the scan (`scan`, along `axis`) by its own rule, whose
/// parts are returned.
fn sweep(
    e: &mut Emit<'_>,
    (out, dy, forward): (NodeIndex, NodeIndex, usize),
    scan: NodeIndex,
    axis: usize,
    wanted: &[usize],
) -> Result<(HashMap<NodeIndex, NodeIndex>, Parts), GradError> {
    let mut needs = vec![false; forward];
    for i in 0..forward {
        let n = NodeIndex::new(i);
        needs[i] = match slot_of(e.g, n) {
            Some(s) => wanted.contains(&s),
            None => e.g.operands(n).iter().any(|o| needs[o.index()]),
        };
    }
    let wants = |x: NodeIndex| needs.get(x.index()).copied().unwrap_or(false);
    let mut adjoint: HashMap<NodeIndex, NodeIndex> = HashMap::from([(out, dy)]);
    let mut parts = None;
    for i in (0..forward).rev() {
        let n = NodeIndex::new(i);
        let Some(gn) = adjoint.get(&n).copied().filter(|_| needs[i]) else {
            continue;
        };
        e.at_node(n);
        let contributions = if n == scan {
            let [a, b] = e.g.operands(n)[..] else {
                return Err(internal("a scan has two operands".into()));
            };
            let adj = super::scan::adjoint(e, (a, b), n, axis, gn, &wants)?;
            parts = Some((gn, adj.lambda, adj.h_prev));
            adj.contributions
        } else {
            super::rules::vjp(e, n, gn, &wants)?
        };
        for (x, d) in contributions {
            let sum = match adjoint.get(&x) {
                Some(prev) => e.add(*prev, d)?,
                None => d,
            };
            adjoint.insert(x, sum);
        }
    }
    let parts = parts.ok_or_else(|| internal("no gradient reaches the state".into()))?;
    Ok((adjoint, parts))
}

/// `body` with the inputs of `widened`'s slots given those shapes, every other node's type
/// inferred again: it must not change (each widened axis is one the node's users broadcast).
fn widen(body: &Graph, widened: &HashMap<usize, Vec<Dim>>) -> Result<Graph, GradError> {
    let mut g = body.clone();
    for (slot, shape) in widened {
        let n = g.inputs[&slot.to_string()];
        g.dag[n].ty.shape = shape.clone();
    }
    let changed = |g: &Graph, n: NodeIndex| g.ty(n) != body.ty(n);
    for n in g.dag.node_indices() {
        let ops = g.operands(n);
        if matches!(g.dag[n].op, Op::Input(_)) || !ops.iter().any(|o| changed(&g, *o)) {
            continue;
        }
        let tys: Vec<TensorType> = ops.iter().map(|o| g.ty(*o).clone()).collect();
        let refs: Vec<&TensorType> = tys.iter().collect();
        let ty = infer(&g.dag[n].op, &refs, None).ok();
        if ty.as_ref() != Some(body.ty(n)) {
            return Err(internal(format!(
                "`{}` does not broadcast a weight over the parallel axes",
                g.dag[n].op
            )));
        }
    }
    Ok(g)
}
