"""Timing machinery for bench/cpu_vs_torch.py: contenders, alternating rounds, ratios.

Each contender is an object with `name` and `time(threads) -> ms` (the median of its own runs in
one round). `run_rounds` calls the contenders of one workload in turn, round after round, so that
a burst of other load on the machine lands on every contender rather than on one; the ratios
are then formed round by round, from figures taken seconds apart.
"""

import os
import re
import statistics
import subprocess
import time

import torch


def median_ms(fn, iters):
    """Median wall time of `iters` calls of fn, in ms, after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


class Torch:
    """PyTorch eager under no_grad; `call` runs the model once."""

    name = "torch"

    def __init__(self, call, iters):
        self.call, self.iters = call, iters

    def time(self, threads):
        # set_num_threads is global; set it every round because contenders share the process.
        torch.set_num_threads(threads)
        with torch.no_grad():
            return median_ms(self.call, self.iters)


class Ort:
    """ONNX Runtime on a model exported from the same torch module, all graph optimisations on.

    One session per thread count: intra_op_num_threads is fixed when the session is made.
    """

    name = "ort"

    def __init__(self, onnx_path, feeds, iters):
        import onnxruntime as ort

        self.ort, self.path, self.iters = ort, onnx_path, iters
        self.feeds = {k: v.numpy() for k, v in feeds.items()}
        self.sessions = {}

    def session(self, threads):
        if threads not in self.sessions:
            opts = self.ort.SessionOptions()
            opts.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.intra_op_num_threads = threads
            # One graph at a time, like the others: inter-op parallelism would use threads
            # beyond `threads`.
            opts.inter_op_num_threads = 1
            opts.execution_mode = self.ort.ExecutionMode.ORT_SEQUENTIAL
            self.sessions[threads] = self.ort.InferenceSession(
                self.path, opts, providers=["CPUExecutionProvider"])
        sess = self.sessions[threads]
        names = {i.name for i in sess.get_inputs()}
        # The exporter drops inputs the graph does not read (e.g. an all-zero token_type_ids
        # folded away), and ORT rejects feeds it does not know.
        return sess, {k: v for k, v in self.feeds.items() if k in names}

    def run_once(self):
        """The first output of one run, for checking the export against torch."""
        sess, feeds = self.session(1)
        return sess.run(None, feeds)[0]

    def time(self, threads):
        sess, feeds = self.session(threads)
        return median_ms(lambda: sess.run(None, feeds), self.iters)


class Archc:
    """`archc bench` in a subprocess: its own warm-up, then the median of --iters runs.

    Every round compiles anew; the compile time is not part of the figure (the table's run ms
    is), and it is reported separately from the first round.
    """

    def __init__(self, binary, backend, arch, iters, weights=None, inputs=None, dims=()):
        self.name = f"archc-{backend}"
        self.binary, self.backend, self.iters = binary, backend, iters
        self.arch, self.weights, self.inputs, self.dims = arch, weights, inputs, dims
        self.compile_line = None
        self.commands = []

    def command(self, threads):
        cmd = [self.binary, "--threads", str(threads), "bench", self.arch, "--backend", self.backend,
               "--iters", str(self.iters)]
        if self.weights:
            cmd += ["--weights", self.weights]
        if self.inputs:
            cmd += ["--inputs", self.inputs]
        for d in self.dims:
            cmd += ["--dim", d]
        return cmd

    def time(self, threads):
        cmd = self.command(threads)
        if cmd not in self.commands:
            self.commands.append(cmd)
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip()[-2000:]}")
        row = re.search(rf"^{self.backend}\s+([\d.]+)", p.stdout, re.M)
        if row is None:
            raise RuntimeError(f"no `{self.backend}` row in the output of {' '.join(cmd)}:\n{p.stdout}")
        if self.compile_line is None:
            m = re.search(r"^compile: (.*)$", p.stdout, re.M)
            self.compile_line = m.group(1) if m else "?"
        return float(row.group(1))


def llvm_supported(binary, tiny_arch):
    """Whether this archc was built with `--features llvm`: without it `dump --stage llvm` fails."""
    p = subprocess.run([binary, "dump", "--stage", "llvm", tiny_arch], capture_output=True, text=True)
    return p.returncode == 0, p.stderr.strip().splitlines()[-1:] if p.returncode else []


def run_rounds(contenders, threads, rounds, log):
    """{contender name: [ms per round]}. A contender that fails is dropped with a note; the rest
    go on. The order rotates each round so that no contender always runs right after another
    (a peer's threads may still be winding down, or its memory still warm in the cache)."""
    times = {c.name: [] for c in contenders}
    alive = list(contenders)
    for r in range(rounds):
        k = r % len(alive) if alive else 0
        for c in alive[k:] + alive[:k]:
            try:
                times[c.name].append(c.time(threads))
            except Exception as e:  # noqa: BLE001 - one contender's failure must not end the run
                log(f"    {c.name} failed, dropped: {str(e).splitlines()[0][:300]}")
                alive = [a for a in alive if a is not c]
                times[c.name] = []
        log(f"    round {r + 1}: " + ", ".join(f"{n} {v[-1]:.2f} ms" for n, v in times.items() if len(v) == r + 1))
    return {n: v for n, v in times.items() if len(v) == rounds}


def ratio(times, archc, peer):
    """archc ÷ peer throughput per round (peer ms / archc ms: > 1 means archc is faster), as
    (median, min, max), or None when either side has no figures."""
    if archc not in times or peer not in times:
        return None
    rs = [p / a for a, p in zip(times[archc], times[peer])]
    return statistics.median(rs), min(rs), max(rs)


def fmt_ratio(r):
    return "—" if r is None else f"{r[0]:.2f} [{r[1]:.2f}–{r[2]:.2f}]"


def machine_lines():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
    except OSError:
        pass
    return [f"machine: {os.cpu_count()} CPUs (nproc), {cpu}"]

