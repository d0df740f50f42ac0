#!/usr/bin/env bash
# Starts a throw-away single-node Slurm cluster (munged, slurmctld, slurmd with a generated
# slurm.conf under a temp folder), runs a command against it, and always stops what it started.
#
#   scripts/slurm-local-test.sh                 # self-check: a 4-task array + an afterok job
#   scripts/slurm-local-test.sh -- CMD ARGS...  # run CMD with SLURM_CONF pointing at the cluster
#
# The command sees SLURM_CONF (so sbatch/squeue/sacct/sinfo talk to this cluster),
# SLURM_LOCAL_TEST_DIR (the temp folder) and the bash function `wait_queue_empty [SECONDS]`
# (exported, for `bash -c`). The script exits with the command's status.
# Needs the Debian packages slurmctld, slurmd, slurm-client and munge, and root (SlurmUser=root).
# If they are missing it prints "SKIPPED: ..." and exits 0: it never installs anything itself.
set -euo pipefail

for tool in munged slurmctld slurmd sbatch squeue sinfo scontrol; do
    if ! command -v "$tool" > /dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
        echo "SKIPPED: slurm packages not installed ($tool not found; apt-get install slurmctld slurmd slurm-client munge)"
        exit 0
    fi
done
if [ "$(id -u)" != 0 ]; then
    echo "SKIPPED: the local Slurm cluster needs root (SlurmUser=root, slurmd runs jobs as their user)"
    exit 0
fi
export PATH="$PATH:/usr/sbin"

if [ "${1:-}" = "--" ]; then shift; fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/lora-slurm.XXXXXX")
chmod 700 "$dir"
pids=()
log() { echo "slurm-local-test: $*" >&2; }

stop_all() {
    local status=$?
    set +e
    # stop in reverse order of starting; each by the pid it recorded
    for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munged.pid"; do
        if [ -s "$pidfile" ]; then
            pid=$(cat "$pidfile")
            if kill -0 "$pid" 2> /dev/null; then
                kill "$pid" 2> /dev/null
                for _ in $(seq 1 50); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
                kill -0 "$pid" 2> /dev/null && kill -9 "$pid" 2> /dev/null
            fi
        fi
    done
    # slurmstepd processes of jobs still running belong to this cluster's spool folder
    for pid in $(pgrep -f "slurmstepd.*" 2> /dev/null); do
        if grep -qs "$dir" "/proc/$pid/environ" 2> /dev/null || tr '\0' '\n' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "$dir"; then
            kill -9 "$pid" 2> /dev/null
        fi
    done
    if [ "$status" != 0 ] && [ "$status" != 77 ] && [ -z "${SLURM_LOCAL_TEST_QUIET:-}" ]; then
        for f in slurmctld.log slurmd.log munged.log; do
            [ -s "$dir/$f" ] && { log "---- last lines of $f"; tail -n 20 "$dir/$f" >&2; }
        done
    fi
    if [ -n "${SLURM_LOCAL_TEST_KEEP:-}" ]; then log "kept $dir"; else rm -rf "$dir"; fi
    exit "$status"
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# Free TCP ports, so that a second cluster (or a real one) on this machine does not collide.
port_free() { ! (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null; }
pick_port() {
    local p
    for _ in $(seq 1 50); do
        p=$(( 20000 + RANDOM % 20000 ))
        if port_free "$p" && port_free "$((p + 1))"; then echo "$p"; return; fi
    done
    log "no free TCP port found"; exit 1
}
ctld_port=$(pick_port)
slurmd_port=$((ctld_port + 1))

host=$(hostname -s)
mem_mb=$(( $(awk '/^MemTotal:/ { print $2 }' /proc/meminfo) / 1024 / 2 ))
mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
chmod 700 "$dir/munge"

# munge: its own key and socket, so it neither needs nor disturbs a system munged
dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$dir/munge/munge.key"
socket="$dir/munge/munge.socket"
munged --force --key-file="$dir/munge/munge.key" --socket="$socket" \
    --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munge/munged.seed"

cat > "$dir/slurm.conf" <<CONF
ClusterName=loratest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MinJobAge=30
InactiveLimit=0
KillWait=5
Waittime=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=2 RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$dir/slurm.conf"
export SLURM_LOCAL_TEST_DIR="$dir"

slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"

log "waiting for node $host to be idle (slurmctld port $ctld_port)"
for i in $(seq 1 60); do
    state=$(sinfo --noheader --nodes="$host" --format=%T 2> /dev/null || true)
    case "$state" in idle*) break ;; esac
    if [ "$i" = 60 ]; then log "node never became idle (state: '${state:-no answer}')"; exit 1; fi
    sleep 1
done
log "cluster up: $(sinfo --noheader --format='%P %a %D %T %c cpus')"

# Waits until no job of this cluster is queued or running (at most $1 seconds).
wait_queue_empty() {
    local limit=${1:-300}
    for _ in $(seq 1 "$limit"); do
        [ -z "$(squeue --noheader --format=%i)" ] && return 0
        sleep 1
    done
    log "jobs still queued after ${limit}s:"; squeue >&2; return 1
}
# the command may call it: bash -c 'lora submit ... && wait_queue_empty 600'
export -f wait_queue_empty log

if [ "$#" -gt 0 ]; then
    set +e
    "$@"
    status=$?
    set -e
    exit "$status"
fi

# Self-check: a 4-task array, and a job that runs only after all four succeeded.
work="$dir/selfcheck"
mkdir -p "$work"
cat > "$work/array.sh" <<'JOB'
#!/bin/bash
#SBATCH --array=0-3%2
echo "task $SLURM_ARRAY_TASK_ID" > "$WORK/task-$SLURM_ARRAY_TASK_ID.txt"
JOB
cat > "$work/after.sh" <<'JOB'
#!/bin/bash
cat "$WORK"/task-*.txt | sort > "$WORK/after.txt"
JOB
export WORK="$work"
array=$(sbatch --parsable --output="$work/%A_%a.log" "$work/array.sh")
after=$(sbatch --parsable --output="$work/after.log" --dependency="afterok:$array" "$work/after.sh")
log "submitted array $array and dependent job $after"
wait_queue_empty 120
expected=$(printf 'task %s\n' 0 1 2 3)
if [ "$(cat "$work/after.txt" 2> /dev/null)" != "$expected" ]; then
    log "FAILED: the afterok job did not see the four array tasks' outputs"
    ls -l "$work" >&2
    exit 1
fi
echo "slurm-local-test: PASSED (4-task array + afterok dependency on $host)"
