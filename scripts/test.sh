#!/usr/bin/env bash
# The test runner behind `make test`, `make asan` and `make tsan`.
#
#   EDDY_BIN      the eddy binary under test (default bin/eddy)
#   BUILD         object dir; C test binaries are $BUILD/spec/test_*
#   TEST_TIMEOUT  seconds one suite may run before it is killed (default 1200)
#   EDDY_TEST_KAFKA  host:port of a Kafka broker to use; unset, one is started
#                 (scripts/kafka-broker.sh, in a temporary folder) for the run
#                 and stopped at its end, when one of SPECS needs it
#   FUZZ_SECONDS  seconds each fuzz target runs (default 3; 0 skips them)
#   SPECS         the busted suites, each a folder or a spec file (default
#                 "spec/unit spec/e2e")
#   SANITIZER_REPORTS  a folder the sanitizer writes its reports into
#                 (log_path, as `make tsan` sets): each report found there
#                 after a suite is shown and counts as one failure
#
# Runs the C unit tests, the fuzz targets briefly, the examples' tests
# (`eddy test examples`), then busted over spec/unit and spec/e2e (or
# SPECS), shows each
# suite's output, and ends with one line "N passed, N failed[, N skipped]".
# Exit 1 when anything failed.  The specs that need a real Kafka broker
# (exactly-once and consumer groups) get its address in EDDY_TEST_KAFKA; when
# it could not be started they fail with the reason (EDDY_TEST_KAFKA_ERROR).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
abs() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
EDDY_BIN=$(abs "${EDDY_BIN:-$ROOT/bin/eddy}")
BUILD=$(abs "${BUILD:-$ROOT/build}")
TEST_TIMEOUT=${TEST_TIMEOUT:-1200}
cd "$ROOT" || exit 1

export EDDY_BIN
export EDDY_ROOT=$ROOT
export LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;$ROOT/spec/?.lua;${LUA_PATH:-;}"

passed=0 failed=0 skipped=0
log=$(mktemp)
broker_dir=""
cleanup() {
    rm -f "$log"
    if [ -n "$broker_dir" ]; then
        "$ROOT/scripts/kafka-broker.sh" stop "$broker_dir" || true
        rm -rf "$broker_dir"
    fi
}
trap cleanup EXIT

# run NAME CMD...: runs one suite with its output in $log, then shows it.
# The output goes to a file rather than through a pipe, so a daemon a failed
# spec left behind cannot keep the runner waiting for end of file.
run() {
    local name=$1; shift
    echo "=== $name"
    # (bash's own "Aborted" job report is dropped: the verdict line says it)
    { timeout -k 10 "$TEST_TIMEOUT" "$@" >"$log" 2>&1; rc=$?; } 2>/dev/null
    cat "$log"
    if [ "$rc" -eq 124 ]; then
        why="timed out after ${TEST_TIMEOUT}s"
    elif [ "$rc" -gt 128 ]; then
        why="killed by SIG$(kill -l $((rc - 128)) 2>/dev/null || echo $((rc - 128)))"
    else
        why="exit status $rc"
    fi
    return 0
}

# reports NAME: each sanitizer report in SANITIZER_REPORTS (files the run of
# suite NAME left there) is shown and counts as one failure, then set aside
# so the next suite starts clean
reports() {
    [ -n "${SANITIZER_REPORTS:-}" ] || return 0
    local f
    for f in "$SANITIZER_REPORTS"/*; do
        [ -f "$f" ] || continue
        cat "$f"
        echo "not ok $1 (sanitizer report: $(basename "$f"))"
        failed=$((failed + 1))
        mkdir -p "$SANITIZER_REPORTS/seen"
        mv "$f" "$SANITIZER_REPORTS/seen/$1.$(basename "$f")"
    done
}

# C unit tests: trust the binary's own summary line; a crash, a missing
# summary, or a non-zero exit with "0 failed" (a sanitizer report at exit)
# counts as one failure named after the binary.
for t in "$BUILD"/spec/test_*; do
    case "$t" in *.d|*.o) continue ;; esac    # -MMD leaves test_x.d beside test_x
    if [ ! -f "$t" ] || [ ! -x "$t" ]; then continue; fi
    name=$(basename "$t")
    # stdbuf: line-buffered stdout keeps the ok lines a crash or a leak
    # report at exit would otherwise lose with the stdio buffer
    run "$name" stdbuf -oL "$t"
    summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
    if [ -n "$summary" ]; then
        read -r p _ f _ <<<"${summary//,/}"
        passed=$((passed + p)) failed=$((failed + f))
        if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
            echo "not ok $name ($why after all tests passed)"
            failed=$((failed + 1))
        fi
    else
        echo "not ok $name ($why, no summary line)"
        failed=$((failed + 1))
    fi
    reports "$name"
done

# Fuzz targets (spec/fuzz, built by `make fuzzers`): each runs FUZZ_SECONDS
# (default 3) from its seed corpus, so a regression in a decoder shows here;
# `make fuzz` is the longer run.  One passed or failed test per target.
if [ "${FUZZ_SECONDS:-3}" != 0 ]; then
    run fuzz scripts/fuzz.sh "${FUZZ_SECONDS:-3}"
    summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
    if [ -n "$summary" ]; then
        read -r p _ f _ <<<"${summary//,/}"
        passed=$((passed + p)) failed=$((failed + f))
    else
        echo "not ok fuzz ($why, no summary line)"
        failed=$((failed + 1))
    fi
fi

# The examples' tests (examples/*/*_test.lua, issue #18) through `eddy test`:
# trust its summary line "N passed, N failed"; a run without one (a test
# file that does not load, exit 2) or a non-zero exit with "0 failed"
# counts as one failure.
run "eddy test examples" "$EDDY_BIN" test examples
summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
if [ -n "$summary" ]; then
    read -r p _ f _ <<<"${summary//,/}"
    passed=$((passed + p)) failed=$((failed + f))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "not ok eddy test examples ($why after all tests passed)"
        failed=$((failed + 1))
    fi
else
    echo "not ok eddy test examples ($why, no summary line)"
    failed=$((failed + 1))
fi
reports "eddy-test-examples"

SPECS=${SPECS:-spec/unit spec/e2e}

# One real Kafka broker for the Lua specs (started here, while the C tests
# are done: its JVM start would slow them), when a spec of SPECS asks for one
# shellcheck disable=SC2086
if [ -z "${EDDY_TEST_KAFKA:-}" ] && grep -rqs 'kafka_broker' $SPECS; then
    broker_dir=$(mktemp -d /tmp/eddy-kafka.XXXXXXXX)
    echo "=== kafka broker (scripts/kafka-broker.sh start $broker_dir)"
    if addr=$("$ROOT/scripts/kafka-broker.sh" start "$broker_dir" 2>"$broker_dir/start.err" | head -n 1) &&
       [ -n "$addr" ]; then
        echo "$addr"
        export EDDY_TEST_KAFKA=$addr
    else
        cat "$broker_dir/start.err"
        EDDY_TEST_KAFKA_ERROR="scripts/kafka-broker.sh could not start a broker: $(tail -n 1 "$broker_dir/start.err")"
        export EDDY_TEST_KAFKA_ERROR
        echo "$EDDY_TEST_KAFKA_ERROR (the specs that need it fail)"
    fi
fi

# Lua specs: count TAP lines; "ok N - # SKIP" is a skip.  A run that fails
# without reporting a failing test (a spec file that does not load, busted
# itself broken) counts as one failure.
for dir in $SPECS; do
    [ -f "$dir" ] || compgen -G "$dir/*_spec.lua" >/dev/null || continue
    run "$dir" busted --lua=luajit -o TAP "$dir"
    s=$(grep -cE '^ok [0-9]+ - # SKIP' "$log")
    p=$(grep -cE '^ok [0-9]+' "$log")
    f=$(grep -cE '^not ok [0-9]+' "$log")
    passed=$((passed + p - s)) failed=$((failed + f)) skipped=$((skipped + s))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "not ok $dir (busted: $why, no failing test reported)"
        failed=$((failed + 1))
    fi
    reports "$(basename "$dir" .lua)"
done

line="$passed passed, $failed failed"
[ "$skipped" -gt 0 ] && line="$line, $skipped skipped"
echo "$line"
[ "$failed" -eq 0 ]
