//! One compilation: the source table, the parsed prelude, and the front-end entry points.

use crate::graph::Graph;
use crate::syntax::ast::File;
use crate::syntax::{parse, Diagnostic, SourceId, Sources};

/// The prelude: blocks written in `.arch`, embedded in the compiler. Users can read them in
/// `compiler/prelude/` and replace any of them by defining a block of the same name.
pub const PRELUDE: &[(&str, &str)] = &[
    (
        "compiler/prelude/core.arch",
        include_str!("../prelude/core.arch"),
    ),
    (
        "compiler/prelude/linear.arch",
        include_str!("../prelude/linear.arch"),
    ),
    (
        "compiler/prelude/norm.arch",
        include_str!("../prelude/norm.arch"),
    ),
    (
        "compiler/prelude/rope.arch",
        include_str!("../prelude/rope.arch"),
    ),
    (
        "compiler/prelude/attention.arch",
        include_str!("../prelude/attention.arch"),
    ),
    (
        "compiler/prelude/mlp.arch",
        include_str!("../prelude/mlp.arch"),
    ),
    (
        "compiler/prelude/moe.arch",
        include_str!("../prelude/moe.arch"),
    ),
    (
        "compiler/prelude/conv.arch",
        include_str!("../prelude/conv.arch"),
    ),
    (
        "compiler/prelude/mamba.arch",
        include_str!("../prelude/mamba.arch"),
    ),
    (
        "compiler/prelude/mamba2.arch",
        include_str!("../prelude/mamba2.arch"),
    ),
    (
        "compiler/prelude/loss.arch",
        include_str!("../prelude/loss.arch"),
    ),
];

/// Sources and the parsed prelude for one compilation.
pub struct Session {
    /// Every source text; diagnostics render against it.
    pub sources: Sources,
    prelude: Vec<File>,
    /// The elaboration budget (see [`crate::elaborate::DEFAULT_MAX_NODES`]).
    pub max_nodes: u64,
    /// Compile for `archc train`: a `train` section's `loss = expr` becomes output `loss`.
    pub for_training: bool,
}

impl Session {
    /// A session with the prelude parsed.
    pub fn new() -> Result<Session, String> {
        let mut sources = Sources::new();
        let mut prelude = Vec::new();
        for (name, text) in PRELUDE {
            let id = sources.add(*name, *text);
            // The prelude ships with the compiler; a parse error here is a build bug, reported
            // as text rather than a panic.
            prelude.push(parse(id, text).map_err(|d| d.render(&sources))?);
        }
        Ok(Session {
            sources,
            prelude,
            max_nodes: crate::elaborate::DEFAULT_MAX_NODES,
            for_training: false,
        })
    }

    /// Adds a user source text.
    pub fn add(&mut self, name: impl Into<String>, text: impl Into<String>) -> SourceId {
        self.sources.add(name, text)
    }

    /// Parses a source added with [`Session::add`].
    pub fn parse(&self, id: SourceId) -> Result<File, Diagnostic> {
        parse(id, &self.sources.get(id).text)
    }

    /// Elaborates a parsed user file (from source `id`) against the prelude.
    pub fn elaborate(&self, file: &File, id: SourceId) -> Result<Graph, Diagnostic> {
        crate::elaborate::elaborate(
            file,
            id,
            &self.prelude,
            (self.max_nodes, self.for_training),
            &self.sources,
        )
    }

    /// Parses and elaborates a user source.
    pub fn compile(&self, id: SourceId) -> Result<(File, Graph), Diagnostic> {
        let file = self.parse(id)?;
        let graph = self.elaborate(&file, id)?;
        Ok((file, graph))
    }

    /// Renders a diagnostic with its source line.
    pub fn render(&self, d: &Diagnostic) -> String {
        d.render(&self.sources)
    }
}
