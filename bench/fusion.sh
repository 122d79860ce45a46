#!/usr/bin/env bash
# What the passes buy, measured in one run: arena bytes and run time at batch 1 × seq 4096
# with every pass and with none (--no-fuse), and the compile time of an 8- and a 64-layer
# Jamba. Run from the repository root after `cargo build --release`:
#
#     bench/fusion.sh [ITERS]
#
# Run times are medians of ITERS runs (default 3) after a warm-up (`archc bench`).
set -euo pipefail
cd "$(dirname "$0")/.."
archc=target/release/archc
iters=${1:-3}
dims=(--dim batch=1 --dim seq=4096)

arena() { "$archc" dump --stage plan "$@" | sed -n 's/^arena_bytes: //p'; }
run_ms() { "$archc" bench "$@" --iters "$iters" 2>/dev/null | awk '/^cranelift/ {print $2}'; }

printf '%-8s %16s %16s %12s %12s %8s\n' model "arena (passes)" "arena (none)" "ms (passes)" "ms (none)" speedup
for m in mamba llama jamba; do
  f=examples/$m.arch
  a1=$(arena "$f" "${dims[@]}")
  a0=$(arena "$f" "${dims[@]}" --no-fuse)
  t1=$(run_ms "$f" "${dims[@]}")
  t0=$(run_ms "$f" "${dims[@]}" --no-fuse)
  printf '%-8s %16s %16s %12s %12s %7.1fx\n' "$m" "$a1" "$a0" "$t1" "$t0" "$(awk "BEGIN {print $t0 / $t1}")"
done

deep=$(mktemp -d)
trap 'rm -rf "$deep"' EXIT
sed 's/layers = 8,/layers = 64,/' examples/jamba.arch > "$deep/jamba64.arch"
echo
echo "compile time (archc bench, seq 16):"
for f in examples/jamba.arch "$deep/jamba64.arch"; do
  layers=$(grep -o 'layers = [0-9]*' "$f" | head -1)
  for flags in "" "--disable-pass interleave_stack" "--no-fuse"; do
    # shellcheck disable=SC2086
    line=$("$archc" bench "$f" --dim seq=16 --iters 1 $flags 2>/dev/null | sed -n 's/^compile: //p')
    printf '  jamba %-13s %-32s %s\n' "($layers)" "${flags:-all passes}" "$line"
  done
done
