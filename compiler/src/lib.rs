//! The archc compiler.
//!
//! `.arch` text is parsed ([`syntax`]) and elaborated ([`elaborate`]) into the Graph IR
//! ([`graph`]): primitive ops on petgraph, every value typed with a dtype and a symbolic shape.

pub mod codegen;
pub mod elaborate;
pub mod grad;
pub mod graph;
pub mod import;
pub mod interp;
pub mod lower;
pub mod passes;
pub mod session;
pub mod step;
pub mod summary;
pub mod syntax;
pub mod verify;

pub use session::Session;
