"""Record exact parameter counts of tiny Hugging Face reference models.

For each family, a tiny randomly initialised `transformers` model is built from the
explicit config below (`torch.manual_seed(0)`, no downloads, everything not listed left at the
family default) and its parameter count is taken with `model.num_parameters()`, which counts
shared / tied parameters once. The raw `sum(p.numel() for p in model.parameters())` is printed
alongside as a cross-check (`model.parameters()` also yields each shared tensor once, so the two
agree).

The result is written to `tests/fixtures/hf_param_counts.json` (sorted keys, indent 2):

    {"gpt2": {"class": "GPT2LMHeadModel", "transformers": "<version>",
              "config": {...the explicit overrides...}, "parameters": N}, ...}

Run from the repository root, in a venv with torch and transformers:

    python -m venv venv && venv/bin/pip install torch transformers
    venv/bin/python scripts/hf_param_counts.py [FAMILY ...]
"""

import json
import os
import sys

import torch
import transformers

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "hf_param_counts.json")

# family -> (config class, model class, explicit config overrides)
CASES = {
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(
        vocab_size=512, n_positions=128, n_embd=64, n_layer=2, n_head=4)),
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(
        vocab_size=512, hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=10000.0,
        tie_word_embeddings=False)),
    "bert": ("BertConfig", "BertModel", dict(
        vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
        max_position_embeddings=128, type_vocab_size=2)),
    "mamba": ("MambaConfig", "MambaForCausalLM", dict(
        vocab_size=512, hidden_size=64, state_size=16, num_hidden_layers=2, expand=2, conv_kernel=4)),
    "mamba2": ("Mamba2Config", "Mamba2ForCausalLM", dict(
        vocab_size=512, hidden_size=64, state_size=16, num_hidden_layers=2, expand=2, head_dim=16, num_heads=8,
        n_groups=2, conv_kernel=4, chunk_size=16)),
    "jamba": ("JambaConfig", "JambaForCausalLM", dict(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=8, num_attention_heads=4,
        num_key_value_heads=2, attn_layer_period=4, attn_layer_offset=2, expert_layer_period=2,
        expert_layer_offset=1, num_experts=4, num_experts_per_tok=2, mamba_d_state=16, mamba_d_conv=4,
        mamba_expand=2, use_mamba_kernels=False)),
    # Zamba2Config has no `mamba_headdim` field: it derives mamba_expand * hidden_size // n_mamba_heads
    # (= 2 * 64 // 8 = 16) and then stores extra kwargs over it, so passing the same value is a no-op.
    # The legacy "mamba" layer type is remapped by the config to "linear_attention".
    "zamba2": ("Zamba2Config", "Zamba2ForCausalLM", dict(
        vocab_size=512, hidden_size=64, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=4,
        mamba_d_state=16, mamba_headdim=16, mamba_expand=2, mamba_ngroups=1, n_mamba_heads=8, intermediate_size=128,
        num_mem_blocks=2, layers_block_type=["mamba", "hybrid", "mamba", "hybrid", "mamba", "hybrid"])),
    "bamba": ("BambaConfig", "BambaForCausalLM", dict(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, attn_layer_indices=[1, 3], mamba_n_heads=8, mamba_d_head=16, mamba_n_groups=1,
        mamba_d_state=16, mamba_expand=2, mamba_d_conv=4, mamba_chunk_size=16)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(
        vocab_size=512, hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=10000.0,
        sliding_window=16, tie_word_embeddings=False)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(
        vocab_size=512, hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-6, rope_theta=1000000.0,
        tie_word_embeddings=True)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(
        vocab_size=512, hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, max_position_embeddings=128, rms_norm_eps=1e-6,
        rope_theta=1000000.0, tie_word_embeddings=True)),
    "ijepa": ("IJepaConfig", "IJepaModel", dict(
        image_size=32, patch_size=8, num_channels=3, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128)),
}


def build(family):
    """Build the tiny model for `family` from its explicit config, with seeded random init."""
    config_cls, model_cls, overrides = CASES[family]
    torch.manual_seed(0)
    config = getattr(transformers, config_cls)(**overrides)
    return getattr(transformers, model_cls)(config).eval()


def main():
    # Families named on the command line are recounted into the existing file; none: all.
    families = sys.argv[1:] or list(CASES)
    result = {}
    if sys.argv[1:] and os.path.exists(OUT):
        with open(OUT) as f:
            result = json.load(f)
    for family in families:
        _, model_cls, overrides = CASES[family]
        model = build(family)
        dedup = model.num_parameters()
        raw = sum(p.numel() for p in model.parameters())
        print(f"{family:8s} {model_cls:20s} num_parameters()={dedup:9d}  sum(numel)={raw:9d}")
        result[family] = {
            "class": model_cls,
            "transformers": transformers.__version__,
            "config": overrides,
            "parameters": dedup,
        }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(result, f, sort_keys=True, indent=2)
        f.write("\n")
    print(f"wrote {os.path.relpath(OUT)} (transformers {transformers.__version__}, torch {torch.__version__})")


if __name__ == "__main__":
    main()
