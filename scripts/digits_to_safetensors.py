"""scikit-learn's handwritten digits (`load_digits`: 1,797 8×8 images, 16 grey levels) as
safetensors for `archc train` (bench/jepa_digits.py):

    OUT/train.safetensors, OUT/test.safetensors   pixel_values f32[n, 1, 8, 8] in [0, 1],
                                                  labels i64[n]

An 80/20 split from a fixed permutation (seed 0): 1,437 training images, 360 held out.

    python3 scripts/digits_to_safetensors.py OUT
"""

import os
import sys

import numpy as np
from safetensors.numpy import save_file
from sklearn.datasets import load_digits


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(labels))
    cut = int(0.8 * len(labels))
    for name, idx in [("train", order[:cut]), ("test", order[cut:])]:
        save_file({"pixel_values": np.ascontiguousarray(images[idx]), "labels": labels[idx]},
                  os.path.join(out, f"{name}.safetensors"))
        print(f"{out}/{name}.safetensors: {len(idx)} images")


if __name__ == "__main__":
    main()
