//! A GGUF checkpoint read under the weight names of the `.arch` that `archc import gguf` (or
//! `import hf`) writes: Hugging Face's names, mapped to llama.cpp's (`model.layers.3.mlp.up_proj.weight`
//! is `blk.3.ffn_up.weight`), with the one change of layout llama.cpp's converter makes.
//!
//! That converter permutes the rows of the query and key projections of Llama-family models
//! for its interleaved rotary embedding: within each head, HF's row `s·half + d` (the two
//! rotated halves, `s ∈ {0, 1}`) becomes row `2·d + s`. Reading them, the rows go back, so the
//! `.arch` applies the same rotary as for the Hugging Face checkpoint.

use crate::gguf::{GgufError, GgufFile};
use crate::tensor_file::{closest_names, suggest};
use crate::{DType, Tensor};

/// Per-layer names: Hugging Face's suffix after `model.layers.{i}.`, llama.cpp's after
/// `blk.{i}.`, and whether the rows are a rotary projection permuted by heads (`Some(true)`
/// for the query's heads, `Some(false)` for the key/value heads).
const LAYER: &[(&str, &str, Option<bool>)] = &[
    ("input_layernorm.weight", "attn_norm.weight", None),
    ("self_attn.q_proj.weight", "attn_q.weight", Some(true)),
    ("self_attn.k_proj.weight", "attn_k.weight", Some(false)),
    ("self_attn.v_proj.weight", "attn_v.weight", None),
    ("self_attn.o_proj.weight", "attn_output.weight", None),
    ("self_attn.q_proj.bias", "attn_q.bias", Some(true)),
    ("self_attn.k_proj.bias", "attn_k.bias", Some(false)),
    ("self_attn.v_proj.bias", "attn_v.bias", None),
    ("post_attention_layernorm.weight", "ffn_norm.weight", None),
    ("mlp.gate_proj.weight", "ffn_gate.weight", None),
    ("mlp.up_proj.weight", "ffn_up.weight", None),
    ("mlp.down_proj.weight", "ffn_down.weight", None),
];

/// Names outside the layers.
const TOP: &[(&str, &str)] = &[
    ("model.embed_tokens.weight", "token_embd.weight"),
    ("model.norm.weight", "output_norm.weight"),
    ("lm_head.weight", "output.weight"),
];

/// The GGUF architectures whose tensors these names and this permutation describe.
pub const ARCHITECTURES: &[&str] = &["llama"];

/// A GGUF checkpoint of a Llama-family model, read by Hugging Face names.
pub struct GgufWeights {
    file: GgufFile,
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
        if !ARCHITECTURES.contains(&arch.as_str()) {
            return Err(meta(format!(
                "architecture `{arch}` is not supported (supported: {})",
                ARCHITECTURES.join(", ")
            )));
        }
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
        let heads = count("attention.head_count")?;
        let kv_heads = match file.int(&format!("{arch}.attention.head_count_kv")) {
            None => heads,
            Some(_) => count("attention.head_count_kv")?,
        };
        Ok(GgufWeights {
            file,
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
        gguf_name(name).is_some_and(|(g, _)| self.file.tensors.contains_key(&g))
    }

    /// The weight `name` as f32 values of `shape`, dequantized and with rotary rows restored.
    pub fn read(
        &self,
        name: &str,
        dtype: DType,
        shape: &[usize],
    ) -> Result<Tensor, GgufWeightError> {
        let path = self.file.path().display().to_string();
        let found = gguf_name(name).filter(|(g, _)| self.file.tensors.contains_key(g));
        let Some((gguf, permuted)) = found else {
            let names: Vec<String> = self
                .file
                .tensors
                .keys()
                .filter_map(|g| hf_name(g))
                .collect();
            return Err(GgufWeightError::Missing {
                path,
                name: name.to_string(),
                closest: closest_names(name, &names),
            });
        };
        let info = &self.file.tensors[&gguf];
        if info.shape != shape || !dtype.is_float() {
            return Err(GgufWeightError::Mismatch {
                path,
                name: name.to_string(),
                gguf,
                got: format!("{:?} {:?}", info.ty, info.shape),
                want: format!("{} {shape:?}", dtype.name()),
            });
        }
        let mut values = self.file.dequantize(&gguf).unwrap_or_default();
        if let Some(query) = permuted {
            let heads = if query { self.heads } else { self.kv_heads };
            values = unpermute(&values, shape, heads).ok_or_else(|| GgufWeightError::Mismatch {
                path,
                name: name.to_string(),
                gguf: gguf.clone(),
                got: format!("{:?}", info.shape),
                want: format!("rows in {heads} heads of two rotary halves"),
            })?;
        }
        Ok(Tensor::f32(shape.to_vec(), values))
    }
}

/// llama.cpp's name of a Hugging Face weight name, and whether its rows are permuted (see
/// [`LAYER`]).
fn gguf_name(name: &str) -> Option<(String, Option<bool>)> {
    if let Some(&(_, g)) = TOP.iter().find(|(h, _)| *h == name) {
        return Some((g.to_string(), None));
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, suffix) = rest.split_once('.')?;
    layer.parse::<usize>().ok()?;
    let &(_, g, permuted) = LAYER.iter().find(|(h, _, _)| *h == suffix)?;
    Some((format!("blk.{layer}.{g}"), permuted))
}

/// The Hugging Face name of a llama.cpp tensor name (for suggestions).
fn hf_name(gguf: &str) -> Option<String> {
    if let Some(&(h, _)) = TOP.iter().find(|(_, g)| *g == gguf) {
        return Some(h.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let &(h, _, _) = LAYER.iter().find(|(_, g, _)| *g == suffix)?;
    Some(format!("model.layers.{layer}.{h}"))
}

/// Restores Hugging Face's row order of a rotary projection (rows: the first of `shape`)
/// permuted by llama.cpp for `heads` heads: HF row `(h, s, d)` is GGUF row `(h, d, s)`.
/// None if the rows are not whole heads of two halves.
fn unpermute(values: &[f32], shape: &[usize], heads: usize) -> Option<Vec<f32>> {
    let rows = *shape.first()?;
    let width: usize = shape[1..].iter().product();
    if heads == 0 || rows % heads.checked_mul(2)? != 0 {
        return None;
    }
    let half = rows / heads / 2;
    let mut out = vec![0.0; values.len()];
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
            gguf_name("model.layers.12.self_attn.k_proj.weight"),
            Some(("blk.12.attn_k.weight".into(), Some(false)))
        );
        assert_eq!(
            hf_name("blk.3.ffn_up.weight").as_deref(),
            Some("model.layers.3.mlp.up_proj.weight")
        );
        assert_eq!(gguf_name("model.layers.x.mlp.up_proj.weight"), None);
        // One head of 4 rows (half = 2), width 1: GGUF rows [a0, b0, a1, b1] → [a0, a1, b0, b1].
        let v = [0.0, 10.0, 1.0, 11.0];
        assert_eq!(unpermute(&v, &[4, 1], 1), Some(vec![0.0, 1.0, 10.0, 11.0]));
        assert_eq!(unpermute(&v, &[4, 1], 3), None);
    }
}
