#!/usr/bin/env bash
# The Slurm checks for CI, after `dotnet build Lora.sln -c Release`. .ci/run installs the Debian
# packages slurmctld, slurmd, slurm-client and munge first where it can; without them (or without
# root) every check here is SKIPPED, said loudly, and the exit code is 0.
#
#   1. a throw-away single-node cluster runs a 4-task array and an afterok-dependent job;
#   2. the SlurmLive test: SlurmSubmitter/SlurmStatus against that cluster (dependency order,
#      a failing run with its log, resubmission of only what is missing);
#   3. `lora submit` of a tiny plan vs a local `lora run`: same runs, same tables
#      (skipped until `lora submit` is wired into the CLI).
# Every line of its own starts with "slurm:"; exit code 0 when everything ran or was skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin"

for tool in munged slurmctld slurmd sbatch squeue sinfo; do
    if ! command -v "$tool" > /dev/null 2>&1; then
        echo "slurm: SKIPPED all Slurm checks: slurm packages not installed ($tool missing)"
        exit 0
    fi
done
if [ "$(id -u)" != 0 ]; then
    echo "slurm: SKIPPED all Slurm checks: the local cluster needs root"
    exit 0
fi

failed=0
step() { echo; echo "slurm: ==== $*"; }

step "1/3 single-node cluster: 4-task array + afterok"
if scripts/slurm-local-test.sh; then echo "slurm: cluster self-check passed"; else echo "slurm: FAILED cluster self-check"; failed=1; fi

step "2/3 SlurmLive test (submitter and status against the cluster)"
log=$(mktemp)
scripts/slurm-local-test.sh -- env LORA_SLURM_LIVE=1 \
    dotnet run --project tests/Lora.Tests -c Release --no-build -- --no-spinner --colours 0 --filter-test-list SlurmLive 2>&1 | tee "$log"
if grep -qaE '^1 passed, 0 failed' "$log"; then echo "slurm: SlurmLive passed"; else echo "slurm: FAILED SlurmLive"; failed=1; fi
rm -f "$log"

step "3/3 lora submit of a tiny plan vs a local lora run"
lora=(dotnet src/Lora.Runner/bin/Release/net10.0/lora.dll)
spec=scripts/slurm-tiny.yaml
probe=$(mktemp -d)
if "${lora[@]}" submit "$spec" --results "$probe/r" --dry-run > "$probe/out" 2>&1 && grep -q '^#SBATCH --array=' "$probe/out"; then
    rm -rf "$probe"
    scripts/slurm-local-test.sh -- scripts/slurm-plan-test.sh "$spec"
    case $? in
        0) echo "slurm: plan on Slurm equals the local run" ;;
        77) echo "slurm: SKIPPED the plan test: lora run cannot train yet" ;;
        *) echo "slurm: FAILED plan on Slurm vs local run"; failed=1 ;;
    esac
else
    echo "slurm: SKIPPED the plan test: \`lora submit --dry-run\` does not work yet: $(head -c 300 "$probe/out")"
    rm -rf "$probe"
fi

echo
if [ "$failed" = 0 ]; then echo "slurm: all Slurm checks passed (or were skipped as said above)"; else echo "slurm: some Slurm checks FAILED"; fi
exit "$failed"
