"""examples/jamba.arch against transformers' JambaForCausalLM on the same config and weights.

transformers routes its experts sparsely (each expert runs on the tokens routed to it), so this
is the peer for archc's `route_experts` pass. Each round times, one after the other: PyTorch
eager, `archc bench` with every pass, and `archc bench --disable-pass route_experts` (every
expert on every token, the dense form). It prints per thread count the median of each and the
median ratio with its min–max over the rounds. Run it under the bench-priority tool, from the
repository root, after `cargo build --release`:

    ../shared/tools/bench-priority /work/venv-hf/bin/python bench/jamba_vs_torch.py [--rounds 5]
"""

import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time

import torch
import transformers
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
ARCHC = os.path.join(ROOT, "target", "release", "archc")
EXAMPLE = os.path.join(ROOT, "examples", "jamba.arch")
BATCH, SEQ = 8, 256

# The config of examples/jamba.arch.
CONFIG = dict(
    vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=8, num_attention_heads=4,
    num_key_value_heads=2, attn_layer_period=4, attn_layer_offset=2, expert_layer_period=2,
    expert_layer_offset=1, num_experts=4, num_experts_per_tok=2, mamba_d_state=16, mamba_d_conv=4,
    mamba_expand=2, rms_norm_eps=1e-6, use_mamba_kernels=False)


def time_torch(model, ids, iters):
    with torch.no_grad():
        model(input_ids=ids)
        times = []
        for _ in range(iters):
            t = time.perf_counter()
            model(input_ids=ids)
            times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def time_archc(weights, inputs, iters, threads, flags=()):
    out = subprocess.run([ARCHC, "bench", EXAMPLE, "--weights", weights, "--inputs", inputs,
                          "--iters", str(iters), "--threads", str(threads), *flags],
                         check=True, capture_output=True, text=True).stdout
    return float(re.search(r"^cranelift\s+([\d.]+)", out, re.M).group(1))


def spread(xs):
    return f"{statistics.median(xs):.3f} ({min(xs):.3f}–{max(xs):.3f})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    torch.manual_seed(0)
    model = transformers.JambaForCausalLM(transformers.JambaConfig(**CONFIG)).eval()
    ids = torch.randint(0, CONFIG["vocab_size"], (BATCH, SEQ), generator=torch.Generator().manual_seed(0))
    print(f"jamba example, batch {BATCH} x seq {SEQ}, torch {torch.__version__}, "
          f"transformers {transformers.__version__}, {args.rounds} rounds of median-of-{args.iters}")
    with tempfile.TemporaryDirectory() as work:
        model.save_pretrained(work)
        weights = os.path.join(work, "model.safetensors")
        inputs = os.path.join(work, "inputs.safetensors")
        save_file({"input_ids": ids.to(torch.int32).contiguous()}, inputs)
        for threads in args.threads:
            torch.set_num_threads(threads)
            rows = {"torch": [], "archc": [], "archc dense": []}
            for _ in range(args.rounds):
                rows["torch"].append(time_torch(model, ids, args.iters))
                rows["archc"].append(time_archc(weights, inputs, args.iters, threads))
                rows["archc dense"].append(
                    time_archc(weights, inputs, args.iters, threads, ["--disable-pass", "route_experts"]))
            print(f"\n{threads} thread(s): median ms (min–max)")
            for name, ms in rows.items():
                print(f"  {name:12} {spread(ms)}")
            for name in ("archc", "archc dense"):
                ratios = [t / a for t, a in zip(rows["torch"], rows[name])]
                print(f"  {name} / torch throughput: {spread(ratios)}")
            sparse = [d / a for d, a in zip(rows["archc dense"], rows["archc"])]
            print(f"  sparse / dense speed-up: {spread(sparse)}")


if __name__ == "__main__":
    main()
