//! Decoder-only Transformers: Llama and GPT-2.

use serde_json::json;

use super::config::{Cfg, ImportError};
use super::{activation, config_block, embed_and_head, float};

/// LlamaForCausalLM.
pub fn llama(c: &Cfg) -> Result<String, ImportError> {
    let dim = c.int("hidden_size")?;
    let heads = c.int("num_attention_heads")?;
    let kv_heads = c.int_or("num_key_value_heads", heads)?;
    let head_dim = c.int_or("head_dim", dim / heads)?;
    if heads % kv_heads != 0 {
        return Err(c.error(
            "num_key_value_heads",
            format!("{kv_heads} does not divide {heads} heads"),
        ));
    }
    let act = activation(c, "hidden_act")?;
    c.expect("pretraining_tp", json!(1))?;
    let (theta, fraction) = c.rope(1.0)?;
    if fraction != 1.0 {
        return Err(c.error(
            "partial_rotary_factor",
            "partial rotary is not supported for llama",
        ));
    }
    let bias = c.bool_or("attention_bias", false)?;
    let mlp_bias = c.bool_or("mlp_bias", false)?;
    let tied = c.bool_or("tie_word_embeddings", false)?;
    let (embed, head) = embed_and_head(tied, "model.embed_tokens", "h", "lm_head");
    Ok(format!(
        "model llama {{
{}  input input_ids: i32[batch, seq]

  block decoder(x) {{
    h = rmsnorm(x, eps) @input_layernorm
    a = attention(h, heads, kv_heads, head_dim, rope_theta = rope_theta, causal = true, bias = {bias},
                  out_bias = {bias}) @self_attn
    x = x + a
    return x + swiglu(rmsnorm(x, eps) @post_attention_layernorm, ffn, {act}, {mlp_bias}) @mlp
  }}

{embed}  h = stack(h, layers, decoder) @model.layers
  h = rmsnorm(h, eps) @model.norm
{head}}}
",
        config_block(&[
            ("vocab", c.int("vocab_size")?.to_string()),
            ("dim", dim.to_string()),
            ("layers", c.int("num_hidden_layers")?.to_string()),
            ("heads", heads.to_string()),
            ("kv_heads", kv_heads.to_string()),
            ("head_dim", head_dim.to_string()),
            ("ffn", c.int("intermediate_size")?.to_string()),
            ("eps", float(c.float_or("rms_norm_eps", 1e-6)?)),
            ("rope_theta", float(theta)),
        ]),
    ))
}

/// GPT2LMHeadModel.
pub fn gpt2(c: &Cfg) -> Result<String, ImportError> {
    let dim = c.int("n_embd")?;
    let act = activation(c, "activation_function")?;
    c.expect("scale_attn_by_inverse_layer_idx", json!(false))?;
    c.expect("add_cross_attention", json!(false))?;
    let scale = if c.bool_or("scale_attn_weights", true)? {
        "none"
    } else {
        "1.0"
    };
    let tied = c.bool_or("tie_word_embeddings", true)?;
    let head = if tied {
        "  output logits = matmul(h, transpose(wte))\n".to_string()
    } else {
        "  output logits = linear(h, vocab, bias = false) @lm_head\n".to_string()
    };
    Ok(format!(
        "model gpt2 {{
{}  input input_ids: i32[batch, seq]

  block conv1d(x, features) {{
    param weight: [x.shape[-1], features]
    param bias: [features]
    return matmul(x, weight) + bias
  }}

  block causal_self_attention(x) {{
    qkv = conv1d(x, 3 * dim) @c_attn
    q = split_heads(slice(qkv, -1, 0, dim), heads)
    k = split_heads(slice(qkv, -1, dim, 2 * dim), heads)
    v = split_heads(slice(qkv, -1, 2 * dim, 3 * dim), heads)
    return conv1d(merge_heads(sdpa(q, k, v, causal = true, scale = {scale})), dim) @c_proj
  }}

  block decoder(x) {{
    x = x + causal_self_attention(layernorm(x, eps) @ln_1) @attn
    f = conv1d({act}(conv1d(layernorm(x, eps) @ln_2, ffn) @mlp.c_fc), dim) @mlp.c_proj
    return x + f
  }}

  param wte: [vocab, dim] @transformer.wte.weight
  param wpe: [positions, dim] @transformer.wpe.weight
  h = gather(wte, input_ids) + gather(wpe, iota(input_ids.shape[1]))
  h = stack(h, layers, decoder) @transformer.h
  h = layernorm(h, eps) @transformer.ln_f
{head}}}
",
        config_block(&[
            ("vocab", c.int("vocab_size")?.to_string()),
            ("positions", c.int("n_positions")?.to_string()),
            ("dim", dim.to_string()),
            ("layers", c.int("n_layer")?.to_string()),
            ("heads", c.int("n_head")?.to_string()),
            ("ffn", c.int_or("n_inner", 4 * dim)?.to_string()),
            ("eps", float(c.float_or("layer_norm_epsilon", 1e-5)?)),
        ]),
    ))
}
