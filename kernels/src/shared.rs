//! Where a GPU block's shared arrays lie in its shared memory, and whether the kernel
//! declares them statically or takes them from the launch's dynamic shared memory.
//!
//! A kernel declares up to [`STATIC_BYTES`] (48 KiB) of shared memory statically: the PTX
//! names each array, and a launch needs nothing more. Above that a GPU gives a block more
//! (Hopper up to 227 KiB, Ampere 163 KiB) only from dynamic shared memory: the kernel
//! declares one external array, the arrays lie at fixed offsets in it, and the launch asks
//! for its bytes, after the kernel was allowed that many
//! (`CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`). The code generator and the plan's
//! launches read the same [`SharedLayout`], so the offsets the kernel uses and the bytes its
//! launches ask for agree.
//!
//! Each array starts on 16 bytes (`cp.async`, `ldmatrix`), on 1024 in a kernel with warpgroup
//! products, whose swizzled tiles follow the address's own bits (the 32-byte swizzle's atoms
//! start on 256 bytes, the 128-byte one's on 1024).

use crate::ir::Kernel;

/// The most shared memory a kernel may declare statically.
pub const STATIC_BYTES: usize = 48 << 10;

/// A kernel's shared arrays' places.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedLayout {
    /// Each shared array's first byte, in the kernel's order.
    pub offsets: Vec<usize>,
    /// The bytes they span.
    pub bytes: usize,
    /// Where each starts a multiple of.
    pub align: usize,
}

impl SharedLayout {
    /// The layout of `k`'s shared arrays (an empty array takes one element, as it is
    /// declared).
    pub fn of(k: &Kernel) -> SharedLayout {
        let align = match crate::launch::has_warpgroup_mma(&k.body) {
            true => 1024,
            false => 16,
        };
        let mut offsets = Vec::with_capacity(k.shared.len());
        let mut bytes = 0usize;
        for a in &k.shared {
            let at = bytes.div_ceil(align).saturating_mul(align);
            offsets.push(at);
            bytes = at.saturating_add(a.len.max(1).saturating_mul(a.elem.size()));
        }
        SharedLayout {
            offsets,
            bytes,
            align,
        }
    }

    /// Whether the arrays come from dynamic shared memory (more than [`STATIC_BYTES`]).
    pub fn dynamic(&self) -> bool {
        self.bytes > STATIC_BYTES
    }

    /// The dynamic shared memory a launch asks for: the arrays' bytes when
    /// [`SharedLayout::dynamic`], else 0.
    pub fn launch_bytes(&self) -> usize {
        match self.dynamic() {
            true => self.bytes,
            false => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Elem, Local};

    fn kernel(shared: &[(Elem, usize)]) -> Kernel {
        Kernel {
            name: "k".into(),
            params: Vec::new(),
            locals: Vec::new(),
            shared: shared
                .iter()
                .map(|&(elem, len)| Local {
                    name: "s".into(),
                    elem,
                    len,
                })
                .collect(),
            body: Vec::new(),
            occupancy: None,
        }
    }

    #[test]
    fn arrays_start_on_16_bytes_and_stay_static_up_to_48_kib() {
        let l = SharedLayout::of(&kernel(&[(Elem::BF16, 3), (Elem::F32, 5), (Elem::F32, 0)]));
        assert_eq!(l.offsets, vec![0, 16, 48]);
        assert_eq!((l.bytes, l.dynamic(), l.launch_bytes()), (52, false, 0));
        let full = SharedLayout::of(&kernel(&[(Elem::F32, STATIC_BYTES / 4)]));
        assert!(!full.dynamic(), "exactly 48 KiB is static");
        let over = SharedLayout::of(&kernel(&[(Elem::F32, STATIC_BYTES / 4), (Elem::F32, 1)]));
        assert_eq!(
            (over.dynamic(), over.launch_bytes()),
            (true, STATIC_BYTES + 4)
        );
    }
}
