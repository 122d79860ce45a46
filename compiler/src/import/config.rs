//! Typed access to `config.json` fields, with errors that name the field.

use serde_json::{Map, Value};

/// Why a config cannot be imported: which file, which field, what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {}{message}", if .field.is_empty() { String::new() } else { format!("field `{}`: ", .field) })]
pub struct ImportError {
    /// The config file.
    pub file: String,
    /// The offending field (empty for file-level errors).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// A config object and the file it came from.
pub struct Cfg<'a> {
    map: &'a Map<String, Value>,
    source: &'a str,
}

impl<'a> Cfg<'a> {
    /// Wraps a parsed config, which must be a JSON object.
    pub fn new(v: &'a Value, source: &'a str) -> Result<Cfg<'a>, ImportError> {
        match v.as_object() {
            Some(map) => Ok(Cfg { map, source }),
            None => Err(ImportError {
                file: source.to_string(),
                field: String::new(),
                message: "a config.json holds one JSON object".into(),
            }),
        }
    }

    /// An error about `field`.
    pub fn error(&self, field: &str, message: impl Into<String>) -> ImportError {
        ImportError {
            file: self.source.to_string(),
            field: field.to_string(),
            message: message.into(),
        }
    }

    fn get(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    /// Whether the field is present and not null.
    pub fn has(&self, field: &str) -> bool {
        self.get(field).is_some()
    }

    /// A required positive integer.
    pub fn int(&self, field: &str) -> Result<i64, ImportError> {
        match self.get(field) {
            None => Err(self.error(field, "is required")),
            Some(v) => match v.as_i64() {
                Some(i) if i > 0 => Ok(i),
                _ => Err(self.error(field, format!("must be a positive integer, found {v}"))),
            },
        }
    }

    /// An optional positive integer.
    pub fn int_or(&self, field: &str, default: i64) -> Result<i64, ImportError> {
        if self.has(field) {
            self.int(field)
        } else {
            Ok(default)
        }
    }

    /// An optional non-negative integer (offsets, indices).
    pub fn index_or(&self, field: &str, default: i64) -> Result<i64, ImportError> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => v.as_i64().filter(|i| *i >= 0).ok_or_else(|| {
                self.error(field, format!("must be a non-negative integer, found {v}"))
            }),
        }
    }

    /// A required number.
    pub fn float(&self, field: &str) -> Result<f64, ImportError> {
        match self.get(field) {
            None => Err(self.error(field, "is required")),
            Some(v) => v
                .as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| self.error(field, format!("must be a number, found {v}"))),
        }
    }

    /// An optional number.
    pub fn float_or(&self, field: &str, default: f64) -> Result<f64, ImportError> {
        if self.has(field) {
            self.float(field)
        } else {
            Ok(default)
        }
    }

    /// An optional boolean.
    pub fn bool_or(&self, field: &str, default: bool) -> Result<bool, ImportError> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.error(field, format!("must be true or false, found {v}"))),
        }
    }

    /// A required string.
    pub fn str(&self, field: &str) -> Result<String, ImportError> {
        match self.get(field) {
            None => Err(self.error(field, "is required")),
            Some(v) => v
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| self.error(field, format!("must be a string, found {v}"))),
        }
    }

    /// An optional string.
    pub fn str_or(&self, field: &str, default: &str) -> Result<String, ImportError> {
        if self.has(field) {
            self.str(field)
        } else {
            Ok(default.to_string())
        }
    }

    /// A list of non-negative integers.
    pub fn int_list(&self, field: &str) -> Result<Vec<i64>, ImportError> {
        let bad = || self.error(field, "must be a list of layer indices");
        self.get(field)
            .ok_or_else(|| self.error(field, "is required"))?
            .as_array()
            .ok_or_else(bad)?
            .iter()
            .map(|v| v.as_i64().filter(|i| *i >= 0).ok_or_else(bad))
            .collect()
    }

    /// A list of strings.
    pub fn str_list(&self, field: &str) -> Result<Vec<String>, ImportError> {
        let bad = || self.error(field, "must be a list of strings");
        self.get(field)
            .ok_or_else(|| self.error(field, "is required"))?
            .as_array()
            .ok_or_else(bad)?
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(bad))
            .collect()
    }

    /// Fails unless the field is absent or equal to `expected` (an option archc does not
    /// implement otherwise).
    pub fn expect(&self, field: &str, expected: Value) -> Result<(), ImportError> {
        match self.get(field) {
            Some(v) if *v != expected => Err(self.error(
                field,
                format!("is {v}, but archc only supports {expected} for this family"),
            )),
            _ => Ok(()),
        }
    }

    /// The rope θ and rotary fraction, from `rope_parameters` (transformers 5) or the older
    /// top-level `rope_theta` / `rope_scaling` / `partial_rotary_factor`.
    pub fn rope(&self, default_fraction: f64) -> Result<(f64, f64), ImportError> {
        if let Some(p) = self.get("rope_parameters") {
            let sub = Cfg::new(p, self.source)
                .map_err(|_| self.error("rope_parameters", "must be an object"))?;
            let kind = sub.str_or("rope_type", "default")?;
            if kind != "default" {
                return Err(self.error(
                    "rope_parameters",
                    format!("rope_type `{kind}` is not supported (only default)"),
                ));
            }
            let theta = sub.float_or("rope_theta", 10000.0)?;
            let frac = sub.float_or(
                "partial_rotary_factor",
                self.float_or("partial_rotary_factor", default_fraction)?,
            )?;
            return Ok((theta, frac));
        }
        if let Some(s) = self.get("rope_scaling") {
            return Err(self.error("rope_scaling", format!("rope scaling {s} is not supported")));
        }
        Ok((
            self.float_or("rope_theta", 10000.0)?,
            self.float_or("partial_rotary_factor", default_fraction)?,
        ))
    }

    /// The lower Δ limit of Mamba-2's `time_step_limit`; the upper one must be infinite.
    pub fn dt_floor(&self, field: &str) -> Result<f64, ImportError> {
        let Some(v) = self.get(field) else {
            return Ok(0.0);
        };
        let bad = || {
            self.error(
                field,
                format!("must be [min, max] with max infinite, found {v}"),
            )
        };
        let pair = v.as_array().filter(|a| a.len() == 2).ok_or_else(bad)?;
        let min = pair[0].as_f64().ok_or_else(bad)?;
        let infinite = match &pair[1] {
            Value::Object(o) => o.get("__float__").and_then(Value::as_str) == Some("Infinity"),
            Value::String(s) => s == "Infinity" || s == "inf",
            Value::Number(n) => n.as_f64().is_some_and(|f| f.is_infinite() || f > 1e30),
            _ => false,
        };
        if !infinite {
            return Err(self.error(
                field,
                format!("an upper Δ limit {} is not supported", pair[1]),
            ));
        }
        Ok(min)
    }
}
