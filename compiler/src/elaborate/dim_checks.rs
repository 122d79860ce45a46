//! The conditions on symbolic dims a node needs: every size positive, a slice inside its axis.
//! Those that hold for every binding are dropped, those that hold for none are errors now, and
//! the rest become [`DimCheck`]s that every backend evaluates once the dims are bound.

use archc_runtime::{Dim, DimCheck};

use crate::graph::{Op, TensorType};
use crate::syntax::{Diagnostic, Span};

use super::Elab;

impl Elab<'_> {
    /// Records (or refuses, with a located error) the dim conditions of a node `op` at `span`
    /// whose first operand has type `input` and whose result has type `ty`.
    pub(super) fn check_dims(
        &mut self,
        op: &Op,
        input: Option<&TensorType>,
        ty: &TensorType,
        span: Span,
    ) -> Result<(), Diagnostic> {
        // Constant sizes count too: an empty tensor (a rotary dim of 0, a slice of nothing) is
        // a mistake in the model, which one backend or another would trip over.
        let mut conditions: Vec<(Dim, i64, String)> = ty
            .shape
            .iter()
            .map(|d| (d.clone(), 1, format!("the size `{d}` must be positive")))
            .collect();
        if let (Op::Slice { axis, start, end }, Some(x)) = (op, input) {
            let size = &x.shape[*axis];
            conditions.push((start.clone(), 0, format!("the start `{start}` must be ≥ 0")));
            if let Some(room) = size.sub(end) {
                conditions.push((
                    room,
                    0,
                    format!("the end `{end}` must be at most the axis size `{size}`"),
                ));
            }
        }
        for (dim, min, what) in conditions {
            let check = DimCheck {
                dim,
                min,
                what: format!("{what} (`{op}` at {})", self.origin_of(span)),
            };
            if check.always_holds() || !self.checked.insert((check.dim.clone(), min)) {
                continue;
            }
            if check.never_holds() {
                return Err(Diagnostic::new(
                    "E0208",
                    span,
                    format!("{what}, but it is not for any binding of the dims"),
                )
                .label("impossible size")
                .note(match check.dim.as_const() {
                    Some(v) => format!("it is {v}"),
                    None => format!("`{}` is never more than {}", check.dim, largest(&check.dim)),
                }));
            }
            self.graph.dim_checks.push(check);
        }
        Ok(())
    }
}

/// The value of a dim with every symbol at 1: its largest when no coefficient is positive.
fn largest(d: &Dim) -> i64 {
    d.terms().fold(0i64, |acc, (_, c)| acc.saturating_add(c))
}
