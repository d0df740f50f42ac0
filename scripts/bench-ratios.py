#!/usr/bin/env python3
"""Joins `lora bench --json` lines and the reference's lines (peft_anchor.py, optionally through
peft-reserved.py; one call, same GPU) into markdown tables with ratios (this project / PEFT eager),
then checks the targets of issue 8. usage: bench-ratios.py lora.jsonl peft.jsonl [more reference .jsonl ...]"""
import json, sys


def load(*paths):
    rows, reserved, info = {}, {}, {}
    for line in (l for path in paths for l in open(path)):
        line = line.strip()
        if not line.startswith("{"):
            continue
        j = json.loads(line)
        if "peak_reserved_mib" in j:
            reserved[j["mode"]] = j["peak_reserved_mib"]
        elif "torch" in j and "gpu" in j:
            info = j
        elif "mode" in j and "error" not in j and "+compile" not in j.get("impl", ""):
            rows[j["mode"]] = j
        elif "mode" in j and "+compile" in j.get("impl", "") and "error" not in j:
            rows[j["mode"] + " (compile)"] = j
    return rows, reserved, info


ours, _, _ = load(sys.argv[1])
ref, reserved, info = load(*sys.argv[2:])
if info:
    print(f"reference: torch {info.get('torch')}, timm {info.get('timm')}, peft {info.get('peft')}, {info.get('gpu')}\n")


def r(a, b):
    return f"{a / b:.2f}" if a and b and a > 0 and b > 0 else "-"


print("| method | lora train img/s | PEFT eager img/s | ratio | PEFT compiled img/s | ratio "
      "| lora peak MiB (above context) | PEFT reserved MiB | ratio | PEFT allocated MiB "
      "| lora infer img/s | PEFT infer img/s | ratio | trainable (lora / PEFT) |")
print("| --- " * 14 + "|")
for mode, o in ours.items():
    p = ref.get(mode, {})
    c = ref.get(mode + " (compile)", {})
    print(f"| {mode} | {o['train_img_s']} | {p.get('train_img_s', '-')} | {r(o['train_img_s'], p.get('train_img_s'))} "
          f"| {c.get('train_img_s', '-')} | {r(o['train_img_s'], c.get('train_img_s'))} "
          f"| {o['peak_mib']} | {reserved.get(mode, '-')} | {r(o['peak_mib'], reserved.get(mode))} | {p.get('peak_mib', '-')} "
          f"| {o['infer_img_s']}{' (merged)' if o.get('infer_merged') else ''} | {p.get('infer_img_s', '-')} | {r(o['infer_img_s'], p.get('infer_img_s'))} "
          f"| {o['trainable']:,} / {p.get('trainable', 0):,} |")

# issue 8's targets, where the figures are there
checks = []
def get(rows, mode, key):
    return rows.get(mode, {}).get(key)
lt, pt = get(ours, "lora", "train_img_s"), get(ref, "lora", "train_img_s")
if lt and pt:
    checks.append(("LoRA qkv >= 1.5x PEFT eager training", lt / pt, lt >= 1.5 * pt))
la, ft = get(ours, "lora-all", "train_img_s"), get(ours, "full", "train_img_s")
if la and ft:
    checks.append(("LoRA on all linears >= our full fine-tuning", la / ft, la >= ft))
ad = get(ours, "adalora", "train_img_s")
if ad and lt:
    checks.append(("AdaLoRA within 10% of our LoRA", ad / lt, ad >= 0.9 * lt))
for mode, o in ours.items():
    base = reserved.get(mode)
    if base:
        checks.append((f"{mode}: peak memory <= 0.8x PEFT's (reserved)", o["peak_mib"] / base, o["peak_mib"] <= 0.8 * base))
fi, li = get(ours, "full", "infer_img_s"), get(ours, "lora", "infer_img_s")
if fi and li:
    checks.append(("merged LoRA inference within 3% of the base model's", li / fi, li >= 0.97 * fi))
pf = get(ref, "full", "train_img_s")
if ft and pf:
    checks.append(("full fine-tuning >= PEFT eager full fine-tuning", ft / pf, ft >= pf))
if checks:
    print("\n| target | ratio | met |\n| --- | --- | --- |")
    for name, ratio, ok in checks:
        print(f"| {name} | {ratio:.2f} | {'yes' if ok else 'no'} |")
