//! Binding symbolic dims from the shapes of the inputs, and checking every input against its
//! declaration.

use std::collections::HashMap;

use crate::{DType, Dim, Tensor};

/// Why inputs do not fit a model's declarations.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// An input the model declares was not given.
    #[error("input `{0}` is missing")]
    MissingInput(String),
    /// An input's dtype cannot stand for the declared one.
    #[error("input `{name}` has dtype {found}, but the model declares {expected}")]
    InputDType {
        /// The input.
        name: String,
        /// Declared dtype.
        expected: DType,
        /// Given dtype.
        found: DType,
    },
    /// An input's shape disagrees with its declaration or with another input.
    #[error("input `{name}` has shape {found:?}, but the model declares {declared}{detail}")]
    InputShape {
        /// The input.
        name: String,
        /// The declared type, printed.
        declared: String,
        /// The given shape.
        found: Vec<usize>,
        /// Which dim disagrees.
        detail: String,
    },
    /// A symbolic dim is not bound by any input or `--dim`, or is not positive.
    #[error(
        "dim `{0}` is not bound to a positive size: give an input that has it, or `--dim {0}=N`"
    )]
    UnboundDim(String),
    /// `--dim NAME=…` names no dim of the model.
    #[error("--dim {name}: the model has no dim `{name}`{hint}; {known}")]
    UnknownDim {
        /// The name given.
        name: String,
        /// ` (did you mean `seq`?)`, or nothing.
        hint: String,
        /// The dims the model has, in words.
        known: String,
    },
    /// An integer input holds a value its declared dtype cannot represent.
    #[error("input `{name}` holds {value}, which does not fit its declared dtype {expected}")]
    OutOfRange {
        /// The input.
        name: String,
        /// The first value that does not fit.
        value: i64,
        /// Declared dtype.
        expected: DType,
    },
    /// A condition on the dims (a slice inside its axis, a positive size) fails for these dims.
    #[error("{what}, but it is {value} with {dims}")]
    DimCheck {
        /// The condition and where it comes from.
        what: String,
        /// The value it has.
        value: String,
        /// The dims it was evaluated with.
        dims: String,
    },
}

/// Checks that every explicitly bound name is one of the model's `symbols`, suggesting the
/// closest one: a misspelt `--dim` would otherwise bind nothing and pass unnoticed.
pub fn check_dim_names<'a>(
    names: impl IntoIterator<Item = &'a String>,
    symbols: &[String],
) -> Result<(), BindError> {
    for name in names {
        if !symbols.contains(name) {
            let closest = crate::spelling::closest(name, symbols.iter().map(String::as_str));
            return Err(BindError::UnknownDim {
                name: name.clone(),
                hint: closest
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default(),
                known: if symbols.is_empty() {
                    "it has none".to_string()
                } else {
                    format!("its dims are {}", symbols.join(", "))
                },
            });
        }
    }
    Ok(())
}

fn show(dtype: DType, shape: &[Dim]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("{dtype}[{}]", dims.join(", "))
}

/// Binds `symbols` from the inputs' shapes (and `explicit` values), then checks that every
/// declared input is given with a fitting dtype and exactly its declared shape, and that every
/// condition in `checks` holds.
pub fn bind_dims(
    declared: &[(&str, DType, &[Dim])],
    symbols: &[String],
    checks: &[crate::DimCheck],
    inputs: &HashMap<String, Tensor>,
    explicit: &HashMap<String, i64>,
) -> Result<HashMap<String, i64>, BindError> {
    check_dim_names(explicit.keys(), symbols)?;
    let mut dims: HashMap<String, i64> = explicit.clone();
    for &(name, dtype, shape) in declared {
        let t = inputs
            .get(name)
            .ok_or_else(|| BindError::MissingInput(name.to_string()))?;
        let bad = |detail: String| BindError::InputShape {
            name: name.to_string(),
            declared: show(dtype, shape),
            found: t.shape.clone(),
            detail,
        };
        if t.shape.len() != shape.len() {
            return Err(bad(format!(
                " (rank {} instead of {})",
                t.shape.len(),
                shape.len()
            )));
        }
        for (d, &got) in shape.iter().zip(&t.shape) {
            if let Some(s) = d.as_symbol() {
                match dims.get(s) {
                    Some(&v) if v != got as i64 => {
                        return Err(bad(format!(" (`{s}` is {v} elsewhere, {got} here)")))
                    }
                    _ => {
                        dims.insert(s.to_string(), got as i64);
                    }
                }
            }
        }
    }
    for s in symbols {
        if dims.get(s).is_none_or(|&v| v <= 0) {
            return Err(BindError::UnboundDim(s.clone()));
        }
    }
    for &(name, dtype, shape) in declared {
        let t = &inputs[name];
        for (i, d) in shape.iter().enumerate() {
            let want = d.eval(&|s| dims.get(s).copied());
            if want != Some(t.shape[i] as i64) {
                return Err(BindError::InputShape {
                    name: name.to_string(),
                    declared: show(dtype, shape),
                    found: t.shape.clone(),
                    detail: format!(" (axis {i} should be {})", want.unwrap_or(-1)),
                });
            }
        }
        let fits = match dtype {
            d if d.is_float() => t.dtype.is_float(),
            d if d.is_int() => t.dtype.is_int(),
            _ => t.dtype == DType::Bool,
        };
        if !fits {
            return Err(BindError::InputDType {
                name: name.to_string(),
                expected: dtype,
                found: t.dtype,
            });
        }
        // i64 ids given for an i32 input must fit it: wrapping 2³² + 1 to 1 would run the
        // model on ids nobody gave.
        if let (DType::I32, crate::Data::I64(v)) = (dtype, &t.data) {
            if let Some(&bad) = v.iter().find(|&&x| i32::try_from(x).is_err()) {
                return Err(BindError::OutOfRange {
                    name: name.to_string(),
                    value: bad,
                    expected: dtype,
                });
            }
        }
    }
    for c in checks {
        c.check(&dims)?;
    }
    Ok(dims)
}
