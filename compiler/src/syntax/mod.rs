//! The `.arch` front end: sources and spans, the AST, the parser, the printer and diagnostics.

pub mod ast;
mod diagnostic;
mod nesting;
mod parser;
mod printer;
mod source;

pub use diagnostic::{Diagnostic, Note};
pub use parser::{parse, KEYWORDS};
pub use printer::{print_expr, print_file};
pub use source::{LineCol, Source, SourceId, Sources, Span};
