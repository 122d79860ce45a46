//! The 2-byte float storage types: f16 and bf16 bits ↔ f32, as the `half` crate converts
//! (loads widen exactly; stores round to nearest even, overflow gives ±Inf, NaN stays a quiet
//! NaN with the payload's upper bits). The interpreter uses these; code generators emit the
//! same bit manipulation and are tested bit for bit against them.

/// The f32 an f16's bits hold (exact).
pub fn f16_to_f32(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

/// The f16 bits nearest `x` (ties to even).
pub fn f32_to_f16(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// The f32 a bf16's bits hold (exact; a signalling NaN comes back quiet).
pub fn bf16_to_f32(bits: u16) -> f32 {
    half::bf16::from_bits(bits).to_f32()
}

/// The bf16 bits nearest `x` (ties to even).
pub fn f32_to_bf16(x: f32) -> u16 {
    half::bf16::from_f32(x).to_bits()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_cases_round_as_ieee_says() {
        assert_eq!(f32_to_f16(65504.0), 0x7BFF);
        assert_eq!(
            f32_to_f16(65520.0),
            0x7C00,
            "halfway to 2^16 rounds up to Inf"
        );
        assert_eq!(f32_to_f16(f32::NEG_INFINITY), 0xFC00);
        assert_eq!(f32_to_f16(5.960_464_5e-8), 0x0001, "the smallest subnormal");
        assert_eq!(
            f32_to_f16(2.980_232_2e-8),
            0x0000,
            "half of it ties to even: zero"
        );
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
        assert!(f16_to_f32(0x7E00).is_nan());
        assert_eq!(
            f32_to_bf16(1.0 + 1.0 / 256.0),
            0x3F80,
            "a tie rounds to even"
        );
        assert_eq!(f32_to_bf16(f32::MAX), 0x7F80, "overflow rounds to Inf");
        assert_eq!(bf16_to_f32(0x3F80), 1.0);
    }
}
