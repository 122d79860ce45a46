//! Launch geometry kept in the plan: the grid and block a kernel step runs as, as integer
//! expressions of the plan's symbolic dims (`grid = [(seq + 63) / 64 * heads]`).
//!
//! On CPUs the grid is the extents of the kernel's outermost Grid loops, whose iterations the
//! executor splits across its threads (the thread count is the executor's, chosen at run
//! time), and the block is the extents of its Thread loops, which one OS thread runs in
//! order. On a GPU (next issue) they become the launch's grid and block dimensions.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

/// An integer operation of [`Size`] expressions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SizeOp {
    /// a + b
    Add,
    /// a − b
    Sub,
    /// a · b
    Mul,
    /// ⌊a / b⌋ for non-negative operands (by zero gives 0)
    Div,
    /// a mod b for non-negative operands (by zero gives 0)
    Rem,
    /// max(a, b)
    Max,
    /// min(a, b)
    Min,
    /// 1 if a ≤ b, else 0
    Le,
}

/// An integer expression of the plan's symbols.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Size {
    /// A constant.
    Const(i64),
    /// The value of `Plan::symbols[i]`.
    Symbol(usize),
    /// An operation on two sizes.
    Op(SizeOp, Box<Size>, Box<Size>),
}

impl Size {
    /// `a op b`, folding constants and the identities `x + 0`, `x − 0`, `x · 1`, `x / 1`, so
    /// dumps show `(seq + 63)/64`, not `1*((seq + 63)/64*1)`.
    pub fn op(op: SizeOp, a: Size, b: Size) -> Size {
        match (op, a, b) {
            (op, Size::Const(x), Size::Const(y)) => Size::Const(
                Size::Op(op, Box::new(Size::Const(x)), Box::new(Size::Const(y))).eval(&[]),
            ),
            (SizeOp::Add, Size::Const(0), e)
            | (SizeOp::Add | SizeOp::Sub, e, Size::Const(0))
            | (SizeOp::Mul, Size::Const(1), e)
            | (SizeOp::Mul | SizeOp::Div, e, Size::Const(1)) => e,
            (SizeOp::Mul, Size::Const(0), _) | (SizeOp::Mul, _, Size::Const(0)) => Size::Const(0),
            (op, a, b) => Size::Op(op, Box::new(a), Box::new(b)),
        }
    }

    /// Its value for the symbols' values (in `Plan::symbols` order; missing ones are 0).
    pub fn eval(&self, dims: &[i64]) -> i64 {
        match self {
            Size::Const(v) => *v,
            Size::Symbol(i) => dims.get(*i).copied().unwrap_or(0),
            Size::Op(op, a, b) => {
                let (a, b) = (a.eval(dims), b.eval(dims));
                match op {
                    SizeOp::Add => a.saturating_add(b),
                    SizeOp::Sub => a.saturating_sub(b),
                    SizeOp::Mul => a.saturating_mul(b),
                    SizeOp::Div => a.checked_div(b).unwrap_or(0),
                    SizeOp::Rem => a.checked_rem(b).unwrap_or(0),
                    SizeOp::Max => a.max(b),
                    SizeOp::Min => a.min(b),
                    SizeOp::Le => i64::from(a <= b),
                }
            }
        }
    }

    /// Its text with the symbols' names (`(seq + 63) / 64`).
    pub fn show(&self, symbols: &[String]) -> String {
        match self {
            Size::Const(v) => v.to_string(),
            Size::Symbol(i) => symbols.get(*i).cloned().unwrap_or_else(|| format!("d{i}")),
            Size::Op(op, a, rhs) => {
                let (a, mut b) = (a.show(symbols), rhs.show(symbols));
                // Products and quotients read left to right: one on the right needs brackets.
                let multiplicative =
                    |o: &SizeOp| matches!(o, SizeOp::Mul | SizeOp::Div | SizeOp::Rem);
                if multiplicative(op) && matches!(&**rhs, Size::Op(o, ..) if multiplicative(o)) {
                    b = format!("({b})");
                }
                match op {
                    SizeOp::Add => format!("({a} + {b})"),
                    SizeOp::Sub => format!("({a} - {b})"),
                    SizeOp::Mul => format!("{a}*{b}"),
                    SizeOp::Div => format!("{a}/{b}"),
                    SizeOp::Rem => format!("{a}%{b}"),
                    SizeOp::Max => format!("max({a}, {b})"),
                    SizeOp::Min => format!("min({a}, {b})"),
                    SizeOp::Le => format!("({a} <= {b})"),
                }
            }
        }
    }
}

/// The grid and block of a kernel step.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    /// The grid's extents, outermost first (empty: one block).
    pub grid: Vec<Size>,
    /// The block's extents, outermost first (empty: one thread).
    pub block: Vec<Size>,
}

impl Launch {
    /// `grid=[…] block=[…]` with the symbols' names (an empty list prints as `1`).
    pub fn show(&self, symbols: &[String]) -> String {
        let list = |sizes: &[Size]| -> String {
            if sizes.is_empty() {
                return "1".into();
            }
            let parts: Vec<String> = sizes.iter().map(|s| s.show(symbols)).collect();
            format!("[{}]", parts.join(", "))
        };
        let mut out = String::new();
        let _ = write!(out, "grid={} block={}", list(&self.grid), list(&self.block));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ceiling_division_prints_and_evaluates() {
        let blocks = Size::Op(
            SizeOp::Div,
            Box::new(Size::Op(
                SizeOp::Add,
                Box::new(Size::Symbol(0)),
                Box::new(Size::Const(63)),
            )),
            Box::new(Size::Const(64)),
        );
        let launch = Launch {
            grid: vec![blocks.clone(), Size::Symbol(1)],
            block: vec![],
        };
        let symbols = ["seq".to_string(), "heads".to_string()];
        assert_eq!(launch.show(&symbols), "grid=[(seq + 63)/64, heads] block=1");
        assert_eq!(blocks.eval(&[65, 8]), 2);
        let one = Size::op(SizeOp::Div, Size::Const(95), Size::Const(64));
        let folded = Size::op(
            SizeOp::Mul,
            Size::Const(1),
            Size::op(SizeOp::Mul, blocks.clone(), one),
        );
        assert_eq!(folded, blocks);
        assert_eq!(blocks.eval(&[64, 8]), 1);
    }
}
