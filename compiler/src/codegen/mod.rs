//! Backends: the Kernel IR interpreter (the oracle) and Cranelift for the CPU.

pub mod cranelift;
mod half_float;
mod int_div;
pub mod jit;
pub mod kernel_interp;
pub mod object;
