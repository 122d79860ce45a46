"""archc's GPU kernels against PyTorch on the same GPU, in the same run (issue 12's table).

    python3 bench/gpu_vs_torch.py --archc target/release/archc            # on a machine with a GPU
    python3 bench/gpu_vs_torch.py --archc target/debug/archc --small --device cuda-sim   # smoke test

Each workload is one .arch kernel (bench/gpu/*.arch, or attention written here for its shape)
timed by `archc bench --device cuda`, and its peers in torch on the same inputs' shapes:
- attention: torch SDPA with the cuDNN backend and with the flash backend (bf16);
- GEMM: torch.matmul (cuBLAS, bf16);
- Mamba-1 selective scan: a plain torch loop over the sequence (mamba-ssm's CUDA kernel is the
  issue's reference; it is timed here when `mamba_ssm` imports);
- Mamba-2 SSD: the chunked SSD in torch ("ssd_minimal" of the Mamba-2 paper), and mamba-ssm's
  Triton kernel when it imports; in f32, and in bf16 (archc's SSD on tensor cores).

Contenders run in turn, round after round (benchlib.run_rounds), and each ratio is formed per
round: `peer ms / archc ms`, > 1 when archc is faster. archc stores bf16 (`--dtype bf16`,
f32 arithmetic) where the peers run bf16, and f32 for the scans; the table says which. archc's
time on a GPU is its `bench` table's `kernels` row: the median over runs of the GPU's own time
for the run's kernels (CUDA events, summed over the kernels), as the peers' are timed on inputs
already on the GPU. A run's activations stay on the GPU between kernels; copying the inputs
over and the outputs back, which the `cuda` row includes, is left out. The sum leaves out the
gaps between kernels too, which the peers' times include: so MiniLM, a run of many kernels,
is timed by the `cuda` row, the whole run with its copies and gaps. With `--device cuda-sim`
the `cuda-sim` row is read.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

ATTENTION = """# Scaled dot-product attention alone, written by bench/gpu_vs_torch.py.
model attention {{
  config {{ heads = {heads}, head_dim = {head_dim} }}
  input q: f32[batch, heads, seq, head_dim]
  input k: f32[batch, heads, seq, head_dim]
  input v: f32[batch, heads, seq, head_dim]
  output o = sdpa(q, k, v{causal})
}}
"""


def cuda_ms(fn, iters):
    """Median of `iters` timed calls of fn on the GPU (CUDA events), after a warm-up."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


class Peer:
    """A torch function, timed on the GPU (or on the CPU for a smoke test)."""

    def __init__(self, name, fn, iters, gpu):
        self.name, self.fn, self.iters, self.gpu = name, fn, iters, gpu

    def time(self, threads):
        with torch.no_grad():
            if self.gpu:
                return cuda_ms(self.fn, self.iters)
            return benchlib.median_ms(self.fn, self.iters)


class ArchcGpu:
    """`archc bench --device D` in a subprocess; its table's row for the device."""

    def __init__(self, binary, device, arch, dims, iters, dtype, timeout, whole_run=False, gpu_arch=None):
        self.name, self.timeout = "archc", timeout
        self.cmd = [binary, "bench", arch, "--device", device, "--iters", str(iters), "--dtype", dtype]
        if gpu_arch:
            self.cmd += ["--arch", gpu_arch]
        for d, v in dims.items():
            # "--weights"/"--inputs" pass files; anything else is a dim.
            self.cmd += [d, v] if d.startswith("--") else ["--dim", f"{d}={v}"]
        # On a GPU, the kernels' own time (CUDA events), unless the whole run is asked for;
        # the simulator's run time otherwise.
        self.row = "kernels" if device == "cuda" and not whole_run else device

    def time(self, threads):
        # A workload that outruns its time is dropped (benchlib.run_rounds), not waited for.
        p = subprocess.run(self.cmd, capture_output=True, text=True, timeout=self.timeout)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(self.cmd)} exited {p.returncode}: {p.stderr.strip()[-2000:]}")
        row = re.search(rf"^{self.row}\s+([\d.]+)", p.stdout, re.M)
        if row is None:
            raise RuntimeError(f"no `{self.row}` row in:\n{p.stdout}")
        return float(row.group(1))


def attention(args, dev, dt, heads, head_dim, seq, batch, causal):
    path = os.path.join(args.scratch, f"attention_h{heads}_d{head_dim}{'_causal' if causal else ''}.arch")
    with open(path, "w") as f:
        f.write(ATTENTION.format(heads=heads, head_dim=head_dim, causal=", causal = true" if causal else ""))
    q, k, v = (torch.randn(batch, heads, seq, head_dim, device=dev, dtype=dt) for _ in range(3))
    peers = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    if dev == "cuda":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        for name, backend in [("torch-cudnn", SDPBackend.CUDNN_ATTENTION), ("torch-flash", SDPBackend.FLASH_ATTENTION)]:
            def call(backend=backend):
                with sdpa_kernel(backend):
                    sdpa(q, k, v, is_causal=causal)
            peers.append((name, call))
    else:
        peers.append(("torch-sdpa", lambda: sdpa(q, k, v, is_causal=causal)))
    flops = 4 * batch * heads * seq * seq * head_dim / (2 if causal else 1)
    dims = {"batch": batch, "seq": seq}
    return path, dims, peers, flops


def gemm(args, dev, dt, n):
    a, b = torch.randn(n, n, device=dev, dtype=dt), torch.randn(n, n, device=dev, dtype=dt)
    return os.path.join(HERE, "matmul.arch"), {"m": n, "k": n, "n": n}, [("torch-matmul", lambda: a @ b)], 2 * n**3


def selective_scan(args, dev, batch, seq, channels, n):
    u, dt = torch.randn(batch, seq, channels, device=dev), torch.rand(batch, seq, channels, device=dev) * 0.1
    A = -torch.rand(channels, n, device=dev)
    B, C = torch.randn(batch, seq, n, device=dev), torch.randn(batch, seq, n, device=dev)
    D = torch.randn(channels, device=dev)

    def loop():
        h = torch.zeros(batch, channels, n, device=dev)
        ys = []
        for t in range(seq):
            h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
            ys.append((h * C[:, t, None, :]).sum(-1))
        return torch.stack(ys, 1) + u * D

    peers = [("torch-loop", loop)]
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        ut, dtt = u.transpose(1, 2).contiguous(), dt.transpose(1, 2).contiguous()
        Bt, Ct = B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous()
        peers.append(("mamba-ssm", lambda: selective_scan_fn(ut, dtt, A, Bt, Ct, D)))
    except ImportError:
        pass
    dims = {"batch": batch, "seq": seq, "channels": channels}
    return os.path.join(HERE, "gpu", "selective_scan.arch"), dims, peers, 0


def ssd(args, dev, batch, seq, heads, head_dim, n, chunk=64, dtype=torch.float32):
    x = torch.randn(batch, seq, heads, head_dim, device=dev, dtype=dtype)
    dt = torch.rand(batch, seq, heads, device=dev, dtype=dtype) * 0.1
    A = -torch.rand(heads, device=dev, dtype=dtype)
    B = torch.randn(batch, seq, n, device=dev, dtype=dtype)
    C = torch.randn(batch, seq, n, device=dev, dtype=dtype)
    D = torch.randn(heads, device=dev, dtype=dtype)

    def segsum(a):
        t = a.size(-1)
        a = a[..., None].expand(*a.shape, t)
        mask = torch.tril(torch.ones(t, t, device=dev, dtype=torch.bool), -1)
        a = a.masked_fill(~mask, 0)
        s = torch.cumsum(a, dim=-2)
        return s.masked_fill(~torch.tril(torch.ones(t, t, device=dev, dtype=torch.bool), 0), -torch.inf)

    def minimal():
        # "ssd_minimal_discrete" of the Mamba-2 paper, one group.
        c = seq // chunk
        X = (x * dt[..., None]).reshape(batch, c, chunk, heads, head_dim)
        Al = (A * dt).reshape(batch, c, chunk, heads).permute(0, 3, 1, 2)
        Bc, Cc = B.reshape(batch, c, chunk, n), C.reshape(batch, c, chunk, n)
        cum = torch.cumsum(Al, -1)
        L = torch.exp(segsum(Al))
        y_diag = torch.einsum("bcln,bcsn,bhcls,bcshp->bclhp", Cc, Bc, L, X)
        decay_states = torch.exp(cum[:, :, :, -1:] - cum)
        states = torch.einsum("bcln,bhcl,bclhp->bchpn", Bc, decay_states, X)
        states = torch.cat([torch.zeros_like(states[:, :1]), states], 1)
        decay_chunk = torch.exp(segsum(torch.nn.functional.pad(cum[:, :, :, -1], (1, 0))))
        states = torch.einsum("bhzc,bchpn->bzhpn", decay_chunk, states)[:, :-1]
        y_off = torch.einsum("bcln,bchpn,bhcl->bclhp", Cc, states, torch.exp(cum))
        return (y_diag + y_off).reshape(batch, seq, heads, head_dim) + x * D[:, None]

    peers = [("torch-ssd-minimal", minimal)]
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

        Bg, Cg = B[:, :, None], C[:, :, None]
        peers.append(("mamba-ssm", lambda: mamba_chunk_scan_combined(x, dt, A, Bg, Cg, chunk_size=256, D=D)))
    except ImportError:
        pass
    dims = {"batch": batch, "seq": seq}
    return os.path.join(HERE, "gpu", "ssd.arch"), dims, peers, 0


def minilm(args, dev):
    """all-MiniLM-L6-v2's real weights as scripts/pack_minilm_for_gpu.py packs them (f16-rounded,
    the embedding rows its two sentences use), in transformers' BertModel and in archc, f32."""
    import json

    from safetensors.torch import load_file
    from transformers import BertConfig, BertModel

    with open(os.path.join(args.minilm, "config.json")) as f:
        config = BertConfig(**json.load(f))
    model = BertModel(config, add_pooling_layer=True).eval().to(dev)
    weights = {k: v.float() for k, v in load_file(os.path.join(args.minilm, "model.safetensors")).items()}
    model.load_state_dict(weights, strict=False)
    inputs = {k: v.to(dev) for k, v in load_file(os.path.join(args.minilm, "inputs.safetensors")).items()}
    # The peer must compute what archc computes: its output against archc's CPU output.
    want = load_file(os.path.join(args.minilm, "expected.safetensors"))["last_hidden_state"]
    with torch.no_grad():
        got = model(**inputs).last_hidden_state.cpu()
    err = ((got - want).abs().max() / want.abs().max()).item()
    print(f"    torch-bert against archc on the CPU: rel err {err:.2e}")
    if err > 1e-4:
        raise RuntimeError(f"transformers' BertModel is {err:.2e} off archc's output: the weights did not load")
    dims = {
        "--weights": os.path.join(args.minilm, "model.safetensors"),
        "--inputs": os.path.join(args.minilm, "inputs.safetensors"),
    }
    return os.path.join(args.minilm, "minilm.arch"), dims, [("torch-bert", lambda: model(**inputs))], 0


def workloads(args, dev):
    bf16 = torch.bfloat16 if dev == "cuda" else torch.float32
    if args.small:
        return [
            ("attention d64 seq 32", lambda: attention(args, dev, bf16, 2, 64, 32, 1, False)),
            ("attention d64 seq 32 causal", lambda: attention(args, dev, bf16, 2, 64, 32, 1, True)),
            ("gemm 64", lambda: gemm(args, dev, bf16, 64)),
            ("selective scan B1 L16 D32 N16", lambda: selective_scan(args, dev, 1, 16, 32, 16)),
            ("SSD B1 L32 H32 P64 N128", lambda: ssd(args, dev, 1, 32, 32, 64, 128, chunk=16)),
        ]
    found = [("MiniLM f32 (2 x 12 tokens)", lambda: minilm(args, dev))] if args.minilm else []
    return found + [
        ("attention bf16 d128 seq 8k", lambda: attention(args, dev, bf16, 16, 128, 8192, 2, False)),
        ("attention bf16 d128 seq 8k causal", lambda: attention(args, dev, bf16, 16, 128, 8192, 2, True)),
        ("attention bf16 d64 seq 2k", lambda: attention(args, dev, bf16, 32, 64, 2048, 8, False)),
        ("Mamba-1 scan B8 L2048 D2048 N16", lambda: selective_scan(args, dev, 8, 2048, 2048, 16)),
        ("Mamba-2 SSD B8 L2048 H32 P64 N128", lambda: ssd(args, dev, 8, 2048, 32, 64, 128)),
        # archc's SSD on tensor cores (lower/ssd_mma.rs) needs 16-bit storage.
        ("Mamba-2 SSD bf16 B8 L2048 H32 P64 N128", lambda: ssd(args, dev, 8, 2048, 32, 64, 128, dtype=bf16)),
        ("bf16 GEMM 8192^3", lambda: gemm(args, dev, bf16, 8192)),
    ]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archc", default="target/release/archc")
    p.add_argument("--device", default="cuda", choices=["cuda", "cuda-sim"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--timeout", type=float, default=120, help="seconds one `archc bench` may take")
    p.add_argument("--minilm", help="a directory made by scripts/pack_minilm_for_gpu.py (with minilm.arch)")
    p.add_argument("--only", help="run the workloads whose names contain this text")
    p.add_argument("--arch", help="archc's GPU architecture (default: the GPU's); sm_80 on Hopper times Ampere's templates")
    p.add_argument("--small", action="store_true", help="tiny shapes: a smoke test of the script")
    args = p.parse_args()
    dev = "cuda" if args.device == "cuda" and torch.cuda.is_available() else "cpu"
    args.scratch = tempfile.mkdtemp(prefix="archc-gpu-bench-")
    for line in benchlib.machine_lines():
        print(line)
    print(f"GPU: {torch.cuda.get_device_name() if dev == 'cuda' else 'none (torch on the CPU)'}; torch {torch.__version__}; archc --device {args.device}")
    rows = []
    for name, make in workloads(args, dev):
        if args.only and args.only not in name:
            continue
        print(f"{name}:", flush=True)
        arch, dims, peers, flops = make()
        # bf16 where the peers run bf16 (the workloads named so), f32 where they run f32.
        dtype = "bf16" if "bf16" in name and dev == "cuda" else "f32"
        whole_run = name.startswith("MiniLM")
        contenders = [ArchcGpu(args.archc, args.device, arch, dims, args.iters, dtype, args.timeout, whole_run, args.arch)]
        contenders += [Peer(n, fn, args.iters, dev == "cuda") for n, fn in peers]
        times = benchlib.run_rounds(contenders, 1, args.rounds, lambda s: print(s, flush=True))
        for peer, _ in peers:
            r = benchlib.ratio(times, "archc", peer)
            ms = statistics.median(times["archc"]) if "archc" in times else float("nan")
            pms = statistics.median(times[peer]) if peer in times else float("nan")
            tf = f", {flops / pms / 1e9:.1f} TFLOP/s" if flops and peer in times else ""
            rows.append((name, peer, f"{pms:.3f} ms{tf}", f"{ms:.3f} ms ({dtype})", benchlib.fmt_ratio(r)))
    print()
    print("| workload | peer | peer time | archc time | archc vs peer |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
