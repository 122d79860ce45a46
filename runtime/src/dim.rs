//! Symbolic dimensions: integer polynomials in named symbols (`batch`, `seq + 3`, `2*seq`).
//!
//! A polynomial normal form makes equality structural, so `seq + 3 - 1` and `seq + 2` are the
//! same dim, and products like `batch*seq` from a reshape compare equal to each other.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// A dimension: a constant, a symbol, or a polynomial in symbols with integer coefficients.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Dim {
    /// Monomial (sorted symbol names; empty for the constant term) → non-zero coefficient.
    #[serde(with = "terms_as_list")]
    terms: Arc<BTreeMap<Vec<String>, i64>>,
}

/// JSON maps need string keys, so the terms travel as a list of (monomial, coefficient).
mod terms_as_list {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        t: &Arc<BTreeMap<Vec<String>, i64>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        t.iter().collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Arc<BTreeMap<Vec<String>, i64>>, D::Error> {
        Ok(Arc::new(
            Vec::<(Vec<String>, i64)>::deserialize(d)?
                .into_iter()
                .filter(|(_, c)| *c != 0)
                .collect(),
        ))
    }
}

impl Dim {
    /// A constant dim.
    pub fn constant(v: i64) -> Dim {
        let mut terms = BTreeMap::new();
        if v != 0 {
            terms.insert(Vec::new(), v);
        }
        Dim {
            terms: Arc::new(terms),
        }
    }

    /// A named symbolic dim.
    pub fn symbol(name: &str) -> Dim {
        Dim {
            terms: Arc::new(BTreeMap::from([(vec![name.to_string()], 1)])),
        }
    }

    /// The value, if the dim is a constant.
    pub fn as_const(&self) -> Option<i64> {
        match self.terms.len() {
            0 => Some(0),
            1 => self.terms.get(&Vec::new()).copied(),
            _ => None,
        }
    }

    /// The terms: (sorted symbols of a monomial, coefficient); the constant term has none.
    pub fn terms(&self) -> impl Iterator<Item = (&[String], i64)> {
        self.terms.iter().map(|(m, c)| (m.as_slice(), *c))
    }

    /// Every symbol the dim mentions.
    pub fn symbols(&self) -> impl Iterator<Item = &str> {
        self.terms.keys().flatten().map(String::as_str)
    }

    /// Checked sum (None on overflow).
    pub fn add(&self, other: &Dim) -> Option<Dim> {
        let mut terms = (*self.terms).clone();
        for (m, c) in other.terms.iter() {
            let e = terms.entry(m.clone()).or_insert(0);
            *e = e.checked_add(*c)?;
            if *e == 0 {
                terms.remove(m);
            }
        }
        Some(Dim {
            terms: Arc::new(terms),
        })
    }

    /// Checked difference.
    pub fn sub(&self, other: &Dim) -> Option<Dim> {
        self.add(&other.scale(-1)?)
    }

    /// Checked product.
    pub fn mul(&self, other: &Dim) -> Option<Dim> {
        let mut out = Dim::default();
        for (ma, ca) in self.terms.iter() {
            for (mb, cb) in other.terms.iter() {
                let mut m: Vec<String> = ma.iter().chain(mb).cloned().collect();
                m.sort();
                let term = Dim {
                    terms: Arc::new(BTreeMap::from([(m, ca.checked_mul(*cb)?)])),
                };
                out = out.add(&term)?;
            }
        }
        Some(out)
    }

    fn scale(&self, k: i64) -> Option<Dim> {
        self.mul(&Dim::constant(k))
    }

    /// Exact division by a constant or by one monomial (`batch*seq / seq`); None if inexact.
    pub fn div_exact(&self, divisor: &Dim) -> Option<Dim> {
        let (dm, dc) = match divisor.terms.iter().collect::<Vec<_>>().as_slice() {
            [(m, c)] => ((*m).clone(), **c),
            _ => return None,
        };
        let mut out = BTreeMap::new();
        for (m, c) in self.terms.iter() {
            if c % dc != 0 {
                return None;
            }
            let mut rest = m.clone();
            for s in &dm {
                let i = rest.iter().position(|r| r == s)?;
                rest.remove(i);
            }
            out.insert(rest, c / dc);
        }
        Some(Dim {
            terms: Arc::new(out),
        })
    }

    /// The value of the dim once its symbols are bound; None if a symbol is unbound or the
    /// arithmetic overflows.
    pub fn eval(&self, bindings: &dyn Fn(&str) -> Option<i64>) -> Option<i64> {
        self.terms.iter().try_fold(0i64, |acc, (m, c)| {
            let term = m.iter().try_fold(*c, |p, s| p.checked_mul(bindings(s)?))?;
            acc.checked_add(term)
        })
    }

    /// The single symbol this dim is, if it is exactly one symbol.
    pub fn as_symbol(&self) -> Option<&str> {
        match self.terms.iter().collect::<Vec<_>>().as_slice() {
            [(m, 1)] if m.len() == 1 => Some(m[0].as_str()),
            _ => None,
        }
    }

    /// The product of several dims (1 for none).
    pub fn product<'a>(dims: impl IntoIterator<Item = &'a Dim>) -> Option<Dim> {
        dims.into_iter()
            .try_fold(Dim::constant(1), |acc, d| acc.mul(d))
    }
}

impl From<i64> for Dim {
    fn from(v: i64) -> Dim {
        Dim::constant(v)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.terms.is_empty() {
            return f.write_str("0");
        }
        // Highest degree first, then by name; the constant last.
        let mut terms: Vec<_> = self.terms.iter().collect();
        terms.sort_by(|(a, _), (b, _)| b.len().cmp(&a.len()).then(a.cmp(b)));
        for (i, (m, c)) in terms.into_iter().enumerate() {
            let (neg, mag) = (*c < 0, c.unsigned_abs());
            match (i, neg) {
                (0, true) => f.write_str("-")?,
                (0, false) => {}
                (_, true) => f.write_str(" - ")?,
                (_, false) => f.write_str(" + ")?,
            }
            if m.is_empty() {
                write!(f, "{mag}")?;
            } else {
                if mag != 1 {
                    write!(f, "{mag}*")?;
                }
                f.write_str(&m.join("*"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_form_makes_equal_dims_equal() {
        let seq = Dim::symbol("seq");
        let a = seq.add(&3.into()).unwrap().sub(&1.into()).unwrap();
        assert_eq!(a, seq.add(&2.into()).unwrap());
        assert_eq!(a.to_string(), "seq + 2");
        let bs = Dim::symbol("batch").mul(&seq).unwrap();
        assert_eq!(bs.to_string(), "batch*seq");
        assert_eq!(bs.div_exact(&seq), Some(Dim::symbol("batch")));
        assert_eq!(Dim::constant(12).div_exact(&5.into()), None);
        assert_eq!(seq.sub(&seq).unwrap().as_const(), Some(0));
        assert_eq!(Dim::constant(4).mul(&seq).unwrap().to_string(), "4*seq");
        assert_eq!(Dim::constant(i64::MAX).add(&1.into()), None);
        let json = serde_json::to_string(&bs).unwrap();
        assert_eq!(serde_json::from_str::<Dim>(&json).unwrap(), bs);
    }
}
