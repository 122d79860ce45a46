//! Block calls: binding arguments to parameters, the callee's frame and weight scope (a
//! `shared` instance keeps its own), recursion and depth checks, and running the body.

use std::collections::HashMap;

use crate::syntax::ast::*;
use crate::syntax::{Diagnostic, Span};

use super::value::{BlockValue, Value};
use super::{args, join, Elab, Frame, MAX_CALL_DEPTH};

impl Elab<'_> {
    /// Calls a block value with evaluated arguments under `scope` (relative to the caller's).
    pub(super) fn call_block(
        &mut self,
        b: &BlockValue,
        args: args::CallArgs,
        scope: Option<(String, Span)>,
    ) -> Result<Value, Diagnostic> {
        let def = b.def.clone();
        if self.frames.iter().skip(1).any(|f| f.block == def.name.name) {
            return Err(Diagnostic::new(
                "E0108",
                args.span,
                format!(
                    "block `{}` calls itself; blocks cannot be recursive",
                    def.name.name
                ),
            )
            .label("recursive call")
            .note("use `stack` to repeat a block"));
        }
        if self.frames.len() > MAX_CALL_DEPTH {
            return Err(Diagnostic::new(
                "E0108",
                args.span,
                "block calls nest too deeply",
            ));
        }
        let names: Vec<&str> = def.params.iter().map(|p| p.name.name.as_str()).collect();
        if args.positional.len() > names.len() {
            let at = args.positional[names.len()].1;
            return Err(args::arity_error(
                &def.name.name,
                &names,
                args.positional.len(),
                at,
            ));
        }
        let caller = self.frames.last().expect("model frame");
        let (new_scope, shared, ema) = match (&b.instance, scope) {
            (Some(_), Some((_, span))) => {
                return Err(Diagnostic::new(
                    "E0111",
                    span,
                    "a `shared` instance keeps the weight scope it was declared with",
                )
                .label("remove this scope"))
            }
            (Some(i), None) => (
                i.scope.clone(),
                true,
                i.ema
                    .as_ref()
                    .map(|(online, m)| (i.scope.clone(), online.clone(), *m)),
            ),
            (None, s) => (
                join(&caller.scope, &s.map(|s| s.0).unwrap_or_default()),
                caller.shared,
                caller.ema.clone(),
            ),
        };
        let mut vars: HashMap<String, Value> = HashMap::new();
        let mut given: HashMap<String, Span> = HashMap::new();
        for (k, v) in &b.bound {
            vars.insert(k.clone(), v.clone());
        }
        for (i, (v, sp)) in args.positional.into_iter().enumerate() {
            given.insert(names[i].to_string(), sp);
            vars.insert(names[i].to_string(), v);
        }
        for (k, ks, v, _) in args.named {
            if !names.contains(&k.as_str()) {
                return Err(args::unknown_keyword(
                    &def.name.name,
                    &k,
                    ks,
                    names.iter().copied(),
                ));
            }
            if given.insert(k.clone(), ks).is_some() {
                return Err(Diagnostic::new(
                    "E0106",
                    ks,
                    format!("argument `{k}` of `{}` is given twice", def.name.name),
                )
                .label("given again here"));
            }
            vars.insert(k, v);
        }
        self.frames.push(Frame {
            block: def.name.name.clone(),
            vars,
            scope: new_scope,
            shared,
            ema,
            call: Some(args.span),
        });
        let call = args.span;
        let instance = b.instance.is_some();
        if instance {
            self.instance_calls.push(Default::default());
        }
        let result = self.run_block(&def, call);
        if instance {
            self.instance_calls.pop();
        }
        self.frames.pop();
        result.map_err(|d| d.called_from(&def.name.name, call))
    }

    fn run_block(&mut self, def: &BlockDef, call: Span) -> Result<Value, Diagnostic> {
        for p in &def.params {
            if self.frame().vars.contains_key(&p.name.name) {
                continue;
            }
            match &p.default {
                Some(d) => {
                    let v = self.eval(d)?;
                    self.frame().vars.insert(p.name.name.clone(), v);
                }
                None => {
                    return Err(Diagnostic::new(
                        "E0105",
                        call,
                        format!("`{}` needs the argument `{}`", def.name.name, p.name.name),
                    )
                    .label("missing argument"))
                }
            }
        }
        match self.stmts(&def.body)? {
            Some((v, _)) => Ok(v),
            None => Err(Diagnostic::new(
                "E0109",
                def.name.span,
                format!("block `{}` ends without `return`", def.name.name),
            )
            .label("every block returns a value")),
        }
    }
}
