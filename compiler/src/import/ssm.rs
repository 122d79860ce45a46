//! State-space language models: Mamba and Mamba-2.

use super::config::{Cfg, ImportError};
use super::{config_block, embed_and_head, float};

/// Mamba's Δ rank: an integer, or "auto" for ⌈dim / 16⌉.
pub fn dt_rank(c: &Cfg, field: &str, dim: i64) -> Result<i64, ImportError> {
    match c.str(field) {
        Ok(s) if s == "auto" => Ok((dim + 15) / 16),
        Ok(s) => Err(c.error(
            field,
            format!("must be an integer or \"auto\", found \"{s}\""),
        )),
        Err(_) => c.int_or(field, (dim + 15) / 16),
    }
}

/// Checks that the SSM's activation is SiLU (the only one the prelude blocks use).
pub fn expect_silu(c: &Cfg, field: &str) -> Result<(), ImportError> {
    match c.str_or(field, "silu")?.as_str() {
        "silu" | "swish" => Ok(()),
        other => Err(c.error(
            field,
            format!("activation `{other}` is not supported in the SSM (only silu)"),
        )),
    }
}

/// The backbone both Mamba families share: embeddings, pre-norm residual mixers, final norm
/// and LM head, with `mixer` applied to the normed input.
fn backbone(
    c: &Cfg,
    model: &str,
    entries: &[(&str, String)],
    mixer: &str,
    tied_default: bool,
) -> Result<String, ImportError> {
    let tied = c.bool_or("tie_word_embeddings", tied_default)?;
    let (embed, head) = embed_and_head(tied, "backbone.embeddings", "h", "lm_head");
    Ok(format!(
        "model {model} {{
{}  input input_ids: i32[batch, seq]

  block residual_mixer(x) {{
    y = {mixer} @mixer
    return x + y
  }}

{embed}  h = stack(h, layers, residual_mixer) @backbone.layers
  h = rmsnorm(h, eps) @backbone.norm_f
{head}}}
",
        config_block(entries)
    ))
}

/// MambaForCausalLM.
pub fn mamba(c: &Cfg) -> Result<String, ImportError> {
    let dim = c.int("hidden_size")?;
    let expand = c.int_or("expand", 2)?;
    expect_silu(c, "hidden_act")?;
    if c.has("intermediate_size") && c.int("intermediate_size")? != expand * dim {
        return Err(c.error("intermediate_size", "must equal expand × hidden_size"));
    }
    let mixer = format!(
        "mamba(rmsnorm(x, eps) @norm, d_state, d_conv, expand, dt_rank, conv_bias = {}, bias = {})",
        c.bool_or("use_conv_bias", true)?,
        c.bool_or("use_bias", false)?
    );
    let entries = [
        ("vocab", c.int("vocab_size")?.to_string()),
        ("dim", dim.to_string()),
        ("layers", c.int("num_hidden_layers")?.to_string()),
        ("d_state", c.int_or("state_size", 16)?.to_string()),
        ("d_conv", c.int_or("conv_kernel", 4)?.to_string()),
        ("expand", expand.to_string()),
        ("dt_rank", dt_rank(c, "time_step_rank", dim)?.to_string()),
        ("eps", float(c.eps_or("layer_norm_epsilon", 1e-5)?)),
    ];
    backbone(c, "mamba", &entries, &mixer, true)
}

/// Mamba2ForCausalLM.
pub fn mamba2(c: &Cfg) -> Result<String, ImportError> {
    let dim = c.int("hidden_size")?;
    let heads = c.int("num_heads")?;
    let head_dim = c.int("head_dim")?;
    let groups = c.int_or("n_groups", 1)?;
    expect_silu(c, "hidden_act")?;
    if heads * head_dim != c.int_or("expand", 2)? * dim {
        return Err(c.error(
            "num_heads",
            "num_heads × head_dim must equal expand × hidden_size",
        ));
    }
    if heads % groups != 0 {
        return Err(c.error(
            "n_groups",
            format!("{groups} does not divide {heads} heads"),
        ));
    }
    let mixer = format!(
        "mamba2(rmsnorm(x, eps) @norm, heads, head_dim, d_state, groups, d_conv, conv_bias = {},
               bias = {}, eps = eps, norm_group = heads * head_dim / groups, dt_min = dt_min)",
        c.bool_or("use_conv_bias", true)?,
        c.bool_or("use_bias", false)?
    );
    let entries = [
        ("vocab", c.int("vocab_size")?.to_string()),
        ("dim", dim.to_string()),
        ("layers", c.int("num_hidden_layers")?.to_string()),
        ("heads", heads.to_string()),
        ("head_dim", head_dim.to_string()),
        ("d_state", c.int_or("state_size", 128)?.to_string()),
        ("groups", groups.to_string()),
        ("d_conv", c.int_or("conv_kernel", 4)?.to_string()),
        ("dt_min", float(c.dt_floor("time_step_limit")?)),
        ("eps", float(c.eps_or("layer_norm_epsilon", 1e-5)?)),
    ];
    backbone(c, "mamba2", &entries, &mixer, false)
}
