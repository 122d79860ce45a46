//! Element access for the code generator: loads and stores of each storage type, scalar and
//! four lanes at a time. f16 and bf16 elements go through `half_float`'s conversions, a lane
//! at a time.

use archc_kernels::ir::Elem;
use cranelift_codegen::ir::{types, InstBuilder, Value};

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
