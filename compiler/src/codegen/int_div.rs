//! Integer division and remainder in generated code. A native signed divide traps (SIGFPE)
//! on a zero divisor and on `i64::MIN / -1`, and kernels must never trap.
//!
//! `Div` and `Rem` are index arithmetic, whose operands are never negative: only a zero
//! divisor is replaced (by 1, the result then set to 0), which keeps the hot index code short.
//! `DivEuclid` and `RemEuclid` are tensor `/` and `%` on any integers: −1 is replaced too and
//! the results are fixed up to what `archc_kernels::math::{div_euclid, rem_euclid}` define.

use archc_kernels::ir::Bin;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;

/// `x op y` on i64 for `Div`, `Rem` (truncating) and `DivEuclid`, `RemEuclid`.
pub(super) fn emit(b: &mut FunctionBuilder, op: Bin, x: Value, y: Value) -> Value {
    let zero = b.ins().icmp_imm_s(IntCC::Equal, y, 0);
    let value = match op {
        Bin::Div | Bin::Rem => {
            let one = b.ins().iconst(types::I64, 1);
            let safe = b.ins().select(zero, one, y);
            if op == Bin::Div {
                b.ins().sdiv(x, safe)
            } else {
                b.ins().srem(x, safe)
            }
        }
        _ => euclid(b, op == Bin::DivEuclid, zero, x, y),
    };
    let z = b.ins().iconst(types::I64, 0);
    b.ins().select(zero, z, value)
}

/// The Euclidean quotient (`quotient`) or remainder of `x` by `y`, for `y ≠ 0` (`zero` says
/// where it is, and the caller replaces those results).
fn euclid(b: &mut FunctionBuilder, quotient: bool, zero: Value, x: Value, y: Value) -> Value {
    let minus_one = b.ins().icmp_imm_s(IntCC::Equal, y, -1);
    let unsafe_divisor = b.ins().bor(zero, minus_one);
    let one = b.ins().iconst(types::I64, 1);
    let s = b.ins().select(unsafe_divisor, one, y);
    let q = b.ins().sdiv(x, s);
    let r = b.ins().srem(x, s);
    // Truncation leaves a negative remainder when x < 0; Euclid moves it into 0..|y| and the
    // quotient one step away from the divisor's sign. For y = −1 (s = 1) r is 0 and the
    // quotient is −x, wrapping at the minimum.
    let negative = b.ins().icmp_imm_s(IntCC::SignedLessThan, r, 0);
    let positive_divisor = b.ins().icmp_imm_s(IntCC::SignedGreaterThan, s, 0);
    let none = b.ins().iconst(types::I64, 0);
    if quotient {
        let minus = b.ins().iconst(types::I64, -1);
        let step = b.ins().select(positive_divisor, minus, one);
        let step = b.ins().select(negative, step, none);
        let q = b.ins().iadd(q, step);
        let neg_x = b.ins().ineg(x);
        b.ins().select(minus_one, neg_x, q)
    } else {
        let neg_s = b.ins().ineg(s);
        let abs_s = b.ins().select(positive_divisor, s, neg_s);
        let step = b.ins().select(negative, abs_s, none);
        b.ins().iadd(r, step)
    }
}
