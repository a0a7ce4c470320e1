#!/usr/bin/env bash
# Runs the libFuzzer targets behind `make fuzz` (and, briefly, `make test`).
#
#   scripts/fuzz.sh SECONDS [TARGET...]
#
#   FUZZ_BUILD   where the targets are (default build-fuzz/fuzz)
#
# Each target (spec/fuzz/fuzz_NAME.c) runs for SECONDS over a scratch corpus
# seeded from spec/fuzz/corpus/NAME/ (new inputs it finds go to the scratch
# folder, not into the tree), with a 64 MB cap on any one allocation and a
# 10 s cap on any one input.  A crash, a leak, a sanitizer report, a hang or
# an oversized allocation fails the target; its input is kept in
# fuzz-out/ (git-ignored) and named in the output.  Ends with one line
# "N passed, N failed".
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECONDS_EACH=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
FUZZ_BUILD=${FUZZ_BUILD:-$ROOT/build-fuzz/fuzz}
cd "$ROOT" || exit 1

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for f in spec/fuzz/fuzz_*.c; do t=${f##*/fuzz_}; targets+=("${t%.c}"); done
fi

passed=0 failed=0
mkdir -p fuzz-out
for t in "${targets[@]}"; do
    bin=$FUZZ_BUILD/fuzz_$t
    if [ ! -x "$bin" ]; then
        echo "not ok fuzz_$t (no binary at $bin: make fuzzers)"
        failed=$((failed + 1))
        continue
    fi
    scratch=$(mktemp -d /tmp/eddy-fuzz.XXXXXXXX)
    log=fuzz-out/fuzz_$t.log
    # detect_leaks: LuaJIT's states live as long as the process
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0} \
    "$bin" -max_total_time="$SECONDS_EACH" -timeout=10 -malloc_limit_mb=64 -rss_limit_mb=2048 \
        -artifact_prefix="fuzz-out/fuzz_$t-" -print_final_stats=1 \
        "$scratch" "spec/fuzz/corpus/$t" >"$log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    if [ "$rc" -eq 0 ]; then
        echo "ok fuzz_$t (${runs:-?} inputs in ${SECONDS_EACH}s)"
        passed=$((passed + 1))
    else
        echo "not ok fuzz_$t (exit status $rc; input and log in fuzz-out/)"
        grep -E "ERROR|SUMMARY|Test unit written|==[0-9]+==" "$log" | head -n 20 | sed 's/^/  /'
        failed=$((failed + 1))
    fi
    rm -rf "$scratch"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
