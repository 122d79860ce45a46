//! Element access for the code generator: loads and stores of each storage type, scalar and
//! four lanes at a time. f16 and bf16 elements go through `half_float`'s conversions, a lane
//! at a time. Block-quantized elements are dequantized where they are loaded, with the
//! arithmetic of `archc_kernels::storage::block_value`: four lanes come from one 4-byte load
//! of their quantized values, widened in the vector registers. A group of rows
//! (`Elem::Q8_0x16` and kin) gives four rows' integers of one element from one 4-byte load
//! the same way.

use archc_kernels::ir::{BlockPart, Elem, GROUP_ROWS, QUANT_BLOCK};
use archc_kernels::storage::{group_quant_byte, quants_offset};
use cranelift_codegen::ir::{types, Endianness, InstBuilder, MemFlagsData, Value};

use super::super::half_float;
use super::{cl, Gen, LANES};

impl Gen<'_, '_> {
    /// Loads element `addr + offset` of `buf` as its kernel type (2-byte floats widened).
    pub(super) fn load_elem(&mut self, buf: usize, addr: Value, offset: i32) -> Value {
        let flags = self.flags;
        match self.kernel.elem(buf) {
            Elem::F16 => {
                let bits = self.ins().uload16(types::I32, flags, addr, offset);
                half_float::f16_to_f32(self.b, bits)
            }
            Elem::BF16 => {
                let bits = self.ins().uload16(types::I32, flags, addr, offset);
                half_float::bf16_to_f32(self.b, bits)
            }
            elem => self.ins().load(cl(elem.ty()), flags, addr, offset),
        }
    }

    /// Stores `x` into element `addr + offset` of `buf` (2-byte floats rounded to nearest
    /// even).
    pub(super) fn store_elem(&mut self, buf: usize, x: Value, addr: Value, offset: i32) {
        let flags = self.flags;
        let bits = match self.kernel.elem(buf) {
            Elem::F16 => half_float::f32_to_f16(self.b, x),
            Elem::BF16 => half_float::f32_to_bf16(self.b, x),
            _ => {
                self.ins().store(flags, x, addr, offset);
                return;
            }
        };
        self.ins().istore16(flags, bits, addr, offset);
    }

    /// Loads four consecutive elements from `addr` as an f32x4.
    pub(super) fn load_vector(&mut self, buf: usize, addr: Value) -> Value {
        match self.kernel.elem(buf) {
            Elem::F16 | Elem::BF16 => {
                let zero = self.ins().f32const(0.0);
                let mut v = self.ins().splat(types::F32X4, zero);
                for l in 0..LANES {
                    let x = self.load_elem(buf, addr, 2 * i32::from(l));
                    v = self.ins().insertlane(v, x, l);
                }
                v
            }
            _ => self.ins().load(types::F32X4, Self::unaligned(), addr, 0),
        }
    }

    /// Stores the f32x4 `x` into four consecutive elements at `addr`.
    pub(super) fn store_vector(&mut self, buf: usize, x: Value, addr: Value) {
        match self.kernel.elem(buf) {
            Elem::F16 | Elem::BF16 => {
                for l in 0..LANES {
                    let lane = self.ins().extractlane(x, l);
                    self.store_elem(buf, lane, addr, 2 * i32::from(l));
                }
            }
            _ => {
                self.ins().store(Self::unaligned(), x, addr, 0);
            }
        }
    }
}

impl Gen<'_, '_> {
    /// The address of block `block` of quantized `buf`.
    fn block_address(&mut self, buf: usize, block: Value) -> Value {
        let size = self.kernel.elem(buf).size() as i64;
        let off = self.ins().imul_imm_s(block, size);
        let base = self.bases[buf];
        self.ins().iadd(base, off)
    }

    /// The address of the block holding element `index` of quantized `buf`, and the element's
    /// place `j` in it.
    fn block_of(&mut self, buf: usize, index: Value) -> (Value, Value) {
        let block = self
            .ins()
            .ushr_imm_s(index, QUANT_BLOCK.trailing_zeros() as i64);
        let j = self.ins().band_imm_s(index, QUANT_BLOCK as i64 - 1);
        (self.block_address(buf, block), j)
    }

    /// The f16 at byte `offset` of a block, as f32.
    fn block_half(&mut self, block: Value, offset: i32) -> Value {
        let bits = self
            .ins()
            .uload16(types::I32, Self::unaligned(), block, offset);
        half_float::f16_to_f32(self.b, bits)
    }

    /// The quantized integers (one I32, or an I32X4 of four in a row) whose bytes start at
    /// `byte`: `q`, or for a 4-bit type the nibbles `shift` (0 or 4, an I32) brings down, less
    /// 8 for `Q4_0`.
    fn quant_ints(&mut self, buf: usize, byte: Value, shift: Option<Value>, lanes: bool) -> Value {
        let elem = self.kernel.elem(buf);
        let flags = Self::unaligned();
        let q = match (lanes, shift) {
            (false, None) => self.ins().sload8(types::I32, flags, byte, 0),
            (false, Some(shift)) => {
                let b = self.ins().uload8(types::I32, flags, byte, 0);
                let q = self.ins().ushr(b, shift);
                self.ins().band_imm_s(q, 15)
            }
            (true, shift) => {
                let little = MemFlagsData::new().with_endianness(Endianness::Little);
                let word = self.ins().load(types::I32, flags, byte, 0);
                let v = self.ins().scalar_to_vector(types::I32X4, word);
                let bytes = self.ins().bitcast(types::I8X16, little, v);
                match shift {
                    None => {
                        let h = self.ins().swiden_low(bytes);
                        self.ins().swiden_low(h)
                    }
                    Some(shift) => {
                        let h = self.ins().uwiden_low(bytes);
                        let w = self.ins().uwiden_low(h);
                        let w = self.ins().ushr(w, shift);
                        let fifteen = self.ins().iconst(types::I32, 15);
                        let fifteen = self.ins().splat(types::I32X4, fifteen);
                        self.ins().band(w, fifteen)
                    }
                }
            }
        };
        if elem.block() != Elem::Q4_0 {
            return q;
        }
        let eight = self.ins().iconst(types::I32, 8);
        let eight = if lanes {
            self.ins().splat(types::I32X4, eight)
        } else {
            eight
        };
        self.ins().isub(q, eight)
    }

    /// For element `j` (a value) of a block at `block`: the address of the byte holding its
    /// quantized value, and for a 4-bit type the shift that brings its nibble down.
    fn quant_byte(&mut self, buf: usize, block: Value, j: Value) -> (Value, Option<Value>) {
        let elem = self.kernel.elem(buf);
        let at = quants_offset(elem) as i64;
        if elem == Elem::Q8_0 {
            let byte = self.ins().iadd(block, j);
            return (self.ins().iadd_imm_s(byte, at), None);
        }
        let low = self.ins().band_imm_s(j, 15);
        let byte = self.ins().iadd(block, low);
        let byte = self.ins().iadd_imm_s(byte, at);
        let half = self.ins().ushr_imm_s(j, 4);
        let shift = self.ins().ishl_imm_s(half, 2);
        (byte, Some(self.ins().ireduce(types::I32, shift)))
    }

    /// Integers `q` (I32 or I32X4) of the block at `block`, converted and scaled as its type
    /// says: `q·d`, or `q·d + m` for `Q4_1`.
    fn dequantize(&mut self, buf: usize, q: Value, block: Value, lanes: bool) -> Value {
        let float = if lanes { types::F32X4 } else { types::F32 };
        let widen = |g: &mut Self, x: Value| {
            if lanes {
                g.ins().splat(float, x)
            } else {
                x
            }
        };
        let x = self.ins().fcvt_from_sint(float, q);
        let d = self.block_half(block, 0);
        let d = widen(self, d);
        let x = self.ins().fmul(x, d);
        if self.kernel.elem(buf) != Elem::Q4_1 {
            return x;
        }
        let m = self.block_half(block, 2);
        let m = widen(self, m);
        self.ins().fadd(x, m)
    }

    /// Element `index` of block-quantized `buf`, dequantized to f32.
    pub(super) fn load_quantized(&mut self, buf: usize, index: Value) -> Value {
        let (block, j) = self.block_of(buf, index);
        let (byte, shift) = self.quant_byte(buf, block, j);
        let q = self.quant_ints(buf, byte, shift, false);
        self.dequantize(buf, q, block, false)
    }

    /// Four elements `index..index + 4` of block-quantized `buf` (`index` a multiple of 4),
    /// dequantized to an f32x4.
    pub(super) fn load_quantized_vector(&mut self, buf: usize, index: Value) -> Value {
        let (block, j) = self.block_of(buf, index);
        let (byte, shift) = self.quant_byte(buf, block, j);
        let q = self.quant_ints(buf, byte, shift, true);
        self.dequantize(buf, q, block, true)
    }

    /// A part of block `block` of quantized `buf` (see `Expr::Block`): its scale, its minimum,
    /// or four of its integers as an f32x4; of a group of rows, four rows' scales, minimums or
    /// integers of one element, from the block's row.
    pub(super) fn block_part(&mut self, buf: usize, block: Value, part: BlockPart) -> Value {
        let elem = self.kernel.elem(buf);
        if elem.is_grouped() {
            return self.row_part(buf, block, part);
        }
        let block = self.block_address(buf, block);
        match part {
            BlockPart::Scale => self.block_half(block, 0),
            BlockPart::Min => self.block_half(block, 2),
            BlockPart::Quants { at, .. } => {
                let j = self.ins().iconst(types::I64, i64::from(at));
                let (byte, shift) = self.quant_byte(buf, block, j);
                let q = self.quant_ints(buf, byte, shift, true);
                self.ins().fcvt_from_sint(types::F32X4, q)
            }
            // The verifier admits row parts only of groups.
            _ => self.ins().f32const(0.0),
        }
    }

    /// A row part of grouped `buf` from block `block` (row `block mod 16` of group
    /// `block / 16`): four rows' scales, minimums, or integers of one element.
    fn row_part(&mut self, buf: usize, block: Value, part: BlockPart) -> Value {
        let elem = self.kernel.elem(buf);
        let group = self.ins().ushr_imm_s(block, 4);
        let group = self.block_address(buf, group);
        let row = self.ins().band_imm_s(block, GROUP_ROWS as i64 - 1);
        let halves = |g: &mut Self, offset: usize| {
            let two = g.ins().ishl_imm_s(row, 1);
            let at = g.ins().iadd(group, two);
            let zero = g.ins().f32const(0.0);
            let mut v = g.ins().splat(types::F32X4, zero);
            for l in 0..LANES {
                let x = g.block_half(at, (offset + 2 * usize::from(l)) as i32);
                v = g.ins().insertlane(v, x, l);
            }
            v
        };
        match part {
            BlockPart::Scales { .. } => halves(self, 0),
            BlockPart::Mins { .. } => halves(self, 2 * GROUP_ROWS),
            BlockPart::Column { j, .. } => {
                let j = usize::from(j);
                let first = self.ins().iadd(group, row);
                let byte = self
                    .ins()
                    .iadd_imm_s(first, group_quant_byte(elem, j, 0) as i64);
                let shift = (elem.block() != Elem::Q8_0)
                    .then(|| self.ins().iconst(types::I32, (j >> 4) as i64 * 4));
                let q = self.quant_ints(buf, byte, shift, true);
                self.ins().fcvt_from_sint(types::F32X4, q)
            }
            // The verifier admits only row parts of groups.
            _ => self.ins().f32const(0.0),
        }
    }
}
