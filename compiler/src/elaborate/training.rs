//! A model's `train { ... }` section: the loss, the optimiser, the learning-rate schedule,
//! gradient clipping and parameter groups (docs/LANGUAGE.md, section 12).
//!
//! The entries are compile-time values, evaluated like a config's (config constants may be
//! used), except for the constructors `adamw`, `sgd`, `constant`, `cosine` and `group`, which
//! exist only here. The section is read after every other item of the model, so that `loss`
//! may name any output or compute a new one from the model's values.

use std::collections::HashSet;

use archc_runtime::optim::Optimizer;

use crate::graph::{OptimizerSpec, ParamGroup, ParamKind, ScheduleSpec, Training};
use crate::syntax::ast::{ConfigEntry, Expr, ExprKind};
use crate::syntax::{Diagnostic, Span};

use super::args::{closest, unknown_keyword, Bound, CallArgs};
use super::value::Value;
use super::Elab;

/// The entries a `train` section may have.
const ENTRIES: &[&str] = &["loss", "optimizer", "schedule", "clip", "groups"];

/// A bad `train` section.
fn bad(at: Span, message: impl Into<String>) -> Diagnostic {
    Diagnostic::new("E0305", at, message)
}

impl Elab<'_> {
    /// Reads the section into `self.graph.training`. With `for_training`, a `loss = expr`
    /// that is not the name of an output is elaborated and becomes output `loss`; otherwise
    /// it is left alone (`archc run` does not compute it).
    pub(super) fn train_section(
        &mut self,
        entries: &[ConfigEntry],
        for_training: bool,
    ) -> Result<(), Diagnostic> {
        let mut t = Training::default();
        let mut seen = HashSet::new();
        let mut group_spans = Vec::new();
        for e in entries {
            if !seen.insert(e.name.name.as_str()) {
                return Err(super::duplicate("train entry", &e.name));
            }
            match e.name.name.as_str() {
                "loss" => {
                    let name = self.train_loss(&e.value, for_training)?;
                    t.loss_computed = !matches!(&e.value.kind, ExprKind::Name(n) if *n == name);
                    t.loss = Some(name);
                }
                "optimizer" => t.optimizer = Some(self.optimizer_spec(&e.value)?),
                "schedule" => t.schedule = Some(self.schedule_spec(&e.value)?),
                "clip" => {
                    let v = self.eval(&e.value)?;
                    t.clip = Some(positive(v, e.value.span, "`clip`")?);
                }
                "groups" => (t.groups, group_spans) = self.groups(&e.value)?,
                other => {
                    let mut d = bad(e.name.span, format!("a `train` section has no `{other}`"))
                        .label("unknown entry");
                    if let Some(best) = closest(other, ENTRIES.iter().copied()) {
                        d = d.note(format!("did you mean `{best}`?"));
                    }
                    return Err(d.note(format!("its entries are: {}", ENTRIES.join(", "))));
                }
            }
        }
        for (g, span) in t.groups.iter().zip(group_spans) {
            let hits = self.graph.params.iter().any(|(name, (_, kind))| {
                matches!(kind, ParamKind::Trainable)
                    && t.group_of(name).is_some_and(|first| std::ptr::eq(first, g))
            });
            if !hits {
                return Err(bad(span, "this group holds no trained weight")
                    .label("no weight's name matches first here")
                    .note("patterns match checkpoint names (`archc check` lists them); `*` matches dots too"));
            }
        }
        self.graph.training = Some(t);
        Ok(())
    }

    /// The output `loss` names, or `loss` for an expression (made an output for training).
    fn train_loss(&mut self, e: &Expr, for_training: bool) -> Result<String, Diagnostic> {
        if let ExprKind::Name(n) = &e.kind {
            if self.graph.outputs.contains_key(n) {
                return Ok(n.clone());
            }
        }
        if self.graph.outputs.contains_key("loss") {
            return Err(bad(
                e.span,
                "this loss would be output `loss`, which the model already declares",
            )
            .label("name an output, or compute the loss here")
            .note("write `loss = loss` to minimise the declared output"));
        }
        // Elaborated either way, so that `archc check` reports a bad loss; only training
        // keeps its nodes (`archc run` does not compute it).
        let saved = (!for_training).then(|| self.graph.clone());
        let v = self.eval(e)?;
        let n = self.expect_tensor(&v, e.span, "a loss")?;
        if !self.graph.ty(n).dtype.is_float() {
            return Err(bad(
                e.span,
                format!("a loss is a float tensor, found {}", self.graph.ty(n)),
            )
            .label("not a float"));
        }
        match saved {
            Some(graph) => self.graph = graph,
            None => {
                self.graph.outputs.insert("loss".to_string(), n);
            }
        }
        Ok("loss".to_string())
    }

    /// A constructor call `name(args)` of the section, with `name` among `known`.
    fn constructor(
        &mut self,
        e: &Expr,
        what: &str,
        known: &[&str],
    ) -> Result<(String, CallArgs), Diagnostic> {
        let (name, args) = match &e.kind {
            ExprKind::Call(f, args) => match &f.kind {
                ExprKind::Name(n) if known.contains(&n.as_str()) => (n.clone(), args),
                _ => {
                    return Err(bad(
                        f.span,
                        format!("{what} is one of: {}", known.join(", ")),
                    ))
                }
            },
            _ => {
                return Err(bad(
                    e.span,
                    format!("{what} is a call of one of: {}", known.join(", ")),
                )
                .label(format!("e.g. `{}(...)`", known[0])))
            }
        };
        let ca = self.eval_args(name.clone(), args, e.span)?;
        Ok((name, ca))
    }

    fn optimizer_spec(&mut self, e: &Expr) -> Result<OptimizerSpec, Diagnostic> {
        let (name, ca) = self.constructor(e, "the optimizer", &["adamw", "sgd"])?;
        if name == "sgd" {
            let mut b = ca.bind(&["lr", "momentum", "weight_decay"])?;
            let lr = opt_number(&mut b, "lr", 1e-3, Range::Positive)?;
            let momentum = opt_number(&mut b, "momentum", 0.0, Range::Fraction)?;
            let weight_decay = opt_number(&mut b, "weight_decay", 0.0, Range::NonNegative)?;
            return Ok(OptimizerSpec {
                kind: Optimizer::Sgd { momentum },
                lr,
                weight_decay,
            });
        }
        let mut b = ca.bind(&["lr", "betas", "eps", "weight_decay"])?;
        let lr = opt_number(&mut b, "lr", 1e-3, Range::Positive)?;
        let (beta1, beta2) = match b.opt("betas") {
            None => (0.9, 0.999),
            Some((Value::List(v), s)) if v.len() == 2 => (
                in_range(v[0].clone(), s, "`betas`", Range::Fraction)?,
                in_range(v[1].clone(), s, "`betas`", Range::Fraction)?,
            ),
            Some((o, s)) => {
                return Err(bad(
                    s,
                    format!("`betas` is a list of two numbers, found {}", o.describe()),
                ))
            }
        };
        let eps = opt_number(&mut b, "eps", 1e-8, Range::Positive)?;
        let weight_decay = opt_number(&mut b, "weight_decay", 0.01, Range::NonNegative)?;
        Ok(OptimizerSpec {
            kind: Optimizer::AdamW { beta1, beta2, eps },
            lr,
            weight_decay,
        })
    }

    fn schedule_spec(&mut self, e: &Expr) -> Result<ScheduleSpec, Diagnostic> {
        let (name, ca) = self.constructor(e, "the schedule", &["constant", "cosine"])?;
        let mut b = ca.bind(&["warmup"])?;
        let warmup = match b.opt("warmup") {
            None => 0,
            Some((Value::Int(w), _)) if w >= 0 => w as u64,
            Some((o, s)) => {
                return Err(bad(
                    s,
                    format!("`warmup` is a number of steps ≥ 0, found {}", o.describe()),
                ))
            }
        };
        Ok(ScheduleSpec {
            warmup,
            cosine: name == "cosine",
        })
    }

    /// `[group("pattern", ..., lr_scale = 1.0, weight_decay = d, frozen = false), ...]`, with
    /// each group's span.
    fn groups(&mut self, e: &Expr) -> Result<(Vec<ParamGroup>, Vec<Span>), Diagnostic> {
        let ExprKind::List(items) = &e.kind else {
            return Err(bad(e.span, "`groups` is a list of `group(...)` calls")
                .label("write `[group(\"*.bias\", weight_decay = 0.0)]`"));
        };
        let mut groups = Vec::new();
        for item in items {
            let (_, mut ca) = self.constructor(item, "a parameter group", &["group"])?;
            let mut patterns = Vec::new();
            for (v, s) in std::mem::take(&mut ca.positional) {
                match v {
                    Value::Str(p) if !p.is_empty() => patterns.push(p),
                    o => {
                        return Err(bad(
                            s,
                            format!(
                                "a group's patterns are non-empty strings, found {}",
                                o.describe()
                            ),
                        ))
                    }
                }
            }
            if patterns.is_empty() {
                return Err(bad(item.span, "a group needs at least one name pattern")
                    .label("e.g. `group(\"*.bias\", weight_decay = 0.0)`"));
            }
            let names = ["lr_scale", "weight_decay", "frozen"];
            if let Some((n, s, _, _)) = ca.named.iter().find(|a| !names.contains(&a.0.as_str())) {
                return Err(unknown_keyword("group", n, *s, names.iter().copied()));
            }
            let mut b = ca.bind(&names)?;
            let lr_scale = opt_number(&mut b, "lr_scale", 1.0, Range::NonNegative)?;
            let weight_decay = match b.opt("weight_decay") {
                Some((v, s)) => Some(in_range(v, s, "`weight_decay`", Range::NonNegative)?),
                None => None,
            };
            let frozen = match b.opt("frozen") {
                None => false,
                Some((Value::Bool(f), _)) => f,
                Some((o, s)) => {
                    return Err(bad(
                        s,
                        format!("`frozen` is a bool, found {}", o.describe()),
                    ))
                }
            };
            groups.push(ParamGroup {
                patterns,
                lr_scale,
                weight_decay,
                frozen,
            });
        }
        Ok((groups, items.iter().map(|i| i.span).collect()))
    }
}

/// Where a hyperparameter must lie.
#[derive(Clone, Copy)]
enum Range {
    /// > 0.
    Positive,
    /// ≥ 0.
    NonNegative,
    /// In [0, 1).
    Fraction,
}

fn opt_number(b: &mut Bound, arg: &str, default: f64, range: Range) -> Result<f64, Diagnostic> {
    match b.opt(arg) {
        Some((v, s)) => in_range(v, s, &format!("`{arg}`"), range),
        None => Ok(default),
    }
}

fn positive(v: Value, at: Span, what: &str) -> Result<f64, Diagnostic> {
    in_range(v, at, what, Range::Positive)
}

/// A finite number within `range`.
fn in_range(v: Value, at: Span, what: &str, range: Range) -> Result<f64, Diagnostic> {
    let x = match v {
        Value::Int(i) => i as f64,
        Value::Float(f) => f,
        o => {
            return Err(bad(
                at,
                format!("{what} is a number, found {}", o.describe()),
            ))
        }
    };
    let (ok, want) = match range {
        Range::Positive => (x > 0.0, "> 0"),
        Range::NonNegative => (x >= 0.0, "≥ 0"),
        Range::Fraction => ((0.0..1.0).contains(&x), "in [0, 1)"),
    };
    if !ok || !x.is_finite() {
        return Err(bad(at, format!("{what} must be {want}, found {x}")));
    }
    Ok(x)
}
