#!/usr/bin/env bash
# Host work per training step, per method, relative to full fine-tuning in the same process.
# The model is ViT-B/16's skeleton (12 blocks, 12 heads, the same layers and tensor ops) with
# embed_dim 24 and one 16-px patch at batch 1, so the arithmetic is negligible and a step's time is
# the host's: TorchSharp calls, libtorch's dispatcher and autograd bookkeeping, once per kernel that a
# GPU would launch. A GPU step cannot be faster than this, and each of those kernels costs the GPU a
# few µs however small. Ratios within one process, median over ROUNDS processes, because CPU timings
# on a shared VM drift between processes. PRECISION=bf16 for the GPU's recipe (default fp32).
# usage: scripts/host-work.sh [ROUNDS] [lora.dll]
set -euo pipefail
rounds=${1:-8}
lora=${2:-src/Lora.Runner/bin/Release/net10.0/lora.dll}
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for i in $(seq 1 "$rounds"); do
  # full first and last: the first method of a process runs slow (JIT, allocator); the last is the reference
  OMP_NUM_THREADS=1 dotnet "$lora" bench --model vit --model-config "$here/vit-b-skeleton.json" \
    --batch 1 --img 16 --classes 100 --rank 8 --steps 100 --warmup 20 --precision "${PRECISION:-fp32}" \
    --methods full,lora,lora-all,adalora,dora,adapter,full --json 2>/dev/null | grep '^{' | sed "s/^{/{\"process\":$i,/" >> "$out"
done
python3 - "$out" "${PRECISION:-fp32}" <<'PY'
import json, sys, collections, statistics
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    j = json.loads(line)
    runs[j["process"]].append((j["method"], j["step_ms"]))
ratios, full = collections.defaultdict(list), []
for steps in runs.values():
    ref = steps[-1][1]
    full.append(ref)
    for method, ms in steps[1:-1]:
        ratios[method].append(ms / ref)
print(f"host work per step relative to full fine-tuning, {sys.argv[2]} (median of {len(runs)} processes; full: {statistics.median(full):.2f} ms)")
print("| method | step / full | min | max |\n| --- | --- | --- | --- |")
for method, r in ratios.items():
    print(f"| {method} | {statistics.median(r):.2f} | {min(r):.2f} | {max(r):.2f} |")
PY
