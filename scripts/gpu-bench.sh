#!/usr/bin/env bash
# The whole GPU comparison in one device call, from the repository root on the GPU machine, after
# `../shared/gpu/pack.sh src/Lora.Runner/Lora.Runner.csproj` here (carry .gpu): this project's
# `lora bench` (a process per method), then the reference timm + PEFT (eager, one process per mode
# for its reserved-memory peak; then torch.compile of lora and full), then the table of ratios and
# targets. Results land in $OUT (the device tool's folder) or ./bench-out.
# Environment: MODEL, BATCH, IMG, CLASSES, RANK, METHODS, STEPS, WARMUP, COMPILE (1 = also compile).
set -uo pipefail
out=${OUT:-bench-out}; mkdir -p "$out"
model=${MODEL:-vit_base_patch16_224} batch=${BATCH:-64} img=${IMG:-224} classes=${CLASSES:-100} rank=${RANK:-8}
steps=${STEPS:-20} warmup=${WARMUP:-5}
shape=(--model "$model" --batch "$batch" --img "$img" --classes "$classes" --rank "$rank" --steps "$steps" --warmup "$warmup")
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/machine.txt"
bash .gpu/on-device.sh .gpu/Lora.Runner/lora.dll bench --device cuda "${shape[@]}" \
  --methods "${METHODS:-full,lora,lora-all,adalora,dora,adapter}" --json 2> "$out/lora.err" | tee "$out/lora.jsonl"
python3 scripts/peft-reserved.py .gpu/peft_anchor.py "${shape[@]}" --modes full lora lora-all adalora 2> "$out/peft.err" | tee "$out/peft.jsonl"
: > "$out/peft-compile.jsonl"
if [ "${COMPILE:-1}" = 1 ]; then
  python3 .gpu/peft_anchor.py "${shape[@]}" --modes lora full --compile 2>> "$out/peft.err" | grep compile | tee "$out/peft-compile.jsonl"
fi
python3 scripts/bench-ratios.py "$out/lora.jsonl" "$out/peft.jsonl" "$out/peft-compile.jsonl" | tee "$out/table.md"
