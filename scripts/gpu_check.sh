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
#    with --arch sm_80, mma.sync's), and again at sequences of 120 and 2100 positions
#    (GPU_CHECK_LENGTHS: past a tile, a chunk and a block's share of a scan); `archc grad
#    --device cuda` on every fixture against torch autograd's gradients (1e-4;
#    tests/all/grad.rs measures them so); MiniLM's real weights against the
#    CPU (f32 1e-4; bf16 by the fixtures' rule, from the pack's bounds.json, else 1e-2);
#    `archc generate --device cuda` on every causal fixture against transformers' generate()
#    (the same 20 ids, every step's logits within 1e-4; the oracle of tests/all/generate.rs:
#    the steps' batches of launches, captured as CUDA graphs and replayed where they repeat,
#    runtime/src/cuda_graphs.rs, are checked there);
# 2. bench/gpu_vs_torch.py: archc against torch on this GPU, in the same run (on Hopper, the
#    GEMM again on Ampere's templates); then each workload's time kernel by kernel;
# 3. the suite's GPU-side checks (tests/all/gpu.rs: PTX of every example assembled by this
#    machine's ptxas when one is on the PATH, the GPU schedule in the interpreter). CI runs
#    them too.
#
# GPU_CHECK_SECTIONS picks sections, in the order given (default: all of them, in this order):
#   machine fixtures examples bf16 long grad minilm generate bench profile suite
# so that a short lease runs what matters first. GPU_CHECK_TIMEOUT bounds each archc command
# and test run (seconds, default 300): a hang is a failure, not a lost lease. A section's
# checks run GPU_CHECK_JOBS (8) at a time; the benchmark runs alone. GPU_CHECK_ROUNDS sets the
# benchmark's rounds (3). GPU_CHECK_DEVICE=cuda-sim runs the parity checks in the simulator
# (slowly), to try this script on a machine without a GPU.
#
# Exit status: non-zero if any parity check fails (the benchmark's failures are reported).
set -uo pipefail
ARCHC=$(realpath "${1:?usage: scripts/gpu_check.sh ARCHC TESTS [MINILM_DIR]}")
TESTS=$(realpath "${2:?usage: scripts/gpu_check.sh ARCHC TESTS [MINILM_DIR]}")
MINILM=${3:-}
cd "$(dirname "$0")/.."
export ARCHC_REPO="$PWD" ARCHC_BIN="$ARCHC"
# gpu_bundle.sh packs the few shared libraries static LLVM still needs beside archc, in case
# this machine lacks them: last on the path, so the machine's own come first.
if [ -d "$(dirname "$ARCHC")/lib" ]; then
  export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$(dirname "$ARCHC")/lib"
fi
LIMIT=${GPU_CHECK_TIMEOUT:-300}
JOBS=${GPU_CHECK_JOBS:-8}
# cuda-sim runs the same checks in the Kernel IR interpreter: a dry run of this script.
DEVICE=${GPU_CHECK_DEVICE:-cuda}
# archc and the test binary, each run bounded by $LIMIT seconds.
archc() { timeout "$LIMIT" "$ARCHC" "$@"; }
tests() { timeout "$LIMIT" "$TESTS" "$@"; }
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# A check run in the background (spawn) cannot set $status: it leaves this file instead.
fail() { touch "$scratch/failed"; }
compare() { python3 scripts/compare_outputs.py "$@" || fail; }
# The checks of a section run side by side, $JOBS at once (each compiles its model on one
# core; the GPU is shared), each one's output kept apart and printed in order by drain.
spawned=0
spawn() {
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
  spawned=$((spawned + 1))
  "$@" >"$scratch/log.$(printf %05d $spawned)" 2>&1 &
}
drain() {
  wait
  cat "$scratch"/log.* 2>/dev/null
  rm -f "$scratch"/log.*
}
archs=""
case "$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1)" in
  9.*) archs="sm_80" ;;  # on Hopper, Ampere's templates are checked too
esac

machine() {
  echo "== machine"
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader || fail
}

fixtures() {
  echo "== parity: Hugging Face fixtures through the PTX kernels (f32 1e-4; bf16 1e-2, f16 2e-3)"
  # Four tests (f32 without and with the passes, bf16, f16), side by side.
  tests cuda_matches_hf_fixtures --nocapture --test-threads 4 || fail
}

# Runs a command, its output dropped; a failure is a failed check.
ran() { "$@" >/dev/null || { fail; return 1; }; }
# The fixture DIR's model imported from its config.json: prints the .arch file's path.
imported() {
  local out
  out="$scratch/$(basename "$1")-$2.arch"
  ran archc import hf "$1/config.json" -o "$out" && echo "$out"
}
# FILE FUNC: FUNC DIR for every fixture that has FILE, side by side.
each_fixture() {
  for d in tests/fixtures/hf/*; do
    if [ -f "$d/$1" ]; then spawn "$2" "$d"; fi
  done
  drain
}

example() {  # MODEL: archc run --device cuda against the CPU, f32
  local name
  name=$(basename "$1" .arch)
  ran archc run "$1" --outputs "$scratch/$name-cpu.safetensors" &&
    ran archc run "$1" --device "$DEVICE" --outputs "$scratch/$name-gpu.safetensors" &&
    compare "$scratch/$name-cpu.safetensors" "$scratch/$name-gpu.safetensors" "$name" 1e-4
}

examples() {
  echo "== parity: archc run --device $DEVICE against the CPU, every example (f32, 1e-4)"
  for model in examples/*.arch; do spawn example "$model"; done
  drain
}

example_bf16() {  # MODEL: in bf16, the GPU's own arch (and sm_80 on Hopper) against the CPU
  local name arch
  name=$(basename "$1" .arch)
  ran archc run "$1" --dtype bf16 --outputs "$scratch/$name-cpu16.safetensors" || return
  ran archc run "$1" --outputs "$scratch/$name-cpu32.safetensors" || return
  for arch in "" $archs; do
    ran archc run "$1" --device "$DEVICE" --dtype bf16 ${arch:+--arch $arch} \
        --outputs "$scratch/$name-gpu16$arch.safetensors" &&
      compare "$scratch/$name-cpu16.safetensors" "$scratch/$name-gpu16$arch.safetensors" \
        "$name bf16 ${arch:-own arch}" 1e-2 --narrow-of "$scratch/$name-cpu32.safetensors"
  done
}

bf16() {
  echo "== parity: the GPU's tensor-core templates, every example in bf16 against the CPU's kernels (1e-2)"
  # The CPU's kernels round what they store as the GPU's do, so this isolates the templates:
  # mma.sync (sm_80), and on Hopper wgmma (sm_90a) and again mma.sync (--arch sm_80). Where
  # the model's own bf16 error (the CPU's bf16 against its f32) is larger, 1.1 times that.
  for model in examples/*.arch; do spawn example_bf16 "$model"; done
  drain
}

example_long() {  # MODEL SEQ: at a sequence of SEQ positions, f32 and bf16, against the CPU
  local name dtype bound
  name=$(basename "$1" .arch)-$2
  for dtype in f32 bf16; do
    # The CPU decides which lengths a model takes (a model without `seq`, or with fewer
    # positions, is skipped): the check is the GPU's agreement with it.
    if ! archc run "$1" --dim seq="$2" --dtype $dtype --outputs "$scratch/$name-$dtype-cpu.safetensors" \
        >/dev/null 2>"$scratch/$name.err"; then
      echo "$name $dtype: skipped ($(head -c 120 "$scratch/$name.err"))"
      return
    fi
    ran archc run "$1" --dim seq="$2" --dtype $dtype --device "$DEVICE" \
      --outputs "$scratch/$name-$dtype-gpu.safetensors" || continue
    bound=(1e-4)
    [ $dtype = bf16 ] && bound=(1e-2 --narrow-of "$scratch/$name-f32-cpu.safetensors")
    compare "$scratch/$name-$dtype-cpu.safetensors" "$scratch/$name-$dtype-gpu.safetensors" \
      "$name $dtype" "${bound[@]}"
  done
}

long() {
  # The fixtures and the examples' defaults are a few positions long: this runs the templates
  # past one tile, one chunk and one block's share of a scan (2048 steps).
  echo "== parity: every example at longer sequences (${GPU_CHECK_LENGTHS:-120 2100}), f32 (1e-4) and bf16 (1e-2), against the CPU"
  local model seq
  for seq in ${GPU_CHECK_LENGTHS:-120 2100}; do
    for model in examples/*.arch; do spawn example_long "$model" "$seq"; done
  done
  drain
}

gradient() {  # FIXTURE_DIR: archc grad --device cuda against torch autograd
  local case arch
  case=$(basename "$1")
  arch=$(imported "$1" grad) &&
    ran archc grad "$arch" --device "$DEVICE" --weights "$1/model.safetensors" \
      --inputs "$1/inputs.safetensors" --cotangents "$1/cotangents.safetensors" \
      --outputs "$scratch/$case-grads.safetensors" &&
    compare "$1/grads.safetensors" "$scratch/$case-grads.safetensors" "$case gradients" 1e-4 1e-6
}

grad() {
  echo "== parity: gradients through the PTX kernels against torch autograd (archc grad, 1e-4)"
  each_fixture grads.safetensors gradient
}

minilm_dtype() {  # DTYPE: MiniLM's real weights on the GPU against the CPU
  local bound=1e-4
  if [ "$1" = bf16 ]; then
    # The fixtures' rule: 1e-2, or 1.1 times transformers' own bf16 error where larger
    # (bounds.json, from scripts/pack_minilm_for_gpu.py).
    bound=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['bf16'])" \
      "$MINILM/bounds.json" 2>/dev/null || echo 1e-2)
  fi
  ran archc run "$MINILM/minilm.arch" --device "$DEVICE" --dtype "$1" --weights "$MINILM/model.safetensors" \
      --inputs "$MINILM/inputs.safetensors" --outputs "$scratch/minilm-$1.safetensors" &&
    compare "$MINILM/expected.safetensors" "$scratch/minilm-$1.safetensors" "MiniLM $1" "$bound"
}

minilm() {
  [ -n "$MINILM" ] || { echo "== (no MiniLM directory given: skipped)"; return; }
  echo "== parity: all-MiniLM-L6-v2's real weights (f16-rounded for transport) against the CPU"
  for dtype in f32 bf16; do spawn minilm_dtype $dtype; done
  drain
}

generation() {  # FIXTURE_DIR: archc generate --device cuda against transformers' generate()
  local case arch
  case=$(basename "$1")
  # The same ids (an id off by one is far over the bound) and every step's logits.
  arch=$(imported "$1" gen) &&
    ran archc generate "$arch" --device "$DEVICE" --weights "$1/model.safetensors" \
      --inputs "$1/inputs.safetensors" --max-new-tokens 20 \
      --outputs "$scratch/$case-generated.safetensors" &&
    compare "$1/generate.safetensors" "$scratch/$case-generated.safetensors" "$case generation" 1e-4
}

generate() {
  echo "== parity: archc generate --device $DEVICE against transformers' generate() (20 tokens, 1e-4)"
  each_fixture generate.safetensors generation
}

bench() {
  # Alone on the GPU: its timings are the README's.
  echo "== benchmark: archc against torch on this GPU"
  python3 bench/gpu_vs_torch.py --archc "$ARCHC" --rounds "${GPU_CHECK_ROUNDS:-3}" --iters 3 \
    ${MINILM:+--minilm "$MINILM"} || echo "(the benchmark failed)"
  if [ -n "$archs" ]; then
    echo "== benchmark: the GEMM on Ampere's templates (mma.sync) on this Hopper GPU"
    python3 bench/gpu_vs_torch.py --archc "$ARCHC" --rounds "${GPU_CHECK_ROUNDS:-3}" --iters 3 \
      --only GEMM --arch sm_80 || echo "(the benchmark failed)"
  fi
}

profile() {
  # Where a workload's time goes, kernel by kernel (the launches run one at a time here).
  echo "== profile: the benchmark's workloads, kernel by kernel (ARCHC_PROFILE=kernels)"
  local w
  for w in "bench/gpu/selective_scan.arch --dim batch=8 --dim seq=2048 --dim channels=2048" \
      "bench/gpu/ssd.arch --dim batch=8 --dim seq=2048" \
      "bench/gpu/ssd.arch --dtype bf16 --dim batch=8 --dim seq=2048" \
      "bench/matmul.arch --dtype bf16 --dim m=8192 --dim k=8192 --dim n=8192"; do
    echo "-- archc bench $w"
    # shellcheck disable=SC2086
    ARCHC_PROFILE=kernels archc bench $w --device cuda --iters 1 2>&1 |
      grep -E "^profile|×|^kernels" || fail
  done
}

suite() {
  echo "== the suite's GPU-side checks"
  tests gpu:: --test-threads 2 || fail
}

for section in ${GPU_CHECK_SECTIONS:-machine fixtures examples bf16 long grad minilm generate bench profile suite}; do
  case $section in
    machine|fixtures|examples|bf16|long|grad|minilm|generate|bench|profile|suite)
      SECONDS=0
      $section
      echo "-- $section: ${SECONDS} s" ;;
    *) echo "unknown section '$section'" >&2; fail ;;
  esac
done
if [ -e "$scratch/failed" ]; then exit 1; fi
