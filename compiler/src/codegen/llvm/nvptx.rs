//! Kernel IR → PTX for NVIDIA GPUs, through LLVM's NVPTX backend (cargo feature `cuda`).
//!
//! The kernels are the GPU-mapped ones (`archc_kernels::gpu::map`): each top-level Grid loop
//! is a loop over blocks, its body one Thread loop over the block's threads. The LLVM text is
//! the CPU's (`text.rs`), with these differences:
//! - each kernel is an `.entry` (calling convention `ptx_kernel`) taking the same two
//!   pointers, `args` (the buffers' device addresses) and `dims` (the symbols' values), both
//!   in device memory;
//! - a top-level Grid loop starts at `blockIdx.x` and strides by `gridDim.x`, a Thread loop at
//!   `threadIdx.x` by `blockDim.x`, so any launch covers the iterations (a grid-stride loop);
//!   statements outside the Grid loops run on thread 0 of block 0, as on a CPU's thread 0;
//!   barriers are `bar.sync 0` and `bar.warp.sync -1` (`gpu_threads.rs`);
//! - ln, tanh, sin, cos and pow are defined in the module (`gpu_math.rs`); prefetch hints
//!   emit nothing;
//! - a kernel that asks for an occupancy has launch bounds (`.maxntid`, `.minnctapersm`;
//!   `gpu_threads::launch_bounds`).
//!
//! LLVM turns unknown `llvm.nvvm.*` calls into PTX that ptxas rejects, so the tests assemble
//! every kernel of every example with ptxas (`codegen::ptxas`).

use std::collections::BTreeMap;
use std::fmt::Write;

use archc_kernels::ir::Kernel;
use archc_kernels::target::GpuArch;
use inkwell::context::Context;
use inkwell::targets::{
    CodeModel, FileType, InitializationConfig, RelocMode, Target as LlvmTarget, TargetMachine,
    TargetTriple,
};
use inkwell::OptimizationLevel;

use super::{gpu_math, llvm_error, optimised};
use crate::codegen::cranelift::CodegenError;

/// The triple of 64-bit CUDA devices.
const TRIPLE: &str = "nvptx64-nvidia-cuda";

/// The LLVM IR text of `kernels` as PTX kernels for `arch`, before optimisation.
pub fn module_text(kernels: &[Kernel], symbols: usize, arch: GpuArch) -> String {
    let mut out = format!(
        "; archc kernels for {}\ntarget triple = \"{TRIPLE}\"\n",
        arch.name()
    );
    out.push_str(&gpu_math::definitions("internal"));
    let seeded: BTreeMap<String, String> = gpu_math::INTRINSICS
        .iter()
        .map(|(n, d)| (n.to_string(), d.to_string()))
        .collect();
    out.push_str(&super::text::functions(kernels, symbols, true, seeded));
    let _ = write!(
        out,
        "\nattributes #0 = {{ nounwind \"target-cpu\"=\"{}\" \"target-features\"=\"{}\" }}\n",
        arch.name(),
        arch.ptx_version()
    );
    out
}

fn machine(arch: GpuArch) -> Result<TargetMachine, CodegenError> {
    LlvmTarget::initialize_nvptx(&InitializationConfig::default());
    let triple = TargetTriple::create(TRIPLE);
    let t = LlvmTarget::from_triple(&triple).map_err(|e| llvm_error("no NVPTX target", e))?;
    t.create_target_machine(
        &triple,
        arch.name(),
        arch.ptx_version(),
        OptimizationLevel::Aggressive,
        RelocMode::Default,
        CodeModel::Default,
    )
    .ok_or_else(|| CodegenError::Llvm(format!("LLVM cannot compile for `{}`", arch.name())))
}

/// The PTX of `kernels` (GPU-mapped, see the module doc) for `arch`, optimised by LLVM.
pub fn ptx(kernels: &[Kernel], symbols: usize, arch: GpuArch) -> Result<String, CodegenError> {
    let limit = archc_kernels::target::Target::cuda(arch).shared_bytes as usize;
    for k in kernels {
        let bytes = archc_kernels::shared::SharedLayout::of(k).bytes;
        if bytes > limit {
            return Err(CodegenError::TooMuchShared {
                kernel: k.name.clone(),
                bytes,
                limit,
            });
        }
    }
    let text = module_text(kernels, symbols, arch);
    let machine = machine(arch)?;
    let context = Context::create();
    let module = optimised(&context, &text, &machine)?;
    let buffer = machine
        .write_to_memory_buffer(&module, FileType::Assembly)
        .map_err(|e| llvm_error("LLVM cannot write PTX", e))?;
    String::from_utf8(buffer.as_slice().to_vec())
        .map_err(|e| llvm_error("LLVM wrote PTX that is not UTF-8", e))
}
