//! The storage types that are not plain f32 or i64, as the interpreter reads them; code
//! generators emit the same arithmetic and are tested bit for bit against these.
//!
//! - f16 and bf16 bits ↔ f32, as the `half` crate converts (loads widen exactly; stores round
//!   to nearest even, overflow gives ±Inf, NaN stays a quiet NaN with the payload's upper
//!   bits).
//! - ggml's block-quantized `Q8_0`, `Q4_0` and `Q4_1` ([`block_value`]): ggml's reference
//!   arithmetic (`dequantize_row_*`), an f32 multiply and then an add, never fused, so that
//!   values are the ones llama.cpp's reference and transformers' GGUF loader compute.

use crate::ir::{Elem, GROUP_ROWS};

/// Where a block's quantized values start: after its f16 scale, and for `Q4_1` its f16
/// minimum.
pub fn quants_offset(elem: Elem) -> usize {
    match elem {
        Elem::Q4_1 => 4,
        _ => 2,
    }
}

/// The scale `d` of a block (`block`: its bytes).
pub fn block_scale(block: &[u8]) -> f32 {
    f16_to_f32(u16::from_le_bytes([block[0], block[1]]))
}

/// The minimum `m` of a `Q4_1` block.
pub fn block_min(block: &[u8]) -> f32 {
    f16_to_f32(u16::from_le_bytes([block[2], block[3]]))
}

/// The quantized integer of element `j` (`0..32`) of a block: `q` for `Q8_0` and `Q4_1`,
/// `q − 8` for `Q4_0`.
pub fn block_quant(elem: Elem, block: &[u8], j: usize) -> i16 {
    let at = quants_offset(elem);
    let nibble = || i16::from((block[at + (j & 15)] >> ((j >> 4) * 4)) & 15);
    match elem {
        Elem::Q8_0 => i16::from(block[at + j] as i8),
        Elem::Q4_0 => nibble() - 8,
        _ => nibble(),
    }
}

/// Element `j` (`0..32`) of a block of a block-quantized type (`block`: its bytes), as f32.
pub fn block_value(elem: Elem, block: &[u8], j: usize) -> f32 {
    let x = f32::from(block_quant(elem, block, j)) * block_scale(block);
    match elem {
        Elem::Q4_1 => x + block_min(block),
        _ => x,
    }
}

/// Where a group's quantized bytes start ([`Elem::Q8_0x16`]): after its rows' f16 scales,
/// and for `Q4_1x16` their f16 minimums.
pub fn group_quants_offset(elem: Elem) -> usize {
    2 * GROUP_ROWS * (quants_offset(elem.block()) / 2)
}

/// The scale of row `r` of a group of rows (`group`: its bytes).
pub fn group_scale(group: &[u8], r: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([group[2 * r], group[2 * r + 1]]))
}

/// The minimum of row `r` of a `Q4_1x16` group.
pub fn group_min(group: &[u8], r: usize) -> f32 {
    group_scale(&group[2 * GROUP_ROWS..], r)
}

/// The byte of a group holding element `j` (`0..32`) of row `r`: byte `j` of the row's
/// quantized bytes for `Q8_0x16`, byte `j mod 16` (a nibble of it) for the 4-bit ones.
pub fn group_quant_byte(elem: Elem, j: usize, r: usize) -> usize {
    let b = if elem.block() == Elem::Q8_0 {
        j
    } else {
        j & 15
    };
    group_quants_offset(elem) + GROUP_ROWS * b + r
}

/// The quantized integer of element `j` of row `r` of a group, as [`block_quant`] gives it.
pub fn group_quant(elem: Elem, group: &[u8], j: usize, r: usize) -> i16 {
    let byte = group[group_quant_byte(elem, j, r)];
    match elem.block() {
        Elem::Q8_0 => i16::from(byte as i8),
        Elem::Q4_0 => i16::from((byte >> ((j >> 4) * 4)) & 15) - 8,
        _ => i16::from((byte >> ((j >> 4) * 4)) & 15),
    }
}

/// Element `j` of row `r` of a group of rows, as f32 ([`block_value`]'s arithmetic).
pub fn group_value(elem: Elem, group: &[u8], j: usize, r: usize) -> f32 {
    let x = f32::from(group_quant(elem, group, j, r)) * group_scale(group, r);
    match elem.block() {
        Elem::Q4_1 => x + group_min(group, r),
        _ => x,
    }
}

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

    #[test]
    fn groups_decode_as_their_blocks_do() {
        // 16 Q4_1 blocks, row r: d = r + 1, m = -r, nibble pairs (b, 15 - b) + r.
        let block = |r: usize| {
            let mut b = f32_to_f16(r as f32 + 1.0).to_le_bytes().to_vec();
            b.extend(f32_to_f16(-(r as f32)).to_le_bytes());
            b.extend((0..16).map(|j| ((j + r) as u8 & 15) | ((15 - j) as u8) << 4));
            b
        };
        let mut group = vec![0u8; Elem::Q4_1x16.size()];
        for r in 0..16 {
            let b = block(r);
            group[2 * r..2 * r + 2].copy_from_slice(&b[..2]);
            group[32 + 2 * r..34 + 2 * r].copy_from_slice(&b[2..4]);
            for (i, q) in b[4..].iter().enumerate() {
                group[64 + 16 * i + r] = *q;
            }
        }
        for (r, j) in [(0, 0), (3, 5), (15, 16), (9, 31)] {
            let want = block_value(Elem::Q4_1, &block(r), j);
            assert_eq!(
                group_value(Elem::Q4_1x16, &group, j, r),
                want,
                "row {r} element {j}"
            );
        }
        assert_eq!(Elem::Q4_1x16.bytes(512), 320);
    }

    #[test]
    fn blocks_decode_as_ggml_does() {
        // d = 0.5 (f16 0x3800), m = -1 (f16 0xBC00).
        let mut q8 = vec![0x00, 0x38];
        q8.extend((0..32).map(|j| (j as i8 - 16) as u8));
        assert_eq!(block_value(Elem::Q8_0, &q8, 0), -8.0);
        assert_eq!(block_value(Elem::Q8_0, &q8, 31), 7.5);
        let mut q4 = vec![0x00, 0x38, 0x00, 0xBC];
        q4.extend((0..16).map(|j| (j as u8) | (15 - j as u8) << 4));
        assert_eq!(block_value(Elem::Q4_1, &q4, 3), 3.0 * 0.5 - 1.0);
        assert_eq!(block_value(Elem::Q4_1, &q4, 16 + 3), 12.0 * 0.5 - 1.0);
        let q4_0: Vec<u8> = q4[..2].iter().chain(&q4[4..]).copied().collect();
        assert_eq!(block_value(Elem::Q4_0, &q4_0, 1), (1.0 - 8.0) * 0.5);
        assert_eq!(block_value(Elem::Q4_0, &q4_0, 17), (14.0 - 8.0) * 0.5);
    }
}
