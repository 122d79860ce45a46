"""The worst relative error (max |got - want| / max |want|, per output) between two safetensors
files of outputs, printed with a label; exit status 1 when it is above the bound.

    python3 scripts/compare_outputs.py WANT GOT LABEL BOUND [FLOOR] [--narrow-of F32]

With FLOOR, a tensor's scale is at least FLOOR times the largest |want| of the file (gradients:
one that is nearly zero throughout, attention's key bias, is rounding noise in both). Tensors
of GOT that WANT lacks are compared, those of WANT that GOT lacks are errors. Values that are
not finite must match exactly (an infinity of the same sign, NaN against NaN): a NaN where a
number is wanted is an error of infinity, never a pass.

With `--narrow-of F32`, WANT is the model run with narrow storage (bf16) and F32 the same run in
f32: the bound grows to 1.1 times WANT's own error against F32 where that is larger, the rule
the fixtures apply with transformers' own error in bf16 (two roundings of one model to bf16 lie
about as far apart as either lies from f32). Past that bound GOT still passes when it lies no
farther from F32 than that (its own bf16 error no worse than WANT's): two roundings can lie
twice as far apart as each lies from f32.
"""

import json
import sys

import numpy as np


# safetensors dtypes as numpy reads them; BF16 is the upper half of an f32 (numpy has no bf16).
DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "U8": "u1", "BOOL": "u1"}


def load(path):
    """Every tensor of a safetensors file as float64, read by hand (no torch needed for bf16)."""
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        lo, hi = t["data_offsets"]
        if t["dtype"] == "BF16":
            bits = np.frombuffer(data[lo:hi], dtype="<u2").astype(np.uint32) << 16
            v = bits.view(np.float32)
        else:
            v = np.frombuffer(data[lo:hi], dtype=DTYPES[t["dtype"]])
        out[name] = v.astype(np.float64).reshape(t["shape"])
    return out


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


def worst_error(want, got, floor, label):
    """The worst rel_err over the outputs (those of GOT where a floor is given, else WANT's)."""
    worst = 0.0
    for name in got if floor else want:
        if name not in want or name not in got:
            print(f"{label}: {name} is missing from one of the files")
            sys.exit(1)
        worst = max(worst, rel_err(want[name], got[name], floor))
    return worst


def main():
    args = sys.argv[1:]
    f32 = None
    if "--narrow-of" in args:
        i = args.index("--narrow-of")
        f32, args = args[i + 1], args[:i] + args[i + 2 :]
    if len(args) not in (4, 5):
        sys.exit(__doc__)
    want, got, label, bound = load(args[0]), load(args[1]), args[2], float(args[3])
    floor = float(args[4]) * max(float(np.abs(w).max()) for w in want.values()) if len(args) == 5 else 0.0
    note = ""
    if f32 is not None:
        # Two roundings of one model to bf16 lie about as far apart as either lies from f32.
        own = worst_error(load(f32), want, 0.0, label)
        if 1.1 * own > bound:
            bound, note = 1.1 * own, f" (WANT is {own:.2e} off f32)"
    worst = worst_error(want, got, floor, label)
    passed = worst <= bound
    if not passed and f32 is not None:
        # Two roundings may also lie up to twice as far apart as each lies from f32: GOT then
        # passes when it is itself as close to f32 as WANT is (within the same 1.1).
        mine = worst_error(load(f32), got, 0.0, label)
        passed = mine <= max(float(args[3]), 1.1 * own)
        note += f" (GOT is {mine:.2e} off f32, WANT {own:.2e})"
    verdict = "ok" if passed else f"FAILED (bound {bound:g})"
    print(f"{label:28} rel err {worst:.2e} {verdict}{note}")
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
