#!/usr/bin/env python3
"""Joins `lora bench --json` lines and peft_anchor.py lines (one run, same GPU) into a markdown table
with ratios (this project / PEFT eager). usage: bench-ratios.py lora.jsonl peft.jsonl"""
import json, sys

def load(path):
    rows = {}
    for line in open(path):
        line = line.strip()
        if not line.startswith("{"):
            continue
        j = json.loads(line)
        if "mode" in j and "error" not in j and "+compile" not in j.get("impl", ""):
            rows[j["mode"]] = j
    return rows

ours, ref = load(sys.argv[1]), load(sys.argv[2])
print("| method | lora train img/s | PEFT train img/s | ratio | lora peak MiB | PEFT peak MiB | ratio "
      "| lora infer img/s | PEFT infer img/s | ratio | trainable (lora / PEFT) |")
print("| --- " * 11 + "|")
for mode, o in ours.items():
    r = ref.get(mode, {})
    def ratio(k):
        return f"{o[k] / r[k]:.2f}" if r.get(k) and o.get(k, -1) > 0 else "-"
    print(f"| {mode} | {o['train_img_s']} | {r.get('train_img_s', '-')} | {ratio('train_img_s')} "
          f"| {o['peak_mib']} | {r.get('peak_mib', '-')} | {ratio('peak_mib')} "
          f"| {o['infer_img_s']} | {r.get('infer_img_s', '-')} | {ratio('infer_img_s')} "
          f"| {o['trainable']:,} / {r.get('trainable', 0):,} |")
