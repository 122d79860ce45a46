"""Time one f32 matmul in archc (`archc bench` on bench/linear.arch, a bias-free `linear`) and
in PyTorch (`torch.matmul(x, w.t())`) on one thread, alternating the two, and print GFLOP/s and
the ratio archc ÷ torch (median, min–max over the rounds).

Run from the repository root after `cargo build --release`, in a venv with torch, under
/work/shared/tools/bench-priority when other work shares the machine:

    /work/shared/tools/bench-priority venv/bin/python bench/matmul_vs_torch.py [--rounds 5]
        [--sizes 1024x384x1536,4096x4096x4096] [--archc target/release/archc]

The load average is printed before and after: PyTorch slows far more than archc under load.
"""

import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def arch_file(work, k, n):
    """bench/linear.arch with its config set to k and n."""
    with open(os.path.join(ROOT, "bench", "linear.arch")) as f:
        text = f.read()
    text = re.sub(r"config \{[^}]*\}", f"config {{ k = {k}, n = {n} }}", text)
    path = os.path.join(work, f"matmul_{k}_{n}.arch")
    with open(path, "w") as f:
        f.write(text)
    return path


def archc_gflops(archc, arch, m, iters):
    out = subprocess.run(
        [archc, "bench", arch, "--dim", f"m={m}", "--threads", "1", "--iters", str(iters)],
        check=True, capture_output=True, text=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("cranelift"))
    return float(line.split()[2])


def torch_gflops(m, k, n, iters):
    x, w = torch.randn(m, k), torch.randn(n, k)
    torch.matmul(x, w.t())
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        torch.matmul(x, w.t())
        times.append(time.perf_counter() - t)
    return 2 * m * k * n / statistics.median(times) / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--sizes", default="1024x384x1536,4096x4096x4096")
    ap.add_argument("--archc", default=os.path.join(ROOT, "target", "release", "archc"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"load average before: {loadavg()}")
    with tempfile.TemporaryDirectory() as work:
        for size in args.sizes.split(","):
            m, k, n = (int(v) for v in size.split("x"))
            arch = arch_file(work, k, n)
            ours, theirs = [], []
            for _ in range(args.rounds):
                ours.append(archc_gflops(args.archc, arch, m, args.iters))
                theirs.append(torch_gflops(m, k, n, args.iters))
            ratios = [a / t for a, t in zip(ours, theirs)]
            print(f"{m}x{k}x{n}: archc {statistics.median(ours):.1f} GFLOP/s "
                  f"({min(ours):.1f}-{max(ours):.1f}), torch {statistics.median(theirs):.1f} "
                  f"({min(theirs):.1f}-{max(theirs):.1f}), ratio {statistics.median(ratios):.2f} "
                  f"({min(ratios):.2f}-{max(ratios):.2f})", flush=True)
    print(f"load average after: {loadavg()}")


if __name__ == "__main__":
    main()
