//! A GGUF checkpoint read under the weight names of the `.arch` that `archc import gguf` (or
//! `import hf`) writes: Hugging Face's names, mapped to llama.cpp's per family
//! (`model.layers.3.mlp.up_proj.weight` is `blk.3.ffn_up.weight`), with the changes of layout
//! llama.cpp's converter makes undone ([`Change`]):
//!
//! - Llama: the rows of the query and key projections are permuted for llama.cpp's interleaved
//!   rotary embedding: within each head, HF's row `s·half + d` (the two rotated halves,
//!   `s ∈ {0, 1}`) becomes row `2·d + s`. They go back, so the `.arch` applies the same rotary
//!   as for the Hugging Face checkpoint.
//! - Mamba: the convolution's `[c, 1, k]` weight is stored squeezed, `[c, k]`, and `A_log` as
//!   `A = −exp(A_log)`.

use crate::gguf::{GgufError, GgufFile};
use crate::tensor_file::{closest_names, suggest};
use crate::{DType, Tensor};

/// What llama.cpp's converter did to a tensor, undone when it is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    /// Nothing.
    None,
    /// Rows of a rotary projection permuted by heads: the query's (`true`) or the key/value
    /// heads' (`false`).
    Rotary(bool),
    /// Size-1 axes dropped: the model's shape has the same elements.
    Squeezed,
    /// `A = −exp(A_log)` stored for `A_log`.
    NegExp,
}

/// One family's names: Hugging Face's outside the layers, the prefix of its layers, and per
/// layer the suffix after `{prefix}{i}.` beside llama.cpp's after `blk.{i}.`.
struct Family {
    /// `general.architecture`.
    arch: &'static str,
    top: &'static [(&'static str, &'static str)],
    layers: &'static str,
    layer: &'static [(&'static str, &'static str, Change)],
}

/// The families archc reads GGUF files of.
const FAMILIES: &[Family] = &[
    Family {
        arch: "llama",
        top: &[
            ("model.embed_tokens.weight", "token_embd.weight"),
            ("model.norm.weight", "output_norm.weight"),
            ("lm_head.weight", "output.weight"),
        ],
        layers: "model.layers.",
        layer: &[
            ("input_layernorm.weight", "attn_norm.weight", Change::None),
            (
                "self_attn.q_proj.weight",
                "attn_q.weight",
                Change::Rotary(true),
            ),
            (
                "self_attn.k_proj.weight",
                "attn_k.weight",
                Change::Rotary(false),
            ),
            ("self_attn.v_proj.weight", "attn_v.weight", Change::None),
            (
                "self_attn.o_proj.weight",
                "attn_output.weight",
                Change::None,
            ),
            ("self_attn.q_proj.bias", "attn_q.bias", Change::Rotary(true)),
            (
                "self_attn.k_proj.bias",
                "attn_k.bias",
                Change::Rotary(false),
            ),
            ("self_attn.v_proj.bias", "attn_v.bias", Change::None),
            (
                "post_attention_layernorm.weight",
                "ffn_norm.weight",
                Change::None,
            ),
            ("mlp.gate_proj.weight", "ffn_gate.weight", Change::None),
            ("mlp.up_proj.weight", "ffn_up.weight", Change::None),
            ("mlp.down_proj.weight", "ffn_down.weight", Change::None),
        ],
    },
    Family {
        arch: "mamba",
        top: &[
            ("backbone.embeddings.weight", "token_embd.weight"),
            ("backbone.norm_f.weight", "output_norm.weight"),
            ("lm_head.weight", "output.weight"),
        ],
        layers: "backbone.layers.",
        layer: &[
            ("norm.weight", "attn_norm.weight", Change::None),
            ("mixer.in_proj.weight", "ssm_in.weight", Change::None),
            ("mixer.in_proj.bias", "ssm_in.bias", Change::None),
            ("mixer.conv1d.weight", "ssm_conv1d.weight", Change::Squeezed),
            ("mixer.conv1d.bias", "ssm_conv1d.bias", Change::None),
            ("mixer.x_proj.weight", "ssm_x.weight", Change::None),
            ("mixer.dt_proj.weight", "ssm_dt.weight", Change::None),
            ("mixer.dt_proj.bias", "ssm_dt.bias", Change::None),
            ("mixer.A_log", "ssm_a", Change::NegExp),
            ("mixer.D", "ssm_d", Change::None),
            ("mixer.out_proj.weight", "ssm_out.weight", Change::None),
            ("mixer.out_proj.bias", "ssm_out.bias", Change::None),
        ],
    },
];

/// The GGUF architectures archc reads.
pub const ARCHITECTURES: &[&str] = &["llama", "mamba"];

/// A GGUF checkpoint read by Hugging Face names.
pub struct GgufWeights {
    file: GgufFile,
    family: &'static Family,
    heads: usize,
    kv_heads: usize,
}

/// Why a weight cannot be read from a GGUF checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum GgufWeightError {
    /// The file cannot be read.
    #[error(transparent)]
    File(#[from] GgufError),
    /// The file's metadata lacks what reading it needs, or describes another family.
    #[error("{path}: {message}")]
    Metadata {
        /// The file.
        path: String,
        /// What is missing or unsupported.
        message: String,
    },
    /// No tensor of the checkpoint has this name.
    #[error("{path}: no tensor for weight `{name}`{}", suggest(.closest))]
    Missing {
        /// The file.
        path: String,
        /// The weight's name in the model.
        name: String,
        /// The closest weight names the file does have.
        closest: Vec<String>,
    },
    /// The tensor's shape or type is not the model's.
    #[error("{path}: weight `{name}` (`{gguf}`) is {got}, but the model declares {want}")]
    Mismatch {
        /// The file.
        path: String,
        /// The weight's name in the model.
        name: String,
        /// Its name in the file.
        gguf: String,
        /// What the file holds.
        got: String,
        /// What the model wants.
        want: String,
    },
}

impl GgufWeights {
    /// Opens a GGUF file of a Llama-family model.
    pub fn open(path: &std::path::Path) -> Result<GgufWeights, GgufWeightError> {
        let file = GgufFile::open(path)?;
        let meta = |message: String| GgufWeightError::Metadata {
            path: path.display().to_string(),
            message,
        };
        let arch = file
            .str("general.architecture")
            .ok_or_else(|| meta("it has no `general.architecture`".into()))?
            .to_string();
        let Some(family) = FAMILIES.iter().find(|f| f.arch == arch) else {
            return Err(meta(format!(
                "architecture `{arch}` is not supported (supported: {})",
                ARCHITECTURES.join(", ")
            )));
        };
        let count = |key: &str| {
            file.int(&format!("{arch}.{key}"))
                .and_then(|v| usize::try_from(v).ok())
                .filter(|&v| v > 0)
                .ok_or_else(|| {
                    meta(format!(
                        "`{arch}.{key}` is missing or not a positive integer"
                    ))
                })
        };
        // Heads matter only for rotary rows.
        let rotary = family
            .layer
            .iter()
            .any(|l| matches!(l.2, Change::Rotary(_)));
        let heads = if rotary {
            count("attention.head_count")?
        } else {
            1
        };
        let kv_heads = match file.int(&format!("{arch}.attention.head_count_kv")) {
            Some(_) if rotary => count("attention.head_count_kv")?,
            _ => heads,
        };
        Ok(GgufWeights {
            file,
            family,
            heads,
            kv_heads,
        })
    }

    /// The file.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// Whether the checkpoint holds a tensor for the weight `name`.
    pub fn contains(&self, name: &str) -> bool {
        gguf_name(self.family, name).is_some_and(|(g, _)| self.file.tensors.contains_key(&g))
    }

    /// The block format kernels can read weight `name` in as the file stores it: its GGUF
    /// type's, for a block-quantized tensor that needs no conversion of values (None for any
    /// other, which [`GgufWeights::read`] dequantizes).
    pub fn format(&self, name: &str) -> Option<crate::quant::BlockFormat> {
        let (gguf, change) = gguf_name(self.family, name)?;
        if !matches!(change, Change::None | Change::Rotary(_)) {
            return None;
        }
        self.file.tensors.get(&gguf)?.ty.format()
    }

    /// The blocks of weight `name` of `shape` (see [`GgufWeights::format`]), with rotary rows
    /// put back in Hugging Face's order.
    pub fn blocks(&self, name: &str, shape: &[usize]) -> Result<Vec<u8>, GgufWeightError> {
        let path = self.file.path().display().to_string();
        let mismatch = |gguf: String, got: String, want: &str| GgufWeightError::Mismatch {
            path: path.clone(),
            name: name.to_string(),
            gguf,
            got,
            want: want.to_string(),
        };
        let (gguf, change) =
            gguf_name(self.family, name).ok_or_else(|| GgufWeightError::Missing {
                path: path.clone(),
                name: name.to_string(),
                closest: Vec::new(),
            })?;
        let info = self.file.tensors.get(&gguf);
        let bytes = self.file.bytes(&gguf);
        let (Some(info), Some(bytes), Some(_)) = (info, bytes, self.format(name)) else {
            return Err(mismatch(gguf, "not block-quantized".into(), "blocks"));
        };
        if info.shape != shape {
            return Err(mismatch(
                gguf,
                format!("{:?}", info.shape),
                &format!("{shape:?}"),
            ));
        }
        let Change::Rotary(query) = change else {
            return Ok(bytes.to_vec());
        };
        let heads = if query { self.heads } else { self.kv_heads };
        let rows = shape.first().copied().unwrap_or(0);
        let width = bytes.len().checked_div(rows).unwrap_or(0);
        unpermute(bytes, rows, width, heads).ok_or_else(|| {
            mismatch(
                gguf,
                format!("{:?}", info.shape),
                &format!("rows in {heads} heads of two rotary halves"),
            )
        })
    }

    /// The weight `name` as f32 values of `shape`, dequantized and with the converter's
    /// changes undone.
    pub fn read(
        &self,
        name: &str,
        dtype: DType,
        shape: &[usize],
    ) -> Result<Tensor, GgufWeightError> {
        let path = self.file.path().display().to_string();
        let found = gguf_name(self.family, name).filter(|(g, _)| self.file.tensors.contains_key(g));
        let Some((gguf, change)) = found else {
            let names: Vec<String> = self
                .file
                .tensors
                .keys()
                .filter_map(|g| hf_name(self.family, g))
                .collect();
            return Err(GgufWeightError::Missing {
                path,
                name: name.to_string(),
                closest: closest_names(name, &names),
            });
        };
        let info = &self.file.tensors[&gguf];
        let same = match change {
            Change::Squeezed => {
                let kept = |s: &[usize]| s.iter().filter(|&&d| d != 1).copied().collect::<Vec<_>>();
                kept(&info.shape) == kept(shape)
            }
            _ => info.shape == shape,
        };
        if !same || !dtype.is_float() {
            return Err(GgufWeightError::Mismatch {
                path,
                name: name.to_string(),
                gguf,
                got: format!("{:?} {:?}", info.ty, info.shape),
                want: format!("{} {shape:?}", dtype.name()),
            });
        }
        let mut values = self.file.dequantize(&gguf).unwrap_or_default();
        let mismatch = |want: String| GgufWeightError::Mismatch {
            path: path.clone(),
            name: name.to_string(),
            gguf: gguf.clone(),
            got: format!("{:?}", info.shape),
            want,
        };
        match change {
            Change::Rotary(query) => {
                let heads = if query { self.heads } else { self.kv_heads };
                let rows = shape.first().copied().unwrap_or(0);
                let width = shape.iter().skip(1).product();
                values = unpermute(&values, rows, width, heads).ok_or_else(|| {
                    mismatch(format!("rows in {heads} heads of two rotary halves"))
                })?;
            }
            Change::NegExp => {
                // A = −exp(A_log) < 0; anything else has no A_log.
                if values.iter().any(|a| a.is_nan() || *a >= 0.0) {
                    return Err(mismatch("values −exp(A_log) < 0".into()));
                }
                values.iter_mut().for_each(|a| *a = (-*a).ln());
            }
            Change::None | Change::Squeezed => {}
        }
        Ok(Tensor::f32(shape.to_vec(), values))
    }
}

/// llama.cpp's name of a Hugging Face weight name in `family`, and what to undo.
fn gguf_name(family: &Family, name: &str) -> Option<(String, Change)> {
    if let Some(&(_, g)) = family.top.iter().find(|(h, _)| *h == name) {
        return Some((g.to_string(), Change::None));
    }
    let rest = name.strip_prefix(family.layers)?;
    let (layer, suffix) = rest.split_once('.')?;
    layer.parse::<usize>().ok()?;
    let &(_, g, change) = family.layer.iter().find(|(h, _, _)| *h == suffix)?;
    Some((format!("blk.{layer}.{g}"), change))
}

/// The Hugging Face name of a llama.cpp tensor name (for suggestions).
fn hf_name(family: &Family, gguf: &str) -> Option<String> {
    if let Some(&(h, _)) = family.top.iter().find(|(_, g)| *g == gguf) {
        return Some(h.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let &(h, _, _) = family.layer.iter().find(|(_, g, _)| *g == suffix)?;
    Some(format!("{}{layer}.{h}", family.layers))
}

/// Restores Hugging Face's row order of a rotary projection (`rows` rows of `width` values:
/// f32s, or a quantized row's bytes) permuted by llama.cpp for `heads` heads: HF row
/// `(h, s, d)` is GGUF row `(h, d, s)`. None if the rows are not whole heads of two halves.
fn unpermute<T: Copy + Default>(
    values: &[T],
    rows: usize,
    width: usize,
    heads: usize,
) -> Option<Vec<T>> {
    if heads == 0
        || !rows.is_multiple_of(heads.checked_mul(2)?)
        || rows.checked_mul(width)? != values.len()
    {
        return None;
    }
    let half = rows / heads / 2;
    let mut out = vec![T::default(); values.len()];
    for h in 0..heads {
        for s in 0..2 {
            for d in 0..half {
                let to = (h * 2 * half + s * half + d) * width;
                let from = (h * 2 * half + 2 * d + s) * width;
                out[to..to + width].copy_from_slice(&values[from..from + width]);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways_and_rows_unpermute() {
        assert_eq!(
            gguf_name(&FAMILIES[0], "model.layers.12.self_attn.k_proj.weight"),
            Some(("blk.12.attn_k.weight".into(), Change::Rotary(false)))
        );
        assert_eq!(
            hf_name(&FAMILIES[0], "blk.3.ffn_up.weight").as_deref(),
            Some("model.layers.3.mlp.up_proj.weight")
        );
        assert_eq!(
            gguf_name(&FAMILIES[0], "model.layers.x.mlp.up_proj.weight"),
            None
        );
        assert_eq!(
            gguf_name(&FAMILIES[1], "backbone.layers.0.mixer.A_log"),
            Some(("blk.0.ssm_a".into(), Change::NegExp))
        );
        assert_eq!(
            ARCHITECTURES,
            FAMILIES.iter().map(|f| f.arch).collect::<Vec<_>>()
        );
        // One head of 4 rows (half = 2), width 1: GGUF rows [a0, b0, a1, b1] → [a0, a1, b0, b1].
        let v = [0.0, 10.0, 1.0, 11.0];
        assert_eq!(unpermute(&v, 4, 1, 1), Some(vec![0.0, 1.0, 10.0, 11.0]));
        assert_eq!(unpermute(&v, 4, 1, 3), None);
    }
}
