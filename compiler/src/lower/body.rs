//! The value of a fused region's body at symbolic coordinates, as kernel expressions.
//!
//! Elementwise ops compute from their operands at broadcast coordinates; layout ops (reshape,
//! permute, slice, pad, concat, gather) only change which coordinates their operand is read
//! at. So a whole region becomes one expression per output element, with loads of the
//! region's inputs at the end of each chain: nothing between them reaches memory.

use std::collections::HashMap;

use archc_kernels::ir::build::{bin, sub};
use archc_kernels::ir::{Bin, Expr, Stmt, Var};
use archc_kernels::print_expr;
use petgraph::graph::NodeIndex;

use super::elementwise::{bin as kernel_bin, constant, un};
use super::index::{flipped, plus, Ctx};
use super::ty;
use crate::graph::{Dim, Graph, Op};

/// Generates the expressions of one body's nodes. (Vector forms are in `lanes.rs`.)
#[derive(Clone)]
pub struct BodyGen<'a> {
    pub(super) body: &'a Graph,
    /// Kernel buffer of each body input node.
    pub(super) buffers: HashMap<NodeIndex, usize>,
    /// Nodes whose value at the current coordinates a template already holds (an accumulator).
    pub(super) bound: HashMap<NodeIndex, Expr>,
    /// Like `bound`, for four consecutive elements (a vector accumulator).
    pub(super) bound_lanes: HashMap<NodeIndex, Expr>,
    /// How many body nodes use each node: values used twice are computed once.
    pub(super) uses: Vec<usize>,
    /// The loops the expressions are generated in, outermost first: the statements that
    /// compute values (shared ones, and ones that do not depend on an inner loop) go to the
    /// outermost loop whose variables they read.
    levels: Vec<Vec<Stmt>>,
    /// The level of each loop variable ([`BodyGen::enter`], [`BodyGen::loop_vars`]).
    loop_level: HashMap<Var, usize>,
    /// The level of each variable a statement here set.
    var_level: HashMap<Var, usize>,
    /// (node, coordinates) → the variable holding it and its level.
    pub(super) memo: HashMap<(NodeIndex, String), (Expr, usize)>,
    /// Messages of the checks emitted so far (code i + 1 is message i).
    pub checks: Vec<String>,
    /// Lanes of the vector forms ([`super::lanes`]): four unless a template widens them.
    pub width: u8,
}

/// The variables an expression reads.
pub(super) fn vars_of(e: &Expr, out: &mut Vec<Var>) {
    fn walk(e: &mut Expr, out: &mut Vec<Var>) {
        if let Expr::Var(v) = e {
            out.push(*v);
        }
        for o in e.operands_mut() {
            walk(o, out);
        }
    }
    walk(&mut e.clone(), out);
}

/// Coordinates of an operand of shape `shape` broadcast against coordinates `at` of a result of
/// higher or equal rank (aligned on the right; size-1 axes read index 0).
pub fn broadcast_at(at: &[Expr], shape: &[Dim]) -> Vec<Expr> {
    let offset = at.len() - shape.len();
    shape
        .iter()
        .enumerate()
        .map(|(k, d)| {
            if d.as_const() == Some(1) {
                Expr::Int(0)
            } else {
                at[offset + k].clone()
            }
        })
        .collect()
}

/// `min(max(e, 0), hi − 1)`: an index kept inside `0..hi`.
fn clamp(e: Expr, hi: Expr) -> Expr {
    bin(
        Bin::Min,
        bin(Bin::Max, e, Expr::Int(0)),
        sub(hi, Expr::Int(1)),
    )
}

impl<'a> BodyGen<'a> {
    /// A generator for `body` whose input `"i"` is kernel buffer `first_buffer + i`.
    pub fn new(body: &'a Graph, first_buffer: usize) -> BodyGen<'a> {
        let buffers = body
            .inputs
            .iter()
            .map(|(name, n)| {
                let slot: usize = name.parse().expect("body inputs are numbered");
                (*n, first_buffer + slot)
            })
            .collect();
        let mut uses = vec![0; body.dag.node_count()];
        for n in body.dag.node_indices() {
            for o in body.operands(n) {
                uses[o.index()] += 1;
            }
        }
        BodyGen {
            body,
            buffers,
            bound: HashMap::new(),
            bound_lanes: HashMap::new(),
            uses,
            levels: vec![Vec::new()],
            loop_level: HashMap::new(),
            var_level: HashMap::new(),
            memo: HashMap::new(),
            checks: Vec::new(),
            width: super::lanes::LANES,
        }
    }

    /// Declares `vars` as variables of the innermost loop: values that read them are computed
    /// in it, values that do not are computed outside it.
    pub fn loop_vars(&mut self, vars: &[Var]) {
        for v in vars {
            self.loop_level.insert(*v, self.here());
        }
    }

    /// Starts generating inside a loop over `vars` (nested in the current one).
    pub fn enter(&mut self, vars: &[Var]) {
        self.levels.push(Vec::new());
        self.loop_vars(vars);
    }

    /// Ends the innermost loop [`BodyGen::enter`] started; returns the statements that go at
    /// the top of its body.
    pub fn leave(&mut self) -> Vec<Stmt> {
        let lets = self.take_lets();
        let here = self.here();
        self.loop_level.retain(|_, level| *level < here);
        self.levels.pop();
        lets
    }

    /// The innermost level.
    pub(super) fn here(&self) -> usize {
        self.levels.len() - 1
    }

    /// The outermost level at which `e` can be computed: the deepest level of a variable it
    /// reads (variables of the template's own, unknown here, count as the innermost).
    pub(super) fn level_of(&self, e: &Expr) -> usize {
        let mut vars = Vec::new();
        vars_of(e, &mut vars);
        vars.iter()
            .map(|v| {
                self.loop_level
                    .get(v)
                    .or_else(|| self.var_level.get(v))
                    .copied()
                    .unwrap_or(self.here())
            })
            .max()
            .unwrap_or(0)
    }

    /// Computes `e` into a fresh variable at its own level; returns the variable.
    pub(super) fn place(&mut self, cx: &mut Ctx, e: Expr) -> Var {
        let level = self.level_of(&e);
        let v = cx.var();
        self.levels[level].push(Stmt::Set(v, e));
        self.var_level.insert(v, level);
        v
    }

    /// Appends a template's own statement to the innermost level's, after the values
    /// generated so far: they stay known (computed once) to the expressions after it.
    pub fn push(&mut self, s: Stmt) {
        let here = self.here();
        self.levels[here].push(s);
    }

    /// Makes `node` evaluate to `value` (a template's accumulator) from now on.
    pub fn bind(&mut self, node: NodeIndex, value: Expr) {
        self.bound.insert(node, value);
    }

    /// The statements the expressions generated at the innermost level since the last call
    /// need, in order; values computed there are forgotten, since the next expressions live in
    /// another loop.
    pub fn take_lets(&mut self) -> Vec<Stmt> {
        let here = self.here();
        self.memo.retain(|_, (_, level)| *level < here);
        self.var_level.retain(|_, level| *level < here);
        std::mem::take(&mut self.levels[here])
    }

    /// The value of `n` at coordinates `at` (one per axis of its shape).
    pub fn value(&mut self, cx: &mut Ctx, n: NodeIndex, at: &[Expr]) -> Expr {
        if let Some(e) = self.bound.get(&n) {
            return e.clone();
        }
        let key = (n, at.iter().map(print_expr).collect::<Vec<_>>().join(","));
        if let Some((e, _)) = self.memo.get(&key) {
            return e.clone();
        }
        let e = self.compute(cx, n, at);
        if matches!(
            e,
            Expr::Var(_) | Expr::Int(_) | Expr::F32(_) | Expr::Bool(_) | Expr::Dim(_)
        ) {
            return e;
        }
        // Shared values are computed once; values an inner loop does not change, once per
        // iteration of the loop they do depend on.
        let level = self.level_of(&e);
        if self.uses[n.index()] <= 1 && level == self.here() {
            return e;
        }
        let v = self.place(cx, e);
        self.memo.insert(key, (Expr::Var(v), level));
        Expr::Var(v)
    }

    fn operand(&mut self, cx: &mut Ctx, n: NodeIndex, i: usize, at: &[Expr]) -> Expr {
        let o = self.body.operands(n)[i];
        let at = broadcast_at(at, &self.body.ty(o).shape);
        self.value(cx, o, &at)
    }

    fn compute(&mut self, cx: &mut Ctx, n: NodeIndex, at: &[Expr]) -> Expr {
        let node = &self.body.dag[n];
        let ins = self.body.operands(n);
        let out_ty = ty(node.ty.dtype);
        match &node.op {
            Op::Input(_) => {
                let buf = self.buffers[&n];
                Expr::Load(buf, Box::new(cx.index(&node.ty.shape, at)))
            }
            Op::Const(v) => constant(v.value(), node.ty.dtype),
            Op::Iota => Expr::Cast(out_ty, Box::new(at[0].clone())),
            Op::Size(d) => Expr::Cast(out_ty, Box::new(cx.dim(d))),
            Op::Unary(u) => {
                let x = self.operand(cx, n, 0, at);
                match un(*u) {
                    Some(u) => Expr::Un(u, Box::new(x)),
                    None => x,
                }
            }
            Op::Binary(b) => {
                let x = self.operand(cx, n, 0, at);
                let y = self.operand(cx, n, 1, at);
                let dtype = self.body.ty(ins[0]).dtype;
                Expr::Bin(kernel_bin(*b, dtype), Box::new(x), Box::new(y))
            }
            Op::Select => {
                let c = self.operand(cx, n, 0, at);
                let x = self.operand(cx, n, 1, at);
                let y = self.operand(cx, n, 2, at);
                Expr::Select(Box::new(c), Box::new(x), Box::new(y))
            }
            Op::Cast => {
                let x = self.operand(cx, n, 0, at);
                Expr::Cast(out_ty, Box::new(x))
            }
            Op::Reshape => {
                let src = reshape_at(cx, at, &node.ty.shape, &self.body.ty(ins[0]).shape);
                self.value(cx, ins[0], &src)
            }
            Op::Permute(perm) => {
                let mut src = vec![Expr::Int(0); perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    src[p] = at[i].clone();
                }
                self.value(cx, ins[0], &src)
            }
            Op::Slice { axis, start, .. } => {
                let mut src = at.to_vec();
                src[*axis] = plus(src[*axis].clone(), cx.dim(start));
                self.value(cx, ins[0], &src)
            }
            Op::Flip { axis } => {
                let src = flipped(cx, at, *axis, &self.body.ty(ins[0]).shape[*axis]);
                self.value(cx, ins[0], &src)
            }
            Op::Pad {
                axis,
                before,
                value,
                ..
            } => {
                let (inside, src) = self.padded(cx, n, (*axis, *before), at);
                let x = self.value(cx, ins[0], &src);
                Expr::Select(
                    Box::new(inside),
                    Box::new(x),
                    Box::new(constant(value.value(), node.ty.dtype)),
                )
            }
            Op::Concat { axis } => {
                // Each operand is read at its clamped offset coordinate; a chain of selects
                // picks the one the coordinate falls in.
                let i = at[*axis].clone();
                let mut offset = Dim::constant(0);
                let mut parts = Vec::new();
                for &o in &ins {
                    let size = self.body.ty(o).shape[*axis].clone();
                    let mut src = at.to_vec();
                    src[*axis] = clamp(sub(i.clone(), cx.dim(&offset)), cx.dim(&size));
                    let v = self.value(cx, o, &src);
                    offset = offset.add(&size).expect("concat sizes were checked");
                    parts.push((cx.dim(&offset), v));
                }
                let (_, last) = parts.pop().expect("concat has operands");
                parts.into_iter().rev().fold(last, |rest, (end, v)| {
                    Expr::Select(
                        Box::new(bin(Bin::Lt, i.clone(), end)),
                        Box::new(v),
                        Box::new(rest),
                    )
                })
            }
            Op::Gather { axis } => self.gather(cx, n, *axis, at),
            op => unreachable!("`{op}` is not fused into an expression"),
        }
    }

    /// `x[p, idx[p, i…], s]`: the index is itself an expression, checked against the axis.
    fn gather(&mut self, cx: &mut Ctx, n: NodeIndex, axis: usize, at: &[Expr]) -> Expr {
        let (x, x_at) = self.gather_source(cx, n, axis, at);
        self.value(cx, x, &x_at)
    }

    /// Whether `at` lies inside the operand of pad node `n` (along `axis`, `before` elements
    /// in front), and the operand's coordinates: clamped outside it, so that every load stays
    /// in bounds.
    pub(super) fn padded(
        &self,
        cx: &Ctx,
        n: NodeIndex,
        (axis, before): (usize, i64),
        at: &[Expr],
    ) -> (Expr, Vec<Expr>) {
        let size = cx.dim(&self.body.ty(self.body.operands(n)[0]).shape[axis]);
        let i = at[axis].clone();
        let inside = bin(
            Bin::And,
            bin(Bin::Ge, i.clone(), Expr::Int(before)),
            bin(Bin::Lt, i.clone(), plus(size.clone(), Expr::Int(before))),
        );
        let mut src = at.to_vec();
        src[axis] = clamp(sub(i, Expr::Int(before)), size);
        (inside, src)
    }

    /// The operand a gather (node `n`, along `axis`) reads at `at`, and its coordinates there:
    /// the index is read and checked (a failed check records the error, and the clamped
    /// coordinate keeps the load in bounds).
    pub(super) fn gather_source(
        &mut self,
        cx: &mut Ctx,
        n: NodeIndex,
        axis: usize,
        at: &[Expr],
    ) -> (NodeIndex, Vec<Expr>) {
        let ins = self.body.operands(n);
        let (x, idx) = (ins[0], ins[1]);
        let (xt, it) = (self.body.ty(x).clone(), self.body.ty(idx).clone());
        let rest = it.rank() - axis;
        let idx_at: Vec<Expr> = at[..axis + rest].to_vec();
        let idx_at = broadcast_at(&idx_at[idx_at.len() - it.rank()..], &it.shape);
        let value = self.value(cx, idx, &idx_at);
        let id = self.place(cx, Expr::Cast(archc_kernels::ir::Ty::I64, Box::new(value)));
        let size = cx.dim(&xt.shape[axis]);
        let ok = bin(
            Bin::And,
            bin(Bin::Ge, Expr::Var(id), Expr::Int(0)),
            bin(Bin::Lt, Expr::Var(id), size.clone()),
        );
        self.checks.push(format!(
            "an index is out of range for axis {axis} of size {}",
            xt.shape[axis]
        ));
        let level = self.level_of(&ok);
        self.levels[level].push(Stmt::Check(ok, self.checks.len() as u32));
        let mut x_at: Vec<Expr> = broadcast_at(&at[..axis], &xt.shape[..axis]);
        x_at.push(clamp(Expr::Var(id), size));
        x_at.extend(at[axis + rest..].iter().cloned());
        (x, x_at)
    }
}

/// Coordinates in a reshape's operand (shape `from`) of the element at `at` in its result
/// (shape `to`). Axes are matched in groups of equal size products, so a reshape that splits
/// or merges adjacent axes costs a multiply-add or a divide per group, not per axis; size-1
/// axes read index 0.
pub fn reshape_at(cx: &Ctx, at: &[Expr], to: &[Dim], from: &[Dim]) -> Vec<Expr> {
    let real = |shape: &[Dim]| -> Vec<usize> {
        (0..shape.len())
            .filter(|&a| shape[a].as_const() != Some(1))
            .collect()
    };
    let (ta, fa) = (real(to), real(from));
    let mut src = vec![Expr::Int(0); from.len()];
    let (mut i, mut j) = (0, 0);
    while i < ta.len() && j < fa.len() {
        // Grow a group on each side until the size products agree: always the side whose
        // product divides the other's.
        let (i0, j0) = (i, j);
        let (mut pt, mut pf) = (to[ta[i]].clone(), from[fa[j]].clone());
        (i, j) = (i + 1, j + 1);
        while pt != pf {
            let grown = if pf.div_exact(&pt).is_some() && i < ta.len() {
                i += 1;
                pt.mul(&to[ta[i - 1]]).map(|p| pt = p)
            } else if pt.div_exact(&pf).is_some() && j < fa.len() {
                j += 1;
                pf.mul(&from[fa[j - 1]]).map(|p| pf = p)
            } else {
                None
            };
            if grown.is_none() {
                return delinearize(cx, cx.index(to, at), from);
            }
        }
        let sub_to: Vec<Dim> = ta[i0..i].iter().map(|&a| to[a].clone()).collect();
        let sub_at: Vec<Expr> = ta[i0..i].iter().map(|&a| at[a].clone()).collect();
        let linear = cx.index(&sub_to, &sub_at);
        let sub_from: Vec<Dim> = fa[j0..j].iter().map(|&a| from[a].clone()).collect();
        for (k, e) in fa[j0..j].iter().zip(delinearize(cx, linear, &sub_from)) {
            src[*k] = e;
        }
    }
    if i < ta.len() || j < fa.len() {
        return delinearize(cx, cx.index(to, at), from);
    }
    src
}

/// The coordinates of linear index `linear` in a row-major tensor of `shape`.
pub fn delinearize(cx: &Ctx, linear: Expr, shape: &[Dim]) -> Vec<Expr> {
    let strides = cx.strides(shape);
    let n = shape.len();
    (0..n)
        .map(|a| {
            if shape[a].as_const() == Some(1) {
                return Expr::Int(0);
            }
            let q = match &strides[a] {
                Expr::Int(1) => linear.clone(),
                s => bin(Bin::Div, linear.clone(), s.clone()),
            };
            if a == 0 {
                q
            } else {
                bin(Bin::Rem, q, cx.dim(&shape[a]))
            }
        })
        .collect()
}
