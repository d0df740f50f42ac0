#!/usr/bin/env bash
# Fuzz one parser of outside input with AFL++ through SharpFuzz.
# usage: fuzz/run.sh TARGET [EXECUTIONS]      (default 1,000,000 executions)
#        fuzz/run.sh TARGET --replay FILE...  (run inputs once, e.g. a saved crash)
# Targets: see fuzz/Lora.Fuzz/Targets.cs. Seeds: fuzz/corpus/TARGET/. Findings: fuzz/findings/TARGET/
# (ignored by git; each crash found becomes a fixed-input test in tests/). Needs `apt-get install afl++`.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: fuzz/run.sh TARGET [EXECUTIONS]}
out=fuzz/out
dotnet tool restore >/dev/null
if [ "${2:-}" = "--replay" ]; then
  # replay with uninstrumented assemblies: instrumented ones need AFL++'s shared memory (outside it
  # they die with an access violation)
  dotnet build fuzz/Lora.Fuzz -c Release -o fuzz/out-replay -nologo -clp:ErrorsOnly >/dev/null
  shift 2; exec dotnet fuzz/out-replay/Lora.Fuzz.dll "$target" --replay "$@"
fi
dotnet build fuzz/Lora.Fuzz -c Release -o "$out" -nologo -clp:ErrorsOnly >/dev/null
execs=${2:-1000000}
# instrument the assemblies whose parsers are fuzzed (idempotent: sharpfuzz skips instrumented ones)
for dll in Lora.Core.dll Lora.Dsl.dll YamlDotNet.dll; do
  dotnet sharpfuzz "$out/$dll" >/dev/null 2>&1 || true
done
command -v afl-fuzz >/dev/null || { echo "afl-fuzz not found: apt-get install afl++"; exit 1; }
findings=fuzz/findings/$target
rm -rf "$findings"; mkdir -p fuzz/findings
export AFL_SKIP_BIN_CHECK=1 AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1
afl-fuzz -i "fuzz/corpus/$target" -o "$findings" -t 10000 -m none -E "$execs" -- dotnet "$out/Lora.Fuzz.dll" "$target" >"$findings.log" 2>&1 || true
stats=$findings/default/fuzzer_stats
[ -f "$stats" ] || { echo "AFL++ did not start; see $findings.log"; tail -20 "$findings.log"; exit 1; }
get() { awk -F' *: *' -v k="$1" '$1==k {print $2}' "$stats"; }
echo "$target: $(get execs_done) executions in $(( $(get last_update) - $(get start_time) )) s, $(get corpus_count) corpus entries, $(get saved_crashes) crashes, $(get saved_hangs) hangs"
ls "$findings/default/crashes" 2>/dev/null | grep -v README || true
