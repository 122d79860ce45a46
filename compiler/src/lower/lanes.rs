//! Vector forms of region bodies: consecutive elements along one loop variable at once, as many
//! as the generator's `width` (four unless a template widens it to its target's vectors).
//!
//! A template that loops over a contiguous axis asks for a node's value at coordinates in
//! which a variable `lane` is the first of `width` consecutive indices. Loads whose last
//! coordinate is `lane` (plus something that does not vary with it) become vector loads; values
//! that do not vary with `lane` stay scalars (computed once, outside, by the usual hoisting)
//! and are splat where they meet vectors; float arithmetic and the inline `exp` and `erf` work
//! lane by lane. Anything else (a select, a gather, an integer) has no vector form: the
//! template then generates the scalar loop.

use archc_kernels::ir::{Bin, Expr, Var};
use archc_runtime::DType;
use petgraph::graph::NodeIndex;

use super::body::{broadcast_at, reshape_at, vars_of, BodyGen};
use super::elementwise::{bin as kernel_bin, un};
use super::index::{flipped, plus, Ctx};
use crate::graph::{BinaryOp, Op};

/// Lanes of the vectors most templates emit. Four: every CPU target has them (Cranelift's
/// f32x4; LLVM widens or splits them), and their lane sums are written for four. The
/// micro-kernel templates take the target's width instead.
pub const LANES: u8 = 4;

/// The sum of the `width` lanes of vector `v`, as a tree of pairs in a fixed order (for four:
/// `(v.0 + v.1) + (v.2 + v.3)`).
pub fn lane_sum(v: Var, width: u8) -> Expr {
    let mut terms: Vec<Expr> = (0..width)
        .map(|l| Expr::Lane(Box::new(Expr::Var(v)), l))
        .collect();
    while terms.len() > 1 {
        terms = terms
            .chunks(2)
            .map(|p| match p {
                [a, b] => Expr::Bin(Bin::Add, Box::new(a.clone()), Box::new(b.clone())),
                [a] => a.clone(),
                _ => unreachable!("chunks of two"),
            })
            .collect();
    }
    terms
        .pop()
        .unwrap_or(Expr::F32(archc_kernels::ir::Ieee32::new(0.0)))
}

/// The widest vector, at most `lanes` lanes and at least four, whose width divides `n`; None
/// when four does not.
pub fn widest(lanes: usize, n: i64) -> Option<u8> {
    let mut w = lanes.clamp(4, 64).next_power_of_two() as i64;
    while w > 4 && n % w != 0 {
        w /= 2;
    }
    (n % w == 0).then_some(w as u8)
}

/// An f32 copied into the templates' [`LANES`] lanes.
pub fn splat(e: Expr) -> Expr {
    Expr::Splat(Box::new(e), LANES)
}

/// Consecutive values: one value in every lane, or a vector.
#[derive(Clone, Debug)]
pub enum Lanes {
    /// The same value in every lane.
    Scalar(Expr),
    /// A vector value.
    Vector(Expr),
}

impl Lanes {
    /// As a vector expression of `width` lanes.
    pub fn vector(self, width: u8) -> Expr {
        match self {
            Lanes::Scalar(e) => Expr::Splat(Box::new(e), width),
            Lanes::Vector(e) => e,
        }
    }
}

fn select(cond: Expr, a: Expr, b: Expr) -> Expr {
    Expr::Select(Box::new(cond), Box::new(a), Box::new(b))
}

fn mentions(e: &Expr, v: Var) -> bool {
    let mut vars = Vec::new();
    vars_of(e, &mut vars);
    vars.contains(&v)
}

/// Whether `e` is `lane + c` for some `c` that does not read `lane`: consecutive lanes are then
/// consecutive indices.
fn steps_with(e: &Expr, lane: Var) -> bool {
    match e {
        Expr::Var(v) => *v == lane,
        Expr::Bin(Bin::Add, a, b) => {
            (steps_with(a, lane) && !mentions(b, lane))
                || (steps_with(b, lane) && !mentions(a, lane))
        }
        _ => false,
    }
}

impl BodyGen<'_> {
    /// Makes `node` evaluate to the vector `value` in vector forms from now on.
    pub fn bind_lanes(&mut self, node: NodeIndex, value: Expr) {
        self.bound_lanes.insert(node, value);
    }

    /// The value of `n` at `at` for the `width` elements whose index along `lane` starts there,
    /// or None if some op on the way has no vector form.
    pub fn lanes(&mut self, cx: &mut Ctx, n: NodeIndex, at: &[Expr], lane: Var) -> Option<Lanes> {
        if let Some(e) = self.bound_lanes.get(&n) {
            return Some(Lanes::Vector(e.clone()));
        }
        if !at.iter().any(|e| mentions(e, lane)) {
            // A value bound only as a vector (a matmul epilogue's accumulator) has no scalar
            // form: a width-1 axis makes the coordinates lose the lane, and the scalar path
            // would try to compute the anchor itself.
            if self.reads_vector_only(n) {
                return None;
            }
            return Some(Lanes::Scalar(self.value(cx, n, at)));
        }
        let key = (
            n,
            format!(
                "lanes{}:{}",
                self.width,
                at.iter()
                    .map(archc_kernels::print_expr)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        );
        if let Some((e, _)) = self.memo.get(&key) {
            return Some(Lanes::Vector(e.clone()));
        }
        let e = match self.compute_lanes(cx, n, at, lane)? {
            Lanes::Scalar(e) => return Some(Lanes::Scalar(e)),
            Lanes::Vector(e) => e,
        };
        if self.uses[n.index()] <= 1 || matches!(e, Expr::Var(_)) {
            return Some(Lanes::Vector(e));
        }
        let v = self.place(cx, e);
        let level = self.here();
        self.memo.insert(key, (Expr::Var(v), level));
        Some(Lanes::Vector(Expr::Var(v)))
    }

    /// Whether `n` reads (or is) a node bound in vector form only.
    fn reads_vector_only(&self, n: NodeIndex) -> bool {
        let mut stack = vec![n];
        let mut seen = Vec::new();
        while let Some(m) = stack.pop() {
            if self.bound.contains_key(&m) || seen.contains(&m) {
                continue;
            }
            if self.bound_lanes.contains_key(&m) {
                return true;
            }
            seen.push(m);
            stack.extend(self.body.operands(m));
        }
        false
    }

    fn operand_lanes(
        &mut self,
        cx: &mut Ctx,
        n: NodeIndex,
        i: usize,
        at: &[Expr],
        lane: Var,
    ) -> Option<Lanes> {
        let o = self.body.operands(n)[i];
        let at = broadcast_at(at, &self.body.ty(o).shape);
        self.lanes(cx, o, &at, lane)
    }

    fn compute_lanes(
        &mut self,
        cx: &mut Ctx,
        n: NodeIndex,
        at: &[Expr],
        lane: Var,
    ) -> Option<Lanes> {
        let node = &self.body.dag[n];
        if !node.ty.dtype.is_float() {
            return None;
        }
        let ins = self.body.operands(n);
        match &node.op {
            Op::Const(v) => Some(Lanes::Scalar(super::elementwise::constant(
                v.value(),
                node.ty.dtype,
            ))),
            Op::Input(_) => {
                let (last, rest) = at.split_last()?;
                // Vector loads of quantized blocks must start at a multiple of their width,
                // which an element-wise index does not promise.
                let quantized = cx.blocks.contains(&self.buffers[&n]);
                let contiguous = !quantized
                    && node.ty.shape.last().and_then(|d| d.as_const()) != Some(1)
                    && steps_with(last, lane)
                    && !rest.iter().any(|e| mentions(e, lane));
                contiguous.then(|| {
                    let buf = self.buffers[&n];
                    Lanes::Vector(Expr::VLoad(
                        buf,
                        Box::new(cx.index(&node.ty.shape, at)),
                        self.width,
                    ))
                })
            }
            Op::Unary(u) => {
                let x = self.operand_lanes(cx, n, 0, at, lane)?;
                Some(match un(*u) {
                    None => x,
                    Some(u) => Lanes::Vector(Expr::Un(u, Box::new(x.vector(self.width)))),
                })
            }
            Op::Binary(b)
                if matches!(
                    b,
                    BinaryOp::Add
                        | BinaryOp::Sub
                        | BinaryOp::Mul
                        | BinaryOp::Div
                        | BinaryOp::Max
                        | BinaryOp::Min
                ) =>
            {
                let x = self.operand_lanes(cx, n, 0, at, lane)?.vector(self.width);
                let y = self.operand_lanes(cx, n, 1, at, lane)?.vector(self.width);
                Some(Lanes::Vector(Expr::Bin(
                    kernel_bin(*b, DType::F32),
                    Box::new(x),
                    Box::new(y),
                )))
            }
            Op::Cast if self.body.ty(ins[0]).dtype.is_float() => {
                self.operand_lanes(cx, n, 0, at, lane)
            }
            Op::Reshape => {
                let src = reshape_at(cx, at, &node.ty.shape, &self.body.ty(ins[0]).shape);
                self.lanes(cx, ins[0], &src, lane)
            }
            Op::Permute(perm) => {
                let mut src = vec![Expr::Int(0); perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    src[p] = at[i].clone();
                }
                self.lanes(cx, ins[0], &src, lane)
            }
            Op::Slice { axis, start, .. } => {
                let mut src = at.to_vec();
                src[*axis] = plus(src[*axis].clone(), cx.dim(start));
                self.lanes(cx, ins[0], &src, lane)
            }
            // Reversing the lane's own axis makes its loads run backwards, which the input
            // loads refuse (no vector form); any other axis keeps the lanes consecutive.
            Op::Flip { axis } => {
                let src = flipped(cx, at, *axis, &self.body.ty(ins[0]).shape[*axis]);
                self.lanes(cx, ins[0], &src, lane)
            }
            // Padding along another axis than the lanes': one condition for all of them.
            Op::Pad {
                axis,
                before,
                value,
                ..
            } if !mentions(&at[*axis], lane) => {
                let (inside, src) = self.padded(cx, n, (*axis, *before), at);
                let fill = super::elementwise::constant(value.value(), node.ty.dtype);
                Some(match self.lanes(cx, ins[0], &src, lane)? {
                    Lanes::Scalar(x) => Lanes::Scalar(select(inside, x, fill)),
                    Lanes::Vector(x) => {
                        let fill = Expr::Splat(Box::new(fill), self.width);
                        Lanes::Vector(select(inside, x, fill))
                    }
                })
            }
            // A gather whose index does not vary with the lanes reads one row of consecutive
            // elements (a window of a convolution).
            Op::Gather { axis } => {
                let rest = self.body.ty(ins[1]).rank() - axis;
                if at[..*axis + rest].iter().any(|e| mentions(e, lane)) {
                    return None;
                }
                let (x, x_at) = self.gather_source(cx, n, *axis, at);
                self.lanes(cx, x, &x_at, lane)
            }
            _ => None,
        }
    }
}
