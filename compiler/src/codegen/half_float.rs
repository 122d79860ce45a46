//! f16 and bf16 ↔ f32 in Cranelift IR, with integer bit manipulation only (no F16C), so the
//! code runs on every x86-64 and rounds exactly as `archc_kernels::storage` (the `half`
//! crate's software conversions): loads widen exactly, stores round to nearest even, overflow
//! gives ±Inf, a NaN stays a quiet NaN keeping its payload's upper bits. Branch-free: each
//! case is computed and the right one selected.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::FunctionBuilder;

fn bits_of(b: &mut FunctionBuilder, x: Value) -> Value {
    b.ins().bitcast(types::I32, MemFlagsData::new(), x)
}

fn float_of(b: &mut FunctionBuilder, bits: Value) -> Value {
    b.ins().bitcast(types::F32, MemFlagsData::new(), bits)
}

/// 1 when `m & bit` and `m & (3·bit − 1)` are both non-zero (the rounding bit is set, and
/// either a lower bit or the kept last bit is: round half to even), else 0; `bit` a value.
fn round_up(b: &mut FunctionBuilder, m: Value, bit: Value) -> Value {
    let has_bit = b.ins().band(m, bit);
    let c1 = b.ins().icmp_imm_u(IntCC::NotEqual, has_bit, 0);
    let three = b.ins().imul_imm_u(bit, 3);
    let mask = b.ins().iadd_imm_s(three, -1);
    let rest = b.ins().band(m, mask);
    let c2 = b.ins().icmp_imm_u(IntCC::NotEqual, rest, 0);
    let both = b.ins().band(c1, c2);
    b.ins().uextend(types::I32, both)
}

/// The f32 an f16 holds; `h` is an i32 whose low 16 bits are the f16's.
pub fn f16_to_f32(b: &mut FunctionBuilder, h: Value) -> Value {
    let sign_h = b.ins().band_imm_u(h, 0x8000);
    let sign = b.ins().ishl_imm_u(sign_h, 16);
    let magnitude = b.ins().band_imm_u(h, 0x7FFF);
    let exp = b.ins().band_imm_u(h, 0x7C00);
    let man = b.ins().band_imm_u(h, 0x03FF);
    // Normal: the exponent rebiased by 127 − 15 = 112, the mantissa moved up 13 bits.
    let shifted = b.ins().ishl_imm_u(magnitude, 13);
    let normal = b.ins().iadd_imm_s(shifted, 112 << 23);
    // Zero and subnormal: man · 2⁻²⁴, exact in f32.
    let man_f = b.ins().fcvt_from_uint(types::F32, man);
    let scale = b.ins().f32const(f32::from_bits(0x3380_0000)); // 2⁻²⁴
    let small_f = b.ins().fmul(man_f, scale);
    let small = bits_of(b, small_f);
    // Inf and NaN: all exponent bits, the payload moved up, a NaN made quiet.
    let payload = b.ins().ishl_imm_u(man, 13);
    let nan = b.ins().icmp_imm_u(IntCC::NotEqual, man, 0);
    let quiet = b.ins().iconst(types::I32, 0x0040_0000);
    let zero = b.ins().iconst(types::I32, 0);
    let quiet = b.ins().select(nan, quiet, zero);
    let special = b.ins().bor_imm_u(payload, 0x7F80_0000);
    let special = b.ins().bor(special, quiet);
    let is_special = b.ins().icmp_imm_u(IntCC::Equal, exp, 0x7C00);
    let is_small = b.ins().icmp_imm_u(IntCC::Equal, exp, 0);
    let finite = b.ins().select(is_small, small, normal);
    let magnitude = b.ins().select(is_special, special, finite);
    let out = b.ins().bor(sign, magnitude);
    float_of(b, out)
}

/// The f16 nearest the f32 `x`, as an i32 whose low 16 bits are the f16's.
pub fn f32_to_f16(b: &mut FunctionBuilder, x: Value) -> Value {
    let bits = bits_of(b, x);
    let high = b.ins().ushr_imm_u(bits, 16);
    let sign = b.ins().band_imm_u(high, 0x8000);
    let exp = b.ins().band_imm_u(bits, 0x7F80_0000);
    let man = b.ins().band_imm_u(bits, 0x007F_FFFF);
    let biased = b.ins().ushr_imm_u(exp, 23);
    let half_exp = b.ins().iadd_imm_s(biased, -112);
    // Inf and NaN.
    let nan = b.ins().icmp_imm_u(IntCC::NotEqual, man, 0);
    let quiet = b.ins().iconst(types::I32, 0x0200);
    let zero = b.ins().iconst(types::I32, 0);
    let quiet = b.ins().select(nan, quiet, zero);
    let payload = b.ins().ushr_imm_u(man, 13);
    let special = b.ins().bor_imm_u(sign, 0x7C00);
    let special = b.ins().bor(special, quiet);
    let special = b.ins().bor(special, payload);
    // Overflow.
    let inf = b.ins().bor_imm_u(sign, 0x7C00);
    // Normal: exponent and the top 10 mantissa bits, rounded (a carry may reach Inf).
    let e = b.ins().ishl_imm_u(half_exp, 10);
    let normal = b.ins().bor(sign, e);
    let normal = b.ins().bor(normal, payload);
    let bit = b.ins().iconst(types::I32, 0x1000);
    let up = round_up(b, man, bit);
    let normal = b.ins().iadd(normal, up);
    // Subnormal: the mantissa with its hidden bit, shifted right by 14 − half_exp, rounded.
    let full = b.ins().bor_imm_u(man, 0x0080_0000);
    let fourteen = b.ins().iconst(types::I32, 14);
    let shift = b.ins().isub(fourteen, half_exp);
    let sub_man = b.ins().ushr(full, shift);
    let one = b.ins().iconst(types::I32, 1);
    let round_shift = b.ins().iadd_imm_s(shift, -1);
    let sub_bit = b.ins().ishl(one, round_shift);
    let up = round_up(b, full, sub_bit);
    let sub = b.ins().iadd(sub_man, up);
    let sub = b.ins().bor(sign, sub);
    // Pick: NaN/Inf, overflow, normal, subnormal, else a signed zero.
    let is_special = b.ins().icmp_imm_u(IntCC::Equal, exp, 0x7F80_0000);
    let over = b
        .ins()
        .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, half_exp, 0x1F);
    let is_normal = b
        .ins()
        .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, half_exp, 1);
    let is_sub = b
        .ins()
        .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, half_exp, -10);
    let r = b.ins().select(is_sub, sub, sign);
    let r = b.ins().select(is_normal, normal, r);
    let r = b.ins().select(over, inf, r);
    b.ins().select(is_special, special, r)
}

/// The f32 a bf16 holds (a signalling NaN made quiet); `h` an i32 holding its bits.
pub fn bf16_to_f32(b: &mut FunctionBuilder, h: Value) -> Value {
    let magnitude = b.ins().band_imm_u(h, 0x7FFF);
    let nan = b
        .ins()
        .icmp_imm_u(IntCC::UnsignedGreaterThan, magnitude, 0x7F80);
    let quieted = b.ins().bor_imm_u(h, 0x0040);
    let h = b.ins().select(nan, quieted, h);
    let bits = b.ins().ishl_imm_u(h, 16);
    float_of(b, bits)
}

/// The bf16 nearest the f32 `x`, as an i32 whose low 16 bits are the bf16's.
pub fn f32_to_bf16(b: &mut FunctionBuilder, x: Value) -> Value {
    let bits = bits_of(b, x);
    let high = b.ins().ushr_imm_u(bits, 16);
    let magnitude = b.ins().band_imm_u(bits, 0x7FFF_FFFF);
    let nan = b
        .ins()
        .icmp_imm_u(IntCC::UnsignedGreaterThan, magnitude, 0x7F80_0000);
    let quieted = b.ins().bor_imm_u(high, 0x0040);
    let bit = b.ins().iconst(types::I32, 0x8000);
    let up = round_up(b, bits, bit);
    let rounded = b.ins().iadd(high, up);
    b.ins().select(nan, quieted, rounded)
}
