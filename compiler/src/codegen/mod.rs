//! Backends: the Kernel IR interpreter (the oracle) and Cranelift for the CPU.

pub mod cranelift;
pub mod jit;
pub mod kernel_interp;
pub mod object;
