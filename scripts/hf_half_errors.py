"""Record how far transformers itself is from its f32 outputs when run in bf16 and in f16.

For each fixture in tests/fixtures/hf (made by scripts/make_hf_fixtures.py), the model is loaded
from the fixture's config and weights, cast to bf16 (then f16), and run on the fixture's inputs;
each output's relative error ‖got − want‖/‖want‖ against the fixture's f32 outputs is written to
`tests/fixtures/hf_half_errors.json`:

    {"llama": {"bf16": {"logits": 5.2e-3}, "f16": {"logits": 6.6e-4}}, ...}

`tests/all/lowering.rs` holds `archc run --dtype bf16|f16` to these: narrow storage cannot be
closer to the f32 outputs than the format allows, and transformers shows what it allows.

Run from the repository root, in a venv with torch and transformers:

    venv/bin/python scripts/hf_half_errors.py
"""

import json
import os

import torch
import transformers
from safetensors.torch import load_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
HF = os.path.join(ROOT, "tests", "fixtures", "hf")
OUT = os.path.join(ROOT, "tests", "fixtures", "hf_half_errors.json")


def model(d, causal):
    """The fixture's model: with its LM head when its outputs are logits, the bare one else."""
    auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModel
    return auto.from_pretrained(d, dtype=torch.float32).eval()


def errors(d, dtype):
    want = load_file(os.path.join(d, "outputs.safetensors"))
    m = model(d, "logits" in want).to(dtype)
    inputs = load_file(os.path.join(d, "inputs.safetensors"))
    kw = {}
    for k, v in inputs.items():
        kw[k] = v.long() if not v.is_floating_point() else v.to(dtype)
    with torch.no_grad():
        out = m(**kw)
    errs = {}
    for name, w in want.items():
        got = getattr(out, name, None)
        if got is None:
            continue
        errs[name] = ((got.float() - w).norm() / w.norm()).item()
    return errs


def main():
    table = {}
    for case in sorted(os.listdir(HF)):
        d = os.path.join(HF, case)
        table[case] = {name: errors(d, dtype) for name, dtype in [("bf16", torch.bfloat16), ("f16", torch.float16)]}
        print(case, table[case], flush=True)
    with open(OUT, "w") as f:
        json.dump(table, f, indent=2, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
