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
    /// `parent.` for an object nested in the config (`rope_parameters.`), so that errors name
    /// the full path.
    prefix: String,
}

impl<'a> Cfg<'a> {
    /// Wraps a parsed config, which must be a JSON object.
    pub fn new(v: &'a Value, source: &'a str) -> Result<Cfg<'a>, ImportError> {
        match v.as_object() {
            Some(map) => Ok(Cfg {
                map,
                source,
                prefix: String::new(),
            }),
            None => Err(ImportError {
                file: source.to_string(),
                field: String::new(),
                message: "a config.json holds one JSON object".into(),
            }),
        }
    }

    /// The object `v` found at `parent`'s `field`; errors about its fields name
    /// `field.name`.
    pub fn nested(v: &'a Value, parent: &Cfg<'a>, field: &str) -> Result<Cfg<'a>, ImportError> {
        match v.as_object() {
            Some(map) => Ok(Cfg {
                map,
                source: parent.source,
                prefix: format!("{}{field}.", parent.prefix),
            }),
            None => Err(parent.error(field, format!("must be an object, found {v}"))),
        }
    }

    /// An error about `field`.
    pub fn error(&self, field: &str, message: impl Into<String>) -> ImportError {
        ImportError {
            file: self.source.to_string(),
            field: format!("{}{field}", self.prefix),
            message: message.into(),
        }
    }

    /// The field's value, when it is present and not null.
    pub fn value(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    /// Whether the field is present and not null.
    pub fn has(&self, field: &str) -> bool {
        self.value(field).is_some()
    }

    /// A required positive integer.
    pub fn int(&self, field: &str) -> Result<i64, ImportError> {
        match self.value(field) {
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
        match self.value(field) {
            None => Ok(default),
            Some(v) => v.as_i64().filter(|i| *i >= 0).ok_or_else(|| {
                self.error(field, format!("must be a non-negative integer, found {v}"))
            }),
        }
    }

    /// A required number.
    pub fn float(&self, field: &str) -> Result<f64, ImportError> {
        match self.value(field) {
            None => Err(self.error(field, "is required")),
            Some(v) => v
                .as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| self.error(field, format!("must be a number, found {v}"))),
        }
    }

    /// A required number above zero (a scaling factor).
    pub fn positive(&self, field: &str) -> Result<f64, ImportError> {
        let v = self.float(field)?;
        if v > 0.0 {
            Ok(v)
        } else {
            Err(self.error(field, format!("must be positive, found {v}")))
        }
    }

    /// An optional ε of a normalisation: above zero, or the square root it guards may be of
    /// zero.
    pub fn eps_or(&self, field: &str, default: f64) -> Result<f64, ImportError> {
        if self.has(field) {
            self.positive(field)
        } else {
            Ok(default)
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
        match self.value(field) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.error(field, format!("must be true or false, found {v}"))),
        }
    }

    /// A required string.
    pub fn str(&self, field: &str) -> Result<String, ImportError> {
        match self.value(field) {
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
        self.value(field)
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
        self.value(field)
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
        match self.value(field) {
            Some(v) if *v != expected => Err(self.error(
                field,
                format!("is {v}, but archc only supports {expected} for this family"),
            )),
            _ => Ok(()),
        }
    }

    /// The lower Δ limit of Mamba-2's `time_step_limit`; the upper one must be infinite.
    pub fn dt_floor(&self, field: &str) -> Result<f64, ImportError> {
        let Some(v) = self.value(field) else {
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
