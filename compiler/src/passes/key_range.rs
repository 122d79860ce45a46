//! Which keys a mask lets each query see, read from the mask's index arithmetic, for
//! `tile_attention`: a condition built from the query and key iotas (`i ≥ j`, `i − j < w`,
//! `abs(i − j) < w`, their conjunctions) is a range of `j − i`, and the kernel skips the key
//! blocks outside it.

use petgraph::graph::NodeIndex;

use crate::graph::{BinaryOp, Dim, Graph, KeyRange, Op, UnaryOp};

/// `i·query + j·key + c`: an index expression linear in the query and key indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Linear {
    i: i64,
    j: i64,
    c: i64,
}

impl Linear {
    fn plus(self, o: Linear, sign: i64) -> Option<Linear> {
        Some(Linear {
            i: self.i.checked_add(o.i.checked_mul(sign)?)?,
            j: self.j.checked_add(o.j.checked_mul(sign)?)?,
            c: self.c.checked_add(o.c.checked_mul(sign)?)?,
        })
    }

    fn constant(self) -> Option<i64> {
        (self.i == 0 && self.j == 0).then_some(self.c)
    }
}

/// The scores' query length `s` and key length `t`, which tell the two iotas apart.
pub struct Axes<'a> {
    /// The query axis' length.
    pub s: &'a Dim,
    /// The key axis' length.
    pub t: &'a Dim,
}

/// The axis, counted from the right, along which `n` (an iota, possibly cast or reshaped)
/// counts, and its length.
pub fn iota_axis(g: &Graph, n: NodeIndex) -> Option<(usize, &Dim)> {
    match &g.dag[n].op {
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

/// `n` as a linear form in the query and key indices, if it is one.
fn linear(g: &Graph, n: NodeIndex, axes: &Axes) -> Option<Linear> {
    let zero = Linear { i: 0, j: 0, c: 0 };
    match &g.dag[n].op {
        Op::Const(v) if v.value().fract() == 0.0 && v.value().abs() < 1e15 => Some(Linear {
            c: v.value() as i64,
            ..zero
        }),
        Op::Cast => linear(g, g.operands(n)[0], axes),
        Op::Unary(UnaryOp::Neg) => zero.plus(linear(g, g.operands(n)[0], axes)?, -1),
        Op::Binary(b @ (BinaryOp::Add | BinaryOp::Sub)) => {
            let [a, c] = g.operands(n)[..] else {
                return None;
            };
            let sign = if *b == BinaryOp::Add { 1 } else { -1 };
            linear(g, a, axes)?.plus(linear(g, c, axes)?, sign)
        }
        _ => match iota_axis(g, n)? {
            (1, len) if len == axes.s => Some(Linear { i: 1, ..zero }),
            (0, len) if len == axes.t => Some(Linear { j: 1, ..zero }),
            _ => None,
        },
    }
}

/// `lo ≤ j − i ≤ hi` for `sign·(j − i) + c ≥ 0`.
fn half(sign: i64, c: i64) -> Option<KeyRange> {
    Some(if sign == 1 {
        KeyRange {
            lo: Some(c.checked_neg()?),
            hi: None,
        }
    } else {
        KeyRange {
            lo: None,
            hi: Some(c),
        }
    })
}

/// The two ranges' intersection.
pub fn intersect(a: KeyRange, b: KeyRange) -> KeyRange {
    let pick = |x: Option<i64>, y: Option<i64>, f: fn(i64, i64) -> i64| match (x, y) {
        (Some(x), Some(y)) => Some(f(x, y)),
        (x, y) => x.or(y),
    };
    KeyRange {
        lo: pick(a.lo, b.lo, i64::max),
        hi: pick(a.hi, b.hi, i64::min),
    }
}

/// `(sign, c)` with `l ≡ sign·(j − i) + c`, when `l` depends on `j − i` alone.
fn of_distance(l: Linear) -> Option<(i64, i64)> {
    (l.j.abs() == 1 && l.i == -l.j).then_some((l.j, l.c))
}

/// The range of `j − i` for which `cond` holds, when it is a conjunction of comparisons of
/// `j − i` (or of its absolute value) with constants.
pub fn key_range(g: &Graph, cond: NodeIndex, axes: &Axes) -> Option<KeyRange> {
    let op = match &g.dag[cond].op {
        Op::Binary(op) => *op,
        _ => return None,
    };
    let [a, b] = g.operands(cond)[..] else {
        return None;
    };
    if op == BinaryOp::And {
        return Some(intersect(key_range(g, a, axes)?, key_range(g, b, axes)?));
    }
    // As `left ≥ right` or `left > right`.
    let (left, right, strict) = match op {
        BinaryOp::Ge => (a, b, false),
        BinaryOp::Gt => (a, b, true),
        BinaryOp::Le => (b, a, false),
        BinaryOp::Lt => (b, a, true),
        _ => return None,
    };
    let strict = i64::from(strict);
    // `w ≥ abs(x)`: `x ≥ −w` and `−x ≥ −w`.
    if let Op::Unary(UnaryOp::Abs) = &g.dag[right].op {
        let w = linear(g, left, axes)?.constant()?.checked_sub(strict)?;
        let (sign, c) = of_distance(linear(g, g.operands(right)[0], axes)?)?;
        return Some(intersect(
            half(sign, c.checked_add(w)?)?,
            half(-sign, w.checked_sub(c)?)?,
        ));
    }
    let d = linear(g, left, axes)?.plus(linear(g, right, axes)?, -1)?;
    let (sign, c) = of_distance(d)?;
    half(sign, c.checked_sub(strict)?)
}
