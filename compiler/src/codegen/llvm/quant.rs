//! Loads from block-quantized buffers (`Q8_0`, `Q4_0`, `Q4_1`), with the arithmetic of
//! `archc_kernels::storage`: a vector's lanes come from one load of their run of quantized
//! bytes, widened to i32 lanes and converted; a dequantized element is multiplied by its
//! block's scale and (for `Q4_1`) added to its minimum, never fused. `Expr::Block` reads the
//! parts alone, addressed by block number, which LLVM turns into a pointer that steps; of a
//! group of rows (`Elem::Q8_0x16` and kin), a row part is one load of as many bytes (or
//! halves) as it has lanes.

use archc_kernels::ir::{BlockPart, Elem, Expr, GROUP_ROWS, QUANT_BLOCK};
use archc_kernels::storage::{group_quant_byte, quants_offset};

use std::fmt::Write;

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
        if self.kernel.elem(buf).is_grouped() {
            return self.row_part(buf, &b, part);
        }
        let bp = self.block_address(buf, &b);
        match part {
            BlockPart::Scale => self.block_half(&bp, 0, L::F32),
            BlockPart::Min => self.block_half(&bp, 2, L::F32),
            BlockPart::Quants { at, width } => self.quants(buf, &bp, &at.to_string(), Some(width)),
            // The verifier admits row parts only of groups.
            _ => V {
                s: "0.0".into(),
                t: L::F32,
            },
        }
    }

    /// A row part of grouped `buf` from block `b` (row `b mod 16` of group `b / 16`): `width`
    /// rows' scales, minimums, or integers of one element, each one load.
    fn row_part(&mut self, buf: usize, b: &V, part: BlockPart) -> V {
        let elem = self.kernel.elem(buf);
        let g = self.op(L::I64, format!("lshr i64 {}, 4", b.s));
        let gp = self.block_address(buf, &g);
        let row = self.op(L::I64, format!("and i64 {}, {}", b.s, GROUP_ROWS - 1));
        let at = |f: &mut Self, scale: usize, offset: usize| {
            let r = f.op(L::I64, format!("mul nuw nsw i64 {}, {scale}", row.s));
            let o = f.op(L::I64, format!("add nuw nsw i64 {}, {offset}", r.s));
            f.op(
                L::I64,
                format!("getelementptr inbounds i8, ptr {gp}, i64 {}", o.s),
            )
            .s
        };
        match part {
            BlockPart::Scales { width } => {
                let p = at(self, 2, 0);
                self.group_halves(&p, width)
            }
            BlockPart::Mins { width } => {
                let p = at(self, 2, 2 * GROUP_ROWS);
                self.group_halves(&p, width)
            }
            BlockPart::Column { j, width } => {
                let j = usize::from(j);
                let qp = at(self, 1, group_quant_byte(elem, j, 0));
                let shift = (elem.block() != Elem::Q8_0).then(|| ((j >> 4) * 4).to_string());
                self.ints(elem, &qp, shift, Some(width))
            }
            // The verifier admits only row parts of groups.
            _ => V {
                s: "0.0".into(),
                t: L::F32,
            },
        }
    }

    /// Prefetches block `block` of quantized `buf` (its group, for a grouped one): each cache
    /// line of it, through `llvm.prefetch` (a read, kept in every level, of data). The address
    /// is not `inbounds`: a block past the buffer is allowed, and x86's prefetch never faults.
    pub(super) fn prefetch(&mut self, buf: usize, block: &Expr) {
        let elem = self.kernel.elem(buf);
        let b = self.expr(block);
        let b = match elem.is_grouped() {
            true => self.op(L::I64, format!("lshr i64 {}, 4", b.s)),
            false => b,
        };
        let size = elem.size();
        let off = self.op(L::I64, format!("mul i64 {}, {size}", b.s));
        let base = self.bases[buf].clone();
        let p = self.op(
            L::I64,
            format!("getelementptr i8, ptr {base}, i64 {}", off.s),
        );
        let f = "llvm.prefetch.p0";
        self.intrinsics.insert(
            f.to_string(),
            format!("declare void @{f}(ptr, i32, i32, i32)"),
        );
        for line in (0..size).step_by(64) {
            let q = self.op(L::I64, format!("getelementptr i8, ptr {}, i64 {line}", p.s));
            let _ = writeln!(
                self.body,
                "  call void @{f}(ptr {}, i32 0, i32 3, i32 1)",
                q.s
            );
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
        if elem == Elem::Q8_0 {
            let qo = self.op(L::I64, format!("add i64 {j}, {at}"));
            let qp = self.op(
                L::I64,
                format!("getelementptr inbounds i8, ptr {bp}, i64 {}", qo.s),
            );
            return self.ints(elem, &qp.s, None, width);
        }
        let lo = self.op(L::I64, format!("and i64 {j}, 15"));
        let qo = self.op(L::I64, format!("add i64 {}, {at}", lo.s));
        let qp = self.op(
            L::I64,
            format!("getelementptr inbounds i8, ptr {bp}, i64 {}", qo.s),
        );
        let half = self.op(L::I64, format!("lshr i64 {j}, 4"));
        let sh = self.op(L::I64, format!("shl i64 {}, 2", half.s));
        let sh = self.op(L::I32, format!("trunc i64 {} to i32", sh.s));
        self.ints(elem, &qp.s, Some(sh.s), width)
    }

    /// The integers whose bytes start at `qp` (one, or `width` in a row) of blocks `elem`,
    /// converted to f32: `q` (i8 for `Q8_0`), or for a 4-bit type the nibbles `shift` (an i32
    /// operand, 0 or 4) brings down, less 8 for `Q4_0`.
    fn ints(&mut self, elem: Elem, qp: &str, shift: Option<String>, width: Option<u8>) -> V {
        let (lanes, int, float) = match width {
            Some(w) => (
                format!("<{w} x i8>"),
                format!("<{w} x i32>"),
                L::VF(u32::from(w)),
            ),
            None => ("i8".to_string(), "i32".to_string(), L::F32),
        };
        let q8 = self.op(L::I32, format!("load {lanes}, ptr {qp}, align 1"));
        let q = match shift {
            None => self.op(L::I32, format!("sext {lanes} {} to {int}", q8.s)),
            Some(sh) => {
                let sh = V { s: sh, t: L::I32 };
                let sh = match width {
                    Some(w) => self.splat(&sh, L::VI32(u32::from(w))),
                    None => sh,
                };
                let wide = self.op(L::I32, format!("zext {lanes} {} to {int}", q8.s));
                let down = self.op(L::I32, format!("lshr {int} {}, {}", wide.s, sh.s));
                let q = self.op(
                    L::I32,
                    format!("and {int} {}, {}", down.s, int_splat(width, 15)),
                );
                if elem.block() == Elem::Q4_0 {
                    self.op(
                        L::I32,
                        format!("sub {int} {}, {}", q.s, int_splat(width, 8)),
                    )
                } else {
                    q
                }
            }
        };
        self.op(float, format!("sitofp {int} {} to {}", q.s, float.name()))
    }

    /// `width` f16s at `p`, widened to f32 lanes.
    fn group_halves(&mut self, p: &str, width: u8) -> V {
        let h = self.op(L::F32, format!("load <{width} x half>, ptr {p}, align 1"));
        let t = L::VF(u32::from(width));
        self.op(t, format!("fpext <{width} x half> {} to {}", h.s, t.name()))
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
