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
}

fn show(dtype: DType, shape: &[Dim]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("{dtype}[{}]", dims.join(", "))
}

/// Binds `symbols` from the inputs' shapes (and `explicit` values), then checks that every
/// declared input is given with a fitting dtype and exactly its declared shape.
pub fn bind_dims(
    declared: &[(&str, DType, &[Dim])],
    symbols: &[String],
    inputs: &HashMap<String, Tensor>,
    explicit: &HashMap<String, i64>,
) -> Result<HashMap<String, i64>, BindError> {
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
    }
    Ok(dims)
}
