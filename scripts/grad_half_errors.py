"""Record how far PyTorch's own gradients are from its f32 gradients when the model runs in
bf16, for the Hugging Face fixtures with recorded gradients (scripts/make_grad_fixtures.py).

For each fixture the model is loaded, cast to bf16, run on the fixture's inputs, and
Σ (output · cotangent) is differentiated (the fixture's cotangents, in bf16); its gradients,
under the checkpoint's names (written by save_pretrained, as the f32 ones were), are compared
with the fixture's f32 gradients by the error tests/all/grad.rs uses: max |got − want| over a
tensor ÷ the larger of its max |want| and FLOOR × the model's largest gradient, worst over the
weights. The result goes to `tests/fixtures/grad_half_errors.json`:

    {"llama": {"bf16": 1.9e-2}, ...}

tests/all/grad.rs holds `archc grad --dtype bf16` to these: narrow storage cannot be closer to
the f32 gradients than the format allows, and PyTorch shows what it allows.

    venv/bin/python scripts/grad_half_errors.py
"""

import json
import os
import shutil
import sys
import tempfile

import torch
import transformers
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_hf_fixtures import CASES, ROOT  # noqa: E402

OUT = os.path.join(ROOT, "..", "grad_half_errors.json")
# A gradient that is nearly zero throughout (attention's key bias) is measured against this
# share of the model's largest gradient instead: in bf16 its values are rounding noise.
FLOOR = 1e-3


def worst(got, want):
    largest = max(v.abs().max().item() for v in want.values())
    err = 0.0
    for name, w in want.items():
        scale = max(w.abs().max().item(), FLOOR * largest)
        err = max(err, (got[name].double() - w.double()).abs().max().item() / scale)
    return err


def bf16_grads(case):
    d = os.path.join(ROOT, case)
    model = getattr(transformers, CASES[case][1]).from_pretrained(d, dtype=torch.float32).eval()
    model.config._attn_implementation = "eager"
    model = model.to(torch.bfloat16)
    inputs = load_file(os.path.join(d, "inputs.safetensors"))
    inputs = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in inputs.items()}
    cotangents = load_file(os.path.join(d, "cotangents.safetensors"))
    result = model(**inputs)
    loss = sum((result[k].float() * c).sum() for k, c in cotangents.items())
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.grad if p.grad is not None else torch.zeros_like(p))
    tmp = tempfile.mkdtemp()
    model.to(torch.float32).save_pretrained(tmp)
    got = load_file(os.path.join(tmp, "model.safetensors"))
    shutil.rmtree(tmp)
    return got


def main():
    transformers.utils.logging.disable_progress_bar()
    table = {}
    for case in sys.argv[1:] or sorted(CASES):
        d = os.path.join(ROOT, case)
        if not os.path.exists(os.path.join(d, "grads.safetensors")):
            continue
        err = worst(bf16_grads(case), load_file(os.path.join(d, "grads.safetensors")))
        table[case] = {"bf16": err}
        print(f"{case:26s} bf16 {err:.2e}")
    with open(OUT, "w") as f:
        json.dump(table, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {os.path.normpath(OUT)}; transformers {transformers.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
