#!/usr/bin/env bash
# What range masks and score biases cost in the tiled attention kernel, at batch 1 × seq 4096:
# the run time of a sliding window of 4 (bench/sliding_window.arch) against the same model
# with plain causal attention, and the arenas of both and of a GPT with ALiBi on every other
# layer (bench/alibi.arch). Run from the repository root after `cargo build --release`:
#
#     /work/shared/tools/bench-priority bench/masks.sh [ITERS]
#
# ARCHC=path/to/archc measures another build (an older commit, for a before/after).
# Run times are medians of ITERS runs (default 5) after a warm-up (`archc bench`).
set -euo pipefail
cd "$(dirname "$0")/.."
archc=${ARCHC:-target/release/archc}
iters=${1:-5}
dims=(--dim batch=1 --dim seq=4096)

causal=$(mktemp --suffix=.arch)
trap 'rm -f "$causal"' EXIT
sed 's/where(i >= j and i - j < window, scores/where(i >= j, scores/' \
  bench/sliding_window.arch > "$causal"

arena() { "$archc" dump --stage plan "$@" | sed -n 's/^arena_bytes: //p'; }
run_ms() { "$archc" bench "$@" --iters "$iters" 2>/dev/null | awk '/^cranelift/ {print $2}'; }

printf '%-16s %12s %10s\n' model arena "run ms"
for pair in "window 4:bench/sliding_window.arch" "causal:$causal"; do
  name=${pair%%:*}
  f=${pair#*:}
  printf '%-16s %12s %10s\n' "$name" "$(arena "$f" "${dims[@]}")" "$(run_ms "$f" "${dims[@]}")"
done
printf '%-16s %12s %10s\n' "alibi (gpt)" "$(arena bench/alibi.arch "${dims[@]}")" -
