//! The archc runtime: it loads a Plan and executes it.
//!
//! It owns memory (one arena), weights, state (KV caches, SSM states) and the executors. It never
//! depends on the compiler, Cranelift or LLVM, so a standalone binary links only this crate.
//! Today it holds the element types every layer shares, host tensors, and safetensors I/O.

mod bind;
mod checkpoint;
pub mod constants;
mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "cuda")]
pub mod cuda_graphs;
mod dim;
mod dim_check;
mod dtype;
mod executor;
pub mod files;
pub mod generation;
pub mod gguf;
pub mod gguf_names;
mod host_bytes;
mod launch;
mod launcher;
pub mod optim;
mod plan;
mod plan_text;
pub mod quant;
pub mod ragged;
mod random;
pub mod resident;
mod run_steps;
pub mod sampling;
mod session;
pub mod spelling;
mod spin_pool;
pub mod state;
mod tensor;
mod tensor_file;
mod weights;

pub use bind::{bind_dims, check_dim_names, BindError};
pub use checkpoint::Checkpoint;
pub use cpu::{CpuError, CpuKernels, KernelFn};
pub use dim::Dim;
pub use dim_check::DimCheck;
pub use dtype::DType;
pub use executor::{Executor, RunError};
pub use launch::{Launch, Size, SizeOp};
pub use launcher::{
    Arg, Copies, Device, LaunchError, Launcher, ParamSignature, Signature, Signatures,
};
pub use plan::{
    layout, numel, pack, plan_from_json, plan_to_json, root, storage_bytes, ArenaLayout, Binding,
    Buffer, Generation, Kind, Plan, StatefulPlans, Step, Storage, ALIGN,
};
pub use plan_text::print_plan;
pub use random::{random_tensor, SplitMix64};
pub use session::{
    block_formats, default_dim, describe_plan, load_inputs, show_dims, summarize, WeightSource,
};
pub use tensor::{Data, Tensor};
pub use tensor_file::{write_tensors, TensorFile, TensorFileError};
pub use weights::{WeightBytes, WeightData};
