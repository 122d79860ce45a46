//! Rotary embeddings: `rope_parameters` (transformers 5) or the older top-level `rope_theta`,
//! `rope_scaling` and `partial_rotary_factor`, turned into the arguments of the prelude's
//! `attention` (`rope_theta`, `inv_freq`, `rope_scale`).
//!
//! The scaled variants are those transformers' `modeling_rope_utils` implements for Llama and
//! that depend on nothing but the config and the sequence length: `linear`, `dynamic`,
//! `llama3` and `yarn`. Their frequencies are prelude blocks (`compiler/prelude/rope.arch`), so
//! the imported `.arch` shows the formula and the compiler folds it to constants.

use super::config::{Cfg, ImportError};
use super::float;

/// How the frequencies are scaled.
enum Scaling {
    /// θ^(−2i/r) as they are.
    Default,
    /// Every frequency divided by `factor`.
    Linear { factor: f64 },
    /// NTK scaling of the base past `max_positions`, by the run's sequence length.
    Dynamic { factor: f64, max_positions: i64 },
    /// Llama 3's three wavelength bands.
    Llama3 {
        factor: f64,
        low: f64,
        high: f64,
        original: i64,
    },
    /// YaRN: a ramp between interpolated and kept frequencies, and an attention factor.
    Yarn {
        factor: f64,
        original: i64,
        beta_fast: f64,
        beta_slow: f64,
        truncate: bool,
        attention_factor: f64,
    },
}

/// A model's rotary embedding.
pub struct Rope {
    /// The base θ.
    pub theta: f64,
    /// The fraction of each head's channels that rotate.
    pub fraction: f64,
    scaling: Scaling,
}

impl Rope {
    /// The arguments after `rope_theta` for scaled frequencies (empty for the default), to
    /// `attention` (`scale` = `"rope_scale"`) or `rope` (`"scale"`): `rotary_dim` and `seq` are
    /// `.arch` expressions of the rotating channels and of the sequence length where the call
    /// is written.
    pub fn args(&self, rotary_dim: &str, seq: &str, scale: &str) -> String {
        let f = |v: f64| float(v);
        match &self.scaling {
            Scaling::Default => String::new(),
            Scaling::Linear { factor } => format!(
                ",\n                  inv_freq = rope_frequencies(rope_theta, {rotary_dim}) / {}",
                f(*factor)
            ),
            Scaling::Dynamic {
                factor,
                max_positions,
            } => format!(
                ",\n                  inv_freq = dynamic_frequencies(rope_theta, {rotary_dim}, {}, {max_positions}, {seq})",
                f(*factor)
            ),
            Scaling::Llama3 {
                factor,
                low,
                high,
                original,
            } => format!(
                ",\n                  inv_freq = llama3_frequencies(rope_theta, {rotary_dim}, {}, {}, {}, {original})",
                f(*factor),
                f(*low),
                f(*high)
            ),
            Scaling::Yarn {
                factor,
                original,
                beta_fast,
                beta_slow,
                truncate,
                attention_factor,
            } => format!(
                ",\n                  inv_freq = yarn_frequencies(rope_theta, {rotary_dim}, {}, {original}, {}, {}, {truncate}),\n                  {scale} = {}",
                f(*factor),
                f(*beta_fast),
                f(*beta_slow),
                f(*attention_factor)
            ),
        }
    }
}

/// The rotary embedding of a config; `default_fraction` is the family's rotary fraction when
/// the config gives none.
pub fn rope(c: &Cfg, default_fraction: f64) -> Result<Rope, ImportError> {
    let params = match (c.value("rope_parameters"), c.value("rope_scaling")) {
        (Some(_), Some(_)) => {
            return Err(c.error(
                "rope_scaling",
                "is given together with `rope_parameters`; give one of them",
            ))
        }
        (Some(p), None) => Some(("rope_parameters", p)),
        (None, Some(s)) => Some(("rope_scaling", s)),
        (None, None) => None,
    };
    let Some((field, p)) = params else {
        return Ok(Rope {
            theta: positive_theta(c, "rope_theta", c.float_or("rope_theta", 10000.0)?)?,
            fraction: c.float_or("partial_rotary_factor", default_fraction)?,
            scaling: Scaling::Default,
        });
    };
    let sub = Cfg::nested(p, c, field)?;
    if ["full_attention", "sliding_attention"]
        .iter()
        .any(|k| sub.has(k))
    {
        return Err(c.error(field, "per-layer-type rope parameters are not supported"));
    }
    let theta = theta(c, &sub, field)?;
    let fraction = sub.float_or(
        "partial_rotary_factor",
        c.float_or("partial_rotary_factor", default_fraction)?,
    )?;
    let kind = match sub.str_or("rope_type", "")?.as_str() {
        "" => sub.str_or("type", "default")?,
        k => k.to_string(),
    };
    let scaling = match kind.as_str() {
        "default" => Scaling::Default,
        "linear" => Scaling::Linear {
            factor: sub.positive("factor")?,
        },
        "dynamic" => Scaling::Dynamic {
            factor: sub.positive("factor")?,
            max_positions: c.int("max_position_embeddings")?,
        },
        "llama3" => llama3(c, &sub)?,
        "yarn" => yarn(c, &sub)?,
        other => {
            return Err(sub.error(
                "rope_type",
                format!(
                    "rope_type `{other}` is not supported (default, linear, dynamic, llama3 and yarn are)"
                ),
            ))
        }
    };
    Ok(Rope {
        theta,
        fraction,
        scaling,
    })
}

/// θ from the rope parameters, or else the top level; both given must agree.
fn theta(c: &Cfg, sub: &Cfg, field: &str) -> Result<f64, ImportError> {
    let nested = if sub.has("rope_theta") {
        Some(sub.float("rope_theta")?)
    } else {
        None
    };
    let top = if c.has("rope_theta") {
        Some(c.float("rope_theta")?)
    } else {
        None
    };
    match (nested, top) {
        (Some(n), Some(t)) if n != t => Err(c.error(
            "rope_theta",
            format!("is {t}, but `{field}.rope_theta` is {n}; they must agree"),
        )),
        (Some(n), _) => positive_theta(sub, "rope_theta", n),
        (None, Some(t)) => positive_theta(c, "rope_theta", t),
        (None, None) => Ok(10000.0),
    }
}

fn positive_theta(c: &Cfg, field: &str, theta: f64) -> Result<f64, ImportError> {
    if theta > 0.0 {
        Ok(theta)
    } else {
        Err(c.error(field, format!("must be positive, found {theta}")))
    }
}

/// The context length the scaling was trained for: a top-level
/// `original_max_position_embeddings` first (Phi-3 keeps it there), then the rope parameters',
/// then `max_position_embeddings`, as transformers' `standardize_rope_params` does.
fn original_positions(c: &Cfg, sub: &Cfg) -> Result<i64, ImportError> {
    const FIELD: &str = "original_max_position_embeddings";
    if c.has(FIELD) {
        c.int(FIELD)
    } else if sub.has(FIELD) {
        sub.int(FIELD)
    } else {
        c.int("max_position_embeddings")
    }
}

fn llama3(c: &Cfg, sub: &Cfg) -> Result<Scaling, ImportError> {
    let low = sub.positive("low_freq_factor")?;
    let high = sub.positive("high_freq_factor")?;
    if high <= low {
        return Err(sub.error(
            "high_freq_factor",
            format!("must be above low_freq_factor {low}, found {high}"),
        ));
    }
    Ok(Scaling::Llama3 {
        factor: sub.positive("factor")?,
        low,
        high,
        original: original_positions(c, sub)?,
    })
}

fn yarn(c: &Cfg, sub: &Cfg) -> Result<Scaling, ImportError> {
    let original = original_positions(c, sub)?;
    let factor = if sub.has("factor") {
        sub.positive("factor")?
    } else {
        c.int("max_position_embeddings")? as f64 / original as f64
    };
    // transformers reads these with `or`, so 0 and null both mean the default. A negative
    // count of turns has no logarithm.
    let or_default = |field: &str, default: f64| -> Result<f64, ImportError> {
        match sub.float_or(field, 0.0)? {
            0.0 => Ok(default),
            v if v > 0.0 => Ok(v),
            v => Err(sub.error(field, format!("must be positive, found {v}"))),
        }
    };
    let mscale = |scale: f64, m: f64| {
        if scale <= 1.0 {
            1.0
        } else {
            0.1 * m * scale.ln() + 1.0
        }
    };
    let attention_factor = if sub.has("attention_factor") {
        sub.float("attention_factor")?
    } else {
        let (m, all) = (
            sub.float_or("mscale", 0.0)?,
            sub.float_or("mscale_all_dim", 0.0)?,
        );
        if m != 0.0 && all != 0.0 {
            mscale(factor, m) / mscale(factor, all)
        } else {
            mscale(factor, 1.0)
        }
    };
    Ok(Scaling::Yarn {
        factor,
        original,
        beta_fast: or_default("beta_fast", 32.0)?,
        beta_slow: or_default("beta_slow", 1.0)?,
        truncate: sub.bool_or("truncate", true)?,
        attention_factor,
    })
}
