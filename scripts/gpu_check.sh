#!/usr/bin/env bash
# Everything a lent NVIDIA GPU checks, in one run (README, "NVIDIA GPUs"):
#
#   scripts/gpu_check.sh ARCHC TESTS [MINILM_DIR]
#
# ARCHC: archc built with `cargo build --release --features cuda`; TESTS: the integration-test
# binary built with the same features (`cargo test --release --features cuda --no-run` prints
# its path, target/release/deps/all-*). The GPU machine has the CUDA driver but neither Rust nor
# LLVM: scripts/gpu_bundle.sh builds both with LLVM linked statically and packs them.
# MINILM_DIR: all-MiniLM-L6-v2 packed by scripts/pack_minilm_for_gpu.py, with the CPU's
# outputs on the same files as expected.safetensors (gpu_bundle.sh makes it). Run it from the
# repository root.
#
# 1. parity: every Hugging Face fixture through the PTX kernels, f32 within 1e-4 of
#    transformers' outputs with and without the passes, bf16 within 1e-2 and f16 within 2e-3
#    (or 1.1 times transformers' own error in that dtype, where larger; tests/all/lowering.rs,
#    `cuda_matches_hf_fixtures`); `archc run --device cuda` on every example against the CPU
#    (f32, 1e-4), and in bf16 (1e-2: the tensor-core templates; on Hopper both wgmma's and,
#    with --arch sm_80, mma.sync's); `archc grad --device cuda` on every fixture against torch autograd's
#    gradients (1e-4; tests/all/grad.rs measures them so); MiniLM's real weights against the
#    CPU (f32 1e-4; bf16 by the fixtures' rule, from the pack's bounds.json, else 1e-2);
#    `archc generate --device cuda` on every causal fixture against transformers' generate()
#    (the same 20 ids, every step's logits within 1e-4; the oracle of tests/all/generate.rs:
#    the steps' batches of launches, captured as CUDA graphs and replayed where they repeat,
#    runtime/src/cuda_graphs.rs, are checked there);
# 2. bench/gpu_vs_torch.py: archc against torch on this GPU, in the same run (on Hopper, the
#    GEMM again on Ampere's templates);
# 3. the suite's GPU-side checks (tests/all/gpu.rs: PTX of every example assembled by this
#    machine's ptxas when one is on the PATH, the GPU schedule in the interpreter). CI runs
#    them too; GPU_CHECK_SUITE=0 skips them.
#
# Exit status: non-zero if any parity check fails (the benchmark's failures are reported).
set -uo pipefail
ARCHC=$(realpath "${1:?usage: scripts/gpu_check.sh ARCHC TESTS [MINILM_DIR]}")
TESTS=$(realpath "${2:?usage: scripts/gpu_check.sh ARCHC TESTS [MINILM_DIR]}")
MINILM=${3:-}
cd "$(dirname "$0")/.."
export ARCHC_REPO="$PWD" ARCHC_BIN="$ARCHC"
status=0
compare() { python3 scripts/compare_outputs.py "$@" || status=1; }

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || status=1

echo "== parity: Hugging Face fixtures through the PTX kernels (f32 1e-4; bf16 1e-2, f16 2e-3)"
"$TESTS" cuda_matches_hf_fixtures --nocapture --test-threads 1 || status=1

echo "== parity: archc run --device cuda against the CPU, every example (f32, 1e-4)"
scratch=$(mktemp -d)
for model in examples/*.arch; do
  name=$(basename "$model" .arch)
  "$ARCHC" run "$model" --outputs "$scratch/$name-cpu.safetensors" >/dev/null || { status=1; continue; }
  if "$ARCHC" run "$model" --device cuda --outputs "$scratch/$name-gpu.safetensors" >/dev/null; then
    compare "$scratch/$name-cpu.safetensors" "$scratch/$name-gpu.safetensors" "$name" 1e-4
  else
    status=1
  fi
done

echo "== parity: the GPU's tensor-core templates, every example in bf16 against the CPU's kernels (1e-2)"
# The CPU's kernels round what they store as the GPU's do, so this isolates the templates:
# mma.sync (sm_80), and on Hopper wgmma (sm_90a) and again mma.sync (--arch sm_80).
archs=""
case "$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1)" in
  9.*) archs="sm_80" ;;
esac
for model in examples/*.arch; do
  name=$(basename "$model" .arch)
  "$ARCHC" run "$model" --dtype bf16 --outputs "$scratch/$name-cpu16.safetensors" >/dev/null || { status=1; continue; }
  for arch in "" $archs; do
    if "$ARCHC" run "$model" --device cuda --dtype bf16 ${arch:+--arch $arch} \
        --outputs "$scratch/$name-gpu16$arch.safetensors" >/dev/null; then
      compare "$scratch/$name-cpu16.safetensors" "$scratch/$name-gpu16$arch.safetensors" "$name bf16 ${arch:-own arch}" 1e-2
    else
      status=1
    fi
  done
done

echo "== parity: gradients through the PTX kernels against torch autograd (archc grad, 1e-4)"
for d in tests/fixtures/hf/*/; do
  case=$(basename "$d")
  [ -f "$d/grads.safetensors" ] || continue
  "$ARCHC" import hf "$d/config.json" -o "$scratch/$case.arch" >/dev/null || { status=1; continue; }
  if "$ARCHC" grad "$scratch/$case.arch" --device cuda --weights "$d/model.safetensors" \
      --inputs "$d/inputs.safetensors" --cotangents "$d/cotangents.safetensors" \
      --outputs "$scratch/$case-grads.safetensors" >/dev/null; then
    compare "$d/grads.safetensors" "$scratch/$case-grads.safetensors" "$case gradients" 1e-4 1e-6
  else
    status=1
  fi
done

if [ -n "$MINILM" ]; then
  echo "== parity: all-MiniLM-L6-v2's real weights (f16-rounded for transport) against the CPU"
  for dtype in f32 bf16; do
    bound=1e-4
    if [ $dtype = bf16 ]; then
      # The fixtures' rule: 1e-2, or 1.1 times transformers' own bf16 error where larger
      # (bounds.json, from scripts/pack_minilm_for_gpu.py).
      bound=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['bf16'])" \
        "$MINILM/bounds.json" 2>/dev/null || echo 1e-2)
    fi
    if "$ARCHC" run "$MINILM/minilm.arch" --device cuda --dtype $dtype --weights "$MINILM/model.safetensors" \
        --inputs "$MINILM/inputs.safetensors" --outputs "$scratch/minilm-$dtype.safetensors" >/dev/null; then
      compare "$MINILM/expected.safetensors" "$scratch/minilm-$dtype.safetensors" "MiniLM $dtype" "$bound"
    else
      status=1
    fi
  done
fi

echo "== parity: archc generate --device cuda against transformers' generate() (20 tokens, 1e-4)"
for d in tests/fixtures/hf/*/; do
  case=$(basename "$d")
  [ -f "$d/generate.safetensors" ] || continue
  "$ARCHC" import hf "$d/config.json" -o "$scratch/$case.arch" >/dev/null || { status=1; continue; }
  if "$ARCHC" generate "$scratch/$case.arch" --device cuda --weights "$d/model.safetensors" \
      --inputs "$d/inputs.safetensors" --max-new-tokens 20 \
      --outputs "$scratch/$case-generated.safetensors" >/dev/null; then
    # The same ids (an id off by one is far over the bound) and every step's logits.
    compare "$d/generate.safetensors" "$scratch/$case-generated.safetensors" "$case generation" 1e-4
  else
    status=1
  fi
done

echo "== benchmark: archc against torch on this GPU"
python3 bench/gpu_vs_torch.py --archc "$ARCHC" --rounds "${GPU_CHECK_ROUNDS:-3}" --iters 3 \
  || echo "(the benchmark failed)"
if [ -n "$archs" ]; then
  echo "== benchmark: the GEMM on Ampere's templates (mma.sync) on this Hopper GPU"
  python3 bench/gpu_vs_torch.py --archc "$ARCHC" --rounds "${GPU_CHECK_ROUNDS:-3}" --iters 3 \
    --only GEMM --arch sm_80 || echo "(the benchmark failed)"
fi

if [ "${GPU_CHECK_SUITE:-1}" != 0 ]; then
  echo "== the suite's GPU-side checks"
  "$TESTS" gpu:: --test-threads 2 || status=1
fi

rm -rf "$scratch"
exit $status
