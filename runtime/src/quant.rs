//! The element types of GGUF tensors (ggml's), and their conversion to f32: plain floats and
//! the block-quantized formats, each block a scale (and a minimum) in f16 and small integers.
//!
//! - `Q8_0`: blocks of 32: `d: f16`, `q: [i8; 32]`; `x = q·d`.
//! - `Q4_0`: blocks of 32: `d: f16`, 16 bytes of nibbles; element `j < 16` is byte `j`'s low
//!   nibble, element `j + 16` its high one; `x = (q − 8)·d`.
//! - `Q4_1`: blocks of 32: `d: f16`, `m: f16`, nibbles as `Q4_0`; `x = q·d + m`.
//!
//! The arithmetic is ggml's reference (`dequantize_row_*`), in f32 without fused multiply-adds,
//! so the values are the ones llama.cpp and transformers' GGUF loader compute.

use half::{bf16, f16};
use serde::{Deserialize, Serialize};

/// A block-quantized format a weight buffer may keep in memory, read by kernels that
/// dequantize each element as they load it (the Kernel IR's quantized element types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BlockFormat {
    /// ggml's `Q8_0`.
    Q8_0,
    /// ggml's `Q4_0`.
    Q4_0,
    /// ggml's `Q4_1`.
    Q4_1,
}

impl BlockFormat {
    /// Its GGUF element type.
    pub fn ggml(self) -> GgmlType {
        match self {
            BlockFormat::Q8_0 => GgmlType::Q8_0,
            BlockFormat::Q4_0 => GgmlType::Q4_0,
            BlockFormat::Q4_1 => GgmlType::Q4_1,
        }
    }

    /// The bytes `n` elements take, in whole blocks (saturating).
    pub fn bytes(self, n: usize) -> usize {
        let (elems, bytes) = self.ggml().block();
        n.div_ceil(elems).saturating_mul(bytes)
    }
}

/// A GGUF tensor's element type (ggml's `ggml_type`), those archc reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    /// 32-bit floats.
    F32,
    /// IEEE half floats.
    F16,
    /// bfloat16.
    BF16,
    /// 4-bit, blocks of 32 with a scale.
    Q4_0,
    /// 4-bit, blocks of 32 with a scale and a minimum.
    Q4_1,
    /// 8-bit, blocks of 32 with a scale.
    Q8_0,
}

impl GgmlType {
    /// The type of ggml's number `id`, or None for one archc does not read.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }

    /// ggml's name for the type with number `id` (for errors about the ones archc lacks).
    pub fn name_of(id: u32) -> &'static str {
        const NAMES: [&str; 31] = [
            "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K",
            "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S",
            "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M",
            "BF16",
        ];
        NAMES.get(id as usize).copied().unwrap_or("unknown")
    }

    /// The block format kernels can read in place, for the quantized types.
    pub fn format(self) -> Option<BlockFormat> {
        match self {
            GgmlType::Q8_0 => Some(BlockFormat::Q8_0),
            GgmlType::Q4_0 => Some(BlockFormat::Q4_0),
            GgmlType::Q4_1 => Some(BlockFormat::Q4_1),
            _ => None,
        }
    }

    /// Elements per block, and bytes per block.
    pub fn block(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q8_0 => (32, 34),
        }
    }

    /// Bytes of `n` elements (None if `n` is not whole blocks, or on overflow).
    pub fn bytes(self, n: usize) -> Option<usize> {
        let (elems, bytes) = self.block();
        if !n.is_multiple_of(elems) {
            return None;
        }
        (n / elems).checked_mul(bytes)
    }

    /// Converts `data` (exactly `self.bytes(out.len())` bytes) to f32 into `out`.
    pub fn dequantize(self, data: &[u8], out: &mut [f32]) {
        let (elems, bytes) = self.block();
        for (block, y) in data.chunks_exact(bytes).zip(out.chunks_exact_mut(elems)) {
            match self {
                GgmlType::F32 => {
                    y[0] = f32::from_le_bytes([block[0], block[1], block[2], block[3]])
                }
                GgmlType::F16 => y[0] = half16(block, 0),
                GgmlType::BF16 => y[0] = bf16::from_le_bytes([block[0], block[1]]).to_f32(),
                GgmlType::Q8_0 => {
                    let d = half16(block, 0);
                    for (x, &q) in y.iter_mut().zip(&block[2..34]) {
                        *x = f32::from(q as i8) * d;
                    }
                }
                GgmlType::Q4_0 => {
                    let d = half16(block, 0);
                    nibbles(&block[2..18], y, |q| (f32::from(q) - 8.0) * d);
                }
                GgmlType::Q4_1 => {
                    let (d, m) = (half16(block, 0), half16(block, 2));
                    nibbles(&block[4..20], y, |q| f32::from(q) * d + m);
                }
            }
        }
    }
}

/// The f16 at byte `at` of a block.
fn half16(block: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([block[at], block[at + 1]]).to_f32()
}

/// A block's 32 elements from 16 bytes of nibbles: the low ones first, then the high ones.
fn nibbles(qs: &[u8], y: &mut [f32], value: impl Fn(u8) -> f32) {
    let (lo, hi) = y.split_at_mut(16);
    for ((&q, a), b) in qs.iter().zip(lo).zip(hi) {
        *a = value(q & 0x0f);
        *b = value(q >> 4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn blocks_dequantize_as_ggml_does() {
        // Q4_1: d = 0.5, m = -1; nibble pairs (lo, hi) = (j % 16, 15 - j % 16).
        let mut q41 = Vec::from(h(0.5));
        q41.extend(h(-1.0));
        q41.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let mut y = [0.0; 32];
        GgmlType::Q4_1.dequantize(&q41, &mut y);
        assert_eq!(y[0], -1.0);
        assert_eq!(y[3], 0.5);
        assert_eq!(y[16], 6.5);
        assert_eq!(y[31], -1.0);
        // Q4_0: d = 2; q = 8 is zero.
        let mut q40 = Vec::from(h(2.0));
        q40.extend([0x8f_u8; 16]);
        GgmlType::Q4_0.dequantize(&q40, &mut y);
        assert_eq!((y[0], y[16]), (14.0, 0.0));
        // Q8_0: d = 0.25, q = -128..
        let mut q80 = Vec::from(h(0.25));
        q80.extend((0..32).map(|i| (i as i8 - 16) as u8));
        GgmlType::Q8_0.dequantize(&q80, &mut y);
        assert_eq!((y[0], y[16], y[31]), (-4.0, 0.0, 3.75));
        assert_eq!(GgmlType::Q4_1.bytes(64), Some(40));
        assert_eq!(GgmlType::Q8_0.bytes(33), None);
        assert_eq!(GgmlType::from_id(14), None);
        assert_eq!(GgmlType::name_of(14), "Q6_K");
    }
}
