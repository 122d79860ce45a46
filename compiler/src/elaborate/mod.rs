//! Elaboration: AST → Graph IR.
//!
//! Config constants are evaluated, blocks are inlined at each call with their weight scopes,
//! stacks are unrolled, and every primitive becomes a typed graph node. Shapes and dtypes are
//! checked as nodes are made, so a mismatch points at the source span that caused it.

mod arg_reduce;
mod args;
mod builtins;
mod call;
mod compound;
mod conv;
mod dim_checks;
mod expr;
mod fft;
mod number;
mod stack;
mod training;
mod value;

use std::collections::HashMap;
use std::rc::Rc;

use archc_runtime::DType;

use crate::graph::{Dim, Graph, Op, ParamKind, TensorType};
use crate::syntax::ast::*;
use crate::syntax::{Diagnostic, SourceId, Sources, Span};

pub use value::{BlockValue, Instance, LayerRule, Value};

/// How deep block calls may nest before elaboration gives up.
const MAX_CALL_DEPTH: usize = 64;

/// The default elaboration budget: graph nodes made plus expressions evaluated plus list
/// elements made. Real models use well under a million; the budget stops a few hundred bytes
/// of nested stacks or list doublings from taking the machine's memory or minutes of time.
pub const DEFAULT_MAX_NODES: u64 = 10_000_000;

/// Elaborates the model in `user` against the blocks of `prelude` (a user block of the same
/// name replaces a prelude block), within a budget of `max_nodes` units of work (see
/// [`DEFAULT_MAX_NODES`]). `for_training` also elaborates the loss a `train` section computes,
/// as output `loss`.
pub fn elaborate(
    user: &File,
    source: SourceId,
    prelude: &[File],
    (max_nodes, for_training): (u64, bool),
    sources: &Sources,
) -> Result<Graph, Diagnostic> {
    let mut models = user.items.iter().filter_map(|i| match i {
        Item::Model(m) => Some(m),
        Item::Block(_) => None,
    });
    let Some(model) = models.next() else {
        let at = user
            .items
            .first()
            .map(|i| match i {
                Item::Model(m) => m.span,
                Item::Block(b) => b.span,
            })
            .unwrap_or(Span::new(source, 0, 0));
        return Err(
            Diagnostic::new("E0110", at, "this file declares no `model`")
                .label("expected `model name { ... }` somewhere in the file"),
        );
    };
    if let Some(extra) = models.next() {
        return Err(Diagnostic::new(
            "E0107",
            extra.name.span,
            format!(
                "a second model `{}`: one file declares one model",
                extra.name.name
            ),
        )
        .label("second model"));
    }
    let mut e = Elab::new(&model.name.name, max_nodes, sources, source);
    for f in prelude {
        for item in &f.items {
            if let Item::Block(b) = item {
                e.blocks.insert(b.name.name.clone(), Rc::new(b.clone()));
            }
        }
    }
    let mut own: HashMap<String, Span> = HashMap::new();
    let user_blocks = user.items.iter().filter_map(|i| match i {
        Item::Block(b) => Some(b),
        Item::Model(_) => None,
    });
    let model_blocks = model.items.iter().filter_map(|i| match i {
        ModelItem::Block(b) => Some(b),
        _ => None,
    });
    for b in user_blocks.chain(model_blocks) {
        if own.insert(b.name.name.clone(), b.name.span).is_some() {
            return Err(duplicate("block", &b.name));
        }
        if builtins::BUILTINS.contains(&b.name.name.as_str()) {
            return Err(Diagnostic::new(
                "E0107",
                b.name.span,
                format!(
                    "block `{}` would hide the built-in of the same name",
                    b.name.name
                ),
            )
            .label("choose another name"));
        }
        e.blocks.insert(b.name.name.clone(), Rc::new(b.clone()));
    }
    e.model(model, for_training)?;
    Ok(e.graph)
}

fn duplicate(what: &str, name: &Ident) -> Diagnostic {
    Diagnostic::new(
        "E0107",
        name.span,
        format!("{what} `{}` is defined twice", name.name),
    )
    .label("second definition")
}

/// One activation of a block (or the model body).
struct Frame {
    /// The block's name, for messages.
    block: String,
    /// Local variables.
    vars: HashMap<String, Value>,
    /// The current weight scope.
    scope: String,
    /// Whether this frame runs inside a `shared` instance (weights may be seen again).
    shared: bool,
    /// Set inside an EMA instance: (ema scope, online scope, momentum at the first and the
    /// last step).
    ema: Option<(String, String, (f64, f64))>,
    /// Where the block was called (None for the model body).
    call: Option<Span>,
}

struct Elab<'s> {
    /// The sources, to name where a run-time dim check comes from.
    sources: &'s Sources,
    /// The user's source (the rest is the prelude).
    user: SourceId,
    /// The dim checks recorded so far, so that each condition is recorded once.
    checked: std::collections::HashSet<(archc_runtime::Dim, i64)>,
    graph: Graph,
    config: HashMap<String, Value>,
    blocks: HashMap<String, Rc<BlockDef>>,
    shared: HashMap<String, Value>,
    frames: Vec<Frame>,
    /// Weight names each active call of a shared instance has declared so far: a second
    /// declaration within one call is a duplicate, a later call reuses the weight.
    instance_calls: Vec<std::collections::HashSet<String>>,
    /// EMA weights with the online weight they follow and where they were declared.
    ema_links: Vec<(String, String, Span)>,
    /// Work done so far: nodes made, expressions evaluated, list elements made.
    spent: u64,
    /// The most work elaboration may do.
    budget: u64,
}

impl Elab<'_> {
    /// Evaluates a scope path (`@a.{i}.b`) to its dotted text, relative to the current scope.
    fn scope_path(&mut self, s: &ScopePath) -> Result<(String, Span), Diagnostic> {
        let mut parts = Vec::new();
        for seg in &s.segments {
            parts.push(match seg {
                ScopeSegment::Name(n) => n.clone(),
                ScopeSegment::Expr(e) => match self.eval(e)? {
                    Value::Int(i) => i.to_string(),
                    Value::Str(t) if !t.is_empty() && !t.contains(['.', ' ']) => t,
                    other => {
                        return Err(Diagnostic::new(
                            "E0111",
                            e.span,
                            format!(
                                "a scope segment must be an integer or a name, found {}",
                                other.describe()
                            ),
                        )
                        .label("bad scope segment"))
                    }
                },
            });
        }
        Ok((parts.join("."), s.span))
    }
}

/// Joins two weight-scope paths with a dot.
fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}.{b}"),
    }
}

impl Elab<'_> {
    fn new<'s>(name: &str, budget: u64, sources: &'s Sources, user: SourceId) -> Elab<'s> {
        Elab {
            sources,
            user,
            checked: Default::default(),
            spent: 0,
            budget,
            graph: Graph {
                name: name.to_string(),
                ..Graph::default()
            },
            config: HashMap::new(),
            blocks: HashMap::new(),
            shared: HashMap::new(),
            instance_calls: Vec::new(),
            ema_links: Vec::new(),
            frames: vec![Frame {
                block: name.to_string(),
                vars: HashMap::new(),
                scope: String::new(),
                shared: false,
                ema: None,
                call: None,
            }],
        }
    }

    /// Where a node made at `span` comes from, for run-time messages: the span, preceded by the
    /// innermost call in the user's file when the span is inside the prelude.
    fn origin_of(&self, span: Span) -> String {
        let here = self.sources.locate(span);
        if span.source == self.user {
            return here;
        }
        let call = self
            .frames
            .iter()
            .rev()
            .filter_map(|f| f.call)
            .find(|c| c.source == self.user);
        match call {
            Some(c) => format!("{} → {here}", self.sources.locate(c)),
            None => here,
        }
    }

    /// Charges `units` of work done at `span`; past the budget, a located error.
    fn charge(&mut self, units: u64, span: Span) -> Result<(), Diagnostic> {
        self.spent = self.spent.saturating_add(units);
        if self.spent > self.budget {
            return Err(Diagnostic::new(
                "E0207",
                span,
                format!(
                    "the model is too large to elaborate: more than {} nodes, evaluations and list elements",
                    self.budget
                ),
            )
            .label("the budget ran out here")
            .note("`--max-nodes N` raises the limit, if the model is really this large"));
        }
        Ok(())
    }

    fn frame(&mut self) -> &mut Frame {
        self.frames
            .last_mut()
            .expect("the model frame is never popped")
    }

    fn scope(&self) -> &str {
        &self.frames.last().expect("model frame").scope
    }

    /// Names seen inside every block (config constants, shared instances) must not hide a
    /// block or built-in, or the prelude would call the wrong thing.
    fn not_hiding(&self, what: &str, name: &Ident) -> Result<(), Diagnostic> {
        let hidden = if self.blocks.contains_key(&name.name) {
            "block"
        } else if builtins::BUILTINS.contains(&name.name.as_str()) {
            "built-in"
        } else {
            return Ok(());
        };
        Err(Diagnostic::new(
            "E0107",
            name.span,
            format!(
                "{what} `{}` would hide the {hidden} of the same name",
                name.name
            ),
        )
        .label("choose another name"))
    }

    fn model(&mut self, m: &Model, for_training: bool) -> Result<(), Diagnostic> {
        let mut train: Option<(&[ConfigEntry], Span)> = None;
        let mut inputs: HashMap<String, Span> = HashMap::new();
        let mut outputs: HashMap<String, Span> = HashMap::new();
        for item in &m.items {
            match item {
                ModelItem::Config(entries, _) => {
                    for c in entries {
                        if self.config.contains_key(&c.name.name) {
                            return Err(duplicate("config constant", &c.name));
                        }
                        self.not_hiding("config constant", &c.name)?;
                        let v = self.eval(&c.value)?;
                        let v =
                            match v {
                                Value::Tensor(_) => return Err(Diagnostic::new(
                                    "E0111",
                                    c.value.span,
                                    "a config constant must be known at compile time, not a tensor",
                                )),
                                v => v,
                            };
                        self.config.insert(c.name.name.clone(), v);
                    }
                }
                ModelItem::Input(i) => {
                    if inputs.insert(i.name.name.clone(), i.name.span).is_some() {
                        return Err(duplicate("input", &i.name));
                    }
                    let ty = self.tensor_type(&i.ty, true)?;
                    let n = self.graph.add(Op::Input(i.name.name.clone()), ty, "", &[]);
                    self.graph.inputs.insert(i.name.name.clone(), n);
                    self.frame()
                        .vars
                        .insert(i.name.name.clone(), Value::Tensor(n));
                }
                ModelItem::Block(_) => {}
                ModelItem::Train(entries, span) => {
                    if train.is_some() {
                        return Err(Diagnostic::new(
                            "E0107",
                            *span,
                            "a second `train` section: a model has one",
                        )
                        .label("second section"));
                    }
                    train = Some((entries, *span));
                }
                ModelItem::Shared(b) => {
                    let v = self.eval(&b.value)?;
                    let v = match v {
                        Value::Block(mut bv) => {
                            if bv.instance.is_none() {
                                bv.instance = Some(Rc::new(Instance {
                                    scope: self.scope().to_string(),
                                    ema: None,
                                }));
                            }
                            Value::Block(bv)
                        }
                        other => {
                            return Err(Diagnostic::new(
                                "E0111",
                                b.value.span,
                                format!("`shared` binds a block instance, found {}", other.kind()),
                            ))
                        }
                    };
                    self.not_hiding("shared instance", &b.name)?;
                    if self.shared.insert(b.name.name.clone(), v).is_some() {
                        return Err(duplicate("shared instance", &b.name));
                    }
                }
                ModelItem::Output(b) => {
                    if outputs.insert(b.name.name.clone(), b.name.span).is_some() {
                        return Err(duplicate("output", &b.name));
                    }
                    let v = self.eval(&b.value)?;
                    let n = self.expect_tensor(&v, b.value.span, "an output")?;
                    self.graph.outputs.insert(b.name.name.clone(), n);
                    self.frame()
                        .vars
                        .insert(b.name.name.clone(), Value::Tensor(n));
                }
                ModelItem::Stmt(s) => {
                    if let Some(ret) = self.stmt(s)? {
                        return Err(Diagnostic::new(
                            "E0112",
                            ret,
                            "`return` belongs in a block; a model declares `output`s",
                        )
                        .label("return at model level"));
                    }
                }
            }
        }
        for (name, online, span) in &self.ema_links {
            if !self.graph.params.contains_key(online) {
                return Err(Diagnostic::new(
                    "E0304",
                    *span,
                    format!("EMA weight `{name}` follows `{online}`, which the online instance never declares"),
                )
                .label("declared by the EMA copy")
                .note("call the online `shared` instance as well, so that its weights exist"));
            }
        }
        if let Some((entries, _)) = train {
            self.train_section(entries, for_training)?;
        }
        if self.graph.outputs.is_empty() {
            return Err(Diagnostic::new(
                "E0110",
                m.name.span,
                format!("model `{}` has no `output`", m.name.name),
            )
            .label("declare at least one `output name = ...`"));
        }
        Ok(())
    }

    /// Runs statements; returns the span of a `return` if one was reached.
    fn stmts(&mut self, body: &[Stmt]) -> Result<Option<(Value, Span)>, Diagnostic> {
        for s in body {
            if let Some(r) = self.stmt_value(s)? {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    fn stmt(&mut self, s: &Stmt) -> Result<Option<Span>, Diagnostic> {
        Ok(self.stmt_value(s)?.map(|(_, sp)| sp))
    }

    fn stmt_value(&mut self, s: &Stmt) -> Result<Option<(Value, Span)>, Diagnostic> {
        match s {
            Stmt::Return(e) => Ok(Some((self.eval(e)?, e.span))),
            Stmt::Call(e) => {
                self.eval(e)?;
                Ok(None)
            }
            Stmt::Assign(a) => {
                let v = self.eval(&a.value)?;
                if a.targets.len() == 1 {
                    self.frame().vars.insert(a.targets[0].name.clone(), v);
                    return Ok(None);
                }
                match v {
                    Value::List(items) if items.len() == a.targets.len() => {
                        for (t, v) in a.targets.iter().zip(items) {
                            self.frame().vars.insert(t.name.clone(), v);
                        }
                        Ok(None)
                    }
                    other => Err(Diagnostic::new(
                        "E0402",
                        a.value.span,
                        format!(
                            "cannot unpack {} into {} names",
                            match &other {
                                Value::List(items) => format!("a list of {}", items.len()),
                                o => o.kind().to_string(),
                            },
                            a.targets.len()
                        ),
                    )
                    .label("this value")),
                }
            }
            Stmt::If(i) => {
                let c = self.eval(&i.cond)?;
                let Value::Bool(c) = c else {
                    return Err(Diagnostic::new(
                        "E0404",
                        i.cond.span,
                        format!(
                            "an `if` condition must be a compile-time bool, found {}",
                            c.kind()
                        ),
                    )
                    .label("not a bool"));
                };
                if c {
                    self.stmts(&i.then)
                } else if let Some(els) = &i.els {
                    self.stmts(els)
                } else {
                    Ok(None)
                }
            }
            Stmt::Param(p) => {
                let n = self.param(p)?;
                self.frame()
                    .vars
                    .insert(p.name.name.clone(), Value::Tensor(n));
                Ok(None)
            }
        }
    }

    fn param(&mut self, p: &ParamDecl) -> Result<petgraph::graph::NodeIndex, Diagnostic> {
        let ty = self.tensor_type(&p.ty, false)?;
        let local = match &p.path {
            Some(path) => self.scope_path(path)?.0,
            None => p.name.name.clone(),
        };
        let frame = self.frames.last().expect("model frame");
        let name = join(&frame.scope, &local);
        let kind = match &frame.ema {
            Some((ema_scope, online, (momentum, end))) => ParamKind::Ema {
                online: join(
                    online,
                    name.strip_prefix(ema_scope.as_str())
                        .unwrap_or(&name)
                        .trim_start_matches('.'),
                ),
                momentum: *momentum,
                end: *end,
            },
            None => ParamKind::Trainable,
        };
        let first_in_call = match self.instance_calls.last_mut() {
            Some(seen) if frame.shared => seen.insert(name.clone()),
            _ => false,
        };
        if let Some((n, _)) = self.graph.params.get(&name) {
            let n = *n;
            if first_in_call && self.graph.ty(n) == &ty {
                return Ok(n);
            }
            return Err(Diagnostic::new(
                "E0107",
                p.name.span,
                format!("weight `{name}` is declared twice"),
            )
            .label("second declaration")
            .note("give each call its own scope with `@name`, or use a `shared` instance to reuse weights"));
        }
        if let ParamKind::Ema { online, .. } = &kind {
            self.ema_links
                .push((name.clone(), online.clone(), p.name.span));
        }
        let scope = self.scope().to_string();
        let n = self.graph.add(Op::Param(name.clone()), ty, &scope, &[]);
        self.graph.dag[n].at = self.origin_of(p.name.span);
        self.graph.params.insert(name, (n, kind));
        Ok(n)
    }

    /// Evaluates a written tensor type. In inputs, unknown names become symbolic dims; weights
    /// must have constant positive dims.
    fn tensor_type(&mut self, t: &TensorTypeExpr, input: bool) -> Result<TensorType, Diagnostic> {
        let mut shape = Vec::new();
        for d in &t.dims {
            let v = match (&d.kind, input) {
                (ExprKind::Name(n), true) if self.lookup(n).is_none() => {
                    if !self.graph.symbols.contains(n) {
                        self.graph.symbols.push(n.clone());
                    }
                    Value::Dim(Dim::symbol(n))
                }
                _ => self.eval(d)?,
            };
            let dim = v.as_dim().ok_or_else(|| {
                Diagnostic::new(
                    "E0111",
                    d.span,
                    format!("a dim must be an integer or a symbol, found {}", v.kind()),
                )
            })?;
            match dim.as_const() {
                Some(c) if c <= 0 => {
                    return Err(Diagnostic::new(
                        "E0204",
                        d.span,
                        format!("dims must be positive, this one is {c}"),
                    )
                    .label("zero or negative dim"))
                }
                None if !input => {
                    return Err(Diagnostic::new(
                        "E0403",
                        d.span,
                        format!("a weight needs constant dims, but this one is `{dim}`"),
                    )
                    .label("symbolic dim in a weight shape"))
                }
                _ => {}
            }
            shape.push(dim);
        }
        Ok(TensorType::new(t.dtype.unwrap_or(DType::F32), shape))
    }
}
