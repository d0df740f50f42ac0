#!/usr/bin/env bash
# The packages as a user gets them (issue 14), in a throw-away folder outside the repository:
#   1. `dotnet pack` Lora.Core, Lora.Dsl and the `lora` tool into a local folder feed;
#   2. a fresh console project adds Lora.Core from that feed, builds and runs the README's C#
#      example (the ```csharp block of README.md, verbatim), with no step beyond `dotnet add package`;
#   3. `dotnet tool install --add-source FEED lora`, then `lora --help` and the main job (the README's
#      quickstart, limited to one tuned run and the pretrain step it needs);
#   4. an F# script that starts with #r "nuget: Lora.Dsl" declares experiments (dotnet fsi), and
#      experiments/*.fsx evaluate on their own through their editor preamble.
# Lines of its own start with "package:"; exit code 0 when every step passed.
# Packages restored here go to a private NUGET_PACKAGES (the user's cache is only read, as a
# fallback folder), so an old copy of the same version never hides a change.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1 TERM=dumb
work=$(mktemp -d -t lora-package-check.XXXXXX)   # under $TMPDIR
trap 'rm -rf "$work"' EXIT
feed=$work/feed
cache=${NUGET_PACKAGES:-$HOME/.nuget/packages}
failed=0
fail() { echo "package: FAILED $*"; failed=1; }
step() { echo; echo "package: ==== $* (at ${SECONDS}s)"; }

step "1/4 dotnet pack into a local feed"
for p in src/Lora.Core src/Lora.Dsl src/Lora.Runner; do
    if ! dotnet pack "$p" -c Release -nologo -clp:ErrorsOnly -o "$feed" > "$work/pack.log" 2>&1; then
        cat "$work/pack.log"; fail "dotnet pack $p"; exit 1
    fi
done
ls -l "$feed" | sed 's/^/package:   /'
# the tool's copy of TorchSharp's native library must be marked at pack time: `dotnet tool install`
# runs no build step on the user's machine
so=tools/net10.0/any/runtimes/linux-x64/native/libLibTorchSharp.so
(cd "$work" && unzip -q -o "$feed"/lora.*.nupkg "$so")
if readelf -V "$work/$so" > "$work/readelf.txt" && grep -q 'Name: GLIBCXX_3.4.32  Flags: WEAK' "$work/readelf.txt"; then echo "package: the tool's libLibTorchSharp.so marks GLIBCXX_3.4.32 weak"
else fail "the tool's libLibTorchSharp.so does not mark GLIBCXX_3.4.32 weak"; fi

export NUGET_PACKAGES=$work/packages
cat > "$work/nuget.config" <<XML
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources><add key="lora-local" value="$feed" /></packageSources>
  <fallbackPackageFolders><add key="user-cache" value="$cache" /></fallbackPackageFolders>
</configuration>
XML

step "2/4 a console project with Lora.Core from the feed runs the README's C# example"
app=$work/app
mkdir -p "$app"
(cd "$app" && dotnet new console --force -o . -n App > "$work/new.log" 2>&1) || { cat "$work/new.log"; fail "dotnet new console"; }
# the example is the README's ```csharp block, verbatim
awk '/^```csharp$/ { on = 1; next } /^```$/ { on = 0 } on' README.md > "$app/Program.cs"
if (cd "$app" && dotnet add package Lora.Core --version "$(dotnet msbuild "$repo/src/Lora.Core" -getProperty:Version)" > "$work/add.log" 2>&1 \
      && dotnet build -c Release -nologo -clp:ErrorsOnly > "$work/build.log" 2>&1); then
    if (cd "$app" && dotnet bin/Release/net10.0/App.dll) > "$work/run.log" 2>&1; then
        sed 's/^/package:   | /' "$work/run.log" | head -20
        # the README's comment on Summary() states the trainable count the example must print
        want=$(grep -oE 'Trainable params: [0-9,]+' README.md | head -n 1)
        if grep -qF "$want" "$work/run.log" && [ -f "$app/adapter/adapter_config.json" ]; then echo "package: the README's C# example ran ($want, adapter written)"
        else fail "the README's C# example printed no '$want' or wrote no adapter"; fi
    else cat "$work/run.log"; fail "the README's C# example crashed"; fi
else cat "$work/add.log" "$work/build.log"; fail "the console project with Lora.Core did not build"; fi
# the backend choice travels with the package: a wrong one is a clear error, `system` leaves libtorch out
if (cd "$app" && dotnet build -c Release -nologo -p:TorchBackend=gpu > "$work/bad.log" 2>&1); then fail "TorchBackend=gpu built"
elif grep -q "TorchBackend must be cpu, cuda or system (got 'gpu')" "$work/bad.log"; then echo "package: TorchBackend=gpu is refused with its message"
else cat "$work/bad.log"; fail "TorchBackend=gpu failed without its message"; fi
if (cd "$app" && dotnet build -c Release -nologo -clp:ErrorsOnly -p:TorchBackend=system -o "$work/app-system" > "$work/system.log" 2>&1) \
   && [ -f "$work/app-system/runtimes/linux-x64/native/libLibTorchSharp.so" ] && [ -z "$(find "$work/app-system" -name 'libtorch_cpu.so')" ]; then
    echo "package: TorchBackend=system builds without the libtorch-cpu natives"
else cat "$work/system.log"; fail "TorchBackend=system"; fi

step "3/4 dotnet tool install lora, lora --help, the main job"
tools=$work/tools
if dotnet tool install lora --tool-path "$tools" --add-source "$feed" > "$work/tool.log" 2>&1; then
    lora=$tools/lora
    if "$lora" --help > "$work/help.log" 2>&1 && grep -q "USAGE: lora" "$work/help.log"; then echo "package: lora --help works"
    else cat "$work/help.log"; fail "lora --help"; fi
    # the main job, as the README runs it, limited to LoRA rank 4 seed 0 and its pretrain step
    cp -r experiments "$work/experiments"
    if (cd "$work" && "$lora" run experiments/quickstart.yaml --results results --only 'quickstart/lora-r4-s0' > run.log 2>&1) \
       && ls "$work"/results/*/metrics.json > /dev/null 2>&1 && [ "$(ls "$work"/results/*/metrics.json | wc -l)" = 2 ]; then
        echo "package: the tool ran the main job's quickstart/lora-r4-s0 and its pretrain step"
    else tail -n 30 "$work/run.log"; fail "lora run of the main job"; fi
else cat "$work/tool.log"; fail "dotnet tool install lora"; fi

step "4/4 an F# script with #r \"nuget: Lora.Dsl\" declares the main job"
# the repository's own quickstart.fsx, its editor preamble replaced by the package reference
{ printf '#r "nuget: Lora.Dsl"\nopen Lora.Dsl\n'; sed '/^#if !LORA_RUNNER/,/^#endif/d' experiments/quickstart.fsx; cat scripts/package-check.fsx; } > "$work/check.fsx"
if (cd "$work" && dotnet fsi --quiet check.fsx) > "$work/fsx.log" 2>&1 && grep -q "^experiments: 1, runs: 30" "$work/fsx.log"; then
    # each run's hash is the one the committed results of experiments/quickstart.yaml carry
    same=0
    while read -r id hash; do
        grep -qF "\"id\": \"$id\"" "results/$hash/metrics.json" 2> /dev/null && same=$((same + 1))
    done < <(grep -E '^quickstart/' "$work/fsx.log")
    if [ "$same" = 30 ]; then echo "package: the F# script declared the main job's 30 tunes, with the hashes of results/"
    else cat "$work/fsx.log"; fail "the F# script's runs: $same of 30 have the committed results' hashes"; fi
else cat "$work/fsx.log"; fail "the F# script with #r \"nuget: Lora.Dsl\""; fi
# the repository's experiment scripts as an editor sees them: their #r preamble (skipped by
# `lora run`) references the built Lora.Dsl, and they type-check and evaluate without the runner
for f in experiments/*.fsx; do
    if dotnet fsi --quiet --exec "$f" > "$work/editor.log" 2>&1; then echo "package: $f evaluates on its own (the editor's view)"
    else cat "$work/editor.log"; fail "$f does not evaluate outside lora run"; fi
done

echo
echo "package: took ${SECONDS}s"
if [ "$failed" = 0 ]; then echo "package: all package checks passed"; else echo "package: some package checks FAILED"; fi
exit "$failed"
