"""Training steps, archc against PyTorch eager on the same threads, in alternating rounds:

- examples/llama.arch at 8 × 256 tokens: `archc train` with the example's `train` section
  (next-token loss, AdamW with β₂ 0.95 and weight decay 0.1 outside the norms, clipping at 1)
  against transformers' LlamaForCausalLM with the same config, weights and recipe (its loss
  from `labels`, backward, clip_grad_norm_, torch.optim.AdamW);
- examples/ijepa_train.arch at 128 images: against bench/ijepa_torch.py, the same objective
  written in PyTorch (context encoder and predictor trained, EMA target under no_grad, the
  collapse metrics computed each step as the example's step computes them, AdamW with the
  example's parameter groups, the EMA update), from the same weights.

    python3 bench/train_vs_torch.py --archc target/release/archc [--threads 2] [--rounds 3] [--only ijepa]
        [--backend llvm|cranelift]

Each round times `--steps` steps of each: archc's figure is the steps/s `archc train` prints
(the loop after compilation: the step graph's run, the optimiser on the host, the weights
reloaded into the executor every step); torch's is the median of its steps. The ratio is
torch ms / archc ms per round (> 1: archc is faster). Peak memory is each process's peak
resident set: the `archc train` process's own (it prints it), and this Python process's
(Python, torch, transformers and the models) after the workload.
"""

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import transformers
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import fmt_ratio, llvm_supported, machine_lines, ratio, run_rounds  # noqa: E402
from cpu_vs_torch import LLAMA_EXAMPLE, LLAMA_EXAMPLE_CFG  # noqa: E402
import ijepa_torch  # noqa: E402

BATCH, SEQ = 8, 256
IJEPA_EXAMPLE = os.path.join(os.path.dirname(LLAMA_EXAMPLE), "ijepa_train.arch")
IJEPA_BATCH = 128


class TorchTrain:
    name = "torch"

    def __init__(self, step, batches, steps):
        self.step, self.batches, self.steps = step, batches, steps

    def time(self, threads):
        torch.set_num_threads(threads)
        times = []
        for i in range(self.steps + 1):
            batch = self.batches[i % len(self.batches)]
            t = time.perf_counter()
            self.step(*batch)
            if i:  # the first step warms up
                times.append(time.perf_counter() - t)
        return statistics.median(times) * 1e3


def llama_step(model):
    """One step of the example's recipe: AdamW (lr 3e-3, β₂ 0.95, weight decay 0.1 except the
    norms' gains), gradients clipped at norm 1."""
    named = list(model.named_parameters())
    groups = [{"params": [p for n, p in named if not n.endswith("norm.weight")], "weight_decay": 0.1},
              {"params": [p for n, p in named if n.endswith("norm.weight")], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=3e-3, betas=(0.9, 0.95))

    def step(ids):
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


class ArchcTrain:
    name = "archc"

    def __init__(self, args, example, weights, data, batch):
        self.cmd = [args.archc, "train", example, "--data", data, "--weights", weights,
                    "--steps", str(args.steps), "--batch", str(batch), "--backend", args.backend]

    def time(self, threads):
        cmd = [self.cmd[0], "--threads", str(threads)] + self.cmd[1:]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip()[-500:]}")
        rate = re.search(r"([\d.]+) steps/s", p.stdout)
        if rate is None:
            raise RuntimeError(f"no steps/s in: {p.stdout}")
        peak = re.search(r"peak resident memory (\d+) MiB", p.stdout)
        if peak:
            self.peak = max(getattr(self, "peak", 0), int(peak.group(1)))
        return 1e3 / float(rate.group(1))


def llama(args, work):
    """The Llama workload: (label, contenders, parameters)."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**LLAMA_EXAMPLE_CFG, max_position_embeddings=4096, use_cache=False,
                                      attn_implementation="sdpa")
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(work)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, config.vocab_size, (4 * BATCH, SEQ), generator=g)
    data = os.path.join(work, "ids.safetensors")
    save_file({"input_ids": ids.to(torch.int32)}, data)
    batches = [(b,) for b in ids.split(BATCH)]
    archc = ArchcTrain(args, LLAMA_EXAMPLE, os.path.join(work, "model.safetensors"), data, BATCH)
    return (f"llama example, train step {BATCH}×{SEQ}", [archc, TorchTrain(llama_step(model), batches, args.steps)],
            sum(p.numel() for p in model.parameters()))


def ijepa(args, work):
    """The I-JEPA workload: 1,437 random 8×8 images (the digits' training split's size)."""
    torch.manual_seed(0)
    model = ijepa_torch.IJepa()
    weights = os.path.join(work, "ijepa.safetensors")
    save_file(ijepa_torch.archc_state(model), weights)
    g = torch.Generator().manual_seed(1)
    images = torch.rand(1437, 1, 8, 8, generator=g)
    data = os.path.join(work, "images.safetensors")
    save_file({"pixel_values": images}, data)
    batches = [(images[i:i + IJEPA_BATCH], torch.randint(0, 65536, (IJEPA_BATCH, 2), generator=g))
               for i in range(0, 1437 - IJEPA_BATCH, IJEPA_BATCH)]
    trainer = ijepa_torch.Trainer(model)
    archc = ArchcTrain(args, IJEPA_EXAMPLE, weights, data, IJEPA_BATCH)
    return (f"I-JEPA example, train step {IJEPA_BATCH} images", [archc, TorchTrain(trainer.step, batches, args.ijepa_steps)],
            sum(p.numel() for p in model.parameters() if p.requires_grad))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archc", default="target/release/archc")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=20, help="steps per round of the Llama workload")
    p.add_argument("--ijepa-steps", type=int, default=100, help="steps per round of the I-JEPA workload")
    p.add_argument("--only", choices=["llama", "ijepa"], help="run one workload")
    p.add_argument("--backend", choices=["llvm", "cranelift"],
                   help="archc's code generator (default: llvm when archc was built with it)")
    args = p.parse_args()
    if args.backend is None:
        args.backend = "llvm" if llvm_supported(args.archc, LLAMA_EXAMPLE)[0] else "cranelift"
    work = tempfile.mkdtemp(prefix="archc-train-bench-")
    for line in machine_lines():
        print(line)
    print(f"torch {torch.__version__}, {args.threads} threads; archc --backend {args.backend}")
    rows = []
    for name, make in [("llama", llama), ("ijepa", ijepa)]:
        if args.only not in (None, name):
            continue
        label, contenders, params = make(args, work)
        if name == "ijepa":
            contenders[0].cmd[contenders[0].cmd.index("--steps") + 1] = str(args.ijepa_steps)
        print(f"{label}: {params / 1e6:.3f}M trained parameters")
        times = run_rounds(contenders, args.threads, args.rounds, lambda s: print(s, flush=True))
        # torch's: this process's peak so far (Python, torch, transformers and the models of
        # the workloads run so far); archc's: the `archc train` process's own (VmHWM).
        torch_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rows.append((label, times, torch_peak, getattr(contenders[0], "peak", None)))
    print()
    print("| workload | torch ms/step | archc ms/step | archc vs torch | peak memory torch / archc |")
    print("|---|---|---|---|---|")
    for label, times, torch_peak, archc_peak in rows:
        t = statistics.median(times.get("torch", [float("nan")]))
        a = statistics.median(times.get("archc", [float("nan")]))
        archc_mem = "?" if archc_peak is None else f"{archc_peak} MiB"
        print(f"| {label} | {t:.1f} | {a:.1f} | {fmt_ratio(ratio(times, 'archc', 'torch'))} "
              f"| {torch_peak:.0f} MiB / {archc_mem} |")


if __name__ == "__main__":
    main()
