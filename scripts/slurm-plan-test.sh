#!/usr/bin/env bash
# Runs a spec twice, locally and through Slurm, and checks that both give the same runs and tables.
# Meant to run inside the local cluster (it needs SLURM_CONF and wait_queue_empty):
#   scripts/slurm-local-test.sh -- scripts/slurm-plan-test.sh scripts/slurm-tiny.yaml
# Needs jq. LORA overrides the lora command (default: dotnet src/Lora.Runner/bin/Release/net10.0/lora.dll).
set -euo pipefail
# exit 77: skipped (lora run cannot train yet)
spec=$(realpath "${1:?usage: slurm-plan-test.sh SPEC}")
cd "$(dirname "$0")/.."
read -r -a lora <<< "${LORA:-dotnet $(pwd)/src/Lora.Runner/bin/Release/net10.0/lora.dll}"
work=$(mktemp -d "${SLURM_LOCAL_TEST_DIR:-${TMPDIR:-/tmp}}/plan.XXXXXX")
say() { echo "slurm-plan-test: $*"; }

say "local run"
if ! "${lora[@]}" run "$spec" --results "$work/local" 2>&1 | tee "$work/local.log"; then
    if grep -q "not wired" "$work/local.log"; then
        say "SKIPPED: training is not wired into lora run yet"; exit 77
    fi
    say "FAILED: the local run failed"; exit 1
fi
"${lora[@]}" tables --results "$work/local" --out "$work/local-tables"

say "submit to Slurm"
# the array tasks run the same lora command
LORA_SLURM_COMMAND="${lora[*]}" "${lora[@]}" submit "$spec" --results "$work/slurm"
wait_queue_empty 1200
"${lora[@]}" status "$spec" --results "$work/slurm" | tee "$work/status.txt"
"${lora[@]}" tables --results "$work/slurm" --out "$work/slurm-tables"

# same set of finished runs
runs() { (cd "$1" && find . -name metrics.json -not -path './slurm/*' | sort); }
if ! diff <(runs "$work/local") <(runs "$work/slurm"); then
    say "FAILED: the runs finished through Slurm differ from the local ones (above)"; exit 1
fi
[ -n "$(runs "$work/local")" ] || { say "FAILED: the local run produced no results"; exit 1; }
# same results: everything of metrics.json except what depends on the machine and the moment
# (timings, peak memory, provenance)
same=1
for f in $(runs "$work/local"); do
    keep='{hash, labels, depends_on, config, metrics, params, curve}'
    if ! diff <(jq -S "$keep" "$work/local/$f") <(jq -S "$keep" "$work/slurm/$f") > "$work/diff.txt"; then
        say "results differ in $f:"; head -n 20 "$work/diff.txt"; same=0
    fi
done
[ "$same" = 1 ] || { say "FAILED: results through Slurm differ from the local ones"; exit 1; }
# and the same tables, train time and peak memory masked (markdown; plots are pictures of the same numbers)
mask() { sed -E 's/[0-9]+\.[0-9] (s|MiB)/~/g' "$1"; }
for t in $(cd "$work/local-tables" && find . -name '*.md' | sort); do
    if ! diff <(mask "$work/local-tables/$t") <(mask "$work/slurm-tables/$t"); then
        say "FAILED: table $t differs between the local run and the Slurm run (above)"; exit 1
    fi
done
resubmit=$("${lora[@]}" submit "$spec" --results "$work/slurm")
echo "$resubmit"
grep -q "nothing to submit" <<< "$resubmit" || { say "FAILED: resubmitting a finished plan submitted something"; exit 1; }
say "PASSED: $(runs "$work/local" | wc -l) runs, same tables, resubmission submits nothing"
