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
///
/// The `…x16` formats hold the same blocks of a matrix of whole groups of [`GROUP_ROWS`] rows,
/// regrouped so that a kernel reads one element of 16 rows as one vector (see
/// [`BlockFormat::interleave`]): a group is the 16 rows' blocks over the same 32 columns, and
/// holds their 16 f16 scales, then (`Q4_1`) their 16 f16 minimums, then their quantized bytes
/// byte by byte: byte `b` of row `r` at `16·b + r`. Groups follow each other along the row,
/// then down the rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(non_camel_case_types)]
pub enum BlockFormat {
    /// ggml's `Q8_0`.
    Q8_0,
    /// ggml's `Q4_0`.
    Q4_0,
    /// ggml's `Q4_1`.
    Q4_1,
    /// `Q8_0` in groups of 16 rows.
    Q8_0x16,
    /// `Q4_0` in groups of 16 rows.
    Q4_0x16,
    /// `Q4_1` in groups of 16 rows.
    Q4_1x16,
}

/// Rows per group of the `…x16` block formats.
pub const GROUP_ROWS: usize = 16;

impl BlockFormat {
    /// Its GGUF element type (of its blocks).
    pub fn ggml(self) -> GgmlType {
        match self {
            BlockFormat::Q8_0 | BlockFormat::Q8_0x16 => GgmlType::Q8_0,
            BlockFormat::Q4_0 | BlockFormat::Q4_0x16 => GgmlType::Q4_0,
            BlockFormat::Q4_1 | BlockFormat::Q4_1x16 => GgmlType::Q4_1,
        }
    }

    /// The same blocks in groups of [`GROUP_ROWS`] rows.
    pub fn grouped(self) -> BlockFormat {
        match self.ggml() {
            GgmlType::Q8_0 => BlockFormat::Q8_0x16,
            GgmlType::Q4_0 => BlockFormat::Q4_0x16,
            _ => BlockFormat::Q4_1x16,
        }
    }

    /// Whether it holds groups of rows (the `…x16` formats).
    pub fn is_grouped(self) -> bool {
        self.grouped() == self
    }

    /// Regroups a matrix's blocks, `plain` (ggml's layout: rows of blocks, `rows` a multiple of
    /// [`GROUP_ROWS`]), into `out` (as many bytes) in this format's groups; a plain format
    /// copies. None if the bytes are not whole groups of blocks.
    pub fn interleave(self, plain: &[u8], rows: usize, out: &mut [u8]) -> Option<()> {
        let (_, size) = self.ggml().block();
        if !self.is_grouped() {
            out.get_mut(..plain.len())?.copy_from_slice(plain);
            return Some(());
        }
        let row = plain.len().checked_div(rows)?;
        let whole = rows.is_multiple_of(GROUP_ROWS) && row.is_multiple_of(size);
        if !whole || plain.len() != out.len() || row * rows != plain.len() {
            return None;
        }
        // The parts of a block: its f16 halves (a scale, a minimum), then its quantized bytes.
        let halves = if self.ggml() == GgmlType::Q4_1 { 2 } else { 1 };
        let group = GROUP_ROWS * size;
        for (g, out) in out.chunks_exact_mut(group).enumerate() {
            let (first, kb) = (g / (row / size) * GROUP_ROWS, g % (row / size));
            for r in 0..GROUP_ROWS {
                let block = &plain[(first + r) * row + kb * size..][..size];
                for h in 0..halves {
                    let at = 2 * (h * GROUP_ROWS + r);
                    out[at..at + 2].copy_from_slice(&block[2 * h..2 * h + 2]);
                }
                let quants = 2 * halves * GROUP_ROWS;
                for (b, &q) in block[2 * halves..].iter().enumerate() {
                    out[quants + GROUP_ROWS * b + r] = q;
                }
            }
        }
        Some(())
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
    fn groups_hold_the_blocks_of_16_rows() {
        // 32 rows of 2 Q4_1 blocks, every byte distinct enough to trace.
        let (rows, size) = (32, 20);
        let plain: Vec<u8> = (0..rows * 2 * size).map(|i| (i * 7 % 251) as u8).collect();
        let mut out = vec![0; plain.len()];
        assert!(BlockFormat::Q4_1x16
            .interleave(&plain, rows, &mut out)
            .is_some());
        let block = |r: usize, kb: usize| &plain[(r * 2 + kb) * size..][..size];
        // Group 3 is rows 16..32, blocks 1.
        let g = &out[3 * 16 * size..][..16 * size];
        for r in 0..16 {
            assert_eq!(
                g[2 * r..2 * r + 2],
                block(16 + r, 1)[..2],
                "scale of row {r}"
            );
            assert_eq!(
                g[32 + 2 * r..34 + 2 * r],
                block(16 + r, 1)[2..4],
                "min of row {r}"
            );
            for b in 0..16 {
                assert_eq!(g[64 + 16 * b + r], block(16 + r, 1)[4 + b]);
            }
        }
        assert!(BlockFormat::Q8_0x16
            .interleave(&plain[..34 * 8], 8, &mut out[..34 * 8])
            .is_none());
        assert!(BlockFormat::Q4_1x16.is_grouped() && !BlockFormat::Q4_1.is_grouped());
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
