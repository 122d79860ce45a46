//! The archc Kernel IR: loop nests over buffers, their printer and interpreter (the oracle for
//! every backend), and the scalar math that generated code calls.

pub mod fragment;
pub mod gpu;
mod ieee;
pub mod interp;
pub mod ir;
pub mod launch;
pub mod math;
mod printer;
pub mod races;
pub mod shared;
pub mod storage;
pub mod target;
pub mod verify;
pub mod warpgroup;

pub use ieee::{Ieee32, Ieee64};
pub use printer::{axis as axis_name, expr as print_expr, print_kernel};
