#!/usr/bin/env python3
"""Runs the reference script (peft_anchor.py) one mode per process and, after each, prints PyTorch's
peak *reserved* memory (torch.cuda.max_memory_reserved: what the caching allocator held from the
device). That is the figure `lora bench` measures through NVML as peak_mib (device memory in use
above the CUDA context; TorchSharp has no allocator statistics), so memory ratios compare like with
like. The anchor's own lines (with max_memory_allocated as peak_mib) pass through unchanged.

usage: peft-reserved.py path/to/peft_anchor.py [anchor options] --modes full lora ...
"""
import json, os, runpy, subprocess, sys


def one(anchor, argv):
    import torch
    sys.argv = [anchor] + argv
    runpy.run_path(anchor, run_name="__main__")
    mode = argv[argv.index("--modes") + 1]
    print(json.dumps(dict(impl="peft+timm", mode=mode, peak_reserved_mib=round(torch.cuda.max_memory_reserved() / 2**20))), flush=True)


def main():
    if sys.argv[1] == "--one":
        return one(sys.argv[2], sys.argv[3:])
    anchor, args = sys.argv[1], sys.argv[2:]
    if "--modes" in args:
        i = args.index("--modes")
        j = i + 1
        while j < len(args) and not args[j].startswith("--"):
            j += 1
        modes, rest = args[i + 1:j], args[:i] + args[j:]
    else:
        modes, rest = ["full", "lora", "lora-all", "adalora"], args
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for m in modes:
        subprocess.run([sys.executable, __file__, "--one", anchor, *rest, "--modes", m], env=env)


if __name__ == "__main__":
    main()
