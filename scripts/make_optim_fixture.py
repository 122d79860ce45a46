"""Record torch's optimiser steps for tests/all/train.rs (tests/fixtures/optim.safetensors).

From one random weight p0 and three random gradients g1..g3 (37 values each):
- adamw_1..3: p after each step of torch.optim.AdamW(lr=1e-2, betas=(0.9, 0.999), eps=1e-8,
  weight_decay=0.1);
- sgd_1..3: the same with torch.optim.SGD(lr=0.05, momentum=0.9, weight_decay=0.01);
- ema_1: t0 moved toward adamw_1 as I-JEPA moves its target (`t.mul_(m).add_((1 - m) * o)`,
  m = 0.996);
- clip_a, clip_b: g1 and g2 after torch.nn.utils.clip_grad_norm_([.., ..], max_norm=0.5).

    venv/bin/python scripts/make_optim_fixture.py
"""

import os

import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "optim.safetensors")


def steps(make, p0, grads):
    p = torch.nn.Parameter(p0.clone())
    opt = make([p])
    out = []
    for g in grads:
        p.grad = g.clone()
        opt.step()
        out.append(p.detach().clone())
    return out


def main():
    g = torch.Generator().manual_seed(7)
    p0, t0 = torch.randn(37, generator=g), torch.randn(37, generator=g)
    grads = [torch.randn(37, generator=g) for _ in range(3)]
    tensors = {"p0": p0, "t0": t0, **{f"g{i + 1}": x for i, x in enumerate(grads)}}
    adamw = steps(lambda ps: torch.optim.AdamW(ps, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1), p0, grads)
    sgd = steps(lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.01), p0, grads)
    tensors.update({f"adamw_{i + 1}": x for i, x in enumerate(adamw)})
    tensors.update({f"sgd_{i + 1}": x for i, x in enumerate(sgd)})
    m = 0.996
    tensors["ema_1"] = t0.clone().mul_(m).add_((1.0 - m) * adamw[0])
    a, b = torch.nn.Parameter(p0.clone()), torch.nn.Parameter(t0.clone())
    a.grad, b.grad = grads[0].clone(), grads[1].clone()
    torch.nn.utils.clip_grad_norm_([a, b], max_norm=0.5)
    tensors["clip_a"], tensors["clip_b"] = a.grad, b.grad
    save_file({k: v.contiguous() for k, v in tensors.items()}, OUT)
    print(f"wrote {OUT}: {len(tensors)} tensors (torch {torch.__version__})")


if __name__ == "__main__":
    main()
