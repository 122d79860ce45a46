//! Random `.arch` programs for the pass and code generation property tests: chains of layers
//! from the prelude (attention with GQA, masks, rope and softcaps; Mamba; Mamba-2; MoE; norms)
//! and plain elementwise, reduction and layout steps, on random small shapes. Weights are
//! random from a seed, so every program runs.

use proptest::prelude::*;

/// One step applied to the running value `h: f32[batch, seq, width]`.
#[derive(Clone, Debug)]
pub enum Step {
    /// `linear(h, n)`: a matmul with bias (an epilogue to fuse).
    Linear(usize),
    /// An activation: tanh, gelu, silu, softplus or a square.
    Act(usize),
    /// RMSNorm or LayerNorm.
    Norm(bool),
    /// Softmax over the last axis.
    Softmax,
    /// A residual branch `h + tanh(h) * 0.5`, so `h` has two users.
    Residual,
    /// Attention: (heads, kv_heads divisor, causal, padding mask, rope, tanh softcap).
    Attention(usize, usize, bool, bool, bool, bool),
    /// A Mamba-1 mixer with this state size.
    Mamba(usize),
    /// A Mamba-2 mixer: (heads, state size, groups).
    Mamba2(usize, usize, usize),
    /// A top-k mixture of 3 experts: (top_k).
    Moe(usize),
    /// Transpose the last two axes, then back (a layout round trip through a reduction).
    Transpose,
    /// A causal depthwise conv1d with SiLU.
    Conv(usize),
}

/// A program with the values to run it at.
#[derive(Clone, Debug)]
pub struct Program {
    /// The `.arch` source.
    pub source: String,
    /// The batch size.
    pub batch: usize,
    /// The sequence length.
    pub seq: usize,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        // Widths 1 and 3 too: a width-1 matmul with an epilogue once had no scalar form.
        prop_oneof![(1usize..6).prop_map(|k| 4 * k), Just(1), Just(3)].prop_map(Step::Linear),
        (0usize..5).prop_map(Step::Act),
        any::<bool>().prop_map(Step::Norm),
        Just(Step::Softmax),
        Just(Step::Residual),
        (
            prop_oneof![Just(1usize), Just(2), Just(4)],
            prop_oneof![Just(1usize), Just(2)],
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(h, g, c, m, r, s)| Step::Attention(h, g, c, m, r, s)),
        prop_oneof![Just(4usize), Just(8)].prop_map(Step::Mamba),
        (
            prop_oneof![Just(2usize), Just(4)],
            prop_oneof![Just(4usize), Just(8)],
            prop_oneof![Just(1usize), Just(2)]
        )
            .prop_map(|(h, n, g)| Step::Mamba2(h, n, g)),
        (1usize..3).prop_map(Step::Moe),
        Just(Step::Transpose),
        (2usize..5).prop_map(Step::Conv),
    ]
}

/// The source line of one step at position `i`, for the current width `w`; returns the new
/// width.
fn line(i: usize, s: &Step, w: usize, out: &mut String) -> usize {
    let text = match s {
        Step::Linear(n) => {
            out.push_str(&format!("  h = linear(h, {n}) @lin{i}\n"));
            return *n;
        }
        Step::Act(k) => match k {
            0 => "h = tanh(h)".to_string(),
            1 => "h = gelu(h)".to_string(),
            2 => "h = silu(h)".to_string(),
            3 => "h = softplus(h * 4.0) - 0.5".to_string(),
            _ => "h = h * h - 0.25".to_string(),
        },
        Step::Norm(true) => format!("h = rmsnorm(h) @norm{i}"),
        Step::Norm(false) => format!("h = layernorm(h) @norm{i}"),
        Step::Softmax => "h = softmax(h, -1)".to_string(),
        Step::Residual => "h = h + tanh(h) * 0.5".to_string(),
        Step::Attention(heads, group, causal, mask, rope, softcap) => {
            let kv = (heads / group).max(1);
            let causal = if *causal { "true" } else { "false" };
            let mask = if *mask { "m" } else { "none" };
            if *softcap {
                format!("h = h + capped_attention(h, {heads}, {kv}, {causal}, {mask}) @attn{i}")
            } else {
                let rope = if *rope { "10000.0" } else { "none" };
                format!(
                    "h = h + attention(h, {heads}, {kv}, head_dim = 4, rope_theta = {rope}, \
                     causal = {causal}, mask = {mask}) @attn{i}"
                )
            }
        }
        Step::Mamba(n) => format!("h = h + mamba(h, d_state = {n}, dt_rank = 2) @mamba{i}"),
        Step::Mamba2(heads, n, groups) => {
            format!("h = h + mamba2(h, {heads}, 4, d_state = {n}, groups = {groups}) @mamba{i}")
        }
        Step::Moe(k) => format!("h = h + moe(h, 3, {k}, 8) @moe{i}"),
        Step::Transpose => "h = transpose(softmax(transpose(h), -1)) * 2.0".to_string(),
        Step::Conv(k) => format!("h = silu(causal_conv1d(h, {k}) @conv{i})"),
    };
    out.push_str(&format!("  {text}\n"));
    w
}

/// Attention written out by hand with a Gemma-2 style tanh softcap on the scores.
const CAPPED: &str = "  block capped_attention(x, heads, kv, causal, mask) {
    q = split_heads(linear(x, heads * 4, false) @q_proj, heads)
    k = split_heads(linear(x, kv * 4, false) @k_proj, kv)
    v = split_heads(linear(x, kv * 4, false) @v_proj, kv)
    b = q.shape[0]
    s = q.shape[2]
    q = reshape(q, [b, kv, heads / kv, s, 4])
    scores = matmul(q, transpose(unsqueeze(k, 2))) * 0.5
    scores = 3.0 * tanh(scores / 3.0)
    if causal {
      scores = where(unsqueeze(iota(s), 1) >= unsqueeze(iota(s), 0), scores, -1e30)
    }
    if mask != none {
      scores = where(reshape(mask, [b, 1, 1, 1, s]) != 0, scores, -1e30)
    }
    o = reshape(matmul(softmax(scores, -1), unsqueeze(v, 2)), [b, heads, s, 4])
    return linear(merge_heads(o), x.shape[-1], false) @o_proj
  }
";

/// The source of a model applying `steps` to embedded tokens of width `width`.
pub fn source(width: usize, steps: &[Step]) -> String {
    let mut body = String::new();
    let mut w = width;
    for (i, s) in steps.iter().enumerate() {
        // Layers that need their own width get a projection first.
        match s {
            Step::Attention(..) | Step::Mamba2(..) | Step::Mamba(..) | Step::Moe(..) if w != 8 => {
                body.push_str(&format!("  h = linear(h, 8) @fit{i}\n"));
                w = 8;
            }
            _ => {}
        }
        w = line(i, s, w, &mut body);
    }
    format!(
        "model p {{\n  input ids: i32[batch, seq]\n  input m: i32[batch, seq]\n{CAPPED}\
         \n  h = embedding(ids, 11, {width}) @emb\n  h = h + unsqueeze(cast(m, f32), -1) * 0.0\n{body}  \
         output y = h\n  output total = sum(h * h, [1, 2])\n}}\n"
    )
}

/// Random programs of up to `max_steps` steps.
pub fn programs(max_steps: usize) -> impl Strategy<Value = Program> {
    (
        1usize..3,
        1usize..10,
        prop_oneof![Just(4usize), Just(8), Just(12)],
        prop::collection::vec(step(), 1..max_steps + 1),
    )
        .prop_map(|(batch, seq, width, steps)| Program {
            source: source(width, &steps),
            batch,
            seq,
        })
}
