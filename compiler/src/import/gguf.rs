//! `archc import gguf`: a llama.cpp GGUF checkpoint's metadata → the `.arch` of its model
//! (Llama and Mamba families).
//!
//! The metadata (`llama.block_count`, `llama.attention.head_count`, ...) is translated into the
//! Hugging Face config fields it came from, and the family's template writes the model, with
//! Hugging Face's weight names: `--weights FILE.gguf` reads the file by those names
//! (`archc_runtime::gguf_names`). The output projection is tied to the embedding when the file
//! has no `output.weight`, as llama.cpp does.

use serde_json::{json, Map, Value};

use archc_runtime::gguf::GgufFile;
use archc_runtime::gguf_names::ARCHITECTURES;

use super::config::ImportError;

/// Config fields from GGUF metadata keys (after the `{arch}.` prefix): the field, the key,
/// whether it is required, and whether it is a float. Llama's:
const LLAMA: &[(&str, &str, bool, bool)] = &[
    ("num_hidden_layers", "block_count", true, false),
    ("hidden_size", "embedding_length", true, false),
    ("intermediate_size", "feed_forward_length", true, false),
    ("num_attention_heads", "attention.head_count", true, false),
    (
        "num_key_value_heads",
        "attention.head_count_kv",
        false,
        false,
    ),
    ("max_position_embeddings", "context_length", false, false),
    (
        "rms_norm_eps",
        "attention.layer_norm_rms_epsilon",
        true,
        true,
    ),
    ("rope_theta", "rope.freq_base", false, true),
    ("head_dim", "attention.key_length", false, false),
];

/// Mamba's (`expand` is `ssm.inner_size / embedding_length`).
const MAMBA: &[(&str, &str, bool, bool)] = &[
    ("num_hidden_layers", "block_count", true, false),
    ("hidden_size", "embedding_length", true, false),
    ("state_size", "ssm.state_size", true, false),
    ("conv_kernel", "ssm.conv_kernel", true, false),
    ("time_step_rank", "ssm.time_step_rank", true, false),
    (
        "layer_norm_epsilon",
        "attention.layer_norm_rms_epsilon",
        true,
        true,
    ),
];

/// The Hugging Face config of a GGUF file's model (as JSON text) and its `model_type`.
pub fn config_of(file: &GgufFile, source: &str) -> Result<String, ImportError> {
    let error = |field: &str, message: String| ImportError {
        file: source.to_string(),
        field: field.to_string(),
        message,
    };
    let arch = file
        .str("general.architecture")
        .ok_or_else(|| error("general.architecture", "missing".into()))?;
    if !ARCHITECTURES.contains(&arch) {
        return Err(error(
            "general.architecture",
            format!(
                "`{arch}` is not supported (supported: {})",
                ARCHITECTURES.join(", ")
            ),
        ));
    }
    let mut cfg = Map::new();
    cfg.insert("model_type".into(), json!(arch));
    cfg.insert("hidden_act".into(), json!("silu"));
    let fields = if arch == "mamba" { MAMBA } else { LLAMA };
    for &(field, key, required, float) in fields {
        let key = format!("{arch}.{key}");
        let value = if float {
            file.float(&key).map(|v| json!(v))
        } else {
            file.int(&key).map(|v| json!(v))
        };
        match value {
            Some(v) => {
                cfg.insert(field.into(), v);
            }
            None if required => return Err(error(&key, "missing".into())),
            None => {}
        }
    }
    // The embedding's rows are the vocabulary the weights have (converters may pad it).
    let vocab = match file.tensors.get("token_embd.weight") {
        Some(t) if t.shape.len() == 2 => t.shape[0] as i64,
        _ => file
            .int(&format!("{arch}.vocab_size"))
            .ok_or_else(|| error("token_embd.weight", "missing".into()))?,
    };
    cfg.insert("vocab_size".into(), json!(vocab));
    if arch == "mamba" {
        let key = "mamba.ssm.inner_size";
        let inner = file.int(key).ok_or_else(|| error(key, "missing".into()))?;
        let dim = file.int("mamba.embedding_length").unwrap_or(0);
        if dim <= 0 || inner % dim != 0 {
            return Err(error(
                key,
                format!("{inner} is not a multiple of the width {dim}"),
            ));
        }
        cfg.insert("expand".into(), json!(inner / dim));
        let has = |t: &str| file.tensors.contains_key(t);
        cfg.insert("use_conv_bias".into(), json!(has("blk.0.ssm_conv1d.bias")));
        cfg.insert("use_bias".into(), json!(has("blk.0.ssm_in.bias")));
    }
    let tied = !file.tensors.contains_key("output.weight");
    cfg.insert("tie_word_embeddings".into(), json!(tied));
    serde_json::to_string_pretty(&Value::Object(cfg)).map_err(|e| error("", e.to_string()))
}
