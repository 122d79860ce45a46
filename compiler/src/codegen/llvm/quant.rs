//! Loads from block-quantized buffers (`Q8_0`, `Q4_0`, `Q4_1`), with the arithmetic of
//! `archc_kernels::storage`: a vector's lanes come from one load of their run of quantized
//! bytes, widened to i32 lanes and converted; a dequantized element is multiplied by its
//! block's scale and (for `Q4_1`) added to its minimum, never fused. `Expr::Block` reads the
//! parts alone, addressed by block number, which LLVM turns into a pointer that steps.

use archc_kernels::ir::{BlockPart, Elem, Expr, QUANT_BLOCK};
use archc_kernels::storage::quants_offset;

use super::text::{Function, L, V};

impl Function<'_> {
    /// Element `idx` of quantized `buf` as an f32, or `width` elements from it (`idx` a
    /// multiple of the width) as a vector.
    pub(super) fn load_quantized(&mut self, buf: usize, idx: &Expr, width: Option<u8>) -> V {
        let i = self.expr(idx);
        let shift = QUANT_BLOCK.trailing_zeros();
        let block = self.op(L::I64, format!("lshr i64 {}, {shift}", i.s));
        let j = self.op(L::I64, format!("and i64 {}, {}", i.s, QUANT_BLOCK - 1));
        let bp = self.block_address(buf, &block);
        let float = width.map_or(L::F32, |w| L::VF(u32::from(w)));
        let x = self.quants(buf, &bp, &j.s, width);
        let d = self.block_half(&bp, 0, float);
        let x = self.op(float, format!("fmul {} {}, {}", float.name(), x.s, d.s));
        if self.kernel.elem(buf) != Elem::Q4_1 {
            return x;
        }
        let m = self.block_half(&bp, 2, float);
        self.op(float, format!("fadd {} {}, {}", float.name(), x.s, m.s))
    }

    /// Part `part` of block `block` of quantized `buf` (see `Expr::Block`).
    pub(super) fn block_part(&mut self, buf: usize, block: &Expr, part: BlockPart) -> V {
        let b = self.expr(block);
        let bp = self.block_address(buf, &b);
        match part {
            BlockPart::Scale => self.block_half(&bp, 0, L::F32),
            BlockPart::Min => self.block_half(&bp, 2, L::F32),
            BlockPart::Quants { at, width } => self.quants(buf, &bp, &at.to_string(), Some(width)),
        }
    }

    /// The address of block `block` (an i64 value) of `buf`.
    fn block_address(&mut self, buf: usize, block: &V) -> String {
        let size = self.kernel.elem(buf).size();
        let off = self.op(L::I64, format!("mul nuw nsw i64 {}, {size}", block.s));
        let base = self.bases[buf].clone();
        self.op(
            L::I64,
            format!("getelementptr inbounds i8, ptr {base}, i64 {}", off.s),
        )
        .s
    }

    /// The integers of element `j` (an i64 operand) of the block at `bp`, or of `width`
    /// elements from it, converted to f32: `q`, or `q − 8` for `Q4_0`.
    fn quants(&mut self, buf: usize, bp: &str, j: &str, width: Option<u8>) -> V {
        let elem = self.kernel.elem(buf);
        let at = quants_offset(elem);
        let (lanes, int, float) = match width {
            Some(w) => (
                format!("<{w} x i8>"),
                format!("<{w} x i32>"),
                L::VF(u32::from(w)),
            ),
            None => ("i8".to_string(), "i32".to_string(), L::F32),
        };
        let q = if elem == Elem::Q8_0 {
            let qo = self.op(L::I64, format!("add i64 {j}, {at}"));
            let qp = self.op(
                L::I64,
                format!("getelementptr inbounds i8, ptr {bp}, i64 {}", qo.s),
            );
            let q8 = self.op(L::I32, format!("load {lanes}, ptr {}, align 1", qp.s));
            self.op(L::I32, format!("sext {lanes} {} to {int}", q8.s))
        } else {
            let lo = self.op(L::I64, format!("and i64 {j}, 15"));
            let qo = self.op(L::I64, format!("add i64 {}, {at}", lo.s));
            let qp = self.op(
                L::I64,
                format!("getelementptr inbounds i8, ptr {bp}, i64 {}", qo.s),
            );
            let half = self.op(L::I64, format!("lshr i64 {j}, 4"));
            let sh = self.op(L::I64, format!("shl i64 {}, 2", half.s));
            let sh = self.op(L::I32, format!("trunc i64 {} to i32", sh.s));
            let sh = match width {
                Some(w) => self.splat(&sh, L::VI32(u32::from(w))),
                None => sh,
            };
            let q8 = self.op(L::I32, format!("load {lanes}, ptr {}, align 1", qp.s));
            let wide = self.op(L::I32, format!("zext {lanes} {} to {int}", q8.s));
            let down = self.op(L::I32, format!("lshr {int} {}, {}", wide.s, sh.s));
            let q = self.op(
                L::I32,
                format!("and {int} {}, {}", down.s, int_splat(width, 15)),
            );
            if elem == Elem::Q4_0 {
                self.op(
                    L::I32,
                    format!("sub {int} {}, {}", q.s, int_splat(width, 8)),
                )
            } else {
                q
            }
        };
        self.op(float, format!("sitofp {int} {} to {}", q.s, float.name()))
    }

    /// The f16 at byte `offset` of the block at `block`, widened to f32 (and splat to `t`).
    fn block_half(&mut self, block: &str, offset: usize, t: L) -> V {
        let p = self.op(
            L::I64,
            format!("getelementptr inbounds i8, ptr {block}, i64 {offset}"),
        );
        let h = self.op(L::F32, format!("load half, ptr {}, align 1", p.s));
        let x = self.op(L::F32, format!("fpext half {} to float", h.s));
        match t {
            L::F32 => x,
            t => self.splat(&x, t),
        }
    }
}

/// The i32 constant `k`, or a vector of `width` of it.
fn int_splat(width: Option<u8>, k: i32) -> String {
    match width {
        Some(_) => format!("splat (i32 {k})"),
        None => k.to_string(),
    }
}
