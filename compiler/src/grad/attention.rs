//! The gradient of a tiled attention, as FlashAttention computes it: the scores are
//! recomputed, never stored.
//!
//! With `l` the logits (the user's modifications of the scores `s = q·kᵀ`), `o` the output
//! and `dO` its gradient:
//!
//! ```text
//! m = maxⱼ l   ls = log Σⱼ exp(l − m)   p = exp(l − m − ls)   D = Σ (dO ⊙ o)  (per query)
//! dp  = dO·vᵀ                  dl = p ⊙ (dp − D)         ds = dl through the modifications
//! dq  = ds·k                   dk = dsᵀ·q                dv = pᵀ·dO
//! ```
//!
//! These are first built as primitives in a scratch graph (the forward body, the lines above,
//! and the modifications' own vector-Jacobian products from `rules.rs`), which is then cut into
//! three regions: the statistics `[m, ls]`, dq, and dk beside dv. Each region's body is its part of the
//! scratch graph, so the interpreter runs it as written, and its kernel
//! (`lower/attention_grad.rs`) streams it one score at a time. D and the unbroadcasting are
//! ordinary nodes.

use std::collections::HashMap;

use archc_runtime::Dim;

use super::emit::Emit;
use super::GradError;
use crate::graph::{
    AttentionGradInfo, AttentionInfo, AttentionPart, BinaryOp, Graph, NodeIndex, Op, ReduceOp,
    Region, RegionKind, UnaryOp,
};
use crate::passes::outline::outline;

/// The contributions of a tiled attention `v`'s gradient `g` to its operands.
pub(super) fn vjp(
    e: &mut Emit<'_>,
    v: NodeIndex,
    region: &Region,
    a: &AttentionInfo,
    g: NodeIndex,
    wants: &dyn Fn(NodeIndex) -> bool,
) -> Result<Vec<(NodeIndex, NodeIndex)>, GradError> {
    let xs = e.g.operands(v);
    let [qs, ks, vs] = a.qkv;
    if let Some(s) = (0..xs.len()).find(|s| !a.qkv.contains(s) && wants(xs[*s])) {
        return Err(internal(format!(
            "operand {s} of a tiled attention needs a gradient"
        )));
    }
    let (want_q, want_kv) = (wants(xs[qs]), wants(xs[ks]) || wants(xs[vs]));
    let scratch = Backward::build(region, a, e.ty(v))?;
    // Scratch inputs → main graph nodes: the forward operands, the output, its gradient.
    let mut map: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    for (slot, x) in xs.iter().enumerate() {
        map.insert(region.input(slot), *x);
    }
    map.insert(scratch.out, v);
    map.insert(scratch.dout, g);
    let stats = scratch.region(e, &mut map, a, AttentionPart::Stats)?;
    map.insert(scratch.stats, stats);
    let mut out = Vec::new();
    if want_q {
        let dq = scratch.region(e, &mut map, a, AttentionPart::Queries)?;
        out.push((xs[qs], e.unbroadcast(dq, &e.ty(xs[qs]).shape)?));
    }
    if want_kv {
        let kv = scratch.region(e, &mut map, a, AttentionPart::KeysValues)?;
        let last = e.ty(kv).rank() - 1;
        let width = |shape: &[Dim]| shape.last().cloned().unwrap_or(Dim::constant(1));
        let d = width(&scratch.g.ty(scratch.k).shape);
        let dv_end = d
            .add(&width(&e.ty(xs[vs]).shape))
            .ok_or(GradError::Overflow)?;
        let dk = e.slice(kv, last, Dim::constant(0), d.clone())?;
        let dk = e.unbroadcast(dk, &scratch.g.ty(scratch.k).shape)?;
        // k = permute(k_order)(operand): the operand's gradient is the inverse permutation.
        let mut inverse = vec![0; a.k_order.len()];
        for (i, &p) in a.k_order.iter().enumerate() {
            inverse[p] = i;
        }
        out.push((xs[ks], e.permute(dk, inverse)?));
        let dv = e.slice(kv, last, d, dv_end)?;
        out.push((xs[vs], e.unbroadcast(dv, &e.ty(xs[vs]).shape)?));
    }
    Ok(out)
}

fn internal(why: String) -> GradError {
    GradError::Internal {
        op: "fused.attention".into(),
        why,
    }
}

/// The scratch graph of one attention's backward and its named values.
struct Backward {
    g: Graph,
    /// Inputs: the forward output and its gradient.
    out: NodeIndex,
    dout: NodeIndex,
    /// k in its logical layout `[…, t, d]`.
    k: NodeIndex,
    /// The softmax's statistics `[…, s, 2]`: each row's max and log-sum of exps.
    stats: NodeIndex,
    d: NodeIndex,
    p: NodeIndex,
    dp: NodeIndex,
    ds: NodeIndex,
    dq: NodeIndex,
    kv: NodeIndex,
}

impl Backward {
    /// The forward body and, after it, the backward's primitives (see the module doc).
    fn build(
        region: &Region,
        a: &AttentionInfo,
        out_ty: crate::graph::TensorType,
    ) -> Result<Backward, GradError> {
        let mut g = region.body.clone();
        g.outputs.clear();
        let logits = a.logits;
        let (scope, at) = (g.dag[logits].scope.clone(), g.dag[logits].at.clone());
        let input = |g: &mut Graph, name: &str| {
            let n = g.add(Op::Input(name.into()), out_ty.clone(), &scope, &[]);
            g.dag[n].at = at.clone();
            g.inputs.insert(name.into(), n);
            n
        };
        let (out, dout) = (input(&mut g, "o"), input(&mut g, "dO"));
        let [q, kt] = g.operands(a.scores)[..] else {
            return Err(internal("the scores are not a matmul".into()));
        };
        let v = region.input(a.qkv[2]);
        let forward_nodes = g.dag.node_count();
        let mut s = Emit::new(&mut g);
        s.at_node(logits);
        let last = s.ty(logits).rank() - 1;
        let reduce = |op| Op::Reduce {
            op,
            axes: vec![last],
            keepdim: true,
        };
        let max = s.op(reduce(ReduceOp::Max), &[logits])?;
        let shifted = s.binary(BinaryOp::Sub, logits, max)?;
        let exp = s.unary(UnaryOp::Exp, shifted)?;
        let sum = s.op(reduce(ReduceOp::Sum), &[exp])?;
        let log = s.unary(UnaryOp::Log, sum)?;
        let stats = s.op(Op::Concat { axis: last }, &[max, log])?;
        let width = |i: i64| Dim::constant(i);
        let m = s.slice(stats, last, width(0), width(1))?;
        let log_sum = s.slice(stats, last, width(1), width(2))?;
        let shifted = s.binary(BinaryOp::Sub, logits, m)?;
        let centred = s.binary(BinaryOp::Sub, shifted, log_sum)?;
        let p = s.unary(UnaryOp::Exp, centred)?;
        let weighted = s.mul(dout, out)?;
        let d = s.op(reduce(ReduceOp::Sum), &[weighted])?;
        let vt = s.transpose(v)?;
        let dp = s.op(Op::MatMul, &[dout, vt])?;
        let centred_dp = s.binary(BinaryOp::Sub, dp, d)?;
        let dlogits = s.mul(p, centred_dp)?;
        let ds = through_modifications(&mut s, (a.scores, logits), dlogits, forward_nodes)?;
        let k = s.transpose(kt)?;
        let dq = s.op(Op::MatMul, &[ds, k])?;
        let dst = s.transpose(ds)?;
        let dk = s.op(Op::MatMul, &[dst, q])?;
        let pt = s.transpose(p)?;
        let dv = s.op(Op::MatMul, &[pt, dout])?;
        let kv = s.op(Op::Concat { axis: last }, &[dk, dv])?;
        Ok(Backward {
            g,
            out,
            dout,
            k,
            stats,
            d,
            p,
            dp,
            ds,
            dq,
            kv,
        })
    }

    /// Adds the region of `part` to the main graph (its inputs placed first, through `map`).
    fn region(
        &self,
        e: &mut Emit<'_>,
        map: &mut HashMap<NodeIndex, NodeIndex>,
        a: &AttentionInfo,
        part: AttentionPart,
    ) -> Result<NodeIndex, GradError> {
        let root = match part {
            AttentionPart::Stats => self.stats,
            AttentionPart::Queries => self.dq,
            AttentionPart::KeysValues => self.kv,
        };
        // A region stops at the scratch inputs, the statistics and D (made by other nodes).
        let stop = |n: NodeIndex| {
            n == self.stats || n == self.d || self.g.inputs.values().any(|i| *i == n)
        };
        let mut members = Vec::new();
        let mut stack = vec![root];
        let mut seen = std::collections::HashSet::new();
        while let Some(n) = stack.pop() {
            if seen.insert(n) {
                members.push(n);
                stack.extend(self.g.operands(n).into_iter().filter(|o| !stop(*o)));
            }
        }
        let cut = outline(&self.g, &members, root);
        let slot = |n: NodeIndex| cut.leaves.iter().position(|l| *l == n);
        let body_node = |n: NodeIndex| cut.map.get(&n).copied();
        let streamed = part != AttentionPart::Stats;
        let missing = || internal(format!("the {part:?} region lacks an operand"));
        let info = AttentionGradInfo {
            part,
            scores: body_node(a.scores).ok_or_else(missing)?,
            logits: body_node(a.logits).ok_or_else(missing)?,
            dprobs: body_node(self.dp).filter(|_| streamed),
            dscores: body_node(self.ds).filter(|_| streamed),
            probs: body_node(self.p).filter(|_| part == AttentionPart::KeysValues),
            q: slot(self.g.operands(a.scores)[0]).ok_or_else(missing)?,
            k: slot(self.g.operands(self.g.operands(a.scores)[1])[0]).ok_or_else(missing)?,
            v: slot(region_input(&self.g, a.qkv[2])).filter(|_| streamed),
            dout: slot(self.dout).filter(|_| streamed),
            keys: a.keys.clone(),
            k_order: a.k_order.clone(),
        };
        let mut operands = Vec::new();
        for leaf in &cut.leaves {
            operands.push(self.place(e, map, *leaf)?);
        }
        let ty = self.g.ty(root).clone();
        let fused = Region {
            kind: RegionKind::AttentionGrad(info),
            body: cut.body,
        };
        Ok(e.typed(Op::Fused(Box::new(fused)), ty, &operands))
    }

    /// The main graph node of scratch node `n`: mapped already, or copied with its operands
    /// (D's nodes).
    fn place(
        &self,
        e: &mut Emit<'_>,
        map: &mut HashMap<NodeIndex, NodeIndex>,
        n: NodeIndex,
    ) -> Result<NodeIndex, GradError> {
        if let Some(m) = map.get(&n) {
            return Ok(*m);
        }
        let mut operands = Vec::new();
        for o in self.g.operands(n) {
            operands.push(self.place(e, map, o)?);
        }
        let node = &self.g.dag[n];
        let m = e.typed(node.op.clone(), node.ty.clone(), &operands);
        map.insert(n, m);
        Ok(m)
    }
}

/// The body node reading operand `slot`.
fn region_input(g: &Graph, slot: usize) -> NodeIndex {
    g.inputs[&slot.to_string()]
}

/// The gradient of the scores, from the logits' gradient `dl`, through the pointwise
/// modifications between them (the nodes on a path from `scores` to `logits`), with each
/// op's own rule. `forward` is the number of forward nodes: the path lies among them.
fn through_modifications(
    s: &mut Emit<'_>,
    (scores, logits): (NodeIndex, NodeIndex),
    dl: NodeIndex,
    forward: usize,
) -> Result<NodeIndex, GradError> {
    let mut from_scores = vec![false; forward];
    for i in scores.index()..forward {
        let n = NodeIndex::new(i);
        from_scores[i] = n == scores || s.g.operands(n).iter().any(|o| from_scores[o.index()]);
    }
    let mut on_path = vec![false; forward];
    on_path[logits.index()] = true;
    for i in (scores.index()..=logits.index()).rev() {
        if on_path[i] {
            for o in s.g.operands(NodeIndex::new(i)) {
                if from_scores[o.index()] {
                    on_path[o.index()] = true;
                }
            }
        }
    }
    let path = on_path.clone();
    let wants = move |n: NodeIndex| path.get(n.index()).copied().unwrap_or(false);
    let mut adjoint: HashMap<NodeIndex, NodeIndex> = HashMap::from([(logits, dl)]);
    for i in (scores.index() + 1..=logits.index()).rev() {
        let n = NodeIndex::new(i);
        let Some(gn) = adjoint.get(&n).copied().filter(|_| on_path[i]) else {
            continue;
        };
        for (x, d) in super::rules::vjp(s, n, gn, &wants)? {
            let sum = match adjoint.get(&x) {
                Some(prev) => s.add(*prev, d)?,
                None => d,
            };
            adjoint.insert(x, sum);
        }
    }
    if scores == logits {
        return Ok(dl);
    }
    adjoint
        .get(&scores)
        .copied()
        .ok_or_else(|| internal("the logits do not depend on the scores".into()))
}
