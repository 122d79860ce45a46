"""Build the Hugging Face parity fixtures under tests/fixtures/hf/<case>/.

For each seed family, a tiny randomly initialised `transformers` model is built from an explicit
config, run once in f32 on fixed inputs, and saved as:

    config.json            the model's config (what `archc import hf` reads)
    model.safetensors      its weights, as `save_pretrained` writes them
    inputs.safetensors     the forward arguments (input_ids, attention_mask, ...)
    outputs.safetensors    what transformers returned (logits or last_hidden_state, ...)

The cases use an odd sequence length (7), batch 2, grouped-query attention where the family has
it, and at least two layers of each kind for the hybrids. Two cases store bf16/f16 weights; their
reference outputs are computed from the same rounded weights, so parity stays exact up to f32
arithmetic while the loader's widening is exercised.

Run from the repository root, in a venv with torch, transformers and safetensors:

    python -m venv venv && venv/bin/pip install torch transformers safetensors
    venv/bin/python scripts/make_hf_fixtures.py

`--generate [CASE...]` adds the generation oracle to the causal cases' existing fixtures
(default: all of GENERATE), without rebuilding them: the committed model, loaded back, runs
greedy `generate()` for NEW_TOKENS tokens (its own KV/conv/SSM caches) on the fixture's
input_ids, and `generate.safetensors` keeps `generated_ids` (rows that stopped early padded as
transformers pads them) and `step_logits` (the raw logits of every step, `output_logits`).
"""

import json
import os
import shutil
import sys

import torch
import transformers
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "hf")
BATCH, SEQ = 2, 7

# The RoPE-scaling cases: one Llama layer whose 16-wide heads carry 8 frequencies. Weights
# larger than the default 0.02 give attention scores far from uniform, so that the positions'
# angles change the logits well beyond the parity tolerance.
ROPE_LLAMA = dict(initializer_range=0.3, vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
                  num_key_value_heads=1, head_dim=16, max_position_embeddings=1024, tie_word_embeddings=False)

CASES = {
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(vocab_size=96, n_positions=32, n_embd=32, n_layer=2, n_head=4)),
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(
        vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=False)),
    "llama_tied_bf16": ("LlamaConfig", "LlamaForCausalLM", dict(
        vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, max_position_embeddings=64, rms_norm_eps=1e-6, tie_word_embeddings=True,
        rope_theta=500000.0)),
    "bert": ("BertConfig", "BertModel", dict(
        vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=32, type_vocab_size=2)),
    "mamba": ("MambaConfig", "MambaForCausalLM", dict(
        vocab_size=96, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2, conv_kernel=4)),
    "mamba2": ("Mamba2Config", "Mamba2ForCausalLM", dict(
        vocab_size=96, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2, head_dim=8, num_heads=8,
        n_groups=2, conv_kernel=4, chunk_size=4)),
    "jamba": ("JambaConfig", "JambaForCausalLM", dict(
        vocab_size=96, hidden_size=32, intermediate_size=32, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2,
        expert_layer_offset=0, num_experts=4, num_experts_per_tok=2, mamba_d_state=8, mamba_d_conv=4,
        mamba_expand=2, use_mamba_kernels=False)),
    "zamba2": ("Zamba2Config", "Zamba2ForCausalLM", dict(
        vocab_size=96, hidden_size=32, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=4,
        mamba_d_state=8, mamba_expand=2, mamba_ngroups=1, n_mamba_heads=8, intermediate_size=32,
        num_mem_blocks=2, adapter_rank=8, chunk_size=4,
        layers_block_type=["mamba", "hybrid", "mamba", "hybrid", "mamba", "hybrid"])),
    "bamba": ("BambaConfig", "BambaForCausalLM", dict(
        vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, attn_layer_indices=[1, 3], mamba_n_heads=8, mamba_d_head=8, mamba_n_groups=1,
        mamba_d_state=8, mamba_expand=2, mamba_d_conv=4, mamba_chunk_size=4)),
    # RoPE scaling: a small θ and a 16-wide head, so the scaled frequencies change the angles at
    # positions 0..6 (llama3 puts two frequencies in each of its three bands).
    "llama_rope_llama3": ("LlamaConfig", "LlamaForCausalLM", dict(
        ROPE_LLAMA, rope_parameters=dict(rope_type="llama3", rope_theta=100.0, factor=8.0, low_freq_factor=1.0,
                                         high_freq_factor=4.0, original_max_position_embeddings=128))),
    "llama_rope_linear": ("LlamaConfig", "LlamaForCausalLM", dict(
        ROPE_LLAMA, rope_parameters=dict(rope_type="linear", rope_theta=100.0, factor=2.0))),
    # Dynamic NTK only acts beyond max_position_embeddings: 4 < SEQ.
    "llama_rope_dynamic": ("LlamaConfig", "LlamaForCausalLM", dict(
        ROPE_LLAMA, max_position_embeddings=4, rope_parameters=dict(rope_type="dynamic", rope_theta=100.0, factor=3.0))),
    # ... and leaves the frequencies alone up to it: 16 > SEQ.
    "llama_rope_dynamic_short": ("LlamaConfig", "LlamaForCausalLM", dict(
        ROPE_LLAMA, max_position_embeddings=16, rope_parameters=dict(rope_type="dynamic", rope_theta=100.0, factor=3.0))),
    "llama_rope_yarn": ("LlamaConfig", "LlamaForCausalLM", dict(
        ROPE_LLAMA, max_position_embeddings=64, rope_parameters=dict(rope_type="yarn", rope_theta=100.0, factor=4.0,
                                         original_max_position_embeddings=16))),
    # Rotary embeddings in the shared attention blocks.
    "zamba2_rope": ("Zamba2Config", "Zamba2ForCausalLM", dict(
        vocab_size=96, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
        mamba_d_state=8, mamba_expand=2, mamba_ngroups=1, n_mamba_heads=8, intermediate_size=32,
        num_mem_blocks=1, adapter_rank=8, chunk_size=4, use_mem_rope=True, initializer_range=0.3,
        rope_parameters=dict(rope_type="default", rope_theta=100.0),
        layers_block_type=["mamba", "hybrid", "mamba", "hybrid"])),
    # q/k/v biases; layer 1 attends through a sliding window of 3 (max_window_layers=1).
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(
        vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, use_sliding_window=True, sliding_window=3,
        max_window_layers=1, tie_word_embeddings=False)),
    # RMSNorms on the query and key heads.
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(
        vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=64, tie_word_embeddings=True)),
    # A sliding window of 3 on every layer.
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(
        vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, sliding_window=3, tie_word_embeddings=False)),
    "ijepa": ("IJepaConfig", "IJepaModel", dict(
        image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64)),
}

# Cases whose weights are stored in a half-precision format.
HALF = {"llama_tied_bf16": torch.bfloat16, "mamba": torch.float16}


def inputs_for(case, config):
    g = torch.Generator().manual_seed(1234)
    if case == "ijepa":
        return {"pixel_values": torch.randn(BATCH, 3, config.image_size, config.image_size, generator=g)}
    ids = torch.randint(0, config.vocab_size, (BATCH, SEQ), generator=g)
    if case == "bert":
        mask = torch.ones(BATCH, SEQ, dtype=torch.long)
        mask[1, SEQ - 2:] = 0  # the second sentence is two tokens shorter: padding
        types = torch.zeros(BATCH, SEQ, dtype=torch.long)
        types[:, SEQ // 2:] = 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return {"input_ids": ids}


def build(case):
    config_cls, model_cls, overrides = CASES[case]
    torch.manual_seed(0)
    config = getattr(transformers, config_cls)(**overrides)
    config._attn_implementation = "eager"
    model = getattr(transformers, model_cls)(config).eval()
    if case in HALF:
        # Round the weights through the half type, so the file and the f32 reference agree.
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(HALF[case]).float())
    return config, model


# The causal cases whose generation archc must reproduce, and how many tokens.
GENERATE = ["gpt2", "llama", "mistral", "qwen2", "qwen3", "mamba", "mamba2", "jamba", "bamba", "zamba2"]
NEW_TOKENS = 20
# Cases generated once more with an end token both rows produce at different steps, so that one
# row stops early and is padded (Jamba's pad_token_id 0 is not its end token).
EARLY_EOS = {"jamba": 63}


def generate_oracle(case, eos=None):
    out_dir = os.path.join(ROOT, case)
    model = transformers.AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32).eval()
    model.config._attn_implementation = "eager"
    ids = transformers.modeling_utils.load_state_dict(os.path.join(out_dir, "inputs.safetensors"))["input_ids"]
    with torch.no_grad():
        extra = {} if eos is None else {"eos_token_id": eos}
        result = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, output_logits=True,
                                return_dict_in_generate=True, **extra)
    new = result.sequences[:, ids.shape[1]:]
    logits = torch.stack(result.logits, dim=1).float()
    save_file({"generated_ids": new.to(torch.int32).contiguous(), "step_logits": logits.contiguous()},
              os.path.join(out_dir, "generate.safetensors" if eos is None else f"generate_eos{eos}.safetensors"))
    print(f"{case:16s} generated {list(new.shape)}: {new.tolist()}")


def main():
    if sys.argv[1:2] == ["--generate"]:
        for case in sys.argv[2:] or GENERATE:
            generate_oracle(case)
            if case in EARLY_EOS:
                generate_oracle(case, EARLY_EOS[case])
        return
    cases = sys.argv[1:] or list(CASES)
    for case in cases:
        config, model = build(case)
        out_dir = os.path.join(ROOT, case)
        shutil.rmtree(out_dir, ignore_errors=True)
        os.makedirs(out_dir)
        inputs = inputs_for(case, config)
        with torch.no_grad():
            result = model(**inputs)
        outputs = {k: result[k].float().contiguous() for k in ("logits", "last_hidden_state", "pooler_output")
                   if k in result and result[k] is not None}
        tmp = os.path.join(out_dir, "_pretrained")
        if case in HALF:
            model.to(HALF[case])
        model.save_pretrained(tmp)
        shutil.move(os.path.join(tmp, "config.json"), os.path.join(out_dir, "config.json"))
        shutil.move(os.path.join(tmp, "model.safetensors"), os.path.join(out_dir, "model.safetensors"))
        shutil.rmtree(tmp)
        save_file({k: v.contiguous() for k, v in inputs.items()}, os.path.join(out_dir, "inputs.safetensors"))
        save_file(outputs, os.path.join(out_dir, "outputs.safetensors"))
        size = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))
        print(f"{case:16s} {type(model).__name__:22s} {sum(p.numel() for p in model.parameters()):8d} params "
              f"{size / 1024:7.1f} KiB  outputs: {', '.join(f'{k}{list(v.shape)}' for k, v in outputs.items())}")
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
