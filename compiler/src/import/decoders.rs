//! Decoder-only Transformers: Llama (with Mistral, Qwen2 and Qwen3) and GPT-2.

use serde_json::json;

use super::config::{Cfg, ImportError};
use super::rope::rope;
use super::{activation, config_block, embed_and_head, float};

/// The decoders that differ from Llama only by config fields.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum LlamaLike {
    /// LlamaForCausalLM.
    Llama,
    /// MistralForCausalLM: a sliding window on every layer.
    Mistral,
    /// Qwen2ForCausalLM: biases on q/k/v, sliding windows by `layer_types`.
    Qwen2,
    /// Qwen3ForCausalLM: RMSNorms on the query and key heads, windows by `layer_types`.
    Qwen3,
}

/// LlamaForCausalLM and the families of [`LlamaLike`].
pub fn llama(c: &Cfg, family: LlamaLike) -> Result<String, ImportError> {
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
    let rope = rope(c, 1.0)?;
    if rope.fraction != 1.0 {
        return Err(c.error(
            "partial_rotary_factor",
            "partial rotary is not supported for this family",
        ));
    }
    let eps = c.eps_or("rms_norm_eps", 1e-6)?;
    let out_bias = family != LlamaLike::Qwen2 && c.bool_or("attention_bias", false)?;
    let bias = family == LlamaLike::Qwen2 || out_bias;
    let qk_norm = if family == LlamaLike::Qwen3 {
        ", qk_norm = eps"
    } else {
        ""
    };
    let layers = c.int("num_hidden_layers")?;
    let (window_param, window_arg, layer) = windows(c, family, layers)?;
    let mlp_bias = c.bool_or("mlp_bias", false)?;
    let tied = c.bool_or("tie_word_embeddings", false)?;
    let (embed, head) = embed_and_head(tied, "model.embed_tokens", "h", "lm_head");
    let name = match family {
        LlamaLike::Llama => "llama",
        LlamaLike::Mistral => "mistral",
        LlamaLike::Qwen2 => "qwen2",
        LlamaLike::Qwen3 => "qwen3",
    };
    let mut config = vec![
        ("vocab", c.int("vocab_size")?.to_string()),
        ("dim", dim.to_string()),
        ("layers", layers.to_string()),
        ("heads", heads.to_string()),
        ("kv_heads", kv_heads.to_string()),
        ("head_dim", head_dim.to_string()),
        ("ffn", c.int("intermediate_size")?.to_string()),
        ("eps", float(eps)),
        ("rope_theta", float(rope.theta)),
    ];
    if !window_arg.is_empty() {
        config.push(("sliding_window", c.int("sliding_window")?.to_string()));
    }
    Ok(format!(
        "model {name} {{
{}  input input_ids: i32[batch, seq]

  block decoder(x{window_param}) {{
    h = rmsnorm(x, eps) @input_layernorm
    a = attention(h, heads, kv_heads, head_dim, rope_theta = rope_theta{}, causal = true{window_arg},
                  bias = {bias}, out_bias = {out_bias}{qk_norm}) @self_attn
    x = x + a
    return x + swiglu(rmsnorm(x, eps) @post_attention_layernorm, ffn, {act}, {mlp_bias}) @mlp
  }}

{embed}  h = stack(h, layers, {layer}) @model.layers
  h = rmsnorm(h, eps) @model.norm
{head}}}
",
        config_block(&config),
        rope.args("head_dim", "x.shape[1]", "rope_scale"),
    ))
}

/// Sliding-window attention as `(decoder parameter, attention argument, the stack's layers)`:
/// no parameter or argument and plain `decoder` layers when no layer has a window. Mistral's
/// `sliding_window` covers every layer; the Qwens' covers the layers that `layer_types` calls
/// `sliding_attention` (derived from `use_sliding_window` and `max_window_layers` when absent,
/// as their configs do).
fn windows(
    c: &Cfg,
    family: LlamaLike,
    layers: i64,
) -> Result<(&'static str, &'static str, String), ImportError> {
    let none = ("", "", "decoder".to_string());
    let sliding: Vec<i64> = match family {
        LlamaLike::Llama => return Ok(none),
        LlamaLike::Mistral if c.has("sliding_window") => (0..layers).collect(),
        LlamaLike::Mistral => return Ok(none),
        LlamaLike::Qwen2 | LlamaLike::Qwen3 if c.has("layer_types") => {
            let types = c.str_list("layer_types")?;
            if types.len() as i64 != layers {
                return Err(c.error("layer_types", "must list one type per layer"));
            }
            let mut sliding = Vec::new();
            for (i, t) in types.iter().enumerate() {
                match t.as_str() {
                    "full_attention" => {}
                    "sliding_attention" => sliding.push(i as i64),
                    other => {
                        return Err(c.error(
                            "layer_types",
                            format!("layer type `{other}` is not supported"),
                        ))
                    }
                }
            }
            sliding
        }
        LlamaLike::Qwen2 | LlamaLike::Qwen3 => {
            if !c.bool_or("use_sliding_window", false)? || !c.has("sliding_window") {
                return Ok(none);
            }
            (c.index_or("max_window_layers", 28)?..layers).collect()
        }
    };
    if sliding.is_empty() {
        return Ok(none);
    }
    if !c.has("sliding_window") {
        return Err(c.error(
            "sliding_window",
            "is required by the sliding_attention layers",
        ));
    }
    // A rule cannot choose "no window" (`none` reads as a missing argument), so a mixed stack
    // picks one of two bound blocks by a pattern with a letter per layer.
    let layer = if sliding.len() as i64 == layers {
        "decoder, window = sliding_window".to_string()
    } else {
        let pattern: String = (0..layers)
            .map(|i| if sliding.contains(&i) { 'S' } else { 'F' })
            .collect();
        format!("pattern = \"{pattern}\",\n            F = decoder, S = bind(decoder, window = sliding_window)")
    };
    Ok((", window = none", ", window = window", layer))
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
            ("eps", float(c.eps_or("layer_norm_epsilon", 1e-5)?)),
        ]),
    ))
}
