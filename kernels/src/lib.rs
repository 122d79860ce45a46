//! The archc Kernel IR: loop nests over buffers, their interpreter (the oracle for every backend)
//! and the templates that turn one fused region into one kernel.
//!
//! This crate is reserved by the layout in DESIGN.md; the Kernel IR lands with the Cranelift
//! backend and is not part of the language front end.
