//! Compile-time arithmetic on numbers: integers stay exact and checked (overflow and
//! division by zero are located errors), integer division that is not exact gives a float.

use crate::syntax::ast::BinOp;
use crate::syntax::{Diagnostic, Span};

use super::value::Value;

/// An i64 overflow at `span`.
pub(super) fn overflow(span: Span) -> Diagnostic {
    Diagnostic::new(
        "E0401",
        span,
        "integer overflow in a compile-time expression",
    )
    .label("overflows i64")
}

/// `a op b` on integers; `rs` is the right operand, blamed for a division by zero.
pub(super) fn int_op(op: BinOp, a: i64, b: i64, span: Span, rs: Span) -> Result<Value, Diagnostic> {
    let zero = || {
        Diagnostic::new("E0401", rs, "division by zero in a compile-time expression")
            .label("this is 0")
    };
    let v = match op {
        BinOp::Add => a.checked_add(b),
        BinOp::Sub => a.checked_sub(b),
        BinOp::Mul => a.checked_mul(b),
        BinOp::Div => {
            if b == 0 {
                return Err(zero());
            }
            // Exact integer division stays an integer (`dim / heads`); otherwise a float.
            if a.checked_rem(b) == Some(0) {
                a.checked_div(b)
            } else {
                return Ok(Value::Float(a as f64 / b as f64));
            }
        }
        BinOp::Rem => {
            if b == 0 {
                return Err(zero());
            }
            a.checked_rem_euclid(b)
        }
        BinOp::Eq => return Ok(Value::Bool(a == b)),
        BinOp::Ne => return Ok(Value::Bool(a != b)),
        BinOp::Lt => return Ok(Value::Bool(a < b)),
        BinOp::Le => return Ok(Value::Bool(a <= b)),
        BinOp::Gt => return Ok(Value::Bool(a > b)),
        BinOp::Ge => return Ok(Value::Bool(a >= b)),
        BinOp::And | BinOp::Or => {
            return Err(Diagnostic::new(
                "E0111",
                span,
                format!("`{}` needs bools, found integers", op.symbol()),
            ))
        }
    };
    v.map(Value::Int).ok_or_else(|| overflow(span))
}

/// `a op b` on floats, or None where the operator is not defined on numbers.
pub(super) fn float_op(op: BinOp, a: f64, b: f64) -> Option<Value> {
    Some(match op {
        BinOp::Add => Value::Float(a + b),
        BinOp::Sub => Value::Float(a - b),
        BinOp::Mul => Value::Float(a * b),
        BinOp::Div => Value::Float(a / b),
        BinOp::Rem => Value::Float(a.rem_euclid(b)),
        BinOp::Eq => Value::Bool(a == b),
        BinOp::Ne => Value::Bool(a != b),
        BinOp::Lt => Value::Bool(a < b),
        BinOp::Le => Value::Bool(a <= b),
        BinOp::Gt => Value::Bool(a > b),
        BinOp::Ge => Value::Bool(a >= b),
        BinOp::And | BinOp::Or => return None,
    })
}
