"""I-JEPA on scikit-learn's digits with `archc train`: with the EMA target and stop-gradient,
and without them (the target is the online encoder, gradients flowing), side by side.

    python3 bench/jepa_digits.py --archc target/release/archc [--steps 6000] [--plot bench/jepa_digits.png]

1. scripts/digits_to_safetensors.py writes the 1,437 training and 360 held-out images;
2. `archc train examples/ijepa_train.arch` trains each variant (the second with
   `use_ema = false`), logging the loss and the collapse metrics the model computes at every
   step over the batch (the effective rank of the embeddings, through `svdvals`; their
   per-dimension standard deviation; their mean cosine similarity);
3. `archc run` embeds the training and held-out images with each trained encoder and with the
   randomly initialised one (the `embedding` output: the mean over patches of the encoder's
   normalised embeddings); a logistic-regression probe is fitted on the training embeddings
   and scored on the held-out ones, and the effective rank of the held-out embeddings is
   computed (the exponential of the entropy of their normalised singular values, RankMe);
4. the table is printed, and `--plot` draws the loss and the collapse metrics over steps.

Needs numpy, safetensors, scikit-learn (and matplotlib for --plot).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file, save_file
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
EXAMPLE = os.path.join(REPO, "examples", "ijepa_train.arch")


def variant(scratch, ema, momentum):
    """The example with `use_ema` and `momentum` set."""
    text = open(EXAMPLE).read().replace("use_ema = true", f"use_ema = {'true' if ema else 'false'}")
    text = text.replace("momentum = 0.998,", f"momentum = {momentum},")
    path = os.path.join(scratch, f"ijepa_{'ema' if ema else 'no_ema'}.arch")
    with open(path, "w") as f:
        f.write(text)
    return path


def train(args, arch, scratch, name):
    ckpt, log = os.path.join(scratch, f"{name}.safetensors"), os.path.join(scratch, f"{name}.jsonl")
    # The recipe (AdamW, warmup and cosine, parameter groups, the EMA schedule) is the
    # example's `train` section; flags given here override it.
    cmd = [args.archc, "train", arch, "--data", os.path.join(scratch, "train.safetensors"),
           "--steps", str(args.steps), "--batch", str(args.batch),
           "--seed", str(args.seed), "--checkpoint", ckpt, "--log", log]
    for flag in ["lr", "weight_decay", "warmup"]:
        if getattr(args, flag) is not None:
            cmd += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
    print(" ".join(cmd), flush=True)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    print(out, end="", flush=True)
    with open(log) as f:
        return ckpt, [json.loads(line) for line in f]


def embed(args, arch, ckpt, scratch, split):
    data = load_file(os.path.join(scratch, f"{split}.safetensors"))
    n = len(data["labels"])
    inputs, out = os.path.join(scratch, f"in_{split}.safetensors"), os.path.join(scratch, "emb.safetensors")
    save_file({"pixel_values": data["pixel_values"], "corner": np.zeros((n, 2), np.int32)}, inputs)
    cmd = [args.archc, "run", arch, "--inputs", inputs, "--outputs", out, "--seed", str(args.seed)]
    subprocess.run(cmd + (["--weights", ckpt] if ckpt else []), check=True, capture_output=True)
    return load_file(out)["embedding"], data["labels"]


def effective_rank(e):
    s = np.linalg.svd(e.astype(np.float64), compute_uv=False)
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def evaluate(args, arch, ckpt, scratch):
    train_e, train_y = embed(args, arch, ckpt, scratch, "train")
    test_e, test_y = embed(args, arch, ckpt, scratch, "test")
    scale = StandardScaler().fit(train_e)
    probe = LogisticRegression(max_iter=5000).fit(scale.transform(train_e), train_y)
    unit = test_e / np.maximum(np.linalg.norm(test_e, axis=1, keepdims=True), 1e-12)
    n = len(unit)
    cosine = float(((unit.sum(0) ** 2).sum() - n) / (n * (n - 1)))
    return {"probe": probe.score(scale.transform(test_e), test_y), "rank": effective_rank(test_e),
            "std": float(test_e.std(0).mean()), "cosine": cosine}


def plot(path, logs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["loss", "effective_rank", "embedding_std", "mean_cosine"]
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    for (label, log), color in zip(logs.items(), ["tab:blue", "tab:red"]):
        steps = [r["step"] for r in log]
        for ax, key in zip(axes, keys):
            ax.plot(steps, [r[key] for r in log], color=color, label=label, linewidth=1)
    titles = ["loss", "effective rank (in the step, over the batch)", "per-dimension std of the embeddings",
              "mean cosine similarity"]
    for ax, title in zip(axes, titles):
        ax.set_title(title)
        ax.set_xlabel("step")
    axes[0].set_yscale("log")
    axes[2].set_yscale("log")
    axes[0].legend()
    fig.suptitle("I-JEPA on scikit-learn's digits, trained by archc train")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archc", default=os.path.join(REPO, "target", "release", "archc"))
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, help="override the train section's learning rate")
    p.add_argument("--weight-decay", type=float, help="override the train section's weight decay")
    p.add_argument("--warmup", type=int, help="override the train section's warmup steps")
    p.add_argument("--momentum", type=float, default=0.998)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", help="a PNG of the loss and the collapse metrics over steps")
    args = p.parse_args()
    scratch = tempfile.mkdtemp(prefix="archc-jepa-")
    subprocess.run([sys.executable, os.path.join(REPO, "scripts", "digits_to_safetensors.py"), scratch],
                   check=True)
    rows, logs = {}, {}
    with_ema = variant(scratch, True, args.momentum)
    rows["random init (no training)"] = evaluate(args, with_ema, None, scratch)
    for label, ema in [("EMA + stop-grad", True), ("no EMA, no stop-grad", False)]:
        arch = variant(scratch, ema, args.momentum)
        ckpt, logs[label] = train(args, arch, scratch, "ema" if ema else "no_ema")
        rows[label] = {**evaluate(args, arch, ckpt, scratch), "loss": logs[label][-1]["loss"]}
    print()
    print("| encoder | final loss | probe accuracy (held out) | effective rank | per-dim std | mean cosine |")
    print("|---|---|---|---|---|---|")
    for label, r in rows.items():
        loss = f"{r['loss']:.4f}" if "loss" in r else "—"
        print(f"| {label} | {loss} | {r['probe']:.3f} | {r['rank']:.2f} | {r['std']:.2e} | {r['cosine']:.3f} |")
    if args.plot:
        plot(args.plot, logs)


if __name__ == "__main__":
    main()
