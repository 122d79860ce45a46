//! The archc runtime: it loads a Plan and executes it.
//!
//! It owns memory (one arena), weights, state (KV caches, SSM states) and the executors. It never
//! depends on the compiler, Cranelift or LLVM, so a standalone binary links only this crate.
//! Today it holds the element types that every layer above shares; the Plan and its executors
//! arrive with the code generator.

mod dtype;

pub use dtype::DType;
