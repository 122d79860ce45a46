"""A training step of examples/llama.arch at 8 × 256 tokens: `archc train --objective
next-token` against PyTorch eager (transformers' LlamaForCausalLM with the same config and
weights, its loss from `labels`, backward, torch.optim.AdamW), on the same threads, in
alternating rounds.

    python3 bench/train_vs_torch.py --archc target/release/archc [--threads 2] [--rounds 3]

Each round times `--steps` steps of each: archc's figure is the steps/s `archc train` prints
(the loop after compilation: the step graph's run, clipping-free AdamW on the host, the
weights handed to a fresh executor every step); torch's is the median of its steps. The
ratio is torch ms / archc ms per round (> 1: archc is faster). Peak memory is each process's
peak resident set: archc's child process, and this Python process (torch and the model).
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
from benchlib import fmt_ratio, machine_lines, ratio, run_rounds  # noqa: E402
from cpu_vs_torch import LLAMA_EXAMPLE, LLAMA_EXAMPLE_CFG  # noqa: E402

BATCH, SEQ = 8, 256


class TorchTrain:
    name = "torch"

    def __init__(self, model, batches, steps):
        self.model, self.batches, self.steps = model, batches, steps
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)

    def time(self, threads):
        torch.set_num_threads(threads)
        times = []
        for i in range(self.steps + 1):
            ids = self.batches[i % len(self.batches)]
            t = time.perf_counter()
            loss = self.model(input_ids=ids, labels=ids, use_cache=False).loss
            loss.backward()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            if i:  # the first step warms up
                times.append(time.perf_counter() - t)
        return statistics.median(times) * 1e3


class ArchcTrain:
    name = "archc"

    def __init__(self, args, weights, data):
        self.cmd = [args.archc, "train", LLAMA_EXAMPLE, "--objective", "next-token", "--data", data,
                    "--weights", weights, "--steps", str(args.steps), "--batch", str(BATCH), "--lr", "1e-3"]

    def time(self, threads):
        cmd = [self.cmd[0], "--threads", str(threads)] + self.cmd[1:]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip()[-500:]}")
        rate = re.search(r"([\d.]+) steps/s", p.stdout)
        if rate is None:
            raise RuntimeError(f"no steps/s in: {p.stdout}")
        return 1e3 / float(rate.group(1))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archc", default="target/release/archc")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="archc-train-bench-")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**LLAMA_EXAMPLE_CFG, max_position_embeddings=4096, use_cache=False,
                                      attn_implementation="sdpa")
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(work)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, config.vocab_size, (4 * BATCH, SEQ), generator=g)
    data = os.path.join(work, "ids.safetensors")
    save_file({"input_ids": ids.to(torch.int32)}, data)
    batches = list(ids.split(BATCH))
    for line in machine_lines():
        print(line)
    print(f"torch {torch.__version__}, {args.threads} threads; llama example "
          f"({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters), batch {BATCH} × {SEQ}")
    contenders = [ArchcTrain(args, os.path.join(work, "model.safetensors"), data), TorchTrain(model, batches, args.steps)]
    times = run_rounds(contenders, args.threads, args.rounds, lambda s: print(s, flush=True))
    torch_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    archc_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print()
    print("| workload | torch ms/step | archc ms/step | archc vs torch | peak RSS torch / archc |")
    print("|---|---|---|---|---|")
    t = statistics.median(times.get("torch", [float("nan")]))
    a = statistics.median(times.get("archc", [float("nan")]))
    print(f"| llama example, train step 8×256 | {t:.1f} | {a:.1f} | {fmt_ratio(ratio(times, 'archc', 'torch'))} "
          f"| {torch_peak:.0f} MiB / {archc_peak:.0f} MiB |")


if __name__ == "__main__":
    main()
