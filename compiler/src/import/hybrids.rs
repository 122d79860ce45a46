//! Attention/SSM hybrids: Jamba, Bamba and Zamba2.

use std::fmt::Write;

use serde_json::json;

use super::config::{Cfg, ImportError};
use super::rope::rope;
use super::ssm::{dt_rank, expect_silu};
use super::{activation, config_block, embed_and_head, float};

/// The stack lines shared by the causal-LM hybrids: embedding, `stack_call`, final norm, head.
fn causal_lm_tail(c: &Cfg, tied_default: bool, stack_call: &str) -> Result<String, ImportError> {
    let tied = c.bool_or("tie_word_embeddings", tied_default)?;
    let (embed, head) = embed_and_head(tied, "model.embed_tokens", "h", "lm_head");
    Ok(format!(
        "{embed}{stack_call}  h = rmsnorm(h, eps) @model.final_layernorm\n{head}"
    ))
}

/// JambaForCausalLM.
pub fn jamba(c: &Cfg) -> Result<String, ImportError> {
    let dim = c.int("hidden_size")?;
    let act = activation(c, "hidden_act")?;
    expect_silu(c, "hidden_act")?;
    let experts = c.int_or("num_experts", 16)?;
    let top_k = c.int_or("num_experts_per_tok", 2)?;
    if top_k > experts {
        return Err(c.error(
            "num_experts_per_tok",
            format!("{top_k} is above num_experts {experts}"),
        ));
    }
    let (ap, ao) = (
        c.int_or("attn_layer_period", 8)?,
        c.index_or("attn_layer_offset", 4)?,
    );
    let (ep, eo) = (
        c.int_or("expert_layer_period", 2)?,
        c.index_or("expert_layer_offset", 1)?,
    );
    for (f, p, o) in [
        ("attn_layer_offset", ap, ao),
        ("expert_layer_offset", ep, eo),
    ] {
        if o >= p {
            return Err(c.error(f, format!("{o} is not below its period {p}")));
        }
    }
    let ff_rule = if experts > 1 {
        format!("every({ep}, {eo}, moe_ffn, otherwise = mlp_ffn)")
    } else {
        "mlp_ffn".to_string()
    };
    let stack = format!(
        "  h = stack(h, layers, layer,\n            mixer = every({ap}, {ao}, attention_mixer, otherwise = mamba_mixer),\n            ff = {ff_rule}) @model.layers\n"
    );
    Ok(format!(
        "model jamba {{
{}  input input_ids: i32[batch, seq]

  block attention_mixer(x) {{
    return attention(x, heads, kv_heads, causal = true) @self_attn
  }}

  block mamba_mixer(x) {{
    return mamba(x, d_state, d_conv, expand, dt_rank, conv_bias = {}, bias = {}, inner_norms = true,
                 eps = eps) @mamba
  }}

  block moe_ffn(x) {{
    return moe(x, experts, top_k, ffn, {act})
  }}

  block mlp_ffn(x) {{
    return swiglu(x, ffn, {act})
  }}

  block layer(x, mixer, ff) {{
    x = x + mixer(rmsnorm(x, eps) @input_layernorm)
    return x + ff(rmsnorm(x, eps) @pre_ff_layernorm) @feed_forward
  }}

{}}}
",
        config_block(&[
            ("vocab", c.int("vocab_size")?.to_string()),
            ("dim", dim.to_string()),
            ("layers", c.int("num_hidden_layers")?.to_string()),
            ("heads", c.int("num_attention_heads")?.to_string()),
            (
                "kv_heads",
                c.int_or("num_key_value_heads", c.int("num_attention_heads")?)?
                    .to_string()
            ),
            ("ffn", c.int("intermediate_size")?.to_string()),
            ("experts", experts.to_string()),
            ("top_k", top_k.to_string()),
            ("d_state", c.int_or("mamba_d_state", 16)?.to_string()),
            ("d_conv", c.int_or("mamba_d_conv", 4)?.to_string()),
            ("expand", c.int_or("mamba_expand", 2)?.to_string()),
            ("dt_rank", dt_rank(c, "mamba_dt_rank", dim)?.to_string()),
            ("eps", float(c.eps_or("rms_norm_eps", 1e-6)?)),
        ]),
        c.bool_or("mamba_conv_bias", true)?,
        c.bool_or("mamba_proj_bias", false)?,
        causal_lm_tail(c, false, &stack)?,
    ))
}

/// BambaForCausalLM.
pub fn bamba(c: &Cfg) -> Result<String, ImportError> {
    let dim = c.int("hidden_size")?;
    let heads = c.int("num_attention_heads")?;
    let head_dim = c.int_or("head_dim", dim / heads)?;
    let act = activation(c, "hidden_act")?;
    let rope = rope(c, 0.5)?;
    let rotary = (head_dim as f64 * rope.fraction) as i64;
    if rotary <= 0 || rotary % 2 != 0 {
        return Err(c.error(
            "partial_rotary_factor",
            format!("gives {rotary} rotary dims; need a positive even number"),
        ));
    }
    let m_heads = c.int("mamba_n_heads")?;
    let m_head_dim = match c.str("mamba_d_head") {
        Ok(s) if s == "auto" => c.int_or("mamba_expand", 2)? * dim / m_heads,
        _ => c.int("mamba_d_head")?,
    };
    let groups = c.int_or("mamba_n_groups", 1)?;
    let indices = c.int_list("attn_layer_indices")?;
    let list: Vec<String> = indices.iter().map(i64::to_string).collect();
    let stack = "  h = stack(h, layers, layer,\n            mixer = at(attention_layers, attention_mixer, otherwise = mamba_mixer)) @model.layers\n";
    Ok(format!(
        "model bamba {{
{}  input input_ids: i32[batch, seq]

  block attention_mixer(x) {{
    return attention(x, heads, kv_heads, head_dim, rope_theta = rope_theta, rotary_dim = rotary_dim{rope_args},
                     causal = true, bias = {bias}, out_bias = {bias}) @self_attn
  }}

  block mamba_mixer(x) {{
    return mamba2(x, mamba_heads, mamba_head_dim, d_state, groups, d_conv, conv_bias = {}, bias = {},
                  eps = eps, norm_group = mamba_heads * mamba_head_dim / groups, dt_min = dt_min) @mamba
  }}

  block layer(x, mixer) {{
    x = x + mixer(rmsnorm(x, eps) @input_layernorm)
    return x + swiglu(rmsnorm(x, eps) @pre_ff_layernorm, ffn, {act}, {mlp_bias}) @feed_forward
  }}

{}}}
",
        config_block(&[
            ("vocab", c.int("vocab_size")?.to_string()),
            ("dim", dim.to_string()),
            ("layers", c.int("num_hidden_layers")?.to_string()),
            ("heads", heads.to_string()),
            ("kv_heads", c.int_or("num_key_value_heads", heads)?.to_string()),
            ("head_dim", head_dim.to_string()),
            ("rotary_dim", rotary.to_string()),
            ("rope_theta", float(rope.theta)),
            ("ffn", c.int("intermediate_size")?.to_string()),
            ("attention_layers", format!("[{}]", list.join(", "))),
            ("mamba_heads", m_heads.to_string()),
            ("mamba_head_dim", m_head_dim.to_string()),
            ("groups", groups.to_string()),
            ("d_state", c.int_or("mamba_d_state", 256)?.to_string()),
            ("d_conv", c.int_or("mamba_d_conv", 4)?.to_string()),
            ("dt_min", float(c.dt_floor("time_step_limit")?)),
            ("eps", float(c.eps_or("rms_norm_eps", 1e-5)?)),
        ]),
        c.bool_or("mamba_conv_bias", true)?,
        c.bool_or("mamba_proj_bias", false)?,
        causal_lm_tail(c, false, stack)?,
        bias = c.bool_or("attention_bias", false)?,
        mlp_bias = c.bool_or("mlp_bias", false)?,
        rope_args = rope.args("rotary_dim", "x.shape[1]", "rope_scale"),
    ))
}

/// Zamba2ForCausalLM.
pub fn zamba2(c: &Cfg) -> Result<String, ImportError> {
    let dim = c.int("hidden_size")?;
    let heads = c.int("num_attention_heads")?;
    let act = activation(c, "hidden_act")?;
    c.expect("use_shared_attention_adapter", json!(false))?;
    c.expect("add_bias_linear", json!(false))?;
    let kinds = c.str_list("layers_block_type")?;
    let mem_blocks = c.int_or("num_mem_blocks", 1)? as usize;
    let m_heads = c.int("n_mamba_heads")?;
    let expand = c.int_or("mamba_expand", 2)?;
    let m_head_dim = expand * dim / m_heads;
    let (theta, rope_lines) = mem_rope(c)?;
    let rope_config: Vec<_> = theta
        .map(|t| ("rope_theta", float(t)))
        .into_iter()
        .collect();
    let stack = zamba2_stack(c, &kinds, mem_blocks)?;
    Ok(format!(
        "model zamba2 {{
{}  input input_ids: i32[batch, seq]

  block mamba_layer(x, skip = none) {{
    h = x
    if skip != none {{
      h = h + skip
    }}
    y = mamba2(rmsnorm(h, eps) @input_layernorm, mamba_heads, mamba_head_dim, d_state, groups, d_conv,
               conv_bias = {}, eps = 1e-5, norm_group = mamba_heads * mamba_head_dim / groups,
               dt_min = dt_min) @mamba
    return x + y
  }}

  block shared_transformer(x, emb, site) {{
    h = rmsnorm(concat([x, emb], -1), eps) @input_layernorm
    q = split_heads(linear(h, heads * head_dim, false) @self_attn.q_proj, heads)
    k = split_heads(linear(h, kv_heads * head_dim, false) @self_attn.k_proj, kv_heads)
    v = split_heads(linear(h, kv_heads * head_dim, false) @self_attn.v_proj, kv_heads)
{rope_lines}    a = merge_heads(sdpa(q, k, v, causal = true, scale = 1.0 / sqrt(head_dim / 2)))
    h = rmsnorm(linear(a, dim, false) @self_attn.o_proj, eps) @pre_ff_layernorm
    gu = linear(h, 2 * ffn, false) @feed_forward.gate_up_proj
    low = linear(h, adapter_rank, false) @feed_forward.gate_up_proj_adapter_list.{{site}}.0
    gu = gu + linear(low, 2 * ffn, false) @feed_forward.gate_up_proj_adapter_list.{{site}}.1
    y = {act}(slice(gu, -1, 0, ffn)) * slice(gu, -1, ffn, 2 * ffn)
    return linear(y, dim, false) @feed_forward.down_proj
  }}

  block hybrid_layer(x, transformer, site, emb) {{
    t = linear(transformer(x, emb, site), dim, false) @linear
    return mamba_layer(x, skip = t) @mamba_decoder
  }}

{}}}
",
        config_block(
            &[
                &[
                ("vocab", c.int("vocab_size")?.to_string()),
                ("dim", dim.to_string()),
                ("layers", c.int("num_hidden_layers")?.to_string()),
                ("heads", heads.to_string()),
                ("kv_heads", c.int_or("num_key_value_heads", heads)?.to_string()),
                ("head_dim", (2 * dim / heads).to_string()),
                ("ffn", c.int_or("intermediate_size", 4 * dim)?.to_string()),
                ("adapter_rank", c.int_or("adapter_rank", 128)?.to_string()),
                ("mamba_heads", m_heads.to_string()),
                ("mamba_head_dim", m_head_dim.to_string()),
                ("groups", c.int_or("mamba_ngroups", 1)?.to_string()),
                ("d_state", c.int_or("mamba_d_state", 64)?.to_string()),
                ("d_conv", c.int_or("mamba_d_conv", 4)?.to_string()),
                ("dt_min", float(c.float_or("time_step_min", 0.001)?)),
                ("eps", float(c.eps_or("rms_norm_eps", 1e-5)?)),
                ][..],
                &rope_config[..],
            ]
            .concat()
        ),
        c.bool_or("use_conv_bias", true)?,
        causal_lm_tail(c, true, &stack)?,
    ))
}

/// Zamba2's `use_mem_rope`: rotary embeddings on the shared blocks' queries and keys, over the
/// whole attention head. Returns θ and the lines of `shared_transformer` that rotate `q` and
/// `k` (none and empty without it).
fn mem_rope(c: &Cfg) -> Result<(Option<f64>, String), ImportError> {
    if !c.bool_or("use_mem_rope", false)? {
        return Ok((None, String::new()));
    }
    let rope = rope(c, 1.0)?;
    if rope.fraction != 1.0 {
        return Err(c.error(
            "partial_rotary_factor",
            "partial rotary is not supported for zamba2",
        ));
    }
    let args = rope.args("head_dim", "x.shape[1]", "scale");
    let lines = format!("    q = rope(q, rope_theta{args})\n    k = rope(k, rope_theta{args})\n");
    Ok((Some(rope.theta), lines))
}

/// Zamba2's stack: one pattern letter per hybrid site, since each site binds its own shared
/// block (of `mem_blocks`, in turn), adapter index and linear.
fn zamba2_stack(c: &Cfg, kinds: &[String], mem_blocks: usize) -> Result<String, ImportError> {
    let mut pattern = String::new();
    let mut hybrid_ids = Vec::new();
    for (i, k) in kinds.iter().enumerate() {
        match k.as_str() {
            "mamba" | "linear_attention" => pattern.push('M'),
            "hybrid" => {
                hybrid_ids.push(i);
                pattern.push('?');
            }
            other => {
                return Err(c.error(
                    "layers_block_type",
                    format!("layer kind `{other}` is not supported"),
                ))
            }
        }
    }
    if kinds.len() as i64 != c.int("num_hidden_layers")? {
        return Err(c.error("layers_block_type", "must list one kind per layer"));
    }
    let letters: Vec<char> = ('A'..='Z').filter(|&l| l != 'M').collect();
    if hybrid_ids.len() > letters.len() {
        return Err(c.error(
            "layers_block_type",
            format!(
                "{} hybrid layers; the importer handles up to {}",
                hybrid_ids.len(),
                letters.len()
            ),
        ));
    }
    let mut shared = String::new();
    for (b, id) in hybrid_ids.iter().take(mem_blocks).enumerate() {
        let _ = writeln!(
            shared,
            "  shared block{b} = shared_transformer @model.layers.{id}.shared_transformer"
        );
    }
    let mut binds = String::from("            M = mamba_layer");
    for (site, _) in hybrid_ids.iter().enumerate() {
        pattern = pattern.replacen('?', &letters[site].to_string(), 1);
        let _ = write!(
            binds,
            ",\n            {} = bind(hybrid_layer, transformer = block{}, site = {site}, emb = h)",
            letters[site],
            site % mem_blocks
        );
    }
    Ok(format!(
        "{shared}  h = stack(h, layers, pattern = \"{pattern}\",\n{binds}) @model.layers\n"
    ))
}
