"""The worst relative error (max |got - want| / max |want|, per output) between two safetensors
files of outputs, printed with a label; exit status 1 when it is above the bound.

    python3 scripts/compare_outputs.py WANT GOT LABEL BOUND [FLOOR]

With FLOOR, a tensor's scale is at least FLOOR times the largest |want| of the file (gradients:
one that is nearly zero throughout, attention's key bias, is rounding noise in both). Tensors
of GOT that WANT lacks are compared, those of WANT that GOT lacks are errors. Values that are
not finite must match exactly (an infinity of the same sign, NaN against NaN): a NaN where a
number is wanted is an error of infinity, never a pass.
"""

import sys

import numpy as np
from safetensors import safe_open


def load(path):
    # Through torch where the file holds bf16 (numpy has no bf16); numpy otherwise.
    try:
        with safe_open(path, framework="numpy") as f:
            return {k: f.get_tensor(k).astype(np.float64) for k in f.keys()}
    except TypeError:
        with safe_open(path, framework="pt") as f:
            return {k: f.get_tensor(k).double().numpy() for k in f.keys()}


def rel_err(w, g, floor):
    """max |g - w| / max |w| over the finite values of w; infinity where the shapes differ, where
    w is not finite and g differs, or where w is finite and g is not."""
    if w.shape != g.shape:
        return float("inf")
    finite = np.isfinite(w)
    same = (w == g) | (np.isnan(w) & np.isnan(g))
    if not np.all(same[~finite]) or not np.all(np.isfinite(g[finite])):
        return float("inf")
    if not finite.any():
        return 0.0
    scale = max(float(np.abs(w[finite]).max()), floor, 1e-30)
    return float(np.abs(g[finite] - w[finite]).max() / scale)


def main():
    if len(sys.argv) not in (5, 6):
        sys.exit(__doc__)
    want, got, label, bound = load(sys.argv[1]), load(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    floor = float(sys.argv[5]) * max(float(np.abs(w).max()) for w in want.values()) if len(sys.argv) == 6 else 0.0
    worst = 0.0
    for name in got if floor else want:
        if name not in want or name not in got:
            print(f"{label}: {name} is missing from one of the files")
            sys.exit(1)
        worst = max(worst, rel_err(want[name], got[name], floor))
    verdict = "ok" if worst <= bound else f"FAILED (bound {bound:g})"
    print(f"{label:28} rel err {worst:.2e} {verdict}")
    sys.exit(0 if worst <= bound else 1)


if __name__ == "__main__":
    main()
