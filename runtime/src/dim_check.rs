//! Conditions on the symbolic dims that types cannot prove for every binding: a slice that
//! must stay inside its axis, a shape like `seq - 4` that must stay positive. Elaboration records
//! one per condition, located in the source; every backend checks them once per run, right
//! after the dims are bound, so a bad binding is the same clear error everywhere instead of an
//! out-of-range read in one backend and a panic in another.

use std::collections::HashMap;

use crate::Dim;

/// `dim ≥ min` must hold once the dims are bound.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct DimCheck {
    /// The quantity checked.
    pub dim: Dim,
    /// Its least allowed value.
    pub min: i64,
    /// What it is and where it comes from, e.g. "the end of `slice` at m.arch:3:14 (`seq + 100`)
    /// must be at most the axis size (`seq`)".
    pub what: String,
}

impl DimCheck {
    /// Whether the check holds for every binding of the symbols to positive sizes: the
    /// polynomial's least value over positive integers is at least `min` when no coefficient
    /// of a non-constant term is negative, and then it is reached with every symbol at 1.
    pub fn always_holds(&self) -> bool {
        let mut at_ones = 0i64;
        for (monomial, c) in self.dim.terms() {
            if !monomial.is_empty() && c < 0 {
                return false;
            }
            at_ones = at_ones.saturating_add(c);
        }
        at_ones >= self.min
    }

    /// Whether the check fails for every binding: no coefficient of a non-constant term is
    /// positive, so the value is largest with every symbol at 1, and it is below `min` there.
    pub fn never_holds(&self) -> bool {
        let mut at_ones = 0i64;
        for (monomial, c) in self.dim.terms() {
            if !monomial.is_empty() && c > 0 {
                return false;
            }
            at_ones = at_ones.saturating_add(c);
        }
        at_ones < self.min
    }

    /// Checks the condition for bound dims; the error says what failed and with which dims.
    pub fn check(&self, dims: &HashMap<String, i64>) -> Result<(), crate::BindError> {
        let value = self.dim.eval(&|s| dims.get(s).copied());
        match value {
            Some(v) if v >= self.min => Ok(()),
            _ => {
                let mut bound: Vec<String> = self
                    .dim
                    .symbols()
                    .map(|s| match dims.get(s) {
                        Some(v) => format!("{s}={v}"),
                        None => format!("{s} unbound"),
                    })
                    .collect();
                bound.sort();
                bound.dedup();
                Err(crate::BindError::DimCheck {
                    what: self.what.clone(),
                    value: value.map_or("undefined".to_string(), |v| v.to_string()),
                    dims: bound.join(", "),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(dim: Dim, min: i64) -> DimCheck {
        DimCheck {
            dim,
            min,
            what: "x".into(),
        }
    }

    #[test]
    fn proven_refuted_and_open_conditions() {
        let seq = Dim::symbol("seq");
        let one = Dim::constant(1);
        let four = Dim::constant(4);
        // seq + 1 ≥ 1 always; 1 - seq ≥ 1 never (0 at seq = 1); seq - 4 ≥ 1 depends on seq.
        assert!(check(seq.add(&one).expect("no overflow"), 1).always_holds());
        let refuted = check(one.sub(&seq).expect("no overflow"), 1);
        assert!(refuted.never_holds() && !refuted.always_holds());
        let open = check(seq.sub(&four).expect("no overflow"), 1);
        assert!(!open.always_holds() && !open.never_holds());
        let dims = |v: i64| HashMap::from([("seq".to_string(), v)]);
        assert!(open.check(&dims(5)).is_ok());
        let e = open.check(&dims(4)).expect_err("seq - 4 = 0 < 1");
        assert!(e.to_string().contains("seq=4"), "{e}");
    }
}
