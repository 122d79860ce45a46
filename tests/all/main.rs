//! The integration tests, gathered into one binary so that the compiler is linked once.
//!
//! Each module was once its own file under `tests/`; `common` holds the shared helpers.

mod attention_grad;
mod backends;
mod build;
mod causality;
mod cli;
mod codegen_equivalence;
mod common;
mod diagnostics;
mod generate;
mod gguf;
mod gpu;
mod grad;
mod hf_parity;
mod hostile_input;
mod hostile_run;
mod hostile_source;
mod import;
mod language;
mod lowering;
mod mapped_weights;
mod matmul_blocked;
mod minilm;
mod param_counts;
mod parse_print;
mod pass_canonicalize;
mod pass_fuse_elementwise;
mod pass_fuse_scan;
mod pass_interleave_stack;
mod pass_plan_memory;
mod pass_route_experts;
mod pass_tile_attention;
mod primitives;
mod quantized;
mod ragged;
mod run_errors;
mod scan_grad;
mod schedule_ir;
mod sharded;
mod snapshots;
mod step;
mod svdvals;
mod train;
mod verify;
