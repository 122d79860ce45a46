//! A `Target` describes the machine kernels are scheduled for: its vectors, registers, caches,
//! thread model and special instructions.
//!
//! The fusion passes decide *what* is computed together; the schedule constants (vector width,
//! micro-kernel shape, cache blocks, attention tile sizes) come from here, read by the late
//! lowering for one target family. Cranelift is a target of its own (128-bit vectors, the
//! current CPU threading); LLVM's host target takes the CPU's real widths.

/// How a target runs the iterations of parallel loops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ThreadModel {
    /// OS threads on CPU cores; each runs a contiguous share of the outermost parallel loops.
    CpuThreads,
    /// A grid of blocks of threads (NVIDIA GPUs): `warp` threads run in lockstep, a block of
    /// at most `max_block` threads shares memory and barriers.
    GpuGrid {
        /// Threads per warp.
        warp: u32,
        /// The most threads in one block.
        max_block: u32,
    },
}

/// A matrix-multiply-accumulate shape a target's tensor units run in one instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MmaShape {
    /// Rows of the product.
    pub m: u32,
    /// Columns of the product.
    pub n: u32,
    /// The reduced axis.
    pub k: u32,
}

/// A machine kernels are scheduled for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// A short name for dumps and errors (`cranelift-x86-64`, `llvm-x86-64-avx512`).
    pub name: String,
    /// f32 lanes in one vector register.
    pub lanes: u32,
    /// Vector registers the register allocator has.
    pub vector_registers: u32,
    /// Whether a fused multiply-add instruction exists.
    pub fma: bool,
    /// Bytes of level-1 data cache per core.
    pub l1_bytes: u64,
    /// Bytes of level-2 cache per core.
    pub l2_bytes: u64,
    /// Bytes of last-level cache shared by the cores.
    pub l3_bytes: u64,
    /// Bytes of memory one block of cooperating threads may share at most (0 on CPUs).
    pub shared_bytes: u64,
    /// How parallel loops map onto hardware.
    pub threads: ThreadModel,
    /// Tensor-core shapes (none on CPUs).
    pub mma: Vec<MmaShape>,
    /// The CPU LLVM compiles for: an x86-64 microarchitecture level (`x86-64-v4`,
    /// `x86-64-v3`, `x86-64`), so that code runs on every CPU with the level's features; for a
    /// GPU its architecture (`sm_80`).
    pub cpu: String,
    /// The CPU features the code needs beyond the x86-64 baseline, as `cpuid` names
    /// (`avx2`, `fma`); a built binary checks them before it runs a kernel.
    pub features: Vec<String>,
}

/// The features of x86-64-v3 (Haswell and later, Zen).
const V3: &[&str] = &[
    "avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "lzcnt", "movbe", "xsave",
];
/// The features x86-64-v4 adds (AVX-512 as Skylake-X and Zen 4 have it).
const V4: &[&str] = &["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"];

/// Whether this CPU has feature `name` (a `cpuid` name as in `Target::features`); unknown
/// names are reported missing.
pub fn has_feature(name: &str) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        match name {
            "avx" => std::is_x86_feature_detected!("avx"),
            "avx2" => std::is_x86_feature_detected!("avx2"),
            "bmi1" => std::is_x86_feature_detected!("bmi1"),
            "bmi2" => std::is_x86_feature_detected!("bmi2"),
            "f16c" => std::is_x86_feature_detected!("f16c"),
            "fma" => std::is_x86_feature_detected!("fma"),
            "lzcnt" => std::is_x86_feature_detected!("lzcnt"),
            "movbe" => std::is_x86_feature_detected!("movbe"),
            "xsave" => std::is_x86_feature_detected!("xsave"),
            "avx512f" => std::is_x86_feature_detected!("avx512f"),
            "avx512bw" => std::is_x86_feature_detected!("avx512bw"),
            "avx512cd" => std::is_x86_feature_detected!("avx512cd"),
            "avx512dq" => std::is_x86_feature_detected!("avx512dq"),
            "avx512vl" => std::is_x86_feature_detected!("avx512vl"),
            _ => false,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = name;
        false
    }
}

/// x86-64 microarchitecture levels, as LLVM and the psABI name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum X86Level {
    /// SSE2: every x86-64 CPU.
    Baseline,
    /// AVX2 and FMA, 256-bit vectors.
    V3,
    /// AVX-512, 512-bit vectors and 32 registers.
    V4,
}

impl X86Level {
    /// The highest level this CPU has.
    pub fn host() -> X86Level {
        if V3.iter().chain(V4).all(|f| has_feature(f)) {
            X86Level::V4
        } else if V3.iter().all(|f| has_feature(f)) {
            X86Level::V3
        } else {
            X86Level::Baseline
        }
    }
}

/// NVIDIA GPU architectures archc generates PTX for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GpuArch {
    /// Ampere (A100): `mma.sync`, `ldmatrix`, `cp.async`. The baseline.
    Sm80,
    /// Hopper (H100) with its architecture-specific features (wgmma, TMA).
    Sm90a,
}

impl GpuArch {
    /// Every architecture, baseline first.
    pub const ALL: [GpuArch; 2] = [GpuArch::Sm80, GpuArch::Sm90a];

    /// The name PTX and ptxas use (`sm_80`, `sm_90a`).
    pub fn name(self) -> &'static str {
        match self {
            GpuArch::Sm80 => "sm_80",
            GpuArch::Sm90a => "sm_90a",
        }
    }

    /// The architecture a name (`sm_80`, `sm_90a`) spells, if archc knows it.
    pub fn parse(name: &str) -> Option<GpuArch> {
        GpuArch::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Whether PTX for this architecture runs on a GPU whose own is `gpu`: sm_80's on every
    /// GPU archc opens (the driver compiles it for later ones), sm_90a's only on Hopper.
    pub fn runs_on(self, gpu: GpuArch) -> bool {
        self == GpuArch::Sm80 || self == gpu
    }

    /// The PTX ISA version the generated text declares (`.version`): the lowest that has
    /// every instruction this architecture's kernels use.
    pub fn ptx_version(self) -> &'static str {
        match self {
            GpuArch::Sm80 => "+ptx70",
            GpuArch::Sm90a => "+ptx80",
        }
    }
}

/// The register micro-kernel of a blocked matmul and its cache blocks, BLIS's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MatmulBlocking {
    /// Rows of the output one micro-kernel call computes (held in registers).
    pub mr: usize,
    /// Columns of the output one micro-kernel call computes (a multiple of `lanes`).
    pub nr: usize,
    /// The slice of the reduced axis a packed panel holds (fits L1 with an `mr` row block).
    pub kc: usize,
    /// Rows of the activations packed per block (fits L2).
    pub mc: usize,
    /// Columns of the weights in one packed panel (fits L3).
    pub nc: usize,
}

impl Target {
    /// Cranelift on x86-64: 128-bit vectors (what Cranelift vectorises), 16 registers, FMA,
    /// OS threads.
    pub fn cranelift_x86_64() -> Target {
        Target {
            name: "cranelift-x86-64".into(),
            lanes: 4,
            vector_registers: 16,
            fma: true,
            l1_bytes: 32 << 10,
            l2_bytes: 1 << 20,
            l3_bytes: 16 << 20,
            shared_bytes: 0,
            threads: ThreadModel::CpuThreads,
            mma: Vec::new(),
            cpu: "x86-64".into(),
            features: Vec::new(),
        }
    }

    /// An x86-64 CPU of microarchitecture level `level`: 512-bit vectors and 32 registers
    /// with AVX-512, 256-bit and 16 with AVX2 and FMA, otherwise the SSE2 baseline.
    pub fn x86_64(level: X86Level) -> Target {
        let (cpu, lanes, registers, features): (_, _, _, Vec<&str>) = match level {
            X86Level::V4 => ("x86-64-v4", 16, 32, V3.iter().chain(V4).copied().collect()),
            X86Level::V3 => ("x86-64-v3", 8, 16, V3.to_vec()),
            X86Level::Baseline => ("x86-64", 4, 16, Vec::new()),
        };
        Target {
            name: format!("llvm-{cpu}"),
            lanes,
            vector_registers: registers,
            fma: level != X86Level::Baseline,
            cpu: cpu.into(),
            features: features.into_iter().map(String::from).collect(),
            ..Target::cranelift_x86_64()
        }
    }

    /// An NVIDIA GPU of architecture `arch`: warps of 32 threads, blocks of up to 1024, the
    /// most shared memory one block may have (opted in: Hopper 227 KiB, an A100 163 KiB,
    /// 48 KiB of it declared statically: see [`crate::shared`]), the tensor cores'
    /// `m16n8k16` shape. `lanes` stays 4: a thread's vectors are what LLVM's NVPTX backend
    /// turns into `ld.v4`/`st.v4` and four scalar instructions.
    pub fn cuda(arch: GpuArch) -> Target {
        Target {
            name: format!("nvptx-{}", arch.name()),
            lanes: 4,
            vector_registers: 64,
            fma: true,
            l1_bytes: 32 << 10,
            l2_bytes: 50 << 20,
            l3_bytes: 0,
            shared_bytes: match arch {
                GpuArch::Sm80 => 163 << 10,
                GpuArch::Sm90a => 227 << 10,
            },
            threads: ThreadModel::GpuGrid {
                warp: 32,
                max_block: 1024,
            },
            mma: match arch {
                GpuArch::Sm80 => vec![MmaShape { m: 16, n: 8, k: 16 }],
                // wgmma: m64nNk16 for every N a multiple of 8 up to 256.
                GpuArch::Sm90a => vec![
                    MmaShape { m: 16, n: 8, k: 16 },
                    MmaShape {
                        m: 64,
                        n: 256,
                        k: 16,
                    },
                ],
            },
            cpu: arch.name().into(),
            features: Vec::new(),
        }
    }

    /// The GPU architecture this target is, if it is one.
    pub fn gpu_arch(&self) -> Option<GpuArch> {
        match self.threads {
            ThreadModel::GpuGrid { .. } => GpuArch::parse(&self.cpu),
            ThreadModel::CpuThreads => None,
        }
    }

    /// The CPU this process runs on, for LLVM.
    pub fn host() -> Target {
        Target::x86_64(X86Level::host())
    }

    /// The features in `self.features` this CPU lacks (empty when code for this target runs
    /// here).
    pub fn missing_features(&self) -> Vec<String> {
        self.features
            .iter()
            .filter(|f| !has_feature(f))
            .cloned()
            .collect()
    }

    /// The blocked matmul's shape on this target: as many accumulator rows as leave half the
    /// registers for the B rows and broadcasts of two unrolled steps (Cranelift loads the
    /// next step's operands early; with a quarter left, its 6 × 8 kernel spilled on every
    /// step and ran 1.3× slower than 4 × 8), two vectors wide; the reduced
    /// slice sized so an `mr × kc` and a `kc × nr` panel share L1, the row block to half of
    /// L2, the weight panel to half of L3.
    pub fn matmul_blocking(&self) -> MatmulBlocking {
        let lanes = self.lanes.max(1) as usize;
        let nr = 2 * lanes;
        let accumulators = (self.vector_registers as usize / 2).max(2);
        let mr = (accumulators / 2).clamp(1, 14);
        let kc = ((self.l1_bytes as usize / 2) / (4 * (mr + nr))).clamp(16, 512) / 8 * 8;
        let mc = ((self.l2_bytes as usize / 2) / (4 * kc)).clamp(mr, 1024) / mr * mr;
        let nc = ((self.l3_bytes as usize / 2) / (4 * kc)).clamp(nr, 8192) / nr * nr;
        MatmulBlocking { mr, nr, kc, mc, nc }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_follows_the_registers_and_caches() {
        let c = Target::cranelift_x86_64().matmul_blocking();
        assert_eq!((c.mr, c.nr), (4, 8));
        let a = Target::x86_64(X86Level::V4).matmul_blocking();
        assert_eq!((a.mr, a.nr), (8, 32));
        for b in [c, a] {
            assert!(4 * b.kc * (b.mr + b.nr) <= 32 << 10);
            assert_eq!(b.mc % b.mr, 0);
            assert_eq!(b.nc % b.nr, 0);
        }
    }

    #[test]
    fn gpu_targets_name_their_architecture() {
        for arch in GpuArch::ALL {
            let t = Target::cuda(arch);
            assert_eq!(t.gpu_arch(), Some(arch));
            assert_eq!(GpuArch::parse(arch.name()), Some(arch));
            assert!(t.missing_features().is_empty());
        }
        assert_eq!(Target::host().gpu_arch(), None);
        assert_eq!(GpuArch::parse("sm_75"), None);
    }

    #[test]
    fn ampere_ptx_runs_on_hopper_but_not_the_other_way() {
        use GpuArch::{Sm80, Sm90a};
        assert!(Sm80.runs_on(Sm80) && Sm80.runs_on(Sm90a) && Sm90a.runs_on(Sm90a));
        assert!(!Sm90a.runs_on(Sm80));
    }

    #[test]
    fn the_baseline_needs_no_features() {
        assert!(Target::x86_64(X86Level::Baseline)
            .missing_features()
            .is_empty());
        assert!(Target::host().missing_features().is_empty());
        assert!(Target::cranelift_x86_64().missing_features().is_empty());
    }
}
