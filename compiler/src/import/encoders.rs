//! Bidirectional encoders: BERT and the I-JEPA ViT.

use serde_json::json;

use super::config::{Cfg, ImportError};
use super::{activation, config_block, float};

/// The self-attention and encoder layer shared by BERT- and ViT-style checkpoints.
const SELF_ATTENTION: &str = "  block self_attention(x, heads, mask = none) {
    d = x.shape[-1]
    q = split_heads(linear(x, d) @query, heads)
    k = split_heads(linear(x, d) @key, heads)
    v = split_heads(linear(x, d) @value, heads)
    return merge_heads(sdpa(q, k, v, mask = mask))
  }
";

/// BertModel (with its pooler).
pub fn bert(c: &Cfg) -> Result<String, ImportError> {
    let act = activation(c, "hidden_act")?;
    c.expect("position_embedding_type", json!("absolute"))?;
    c.expect("is_decoder", json!(false))?;
    c.expect("add_cross_attention", json!(false))?;
    Ok(format!(
        "model bert {{
{}  input input_ids: i32[batch, seq]
  input attention_mask: i32[batch, seq]
  input token_type_ids: i32[batch, seq]

{SELF_ATTENTION}
  block encoder_layer(x, mask) {{
    a = linear(self_attention(x, heads, mask) @attention.self, dim) @attention.output.dense
    x = layernorm(x + a, eps) @attention.output.LayerNorm
    f = linear({act}(linear(x, ffn) @intermediate.dense), dim) @output.dense
    return layernorm(x + f, eps) @output.LayerNorm
  }}

  words = embedding(input_ids, vocab, dim) @embeddings.word_embeddings
  pos = embedding(iota(input_ids.shape[1]), positions, dim) @embeddings.position_embeddings
  types = embedding(token_type_ids, type_vocab, dim) @embeddings.token_type_embeddings
  h = layernorm(words + pos + types, eps) @embeddings.LayerNorm
  h = stack(h, layers, encoder_layer, mask = attention_mask) @encoder.layer
  output last_hidden_state = h
  cls = reshape(slice(h, 1, 0, 1), [h.shape[0], dim])
  output pooler_output = tanh(linear(cls, dim) @pooler.dense)
}}
",
        config_block(&[
            ("vocab", c.int("vocab_size")?.to_string()),
            ("positions", c.int("max_position_embeddings")?.to_string()),
            ("type_vocab", c.int_or("type_vocab_size", 2)?.to_string()),
            ("dim", c.int("hidden_size")?.to_string()),
            ("layers", c.int("num_hidden_layers")?.to_string()),
            ("heads", c.int("num_attention_heads")?.to_string()),
            ("ffn", c.int("intermediate_size")?.to_string()),
            ("eps", float(c.eps_or("layer_norm_eps", 1e-12)?)),
        ]),
    ))
}

/// IJepaModel: the ViT context encoder (no pooler, no mask token).
pub fn ijepa(c: &Cfg) -> Result<String, ImportError> {
    let act = activation(c, "hidden_act")?;
    c.expect("qkv_bias", json!(true))?;
    let image = c.int("image_size")?;
    let patch = c.int("patch_size")?;
    if image % patch != 0 {
        return Err(c.error(
            "patch_size",
            format!("{patch} does not divide image_size {image}"),
        ));
    }
    Ok(format!(
        "model ijepa {{
{}  input pixel_values: f32[batch, channels, image, image]

{SELF_ATTENTION}
  block vit_layer(x) {{
    a = self_attention(layernorm(x, eps) @layernorm_before, heads) @attention.attention
    x = x + linear(a, dim) @attention.output.dense
    h = {act}(linear(layernorm(x, eps) @layernorm_after, ffn) @intermediate.dense)
    return x + linear(h, dim) @output.dense
  }}

  x = patch_embed(pixel_values, patch, dim) @embeddings.patch_embeddings.projection
  param pos: [1, patches, dim] @embeddings.position_embeddings
  x = stack(x + pos, layers, vit_layer) @encoder.layer
  output last_hidden_state = layernorm(x, eps) @layernorm
}}
",
        config_block(&[
            ("image", image.to_string()),
            ("patch", patch.to_string()),
            ("channels", c.int_or("num_channels", 3)?.to_string()),
            ("patches", ((image / patch) * (image / patch)).to_string()),
            ("dim", c.int("hidden_size")?.to_string()),
            ("layers", c.int("num_hidden_layers")?.to_string()),
            ("heads", c.int("num_attention_heads")?.to_string()),
            ("ffn", c.int("intermediate_size")?.to_string()),
            ("eps", float(c.eps_or("layer_norm_eps", 1e-12)?)),
        ]),
    ))
}
