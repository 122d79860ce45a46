"""Decode speed against context length: the derived step of the llama, mamba and jamba examples.

For each example and context length, `archc generate` prefills a prompt of random token ids
(seed-random weights) and decodes 1024 more tokens with the derived step; the time per token is
the median over rounds of its decode rate. Attention keeps a KV cache that grows with the
context, so the Llama example's step slows down as the context grows; Mamba keeps a constant
State (a convolution window and a scan carry per layer), so its time per token stays flat.
Prints a table with each State's bytes at the end, and plots tokens/s against context to a PNG.
Run it under bench-priority, after `cargo build --release --features llvm`:

    ../shared/tools/bench-priority venv/bin/python bench/context.py --rounds 5 --png bench/context.png
"""

import argparse
import os
import re
import statistics
import subprocess
import tempfile

import torch
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
NEW = 1024


def rate(archc, example, inputs, threads):
    """(decode tokens/s, State line) as `archc generate` reports them."""
    out = subprocess.run([archc, "--threads", str(threads), "generate",
                          os.path.join(ROOT, "examples", f"{example}.arch"), "--inputs", inputs,
                          "--max-new-tokens", str(NEW), "--backend", "llvm"],
                         check=True, capture_output=True, text=True)
    per_s = float(re.search(r"then ([0-9.]+) tokens/s", out.stdout).group(1))
    state = re.search(r"state at .*", out.stdout).group(0)
    return per_s, state


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--examples", nargs="+", default=["llama", "mamba", "jamba"])
    p.add_argument("--contexts", type=int, nargs="+", default=[128, 512, 2048, 8192])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--png", help="where to plot tokens/s against context")
    p.add_argument("--archc", default=os.path.join(ROOT, "target", "release", "archc"))
    a = p.parse_args()
    work = tempfile.mkdtemp()
    prompts = {}
    for t in a.contexts:
        prompts[t] = os.path.join(work, f"ids{t}.safetensors")
        ids = torch.randint(0, 500, (1, t), generator=torch.Generator().manual_seed(t))
        save_file({"input_ids": ids.to(torch.int32)}, prompts[t])
    print(f"load average before: {os.getloadavg()[0]:.2f}; {a.threads} threads, {NEW} new tokens")
    print("| example | context | tokens/s | ms/token [min–max] | State at the end |")
    print("|---|---|---|---|---|")
    curves = {}
    for ex in a.examples:
        curves[ex] = []
        for t in a.contexts:
            # Rounds alternate between the contexts' prompts only through time; each is a
            # fresh process, so no State carries over.
            rates, state = [], ""
            for _ in range(a.rounds):
                r, state = rate(a.archc, ex, prompts[t], a.threads)
                rates.append(r)
            ms = [1e3 / r for r in rates]
            med = statistics.median(rates)
            curves[ex].append(med)
            print(f"| {ex} | {t} | {med:.0f} | {statistics.median(ms):.2f} "
                  f"[{min(ms):.2f}–{max(ms):.2f}] | {state} |")
        first, last = curves[ex][0], curves[ex][-1]
        print(f"| {ex} | {a.contexts[-1]} ÷ {a.contexts[0]} | time per token ×{first / last:.2f} | | |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if a.png:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
        for ex, ys in curves.items():
            ax.plot(a.contexts, ys, marker="o", label=f"{ex} example")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context (tokens before the step)")
        ax.set_ylabel("decode tokens/s (higher is better)")
        ax.set_title(f"archc generate, derived step, LLVM, {a.threads} threads")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(a.png)
        print(f"wrote {a.png}")


if __name__ == "__main__":
    main()
