//! The late schedule: the constants that map fused regions onto a machine, read from its
//! [`Target`]. The fusion passes decide *what* runs as one kernel; this decides how the
//! kernel is cut up on the target (tile sizes, chunk lengths, threads per block), when the
//! kernels are made. One such step exists per target family: CPUs and NVIDIA GPUs.

use archc_kernels::target::{MatmulBlocking, MmaShape, Target, ThreadModel};

/// The schedule constants of one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Keys per block of tiled attention's online softmax. A block of scores lives in a
    /// thread-private array, and the block's rows of v (at a head width of 128) fill L1.
    pub attention_block: usize,
    /// The longest SSD chunk: its `Q × Q` block of decayed scores fills at most half of L1.
    pub max_ssd_chunk: usize,
    /// How matmuls are blocked: the register micro-kernel and cache blocks of the target.
    pub blocking: MatmulBlocking,
    /// Lanes of the micro-kernels' vectors (matmul, attention's tiles): the target's own width.
    pub lanes: usize,
    /// Query rows of one tiled-attention task: its `Q·Kᵀ` and `P·V` products run the
    /// micro-kernel over this many rows at once, so each row of keys and values loaded is used
    /// for all of them.
    pub attention_rows: usize,
    /// On a GPU: the threads of one block, into which `archc_kernels::gpu::map` splits each
    /// kernel's parallel loop (None on CPUs, whose threads take contiguous shares).
    pub gpu_block: Option<u32>,
    /// Whether matmuls of 16-bit floats run on tensor cores (`mma.sync` m16n8k16).
    pub tensor_cores: bool,
    /// Whether they run on Hopper's warpgroup products instead (`wgmma.mma_async` m64nNk16).
    pub warpgroup_mma: bool,
}

/// Query rows per attention task: enough to reuse each key block across several micro-kernel
/// row blocks, few enough that a long sequence still gives every thread tasks.
const ATTENTION_ROWS: usize = 64;

/// The channels and states of a typical head, which the cache-derived sizes assume.
const HEAD_WIDTH: usize = 128;

impl Schedule {
    /// The schedule for `target`.
    pub fn for_target(target: &Target) -> Schedule {
        match target.threads {
            ThreadModel::CpuThreads => Schedule::cpu(target),
            ThreadModel::GpuGrid { warp, max_block } => Schedule::gpu(target, warp, max_block),
        }
    }

    /// A GPU's schedule: every iteration of a kernel's parallel loop is one thread, in blocks
    /// of four warps. A thread's private arrays live in local memory, which the driver
    /// reserves for every thread the GPU can hold at once (about 2·10⁵ on an H100), so the
    /// CPU templates run with tiles that keep them to a few KiB: one micro-kernel of 4 × 4
    /// per matmul task over slices of 64 (block-quantized weights), 16 keys per attention
    /// block (a decoding step's rows), SSD chunks of 16. The GPU's own templates
    /// (shared-memory matmuls and attention, tensor cores, the block scan, cooperative
    /// reductions) take the regions they apply to.
    fn gpu(target: &Target, warp: u32, max_block: u32) -> Schedule {
        let lanes = (target.lanes as usize).clamp(1, 16);
        Schedule {
            attention_block: 16,
            max_ssd_chunk: 16,
            blocking: MatmulBlocking {
                mr: 4,
                nr: lanes,
                kc: 64,
                mc: 4,
                nc: 4 * lanes,
            },
            lanes,
            attention_rows: lanes,
            gpu_block: Some((4 * warp).min(max_block)),
            tensor_cores: target.mma.contains(&MmaShape { m: 16, n: 8, k: 16 }),
            warpgroup_mma: target.mma.iter().any(|s| s.m == 64 && s.k == 16),
        }
    }

    fn cpu(target: &Target) -> Schedule {
        let f32s = |bytes: u64| (bytes / 4) as usize;
        let block = (f32s(target.l1_bytes) / HEAD_WIDTH).clamp(16, 256);
        let mut chunk: usize = 8;
        while (4 * (2 * chunk) * (2 * chunk)) as u64 <= target.l1_bytes / 2 {
            chunk *= 2;
        }
        Schedule {
            attention_block: 1 << block.ilog2(),
            max_ssd_chunk: chunk,
            blocking: target.matmul_blocking(),
            lanes: (target.lanes as usize).clamp(1, 16),
            attention_rows: ATTENTION_ROWS,
            gpu_block: None,
            tensor_cores: false,
            warpgroup_mma: false,
        }
    }

    /// The SSD chunk for `p` channels and `n` states per head. It balances the chunk's
    /// quadratic part, `Q²/2·(N + P)` per chunk, against the state passes, `2·P·N` per step:
    /// `Q ≈ 4·P·N / (P + N)`, a power of two in 8..=`max_ssd_chunk`.
    pub fn ssd_chunk(&self, p: i64, n: i64) -> usize {
        let ideal = (4 * p * n / (p + n).max(1)).clamp(8, self.max_ssd_chunk.max(8) as i64);
        1 << (ideal as usize).ilog2()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cranelift_keeps_the_constants_it_was_tuned_with() {
        let s = Schedule::for_target(&Target::cranelift_x86_64());
        assert_eq!(s.attention_block, 64);
        assert_eq!(s.max_ssd_chunk, 64);
        assert_eq!(s.ssd_chunk(64, 128), 64);
        assert_eq!(s.ssd_chunk(1, 16), 8);
        assert_eq!(s.ssd_chunk(4, 4), 8);
    }

    #[test]
    fn a_gpu_gets_blocks_of_four_warps_and_small_private_tiles() {
        let s = Schedule::for_target(&Target::cuda(archc_kernels::target::GpuArch::Sm80));
        assert_eq!(s.gpu_block, Some(128));
        assert!(s.blocking.mc * s.blocking.kc <= 256);
        assert_eq!(Schedule::for_target(&Target::host()).gpu_block, None);
    }

    #[test]
    fn a_bigger_l1_gives_bigger_key_blocks() {
        let t = Target {
            l1_bytes: 64 << 10,
            ..Target::cranelift_x86_64()
        };
        assert_eq!(Schedule::for_target(&t).attention_block, 128);
    }
}
