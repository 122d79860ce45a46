//! Structure built-ins: `stack` (counts, patterns, per-layer rules), `every`, `at`, `ema`, `bind`.

use std::rc::Rc;

use crate::graph::{LayerSpan, StackInfo};
use crate::syntax::{Diagnostic, Span};

use super::args::{self, CallArgs};
use super::builtins::kind_error;
use super::value::{BlockValue, Instance, LayerRule, Value};
use super::Elab;

impl Elab<'_> {
    pub(super) fn structure(
        &mut self,
        name: &'static str,
        ca: CallArgs,
        scoped: bool,
    ) -> Result<Value, Diagnostic> {
        match name {
            "stack" => self.stack(ca),
            "every" | "at" => {
                let first = if name == "every" { "period" } else { "indices" };
                let names: &[&'static str] = if name == "every" {
                    &["period", "offset", "then", "otherwise"]
                } else {
                    &["indices", "then", "otherwise"]
                };
                let mut b = ca.bind(names)?;
                let (then, _) = b.req("then")?;
                let (other, _) = b.req("otherwise")?;
                let rule = if name == "every" {
                    let (period, ps) = self.req_int(&mut b, name, first)?;
                    let (offset, os) = self.opt_int(&mut b, name, "offset", 0)?;
                    if period <= 0 {
                        return Err(Diagnostic::new(
                            "E0303",
                            ps,
                            format!("a period must be positive, found {period}"),
                        ));
                    }
                    if !(0..period).contains(&offset) {
                        return Err(Diagnostic::new(
                            "E0303",
                            os,
                            format!("offset {offset} is outside 0..{period}"),
                        )
                        .label("the offset must be below the period"));
                    }
                    LayerRule::Every {
                        period,
                        offset,
                        then,
                        other,
                    }
                } else {
                    let (l, ls) = b.req(first)?;
                    let Value::List(items) = l else {
                        return Err(kind_error(name, first, "a list of layer indices", &l, ls));
                    };
                    let indices = items
                        .iter()
                        .map(|i| match i {
                            Value::Int(k) => Ok(*k),
                            o => Err(kind_error(name, first, "a list of layer indices", o, ls)),
                        })
                        .collect::<Result<_, _>>()?;
                    LayerRule::At {
                        indices,
                        then,
                        other,
                    }
                };
                Ok(Value::Rule(Rc::new(rule)))
            }
            "ema" => {
                let span = ca.span;
                let mut b = ca.bind(&["instance", "momentum", "end"])?;
                let (blk, bs) = b.req("instance")?;
                let (m, ms) = b.req("momentum")?;
                let end = b.opt("end");
                let online = match &blk {
                    Value::Block(BlockValue {
                        instance: Some(i), ..
                    }) if i.ema.is_none() => i.scope.clone(),
                    o => {
                        return Err(Diagnostic::new(
                            "E0304",
                            bs,
                            format!(
                                "`ema` copies a `shared` block instance, found {}",
                                o.describe()
                            ),
                        )
                        .label("not a shared instance")
                        .note("declare the online block with `shared name = block @scope` first"))
                    }
                };
                let momentum = ema_momentum(m, ms, false)?;
                let end = match end {
                    Some((e, es)) => ema_momentum(e, es, true)?,
                    None => momentum,
                };
                if !scoped {
                    return Err(Diagnostic::new(
                        "E0304",
                        span,
                        "an `ema` copy needs its own weight scope",
                    )
                    .label("add `@name` after the call"));
                }
                let Value::Block(mut bv) = blk else {
                    unreachable!("checked above")
                };
                bv.instance = Some(Rc::new(Instance {
                    scope: self.scope().to_string(),
                    ema: Some((online, (momentum, end))),
                }));
                Ok(Value::Block(bv))
            }
            "bind" => {
                let mut pos = ca.positional.into_iter();
                let Some((Value::Block(mut bv), _)) = pos.next() else {
                    return Err(Diagnostic::new(
                        "E0111",
                        ca.span,
                        "`bind` needs a block as its first argument",
                    ));
                };
                if let Some((_, s)) = pos.next() {
                    return Err(args::arity_error("bind", &["block"], 2, s));
                }
                let names: Vec<&str> = bv.def.params.iter().map(|p| p.name.name.as_str()).collect();
                for (k, ks, v, _) in ca.named {
                    if !names.contains(&k.as_str()) {
                        return Err(args::unknown_keyword(
                            &bv.def.name.name,
                            &k,
                            ks,
                            names.iter().copied(),
                        ));
                    }
                    bv.bound.push((k, v));
                }
                Ok(Value::Block(bv))
            }
            _ => unreachable!("every built-in name is handled"),
        }
    }

    fn stack(&mut self, ca: CallArgs) -> Result<Value, Diagnostic> {
        let span = ca.span;
        let mut pos = ca.positional.into_iter();
        let missing = |what: &str| {
            Diagnostic::new(
                "E0105",
                span,
                format!("`stack` needs the argument `{what}`"),
            )
            .label("missing argument")
        };
        let (mut x, _) = pos.next().ok_or_else(|| missing("x"))?;
        let (n, ns) = match pos.next() {
            Some((Value::Int(n), s)) => (n, s),
            Some((o, s)) => return Err(kind_error("stack", "layers", "an integer", &o, s)),
            None => return Err(missing("layers")),
        };
        if !(1..=4096).contains(&n) {
            return Err(Diagnostic::new(
                "E0303",
                ns,
                format!("a stack needs 1 to 4096 layers, found {n}"),
            )
            .label("bad layer count"));
        }
        let block = pos.next();
        if let Some((_, s)) = pos.next() {
            return Err(args::arity_error("stack", &["x", "layers", "block"], 4, s));
        }
        let mut pattern: Option<(String, Span)> = None;
        let mut per_layer: Vec<(String, Span, Value, Span)> = Vec::new();
        for (k, ks, v, vs) in ca.named {
            match k.as_str() {
                "pattern" => match v {
                    Value::Str(p) => pattern = Some((p, vs)),
                    o => return Err(kind_error("stack", "pattern", "a string", &o, vs)),
                },
                _ => per_layer.push((k, ks, v, vs)),
            }
        }
        for (k, _, v, vs) in &per_layer {
            if let Value::Rule(r) = v {
                if let LayerRule::At { indices, .. } = r.as_ref() {
                    if let Some(bad) = indices.iter().find(|&&i| i < 0 || i >= n) {
                        return Err(Diagnostic::new(
                            "E0303",
                            *vs,
                            format!("layer index {bad} in `{k}` is outside the stack's 0..{n}"),
                        )
                        .label("no such layer"));
                    }
                }
            }
        }
        // With a pattern, one-letter keywords bind the pattern's letters to blocks.
        let mut letters: Vec<(char, Value)> = Vec::new();
        if let Some((p, ps)) = &pattern {
            per_layer.retain(|(k, _, v, _)| {
                let mut cs = k.chars();
                match (cs.next(), cs.next()) {
                    (Some(c), None) if c.is_ascii_uppercase() => {
                        letters.push((c, v.clone()));
                        false
                    }
                    _ => true,
                }
            });
            if p.is_empty() {
                return Err(Diagnostic::new(
                    "E0302",
                    *ps,
                    "a stack pattern cannot be empty",
                ));
            }
            for c in p.chars() {
                if !letters.iter().any(|(l, _)| *l == c) {
                    let bound: Vec<String> = letters.iter().map(|(l, _)| l.to_string()).collect();
                    return Err(Diagnostic::new(
                        "E0301",
                        *ps,
                        format!("pattern letter `{c}` is not bound to a block"),
                    )
                    .label("unbound letter")
                    .note(format!(
                        "bind it with `{c} = some_block`; bound letters: {}",
                        if bound.is_empty() {
                            "none".into()
                        } else {
                            bound.join(", ")
                        }
                    )));
                }
            }
            let len = p.chars().count() as i64;
            if n % len != 0 {
                return Err(Diagnostic::new(
                    "E0302",
                    *ps,
                    format!("the pattern has {len} letters, which does not divide {n} layers"),
                )
                .label("pattern length")
                .note(
                    "the pattern repeats to fill the stack; make the layer count a multiple of it",
                ));
            }
            if block.is_some() {
                return Err(Diagnostic::new(
                    "E0303",
                    span,
                    "give `stack` a block or a pattern, not both",
                ));
            }
        } else if block.is_none() {
            return Err(missing("block"));
        }
        // The call has already entered the stack's `@scope`; layer i adds `.i`.
        let stack_scope = self.scope().to_string();
        let mut kinds = Vec::new();
        let mut spans = Vec::new();
        for i in 0..n {
            let (b, bs) = match (&pattern, &block) {
                (Some((p, ps)), _) => {
                    let c = p
                        .chars()
                        .nth((i as usize) % p.chars().count())
                        .unwrap_or('?');
                    let v = letters
                        .iter()
                        .find(|(l, _)| *l == c)
                        .map(|(_, v)| v.clone());
                    (v.unwrap_or(Value::None), *ps)
                }
                (None, Some((v, s))) => (v.clone(), *s),
                (None, None) => unreachable!("checked above"),
            };
            let Value::Block(bv) = b else {
                return Err(kind_error("stack", "block", "a block", &b, bs));
            };
            let mut named = Vec::new();
            let mut kind_args = Vec::new();
            for (k, ks, v, vs) in &per_layer {
                let (v, varies) = match v {
                    Value::Rule(r) => (r.resolve(i).clone(), true),
                    v => (v.clone(), false),
                };
                // Blocks, and anything chosen per layer by a rule, tell layer kinds apart.
                if varies || matches!(v, Value::Block(_)) {
                    kind_args.push(format!("{k}={}", v.describe()));
                }
                named.push((k.clone(), *ks, v, *vs));
            }
            kinds.push(if kind_args.is_empty() {
                bv.describe()
            } else {
                format!("{}({})", bv.describe(), kind_args.join(", "))
            });
            let layer_scope = (i.to_string(), span);
            let input = x.clone();
            let args = CallArgs {
                callee: bv.def.name.name.clone(),
                span,
                positional: vec![(x, span)],
                named,
            };
            let start = self.graph.dag.node_count();
            x = self.call_block(&bv, args, Some(layer_scope))?;
            if let (Value::Tensor(input), Value::Tensor(output)) = (input, &x) {
                spans.push(LayerSpan {
                    start,
                    end: self.graph.dag.node_count(),
                    input,
                    output: *output,
                });
            }
        }
        // Layers that carry something other than one tensor have no spans, and stay unrolled.
        if spans.len() != kinds.len() {
            spans.clear();
        }
        self.graph.stacks.push(StackInfo {
            scope: stack_scope,
            layers: kinds,
            spans,
        });
        Ok(x)
    }
}

/// An EMA momentum: a float in (0, 1), or for the `end` of the schedule in (0, 1] (I-JEPA
/// ends at 1, the target frozen).
fn ema_momentum(v: Value, at: Span, end: bool) -> Result<f64, Diagnostic> {
    match v {
        Value::Float(f) if f > 0.0 && (f < 1.0 || (end && f == 1.0)) => Ok(f),
        Value::Int(1) if end => Ok(1.0),
        o => {
            let range = if end { "(0, 1]" } else { "(0, 1)" };
            Err(Diagnostic::new(
                "E0304",
                at,
                format!(
                    "an EMA momentum is a float in {range}, found {}",
                    o.describe()
                ),
            ))
        }
    }
}
