//! Hopper's warpgroup tensor-core product ([`Stmt::WarpgroupMma`]), PTX's
//! `wgmma.mma_async.sync.aligned.m64nNk16.f32.{bf16,f16}.{bf16,f16}` with both operands read
//! from shared memory through matrix descriptors: where its operands lie in shared memory and
//! where its accumulators lie in the threads' registers. The interpreter reads the operands
//! and places the results through these functions, and the PTX emitter encodes the same
//! layout in the descriptors, so a template that stages a tile in the wrong place computes
//! the wrong product under `--device cuda-sim`, as it would on a GPU.
//!
//! **Operands.** Both are tiles of 16-bit elements, in one of two of the descriptors' layouts.
//! Each instruction reads a k16 slab of each, and the statement's next instruction reads the
//! slab [`SharedTile::step`] elements further on.
//!
//! - *No swizzle* (the PTX ISA's "interleave" mode). A slab is made of *core matrices*: 8 rows
//!   of 8 elements (16 bytes each), 128 contiguous bytes. In a K-major tile a core matrix's
//!   rows run along the product's rows (`A`) or columns (`B`) and its 8 elements along k; in
//!   an MN-major tile the other way round. The core matrices sit a fixed distance apart along
//!   k (the descriptor's leading-dimension byte offset) and along the other axis (its
//!   stride-dimension byte offset), as the PTX ISA and CUTLASS's `make_gmma_desc` lay out
//!   `INTERLEAVE` tiles: K-major `((8, m), (8, 2)) : ((8, stride), (1, lead))`, MN-major
//!   `((8, m), (8, 2)) : ((1, stride), (8, lead))` in elements. (Triton's sources say the two
//!   offsets trade places for K-major tiles, against the PTX ISA; archc uses this layout only
//!   MN-major, where every source agrees.)
//! - *32-byte swizzle*, K-major: row `i` of the slab is 16 consecutive k (32 bytes), 8 rows
//!   make an atom of 256 bytes, atoms lie `stride` elements apart, and in the byte address bit
//!   4 is flipped where bit 7 is set (rows 4–7 of an atom have their two halves swapped). The
//!   swizzle acts on the address, so the tile starts on 256 bytes, and its strides are
//!   multiples of 256 bytes.
//!
//! **Accumulators.** A warpgroup is 4 consecutive warps (128 threads), warp `w` owning rows
//! `16w..16w + 16` of each 64 × N product. Within a warp the accumulators are those of
//! `mma.m16n8k16`'s `C` ([`crate::fragment::c`]) for each 8 columns in turn: thread `t`'s
//! element `e` (`0..N/2`) is in column block `e / 4`. A statement whose product has more
//! rows runs one instruction per band of 64 rows and k16 step, band `b`'s accumulators after
//! band `b - 1`'s.
//!
//! [`Stmt::WarpgroupMma`]: crate::ir::Stmt::WarpgroupMma

use crate::ir::{Expr, Fragment};

/// Threads in a warpgroup.
pub const WARPGROUP: usize = 128;
/// Rows of a warpgroup product.
pub const ROWS: usize = 64;
/// Elements of a k step: one instruction reduces 16.
pub const K_STEP: usize = 16;
/// Rows (and 16-bit elements per row) of a core matrix.
pub const CORE: usize = 8;
/// Elements of a 32-byte swizzle's atom (256 bytes): its tiles' starts and strides are
/// multiples of it.
pub const ATOM: usize = 128;
/// The widest product: N is a multiple of 8 up to this.
pub const MAX_N: usize = 256;
/// A descriptor's byte offsets are 14-bit fields of the offset divided by 16.
pub const MAX_OFFSET_BYTES: u64 = 1 << 18;

/// One operand tile of a [`WarpgroupMma`] in a shared array (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SharedTile {
    /// The shared array, of f16 or bf16.
    pub buf: usize,
    /// Its element where the tile starts, alike in every thread: a multiple of 8 (16 bytes),
    /// of 128 (256 bytes) when swizzled. (The PTX emitter places the shared arrays of a
    /// kernel with warpgroup products on 1024 bytes, so that these are the address's own
    /// bits, which the swizzle follows.)
    pub at: Expr,
    /// Whether a core matrix's rows hold 8 consecutive k (K-major) or 8 consecutive rows of
    /// `A` or columns of `B` (MN-major). A swizzled tile is K-major.
    pub k_major: bool,
    /// Whether the tile is in the 32-byte swizzle layout (else no swizzle).
    pub swizzle: bool,
    /// Elements between core matrices adjacent along k (a multiple of 8; unused when
    /// swizzled, where the 16 k of a slab's row are contiguous).
    pub lead: u32,
    /// Elements between core matrices (swizzle atoms) adjacent along the other axis.
    pub stride: u32,
    /// Elements from one k16 slab's start to the next's.
    pub step: u32,
}

impl SharedTile {
    /// A K-major tile in the 32-byte swizzle layout in shared array `buf` from element `at`,
    /// atoms `stride` elements apart, k16 slabs `step` apart.
    pub fn swizzled(buf: usize, at: Expr, stride: u32, step: u32) -> SharedTile {
        SharedTile {
            buf,
            at,
            k_major: true,
            swizzle: true,
            lead: CORE as u32,
            stride,
            step,
        }
    }

    /// An MN-major tile with no swizzle in shared array `buf` from element `at`, core
    /// matrices `lead` elements apart along k and `stride` along the other axis, k16 slabs
    /// `step` apart.
    pub fn mn_major(buf: usize, at: Expr, (lead, stride): (u32, u32), step: u32) -> SharedTile {
        SharedTile {
            buf,
            at,
            k_major: false,
            swizzle: false,
            lead,
            stride,
            step,
        }
    }

    /// Where element `(i, k)` of the tile lies, counted from [`SharedTile::at`]: `i` along
    /// the product's rows (`A`) or columns (`B`), `k` along the reduced axis.
    pub fn offset(&self, i: usize, k: usize) -> usize {
        let (slab, k) = (k / K_STEP, k % K_STEP);
        let within = match (self.swizzle, self.k_major) {
            (true, _) => {
                let bytes = (i % CORE) * 32 + k * 2;
                (bytes ^ ((bytes >> 3) & 0x10)) / 2
            }
            (false, true) => (i % CORE) * CORE + k % CORE + (k / CORE) * self.lead as usize,
            (false, false) => (k % CORE) * CORE + i % CORE + (k / CORE) * self.lead as usize,
        };
        slab * self.step as usize + (i / CORE) * self.stride as usize + within
    }

    /// One past the furthest element of a tile of `rows` rows (of `A`) or columns (of `B`) and
    /// `k` reduced: the shared array must hold that many from [`SharedTile::at`]. The last
    /// slab holds the furthest, and in it the last 8 rows (one of each row within a core
    /// matrix, in the furthest core matrices).
    pub fn reach(&self, rows: usize, k: usize) -> usize {
        if rows == 0 || k == 0 {
            return 0;
        }
        let last = (k - 1) / K_STEP * K_STEP;
        let ks = last..(last + K_STEP).min(k);
        (rows.saturating_sub(CORE)..rows)
            .flat_map(|i| ks.clone().map(move |k| (i, k)))
            .map(|(i, k)| self.offset(i, k) + 1)
            .max()
            .unwrap_or(0)
    }

    /// The descriptor's bits other than the start address: the leading and stride byte
    /// offsets (divided by 16, bits 16–29 and 32–45; the leading one 1 when swizzled, as
    /// CUTLASS writes it there) and the layout type (bits 62–63: 0 no swizzle, 3 the 32-byte
    /// swizzle) for 16-bit elements. The start address, its shared-window byte address
    /// divided by 16, goes in bits 0–13.
    pub fn descriptor_bits(&self) -> u64 {
        let field = |elements: u32| ((u64::from(elements) * 2) >> 4) & 0x3FFF;
        let (lead, layout) = if self.swizzle {
            (1, 3)
        } else {
            (field(self.lead), 0)
        };
        (lead << 16) | (field(self.stride) << 32) | (layout << 62)
    }
}

/// What a [`crate::ir::Stmt::WarpgroupMma`] computes: in every warpgroup `g` of the block,
/// `C ← A_g·B + C` for an `m` × `k` `A_g`, a `k` × `n` `B` (both in shared memory, of one
/// 16-bit float type) and an `m` × `n` f32 `C` spread over the warpgroup's threads' copies of a
/// local ([`accumulator`]), or `C ← A_g·B` where `accumulate` is false (`C`'s old values
/// unread, as a first product's). The warpgroups split the rows of `A`'s tile: `A_g` is its
/// rows `g·m..(g + 1)·m` (all of it in a block of one warpgroup), so that the warpgroups of a
/// block share `B`'s tile, as CUTLASS's cooperative Hopper kernels do.
/// It runs as one instruction per band of 64 rows and k16 step, `A`
/// and `B` each advancing one [`SharedTile::step`] per step, committed together as one
/// group, which is in flight until a [`WarpgroupWait`] completes it: until then no thread
/// may touch `C`, and the tiles may change under it (the hardware reads them at some time in
/// between). A later product on the same `C` may be issued while it is in flight: the
/// tensor cores chain them in order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WarpgroupMma {
    /// `A`, `m` × `k` per warpgroup: `g·m` rows on for warpgroup `g`.
    pub a: SharedTile,
    /// `B`, `k` × `n`.
    pub b: SharedTile,
    /// `C`'s `m · n / 128` elements in each thread's copy of an f32 local, from `at`.
    pub c: Fragment,
    /// Whether the product adds to `C` (a `bool`, alike in every thread): where false, `C`'s
    /// old values are ignored (the instruction's scale-d operand).
    pub accumulate: Expr,
    /// Rows of the product: a multiple of 64.
    pub m: u16,
    /// Columns of the product: a multiple of 8 in 8..=256.
    pub n: u16,
    /// The reduced length: a multiple of 16.
    pub k: u16,
}

/// What a [`crate::ir::Stmt::WarpgroupWait`] does: the warpgroup waits until at most
/// `pending` of its committed products are in flight (`wgmma.wait_group`), the older ones
/// complete. `c` names the accumulators those products write, elements `at..at + len` of an
/// f32 local, which the code may read once the products on them are complete.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WarpgroupWait {
    /// The accumulators of the products in flight.
    pub c: Fragment,
    /// How many elements from `c.at` they are: `m · n / 128` of the products.
    pub len: u16,
    /// The products left in flight.
    pub pending: u8,
}

/// Element `e` (`0..m·n/128`) of thread `t`'s (`0..128`, in its warpgroup) accumulators:
/// `(row, column)` of the `m` × `n` product.
pub fn accumulator(t: usize, e: usize, n: usize) -> (usize, usize) {
    let (band, e) = (e / (n / 2), e % (n / 2));
    let (warp, lane) = (t / crate::fragment::WARP, t % crate::fragment::WARP);
    let (r, c) = crate::fragment::c(lane, e % 4);
    (ROWS * band + 16 * warp + r, 8 * (e / 4) + c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accumulators_place_every_element_once() {
        for (m, n) in [(64, 8), (64, 64), (128, 128), (64, 256)] {
            let mut seen = vec![0; m * n];
            for t in 0..WARPGROUP {
                for e in 0..m * n / WARPGROUP {
                    let (r, c) = accumulator(t, e, n);
                    seen[r * n + c] += 1;
                }
            }
            assert!(seen.iter().all(|&s| s == 1), "m {m} n {n}");
        }
    }

    #[test]
    fn a_core_matrix_is_128_contiguous_bytes_either_way() {
        for k_major in [true, false] {
            let tile = SharedTile {
                buf: 0,
                at: Expr::Int(0),
                k_major,
                swizzle: false,
                lead: 64,
                stride: 256,
                step: 1024,
            };
            let mut offsets: Vec<usize> = (0..CORE)
                .flat_map(|i| (0..CORE).map(move |k| (i, k)))
                .map(|(i, k)| tile.offset(i, k))
                .collect();
            offsets.sort_unstable();
            assert_eq!(offsets, (0..64).collect::<Vec<_>>());
            assert_eq!(tile.offset(0, 8), 64, "the next core matrix along k");
            assert_eq!(tile.offset(8, 0), 256, "the next along the rows");
        }
    }

    #[test]
    fn descriptor_fields_hold_byte_offsets_over_16() {
        let mut tile = SharedTile {
            buf: 0,
            at: Expr::Int(0),
            k_major: true,
            swizzle: false,
            lead: 64,
            stride: 256,
            step: 128,
        };
        // 128 bytes → 8 in bits 16–29; 512 bytes → 32 in bits 32–45.
        assert_eq!(tile.descriptor_bits(), (8 << 16) | (32 << 32));
        tile.swizzle = true;
        assert_eq!(tile.descriptor_bits(), (1 << 16) | (32 << 32) | (3 << 62));
    }

    #[test]
    fn the_32_byte_swizzle_swaps_the_halves_of_rows_4_to_7() {
        let tile = SharedTile::swizzled(0, Expr::Int(0), 128, 1024);
        assert_eq!(tile.offset(0, 0), 0);
        assert_eq!(tile.offset(0, 8), 8);
        assert_eq!(tile.offset(3, 9), 3 * 16 + 9);
        assert_eq!(tile.offset(4, 0), 4 * 16 + 8);
        assert_eq!(tile.offset(7, 9), 7 * 16 + 1);
        assert_eq!(tile.offset(8, 0), 128);
        assert_eq!(tile.offset(9, 16), 1024 + 128 + 16);
    }
}
