//! Binding call arguments to parameter names, with the errors users hit most.

use crate::syntax::{Diagnostic, Span};

use archc_runtime::DType;

use crate::graph::Dim;

use super::builtins::kind_error;
use super::value::Value;
use super::Elab;

/// Evaluated arguments of one call.
pub struct CallArgs {
    /// What is being called, for messages.
    pub callee: String,
    /// The whole call.
    pub span: Span,
    /// Positional arguments in order.
    pub positional: Vec<(Value, Span)>,
    /// Keyword arguments in order: name, name span, value, value span.
    pub named: Vec<(String, Span, Value, Span)>,
}

/// Arguments bound to a fixed list of parameter names.
pub struct Bound {
    callee: String,
    span: Span,
    slots: Vec<(&'static str, Option<(Value, Span)>)>,
}

impl CallArgs {
    /// Binds the arguments to `names` (positional first, then keywords). Unknown keywords,
    /// surplus positionals and repeated arguments are errors.
    pub fn bind(self, names: &[&'static str]) -> Result<Bound, Diagnostic> {
        let mut slots: Vec<(&'static str, Option<(Value, Span)>)> =
            names.iter().map(|n| (*n, None)).collect();
        if self.positional.len() > names.len() {
            let (_, extra) = &self.positional[names.len()];
            return Err(arity_error(
                &self.callee,
                names,
                self.positional.len(),
                *extra,
            ));
        }
        for (i, v) in self.positional.into_iter().enumerate() {
            slots[i].1 = Some(v);
        }
        for (name, name_span, v, vs) in self.named {
            let Some(slot) = slots.iter_mut().find(|(n, _)| *n == name) else {
                return Err(unknown_keyword(
                    &self.callee,
                    &name,
                    name_span,
                    names.iter().copied(),
                ));
            };
            if slot.1.is_some() {
                return Err(Diagnostic::new(
                    "E0106",
                    name_span,
                    format!("argument `{name}` of `{}` is given twice", self.callee),
                )
                .label("given again here"));
            }
            slot.1 = Some((v, vs));
        }
        Ok(Bound {
            callee: self.callee,
            span: self.span,
            slots,
        })
    }
}

impl Bound {
    /// The span of the whole call.
    pub fn span(&self) -> Span {
        self.span
    }

    /// A required argument. An explicit `none` is refused as such, not reported as missing.
    pub fn req(&mut self, name: &str) -> Result<(Value, Span), Diagnostic> {
        if let Some((_, Some((Value::None, at)))) = self.slots.iter().find(|(n, _)| *n == name) {
            return Err(Diagnostic::new(
                "E0111",
                *at,
                format!(
                    "argument `{name}` of `{}` is `none`, but `{}` needs a value for it",
                    self.callee, self.callee
                ),
            )
            .label("`none` is not a value here"));
        }
        self.opt(name).ok_or_else(|| {
            Diagnostic::new(
                "E0105",
                self.span,
                format!("`{}` needs the argument `{name}`", self.callee),
            )
            .label("missing argument")
        })
    }

    /// An optional argument (`none` counts as absent).
    pub fn opt(&mut self, name: &str) -> Option<(Value, Span)> {
        let slot = self.slots.iter_mut().find(|(n, _)| *n == name)?;
        match slot.1.take() {
            Some((Value::None, _)) | None => None,
            v => v,
        }
    }
}

/// Too many positional arguments.
pub fn arity_error(callee: &str, names: &[&str], given: usize, at: Span) -> Diagnostic {
    Diagnostic::new(
        "E0103",
        at,
        format!(
            "`{callee}` takes at most {} positional argument{} ({}), but {given} were given",
            names.len(),
            if names.len() == 1 { "" } else { "s" },
            names.join(", ")
        ),
    )
    .label("unexpected argument")
}

/// A keyword the callee does not have, with the closest real one as a hint.
pub fn unknown_keyword<'a>(
    callee: &str,
    name: &str,
    at: Span,
    names: impl Iterator<Item = &'a str> + Clone,
) -> Diagnostic {
    let mut d = Diagnostic::new(
        "E0104",
        at,
        format!("`{callee}` has no argument named `{name}`"),
    )
    .label("unknown keyword");
    if let Some(best) = closest(name, names.clone()) {
        d = d.note(format!("did you mean `{best}`?"));
    }
    let all: Vec<&str> = names.collect();
    d.note(format!("its arguments are: {}", all.join(", ")))
}

pub use archc_runtime::spelling::closest;

/// Typed arguments of built-ins: each wrong kind is a located E0111 naming the argument.
impl Elab<'_> {
    /// A required integer argument.
    pub(super) fn req_int(
        &self,
        b: &mut Bound,
        callee: &str,
        arg: &str,
    ) -> Result<(i64, Span), Diagnostic> {
        match b.req(arg)? {
            (Value::Int(v), s) => Ok((v, s)),
            (o, s) => Err(kind_error(callee, arg, "an integer", &o, s)),
        }
    }

    /// An optional integer argument, `default` when absent.
    pub(super) fn opt_int(
        &self,
        b: &mut Bound,
        callee: &str,
        arg: &str,
        default: i64,
    ) -> Result<(i64, Span), Diagnostic> {
        match b.opt(arg) {
            Some((Value::Int(v), s)) => Ok((v, s)),
            Some((o, s)) => Err(kind_error(callee, arg, "an integer", &o, s)),
            None => Ok((default, b.span())),
        }
    }

    /// An optional bool argument, `default` when absent.
    pub(super) fn opt_bool(
        &self,
        b: &mut Bound,
        callee: &str,
        arg: &str,
        default: bool,
    ) -> Result<bool, Diagnostic> {
        match b.opt(arg) {
            Some((Value::Bool(v), _)) => Ok(v),
            Some((o, s)) => Err(kind_error(callee, arg, "a bool", &o, s)),
            None => Ok(default),
        }
    }

    /// A required dim (an integer or a symbolic dim).
    pub(super) fn req_dim(
        &self,
        b: &mut Bound,
        callee: &str,
        arg: &str,
    ) -> Result<Dim, Diagnostic> {
        let (v, s) = b.req(arg)?;
        v.as_dim()
            .ok_or_else(|| kind_error(callee, arg, "a dim", &v, s))
    }

    /// The required argument `dtype`.
    pub(super) fn req_dtype(&self, b: &mut Bound, callee: &str) -> Result<DType, Diagnostic> {
        match b.req("dtype")? {
            (Value::DType(d), _) => Ok(d),
            (o, s) => Err(kind_error(callee, "dtype", "a dtype", &o, s)),
        }
    }
}
