#!/usr/bin/env bash
# Everything a lent NVIDIA GPU checks, in one run (README, "NVIDIA GPUs"):
#
#   scripts/gpu_check.sh ARCHC TESTS
#
# ARCHC: archc built with `cargo build --release --features cuda`; TESTS: the integration-test
# binary built with the same features (`cargo test --release --features cuda --no-run` prints
# its path, target/release/deps/all-*). Neither needs Rust or LLVM where it runs, only the
# CUDA driver; the GPU machine gets them as carried files. Run it from the repository root.
#
# 1. parity: every Hugging Face fixture through the PTX kernels, f32 within 1e-4 of
#    transformers' outputs (tests/all/lowering.rs, `cuda_matches_hf_fixtures`), with and
#    without the passes; and `archc run --device cuda` on every example against the CPU;
# 2. the suite's GPU-side checks (tests/all/gpu.rs: PTX of every example assembled by this
#    machine's ptxas when one is on the PATH, the GPU schedule in the interpreter);
# 3. bench/gpu_vs_torch.py: archc against torch on this GPU, in the same run.
#
# Exit status: non-zero if any parity check fails (the benchmark's failures are reported).
set -uo pipefail
ARCHC=$(realpath "${1:?usage: scripts/gpu_check.sh ARCHC TESTS}")
TESTS=$(realpath "${2:?usage: scripts/gpu_check.sh ARCHC TESTS}")
cd "$(dirname "$0")/.."
export ARCHC_REPO="$PWD" ARCHC_BIN="$ARCHC"
status=0

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || status=1

echo "== parity: Hugging Face fixtures through the PTX kernels (f32, rel err <= 1e-4)"
"$TESTS" cuda_matches_hf_fixtures --nocapture --test-threads 1 || status=1

echo "== parity: archc run --device cuda against the CPU, every example"
scratch=$(mktemp -d)
for model in examples/*.arch; do
  name=$(basename "$model" .arch)
  "$ARCHC" run "$model" --outputs "$scratch/$name-cpu.safetensors" >/dev/null || { status=1; continue; }
  if "$ARCHC" run "$model" --device cuda --outputs "$scratch/$name-gpu.safetensors" >/dev/null; then
    python3 - "$scratch/$name-cpu.safetensors" "$scratch/$name-gpu.safetensors" "$name" <<'PY' || status=1
import sys
from safetensors.torch import load_file
want, got, name = load_file(sys.argv[1]), load_file(sys.argv[2]), sys.argv[3]
worst = 0.0
for k, w in want.items():
    g = got[k].float()
    w = w.float()
    err = ((g - w).abs().max() / w.abs().max().clamp(min=1e-30)).item()
    worst = max(worst, err)
print(f"{name:8} rel err {worst:.2e}")
sys.exit(0 if worst <= 1e-4 else 1)
PY
  else
    status=1
  fi
done

echo "== the suite's GPU-side checks"
"$TESTS" gpu:: --test-threads 2 || status=1

echo "== benchmark: archc against torch on this GPU"
python3 bench/gpu_vs_torch.py --archc "$ARCHC" --rounds 2 --iters 3 || echo "(the benchmark failed)"

exit $status
