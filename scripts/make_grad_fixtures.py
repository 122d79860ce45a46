"""Record PyTorch autograd's gradients for the Hugging Face fixtures (tests/fixtures/hf/<case>/).

For each case, the committed model is loaded back in f32 (eval mode: no dropout), run on the
fixture's inputs, and the scalar Σ over outputs of Σ (output · cotangent) is differentiated
with respect to every parameter, the cotangents being random normal (seeded). Two files are
added beside the fixture:

    cotangents.safetensors   one tensor per output, named like it (what `archc grad` reads)
    grads.safetensors        one f32 gradient per weight, by its checkpoint name (zeros for a
                             weight the outputs do not depend on), as save_pretrained writes
                             the weights themselves

tests/all/grad.rs checks `archc`'s gradient graph against them on every backend.

    venv/bin/python scripts/make_grad_fixtures.py [CASE...]
"""

import os
import shutil
import sys

import torch
import transformers
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_hf_fixtures import CASES, ROOT  # noqa: E402


def record(case):
    transformers.utils.logging.disable_progress_bar()
    out_dir = os.path.join(ROOT, case)
    model_cls = getattr(transformers, CASES[case][1])
    model = model_cls.from_pretrained(out_dir, dtype=torch.float32).eval()
    model.config._attn_implementation = "eager"
    inputs = load_file(os.path.join(out_dir, "inputs.safetensors"))
    expected = load_file(os.path.join(out_dir, "outputs.safetensors"))
    result = model(**inputs)
    g = torch.Generator().manual_seed(4321)
    cotangents = {k: torch.randn(expected[k].shape, generator=g) for k in sorted(expected)}
    loss = sum((result[k].float() * c).sum() for k, c in cotangents.items())
    loss.backward()
    # The gradients under the checkpoint's names and layout: written by save_pretrained in
    # place of the weights (transformers may hold weights fused, MoE experts in one tensor,
    # and split them into the checkpoint's names only as it saves).
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.grad if p.grad is not None else torch.zeros_like(p))
    tmp = os.path.join(out_dir, "_grads")
    model.save_pretrained(tmp)
    shutil.move(os.path.join(tmp, "model.safetensors"), os.path.join(out_dir, "grads.safetensors"))
    shutil.rmtree(tmp)
    save_file(cotangents, os.path.join(out_dir, "cotangents.safetensors"))
    grads = load_file(os.path.join(out_dir, "grads.safetensors"))
    print(f"{case:26s} {len(grads):3d} gradients, largest |g| {max(v.abs().max().item() for v in grads.values()):.3e}")


def main():
    for case in sys.argv[1:] or [c for c in CASES if os.path.isdir(os.path.join(ROOT, c))]:
        record(case)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
