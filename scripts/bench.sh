#!/usr/bin/env bash
# shellcheck disable=SC2317  # functions run indirectly, as "bench_$b"
# Benchmarks behind `make bench`.  Each benchmark is a function bench_NAME
# that adds rows to the table: a plain-LuaJIT baseline doing the same work,
# then eddy runs of scripts/bench/NAME/ with different thread counts.
#
#   EDDY_BIN        the eddy binary (default bin/eddy)
#   BENCH_RECORDS   records per input file (default 1000000; 2 files)
#   BENCH_ONLY      space-separated benchmarks to run (default: all but kafka,
#                   which takes 25 to 40 minutes on a shared 2-core machine:
#                   BENCH_ONLY=kafka runs it, BENCH_ONLY=all runs everything;
#                   scaleout, in the default set, takes about 5 minutes:
#                   BENCH_ONLY=scaleout runs it alone; migrate, not in the
#                   default set either, takes 5 to 10 minutes: reloads of a
#                   1M-key process state with and without a migrate,
#                   BENCH_MIGRATE_KEYS narrows it)
#   BENCH_TIMEOUT   seconds one run may take before it is killed (default 1800)
#   BENCH_IPR_RECORDS  records of the small inputs behind the instructions-
#                   per-record figures (default 10000; 0 skips them)
#
# Besides throughput, stateless, windows, state and join print a noise-free
# figure: instructions per record (valgrind --tool=callgrind's Ir) of eddy
# (threads = 1) and of that benchmark's reference, each run on a small input
# of N and of 2N records: (Ir(2N) - Ir(N)) / N leaves start-up out.
#
# Work happens in bench-out/ (git-ignored): input/ is generated once per
# record count; each run gets its own folder with its config, log and out/.
# Exit 1 if a run failed or wrote a different number of records than its
# baseline.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
abs() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
EDDY_BIN=$(abs "${EDDY_BIN:-$ROOT/bin/eddy}")
BENCH_RECORDS=${BENCH_RECORDS:-1000000}
BENCH_FILES=2
BENCH_TIMEOUT=${BENCH_TIMEOUT:-1800}
OUT=$ROOT/bench-out
INPUT=$OUT/input
RECORDS=$((BENCH_RECORDS * BENCH_FILES))
cd "$ROOT"

rows=()        # tab-separated: name, records/s, peak RSS MB, ratio, note
notes=()       # lines printed after the table (benchmarks that are not throughput)
status=0
base_wall=""   # wall seconds of the current benchmark's baseline
base_lines=""  # its output line count: what every eddy run must match

generate() {
    if [ "$(cat "$INPUT/.records" 2>/dev/null)" = "$BENCH_RECORDS" ]; then
        return
    fi
    rm -rf "$INPUT" && mkdir -p "$INPUT"
    echo "bench: generating $BENCH_FILES x $BENCH_RECORDS records in ${INPUT#"$ROOT"/}/"
    for i in $(seq 1 "$BENCH_FILES"); do
        luajit scripts/bench-gen.lua "$INPUT/part-$i.jsonl" "$BENCH_RECORDS" "$i"
    done
    echo "$BENCH_RECORDS" > "$INPUT/.records"
}

# measure DIR CMD...: runs CMD in DIR (stdout+stderr to DIR/run.log) and
# sets rc, wall (seconds) and rss_kb (peak resident set size).  GNU time
# reports the peak of the process tree under it, so `timeout` in between is
# fine.  The python3 fallback over-reports small processes: a child's peak
# RSS starts at the size of the Python process it was forked from (~14 MB).
measure() {
    local dir=$1; shift
    local tf=$dir/time.txt
    rm -f "$tf"
    rc=0
    if [ -x /usr/bin/time ]; then
        (cd "$dir" && /usr/bin/time -o "$tf" -f "%e %M" \
            timeout -k 10 "$BENCH_TIMEOUT" "$@" >run.log 2>&1) || rc=$?
    else
        (cd "$dir" && python3 - "$tf" timeout -k 10 "$BENCH_TIMEOUT" "$@" >run.log 2>&1 <<'PY'
import resource, subprocess, sys, time
t0 = time.monotonic()
rc = subprocess.call(sys.argv[2:])
wall = time.monotonic() - t0
with open(sys.argv[1], "w") as f:
    f.write("%.2f %d\n" % (wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(rc if rc >= 0 else 128 - rc)
PY
        ) || rc=$?
    fi
    # GNU time writes "Command exited with non-zero status N" first; the
    # numbers are on the last line.
    read -r wall rss_kb < <(tail -n 1 "$tf" 2>/dev/null || echo "0 0")
}

# row NAME LINES: adds the table row for the run measure just timed and
# checks it against the baseline's line count.
row() {
    local name=$1 lines=$2 note="" failed=""
    if [ "$rc" -ne 0 ]; then
        note="FAILED: exit status $rc (see ${dir#"$ROOT"/}/run.log)"
        [ "$rc" -eq 124 ] && note="FAILED: timed out after ${BENCH_TIMEOUT}s"
        status=1 failed=1
        tail -n 20 "$dir/run.log" | sed "s|^|  $name: |" >&2
    elif [ -n "$base_lines" ] && [ "$lines" != "$base_lines" ]; then
        note="FAILED: $lines output records, baseline wrote $base_lines"
        status=1
    fi
    rows+=("$(awk -v n="$name" -v r="$RECORDS" -v w="$wall" -v m="$rss_kb" -v b="${base_wall:-$wall}" \
        -v failed="$failed" -v note="$note" 'BEGIN {
            if (failed) { printf "%s\t-\t-\t-\t%s", n, note; exit }
            if (w <= 0) w = 0.01; if (b <= 0) b = 0.01
            printf "%s\t%.0f\t%.1f\t%.2fx\t%s", n, r / w, m / 1024, b / w, note }')")
}

# reference NAME LABEL COMMAND...: runs COMMAND in $dir, where it writes its
# rows to $dir/out.jsonl; its wall time and line count become the reference
# for the rows that follow (none when it failed or wrote nothing).
reference() {
    local name=$1 label=$2
    shift 2
    base_wall="" base_lines=""
    measure "$dir" "$@"
    local lines
    lines=$(wc -l 2>/dev/null < "$dir/out.jsonl" || echo 0)
    row "$name/$label" "$lines"
    if [ "$rc" -ne 0 ] || [ "$lines" -eq 0 ]; then
        echo "bench: $name $label failed or wrote nothing; eddy runs are not compared" >&2
        status=1
    else
        base_wall=$wall base_lines=$lines
    fi
}

# baseline NAME [SCRIPT]: the reference is SCRIPT (default
# scripts/bench/baseline.lua) run by LuaJIT over the input.
baseline() {
    local name=$1 script=${2:-$ROOT/scripts/bench/baseline.lua}
    dir=$OUT/$name-baseline
    rm -rf "$dir" && mkdir -p "$dir"
    reference "$name" baseline luajit "$script" "$INPUT"/part-*.jsonl "$dir/out.jsonl"
}

# eddy_run NAME THREADS [INPUT]: copies scripts/bench/NAME/ into its own
# folder next to a link to the input (default: the shared one), sets
# `threads`, runs `eddy run` from there, and counts the lines of the part
# files in out/.
eddy_run() {
    local name=$1 threads=$2 input=${3:-../input}
    dir=$OUT/$name-t$threads
    rm -rf "$dir" && mkdir -p "$dir/out"
    cp "$ROOT/scripts/bench/$name/pipeline.lua" "$dir/"
    sed -E "s/^([[:space:]]*threads[[:space:]]*=[[:space:]]*)[0-9]+/\1$threads/" \
        "$ROOT/scripts/bench/$name/eddy.conf.lua" > "$dir/eddy.conf.lua"
    grep -Eq "^[[:space:]]*threads[[:space:]]*=[[:space:]]*$threads," "$dir/eddy.conf.lua" ||
        { echo "bench: could not set threads in scripts/bench/$name/eddy.conf.lua" >&2; exit 1; }
    ln -s "$input" "$dir/input"
    measure "$dir" "$EDDY_BIN" run eddy.conf.lua
    local lines
    lines=$(find "$dir/out" -maxdepth 1 -type f -name 'part-*' -exec cat {} + 2>/dev/null | wc -l || true)
    row "$name/eddy threads=$threads" "$lines"
}

# own_input DIR STAMP WHAT GENERATOR...: a benchmark's own input in DIR,
# generated again only when its parameters (STAMP) changed.
own_input() {
    local in=$1 stamp=$2 what=$3
    shift 3
    [ "$(cat "$in/.size" 2>/dev/null)" = "$stamp" ] && return 0
    rm -rf "$in" && mkdir -p "$in"
    echo "bench: generating $what in ${in#"$ROOT"/}/"
    "$@"
    echo "$stamp" > "$in/.size"
}

# ---- instructions per record -----------------------------------------------

IPR_N=${BENCH_IPR_RECORDS:-10000}

# callgrind_ir DIR CMD...: CMD's instruction count under callgrind, run in DIR
# (its output in DIR/cg.log); empty when it failed
callgrind_ir() {
    local d=$1; shift
    if (cd "$d" && timeout -k 10 "$BENCH_TIMEOUT" valgrind --tool=callgrind --callgrind-out-file=/dev/null \
            "$@" >cg.log 2>&1); then
        sed -n 's/.*Collected : \([0-9][0-9]*\).*/\1/p' "$d/cg.log" | tail -n 1
    fi
}

# ipr NAME GEN REF: instructions per record for benchmark NAME.  GEN DIR N
# writes an input of N records to DIR (as NAME's own input, with its
# pipeline's paths); REF IN OUT sets the array `cmd` to the reference run
# over input folder IN writing OUT.  Adds a note with both figures.
ipr() {
    local name=$1 gen=$2 ref=$3
    [ "$IPR_N" -gt 0 ] || return 0
    command -v valgrind >/dev/null || { notes+=("$name instructions/record: valgrind missing"); status=1; return 0; }
    local base=$OUT/ipr-$name n e_ir=() r_ir=() d in
    for n in "$IPR_N" $((IPR_N * 2)); do
        in=$base/input-$n
        if [ "$(cat "$in/.n" 2>/dev/null)" != "$n" ]; then
            rm -rf "$in" && mkdir -p "$in"
            "$gen" "$in" "$n"
            echo "$n" > "$in/.n"
        fi
        d=$base/eddy-$n
        rm -rf "$d" && mkdir -p "$d/out"
        cp "$ROOT/scripts/bench/$name/pipeline.lua" "$ROOT/scripts/bench/$name/eddy.conf.lua" "$d/"
        ln -s "$in" "$d/input"
        e_ir+=("$(callgrind_ir "$d" "$EDDY_BIN" run eddy.conf.lua)")
        d=$base/ref-$n
        rm -rf "$d" && mkdir -p "$d"
        "$ref" "$in" "$d/out.jsonl"
        r_ir+=("$(callgrind_ir "$d" "${cmd[@]}")")
    done
    if [ -z "${e_ir[0]}" ] || [ -z "${e_ir[1]}" ] || [ -z "${r_ir[0]}" ] || [ -z "${r_ir[1]}" ]; then
        notes+=("$name instructions/record: FAILED (see ${base#"$ROOT"/}/*/cg.log)")
        status=1
        return 0
    fi
    notes+=("$(awk -v n="$name" -v N="$IPR_N" -v e1="${e_ir[0]}" -v e2="${e_ir[1]}" -v r1="${r_ir[0]}" -v r2="${r_ir[1]}" 'BEGIN {
        e = (e2 - e1) / N; r = (r2 - r1) / N
        printf "%s instructions/record (callgrind, %d vs %d records, eddy threads=1): eddy %.0f, reference %.0f (%.2fx)",
               n, N, 2 * N, e, r, r / e }')")
}

gen_shared() { luajit "$ROOT/scripts/bench-gen.lua" "$1/part-1.jsonl" "$2" 1; }
ref_baseline() { cmd=(luajit "$ROOT/scripts/bench/baseline.lua" "$1"/part-*.jsonl "$2"); }
gen_windows() { luajit "$ROOT/scripts/bench/windows/gen.lua" "$1" "$2"; }
ref_windows() { cmd=(luajit "$ROOT/scripts/bench/windows/baseline.lua" "$1"/part-*.jsonl "$2"); }
gen_state() { luajit "$ROOT/scripts/bench/state/gen.lua" "$1" "$2" $((IPR_N / 5)); }
ref_state() { rm -rf "$(dirname "$2")/db"; cmd=("$OUT/state-ceiling" "$(dirname "$2")/db" "$2" "$1"/part-*.jsonl); }
gen_join() { luajit "$ROOT/scripts/bench/join/gen.lua" "$1" "$2" $((IPR_N / 5)); }
ref_join() { cmd=("$OUT/hashjoin" "$1/customers.jsonl" "$1/orders.jsonl" "$2"); }

# ---- benchmarks --------------------------------------------------------------

# stateless: json decode, filter amount >= 10, map to a new table, json encode.
bench_stateless() {
    baseline stateless
    eddy_run stateless 1
    eddy_run stateless 2
    ipr stateless gen_shared ref_baseline
}

# state: BENCH_STATE_RECORDS records (default 5M) over BENCH_STATE_KEYS users
# (default 1M), a running total per user in value state (RocksDB), against
# the storage ceiling: one C loop doing one RocksDB get and put per record
# with default options.  Its input is its own (bench-out/state-input).
bench_state() {
    local n=${BENCH_STATE_RECORDS:-5000000} keys=${BENCH_STATE_KEYS:-1000000}
    local in=$OUT/state-input exe=$OUT/state-ceiling saved_records=$RECORDS
    own_input "$in" "$n $keys" "$n records over $keys users" luajit scripts/bench/state/gen.lua "$in" "$n" "$keys"
    cc -O2 -o "$exe" scripts/bench/state/ceiling.c -ljansson -lrocksdb
    RECORDS=$n
    dir=$OUT/state-ceiling-run
    rm -rf "$dir" && mkdir -p "$dir"
    reference state "C RocksDB get+put" "$exe" "$dir/db" "$dir/out.jsonl" "$in"/part-*.jsonl
    eddy_run state 1 "$in"
    eddy_run state 2 "$in"
    RECORDS=$saved_records
    ipr state gen_state ref_state
    notes+=("state: $n records over $keys users, one value state read and write per record")
}

# join: BENCH_JOIN_RECORDS orders (default 5M) left-joined with
# BENCH_JOIN_KEYS customers (default 1M) held as a table in RocksDB, against
# the same join as one C loop (jansson + uthash) as the ceiling.  Its input
# is its own (bench-out/join-input).
bench_join() {
    local n=${BENCH_JOIN_RECORDS:-5000000} keys=${BENCH_JOIN_KEYS:-1000000}
    local in=$OUT/join-input exe=$OUT/hashjoin saved_records=$RECORDS
    own_input "$in" "$n $keys" "$n orders and $keys customers" luajit scripts/bench/join/gen.lua "$in" "$n" "$keys"
    cc -O2 -o "$exe" scripts/bench/join/hashjoin.c -ljansson
    RECORDS=$n
    dir=$OUT/join-baseline
    rm -rf "$dir" && mkdir -p "$dir"
    reference join "C hash join" "$exe" "$in/customers.jsonl" "$in/orders.jsonl" "$dir/out.jsonl"
    eddy_run join 1 "$in"
    eddy_run join 2 "$in"
    RECORDS=$saved_records
    ipr join gen_join ref_join
    notes+=("join: $n orders x $keys customers (a left join: a row is joined when the customer was loaded before the order)")
}

# reload: 50 hot reloads of a 4-task pipeline under load; the pause each
# task spends between its last record on the old version and its first on
# the new (p50 / p99), and exactly-once across the reloads.
bench_reload() {
    local out
    if out=$(python3 "$ROOT/scripts/reload-pause.py" "$EDDY_BIN" "$OUT/reload" "${BENCH_RELOADS:-50}" 2>&1); then
        :
    else
        status=1
        out="$out"$'\n'"reload: FAILED (see bench-out/reload/run.log)"
    fi
    while IFS= read -r line; do notes+=("$line"); done <<< "$out"
}

# migrate: the reload pause with and without a state migration of every key
# of a process operator (BENCH_MIGRATE_KEYS, default 1M), under load, and how
# long the background conversion takes (scripts/reload-migrate.py).
bench_migrate() {
    local out
    if out=$(python3 "$ROOT/scripts/reload-migrate.py" "$EDDY_BIN" "$OUT/migrate" "${BENCH_MIGRATE_KEYS:-1000000}" 2 2>&1); then
        :
    else
        status=1
        out="$out"$'\n'"migrate: FAILED (see bench-out/migrate/run.log)"
    fi
    while IFS= read -r line; do notes+=("$line"); done <<< "$out"
}

# windows: BENCH_WINDOW_KEYS records (default 2M), each with its own key and
# all in the same hour, counted per key in tumbling 1h windows, so every
# window stays open until the end of input fires them all: memory for that
# many open windows.  Each eddy row's note has its peak RSS against state.cache
# (from scripts/bench/windows/eddy.conf.lua) and the rest, the fixed
# overhead; the baseline counts in a Lua table.  Its input is its own
# (bench-out/windows-input).
bench_windows() {
    # 2M by default so that `make bench` stays short; the issue's figure is
    # BENCH_WINDOW_KEYS=10000000 (about 3 min a thread count since the state
    # store's filters are partitioned; it did not end in 27 min before)
    local n=${BENCH_WINDOW_KEYS:-2000000} in=$OUT/windows-input
    local conf=scripts/bench/windows/eddy.conf.lua
    own_input "$in" "$n" "$n records with distinct keys" luajit scripts/bench/windows/gen.lua "$in" "$n"
    local cache_mb
    cache_mb=$(sed -nE 's/.*cache[[:space:]]*=[[:space:]]*"([0-9]+)MB".*/\1/p' "$conf")
    [ -n "$cache_mb" ] || { echo "bench: no state.cache in MB in $conf" >&2; exit 1; }
    # baseline reads $INPUT/part-*.jsonl and row divides $RECORDS by the wall
    # time: both this benchmark's, for the functions it calls
    local INPUT=$in RECORDS=$n
    baseline windows "$ROOT/scripts/bench/windows/baseline.lua"
    local threads i sep
    for threads in 1 2; do
        eddy_run windows "$threads" "$in"
        if [ "$rc" -eq 0 ]; then
            i=$((${#rows[@]} - 1)) sep=""
            [[ ${rows[i]} == *$'\t' ]] || sep="; "
            rows[i]+=$sep$(awk -v m="$rss_kb" -v c="$cache_mb" \
                'BEGIN { printf "cache %d MB, RSS - cache = %.1f MB", c, m / 1024 - c }')
        fi
    done
    notes+=("windows: $n keys, one record and one open tumbling 1h window each until the end of input; state.cache = $cache_mb MB")
    ipr windows gen_windows ref_windows
}

# checkpoint: the cost of exactly_once.  (1) Event time: 2 files of
# BENCH_CKPT_RECORDS records (default 5 x BENCH_RECORDS) of bench-gen.lua,
# counted per word in tumbling 1m windows, under at_least_once (the
# baseline) and under exactly_once with a checkpoint every 10 s; the note has
# the checkpoints committed (periodic and final) and their durations, and a
# run that leaves a hidden .part-*.inprogress file fails.  (2) State size:
# BENCH_CKPT_KEYS keys (default 5M, about 1 GB of value state): the first
# checkpoint (all new), then one after 1% of the keys changed
# (scripts/bench/checkpoint/state-size.py).  Inputs are their own
# (bench-out/checkpoint-input, bench-out/checkpoint-state-input).
bench_checkpoint() {
    local n=${BENCH_CKPT_RECORDS:-$((BENCH_RECORDS * 5))} keys=${BENCH_CKPT_KEYS:-5000000}
    local in=$OUT/checkpoint-input sin=$OUT/checkpoint-state-input
    if [ "$(cat "$in/.records" 2>/dev/null)" != "$n" ]; then
        rm -rf "$in" && mkdir -p "$in"
        echo "bench: generating $BENCH_FILES x $n records in ${in#"$ROOT"/}/"
        for i in $(seq 1 "$BENCH_FILES"); do
            luajit scripts/bench-gen.lua "$in/part-$i.jsonl" "$n" "$i"
        done
        echo "$n" > "$in/.records"
    fi
    local RECORDS=$((n * BENCH_FILES))
    local g lines i note cpu base_cpu="" hidden
    # CPU seconds as well (user + sys): on a shared machine they tell the
    # runtimes' costs apart better than wall times do
    local cputime=()
    [ -x /usr/bin/time ] && cputime=(/usr/bin/time -o cpu.txt -f "%U %S")
    base_wall="" base_lines=""
    for g in alo eo; do
        dir=$OUT/checkpoint-$g-t2
        rm -rf "$dir" && mkdir -p "$dir/out"
        cp scripts/bench/checkpoint/pipeline.lua "$dir/"
        # not eddy.conf.lua: spec/e2e/event_time_spec.lua stops every
        # "eddy run eddy.conf.lua" of the machine (pkill -f)
        cp "scripts/bench/checkpoint/$g.conf.lua" "$dir/bench.conf.lua"
        ln -s "$in" "$dir/input"
        measure "$dir" "${cputime[@]}" "$EDDY_BIN" run bench.conf.lua
        lines=$(find "$dir/out" -maxdepth 1 -type f -name 'part-*' -exec cat {} + 2>/dev/null | wc -l || true)
        if [ "$g" = alo ]; then
            row "checkpoint/at_least_once t=2" "$lines"
        else
            row "checkpoint/exactly_once t=2" "$lines"
        fi
        [ "$rc" -eq 0 ] || continue
        cpu=$(tail -n 1 "$dir/cpu.txt" 2>/dev/null | awk '{ printf "%.1f", $1 + $2 }')
        note="cpu ${cpu:-?} s"
        if [ "$g" = alo ]; then
            [ "$lines" -gt 0 ] && base_wall=$wall base_lines=$lines base_cpu=$cpu
        else
            [ -n "$cpu" ] && [ -n "$base_cpu" ] &&
                note+=$(awk -v c="$cpu" -v b="$base_cpu" 'BEGIN { printf " (%.2fx at_least_once)", c / b }')
            note+="; "$(awk 'match($0, /checkpoint [0-9]+ committed in [0-9.]+ ms \(alignment [0-9.]+/) {
                    split(substr($0, RSTART, RLENGTH), f, " ")
                    n++; ms = f[5] + 0; s += ms; if (ms > max) max = ms
                    a = f[8] + 0; if (a > amax) amax = a }
                END { printf "%d checkpoints committed (last-id %s), %.0f ms mean, %.0f ms max, alignment max %.0f ms",
                      n, id, n ? s / n : 0, max, amax }' id="$(cat "$dir/state/checkpoints/last-id" 2>/dev/null)" "$dir/run.log")
            hidden=$(find "$dir/out" -maxdepth 1 -name '.part-*' | wc -l)
            if [ "$hidden" -ne 0 ]; then
                note+="; FAILED: $hidden hidden part files left in ${dir#"$ROOT"/}/out"
                status=1
            fi
        fi
        i=$((${#rows[@]} - 1))
        [[ ${rows[i]} == *$'\t' ]] || rows[i]+="; "
        rows[i]+=$note
    done
    if [ "$(cat "$sin/.keys" 2>/dev/null)" != "$keys" ]; then
        rm -rf "$sin" && mkdir -p "$sin"
        echo "bench: generating $keys keys and 1% updates in ${sin#"$ROOT"/}/"
        luajit scripts/bench/checkpoint/gen-state.lua "$sin" "$keys"
        echo "$keys" > "$sin/.keys"
    fi
    local out
    if out=$(python3 scripts/bench/checkpoint/state-size.py "$EDDY_BIN" "$OUT/checkpoint-state" "$sin" "$keys" 2>&1); then
        :
    else
        status=1
    fi
    notes+=("checkpoint: $RECORDS records (2 files), a count per word and event-time minute; exactly_once vs at_least_once, same input and output")
    while IFS= read -r line; do notes+=("$line"); done <<< "$out"
}

# curves: what one timer and one as-of join record cost as their number
# grows (one key, one event-time timer per record; 100 customers x N
# orders): CPU seconds per record at each size, which stay flat when each
# operation costs O(log n).  Notes only: there is no baseline to beat.
bench_curves() {
    local sizes=${BENCH_CURVE_SIZES:-"2500 10000 40000"} job n line
    for job in timers asof; do
        line="curves: $job:"
        for n in $sizes; do
            local in=$OUT/curves-input-$n
            own_input "$in" "$n" "$n curve records" luajit "$ROOT/scripts/bench/curves/gen.lua" "$in" "$n"
            dir=$OUT/curves-$job-$n
            rm -rf "$dir" && mkdir -p "$dir/out"
            cp "$ROOT/scripts/bench/curves/$job.lua" "$dir/pipeline.lua"
            echo "return { name = 'curve-$job', pipeline = 'pipeline.lua', admin = false, threads = 1 }" > "$dir/eddy.conf.lua"
            ln -s "$in" "$dir/input"
            local tf=$dir/cpu.txt
            (cd "$dir" && /usr/bin/time -o "$tf" -f "%U %S" timeout -k 10 "$BENCH_TIMEOUT" "$EDDY_BIN" run eddy.conf.lua \
                >run.log 2>&1) || { echo "bench: curves $job $n failed (see ${dir#"$ROOT"/}/run.log)" >&2; status=1; }
            local cpu lines
            cpu=$(tail -n 1 "$tf" | awk '{ print $1 + $2 }')
            lines=$(find "$dir/out" -maxdepth 1 -type f -name 'part-*' -exec cat {} + 2>/dev/null | wc -l || true)
            [ "$lines" -eq "$n" ] || { echo "bench: curves $job $n wrote $lines rows, not $n" >&2; status=1; }
            line="$line  $n -> $(awk -v c="$cpu" -v n="$n" 'BEGIN { printf "%.2f s CPU, %.1f us/record", c, c * 1e6 / n }')"
        done
        notes+=("$line")
    done
}

# kafka: eddy beside Kafka Streams and Flink, Kafka topic to Kafka topic on
# one real broker (scripts/kafka-broker.sh, in bench-out/kafka/broker).  The
# shared input is loaded once into a 4-partition topic, keyed by its word and
# timestamped with its ts, plus an end marker per partition an hour later
# that moves every partition's event time past the last window
# (scripts/bench/kafka/kbench.c).  Jobs: stateless (the stateless
# benchmark's filter and map, JSON in and out) and keyed (a count per key in
# tumbling 1m windows of event time, RocksDB state), each under
# at_least_once (offsets committed every 5 s) and exactly_once (a
# checkpoint / Kafka Streams commit every BENCH_KAFKA_INTERVAL_MS, default
# 2000, read_committed output), on one core (taskset -c 0) and on two
# (taskset -c 0,1): eddy (scripts/bench/kafka/), Kafka Streams and Flink
# (scripts/bench/peers/, built with Maven; Flink as a local MiniCluster in
# one JVM), and the copy ceiling (librdkafka consume + produce, no
# processing).  Each row reads the input from its start in a new consumer
# group into a new output topic; its time is until its output reached the
# expected count (scripts/bench/kafka/expect.lua), then it is stopped
# (SIGTERM) and its output counted again to the end.  CPU seconds and peak
# RSS come from GNU time over the process (start and stop included).
# Not in the default set of `make bench` (25 to 40 minutes here): run it
# with BENCH_ONLY=kafka.
#   BENCH_JAVA_OPTS      the peers' JVM options (default -Xmx512m)
#   BENCH_KAFKA_ROWS     the systems to run (default "copy eddy kstreams flink")
#   BENCH_KAFKA_JOBS     the jobs (default "stateless keyed")
#   BENCH_KAFKA_THREADS  the core counts (default "1 2")
#   BENCH_KAFKA_GUARANTEES  (default "at_least_once exactly_once")
bench_kafka() {
    local kdir=$OUT/kafka bdir=$OUT/kafka/broker kb=$OUT/kafka/kbench brokers
    local interval=${BENCH_KAFKA_INTERVAL_MS:-2000} systems=${BENCH_KAFKA_ROWS:-"copy eddy kstreams flink"}
    local java_opts=${BENCH_JAVA_OPTS:-"-Xmx512m"} nparts=4 parts=4
    rm -rf "$kdir" && mkdir -p "$kdir"
    cc -O2 -o "$kb" scripts/bench/kafka/kbench.c -lrdkafka -ljansson
    local peer
    for peer in kstreams flink; do
        [[ " $systems " == *" $peer "* ]] || continue
        if ! (cd "scripts/bench/peers/$peer" && mvn -q -B package >"$kdir/mvn-$peer.log" 2>&1); then
            tail -n 20 "$kdir/mvn-$peer.log" >&2
            echo "bench: could not build scripts/bench/peers/$peer (see ${kdir#"$ROOT"/}/mvn-$peer.log)" >&2
            status=1
            systems=${systems/$peer/}
        fi
    done
    if ! brokers=$(scripts/kafka-broker.sh start "$bdir" | head -n 1) || [ -z "$brokers" ]; then
        echo "bench: kafka: the broker did not start" >&2
        notes+=("kafka: FAILED: the broker did not start (scripts/kafka-broker.sh start ${bdir#"$ROOT"/})")
        status=1
        return
    fi
    # shellcheck disable=SC2064  # the folder is known now
    trap "scripts/kafka-broker.sh stop '$bdir' || true" EXIT
    echo "bench: kafka: broker at $brokers, loading $RECORDS records"
    local expect load_s=$SECONDS
    "$kb" topic "$brokers" bench-in "$nparts"
    "$kb" load "$brokers" bench-in "$INPUT"/part-*.jsonl >"$kdir/load.txt"
    load_s=$((SECONDS - load_s))
    expect=$(luajit scripts/bench/kafka/expect.lua "$INPUT"/part-*.jsonl)
    local want_stateless=${expect%%[[:space:]]*} want_keyed=${expect##*[[:space:]]}

    local krows=() job g t sys cpus want name
    local jobs=${BENCH_KAFKA_JOBS:-"stateless keyed"} threads=${BENCH_KAFKA_THREADS:-"1 2"}
    for t in $threads; do
        [[ " $systems " == *" copy "* ]] || break
        kafka_run "copy t=$t" "$t" $((RECORDS + parts)) "$kb" copy "$brokers" bench-in @OUT@ @GROUP@
    done
    for job in $jobs; do
        want=$want_stateless
        [ "$job" = keyed ] && want=$want_keyed
        for g in ${BENCH_KAFKA_GUARANTEES:-at_least_once exactly_once}; do
            for t in $threads; do
                for sys in eddy kstreams flink; do
                    [[ " $systems " == *" $sys "* ]] || continue
                    name="$job $g t=$t $sys"
                    case $sys in
                        eddy) kafka_run "$name" "$t" "$want" "$EDDY_BIN" run bench.conf.lua ;;
                        kstreams|flink)
                            local main=eddy.bench.StreamsPeer ms=5000
                            [ "$sys" = flink ] && main=eddy.bench.FlinkPeer
                            [ "$g" = exactly_once ] && ms=$interval
                            # shellcheck disable=SC2086  # the options are words
                            kafka_run "$name" "$t" "$want" java $java_opts \
                                -Dorg.slf4j.simpleLogger.defaultLogLevel=warn \
                                -cp "$ROOT/scripts/bench/peers/$sys/target/classes:$(cat "scripts/bench/peers/$sys/target/classpath.txt")" \
                                "$main" "$job" "$g" "$brokers" bench-in @OUT@ @GROUP@ "$t" "$ms" @DIR@ ;;
                    esac
                done
            done
        done
    done
    scripts/kafka-broker.sh stop "$bdir" || true
    trap - EXIT
    kafka_table
}

# kafka_run NAME THREADS WANT COMMAND...: one row of bench_kafka in its own
# folder: a new output topic and consumer group (@OUT@, @GROUP@ and @DIR@
# in COMMAND are replaced), COMMAND under GNU time and taskset, its output
# counted until WANT records (read_committed), then SIGTERM.  Adds a line
# to krows: name, records/s, CPU s, peak RSS MB, output records, note.
kafka_run() {
    local name=$1 t=$2 want=$3
    shift 3
    local slug=${name// /-} cpus=0
    slug=${slug//=/}
    [ "$t" -ge 2 ] && cpus=0-$((t - 1))
    local dir=$OUT/kafka/$slug out=out-$slug group=bench-$slug-$$
    rm -rf "$dir" && mkdir -p "$dir"
    local args=() a
    for a in "$@"; do
        a=${a//@OUT@/$out}
        a=${a//@GROUP@/$group}
        args+=("${a//@DIR@/$dir}")
    done
    if [[ $name == *eddy ]]; then
        local job=${name%% *} g
        g=$(echo "$name" | awk '{ print $2 }')
        sed -e "s/@IN@/bench-in/; s/@OUT@/$out/" "scripts/bench/kafka/$job.lua" >"$dir/pipeline.lua"
        sed -e "s/@NAME@/$group/; s/@THREADS@/$t/; s/@GUARANTEE@/$g/; s/@BROKERS@/$brokers/" \
            -e "s/@INTERVAL@/$((interval / 1000))s/" scripts/bench/kafka/eddy.conf.lua >"$dir/bench.conf.lua"
    fi
    "$kb" topic "$brokers" "$out" "$nparts"
    echo "bench: kafka: $name"
    # one core: the broker (and the counting below) on the other core
    local other=0-$(($(nproc) - 1))
    [ "$t" -eq 1 ] && [ "$(nproc)" -ge 2 ] && other=1-$(($(nproc) - 1))
    taskset -a -p -c "$other" "$(cat "$bdir/broker.pid")" >/dev/null
    (cd "$dir" && exec /usr/bin/time -o time.txt -f "%e %M %U %S" taskset -c "$cpus" "${args[@]}" >run.log 2>&1) &
    local tpid=$! crc=0 pid
    taskset -c "$other" "$kb" count "$brokers" "$out" "$want" 120 >"$dir/count.txt" 2>&1 || crc=$?
    pid=$(pgrep -P "$tpid" || true)
    local note="" early=""
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
    else
        early=1
    fi
    local i
    for i in $(seq 1 600); do kill -0 "$tpid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$tpid" 2>/dev/null; then
        note="did not stop within 60 s of SIGTERM; "
        [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
    fi
    wait "$tpid" || true
    local first mark secs n total cpu rss
    first=$(awk '$1 == "first" { print $2 }' "$dir/count.txt")
    mark=$(awk '$1 == "mark" { print $2 }' "$dir/count.txt")
    read -r n secs < <(awk '$1 == "count" { print $2, $3 }' "$dir/count.txt")
    total=$("$kb" count "$brokers" "$out" 0 0 | awk '$1 == "count" { print $2 }')
    read -r cpu rss < <(tail -n 1 "$dir/time.txt" | awk '{ printf "%.1f %.0f\n", $3 + $4, $2 / 1024 }')
    if [ "$crc" -ne 0 ] || [ "${total:-0}" != "$want" ]; then
        status=1
        note+="FAILED: ${total:-no} output records, expected $want"
        [ -n "$early" ] && note+="; it exited early"
        note+=" (see ${dir#"$ROOT"/}/run.log)"
        tail -n 20 "$dir/run.log" | sed "s|^|  $name: |" >&2
        krows+=("$name	-	-	${cpu:--}	${rss:--}	${total:--}	$note")
        return
    fi
    note+="first output after ${first:-?} s, complete after $secs s"
    krows+=("$(awk -v n="$name" -v r="$RECORDS" -v s="$secs" -v m10="${mark:-0}" -v c="$cpu" -v m="$rss" -v o="$total" -v note="$note" \
        'BEGIN { if (s <= 0) s = 0.01; d = s - m10; if (d <= 0) d = 0.01
                 printf "%s\t%.0f\t%.0f\t%s\t%s\t%s\t%s", n, 0.9 * r / d, r / s, c, m, o, note }')")
}

# kafka_table: bench_kafka's rows as a table, then eddy's ratios to each
# peer for every job, guarantee and core count: records/s (higher is
# better for eddy), records per CPU second, and peak RSS (lower is better).
kafka_table() {
    notes+=("" "kafka: $RECORDS records (the shared input) in a $nparts-partition topic, loaded in ${load_s} s; exactly_once interval ${interval} ms; peers' JVM: $java_opts")
    notes+=("records/s = the last 90% of the input records / the time from 10% to 100% of the expected output (start-up left out); whole run = input records / time from start until the output was complete; rec/CPU-s = input records / CPU seconds of the whole run")
    local line
    while IFS= read -r line; do notes+=("$line"); done < <(
        {
            printf 'row\trecords/s\twhole run\tCPU s\tpeak RSS MB\toutput\tnote\n'
            printf '%s\n' "${krows[@]}"
        } | awk -F '\t' '{ printf "%-36s %10s %10s %8s %12s %9s  %s\n", $1, $2, $3, $4, $5, $6, $7 }'
        echo
        printf '%s\n' "${krows[@]}" | awk -F '\t' -v N="$RECORDS" '
            { split($1, f, " "); sys = f[4]; key = f[1] " " f[2] " " f[3]
              if (sys == "") next
              rate[key, sys] = $2; cpu[key, sys] = $4; rss[key, sys] = $5
              if (!(key in seen)) { seen[key] = 1; order[++n] = key } }
            function ratio(a, b) { return (a > 0 && b > 0 && a != "-" && b != "-") ? sprintf("%.2fx", a / b) : "-" }
            function per(c) { return (c > 0 && c != "-") ? N / c : 0 }
            END {
                printf "%-30s %14s %14s %16s %16s %14s %14s\n", "eddy vs", "rec/s KStreams", "rec/s Flink",
                    "rec/CPU-s KStr.", "rec/CPU-s Flink", "RSS KStreams", "RSS Flink"
                for (i = 1; i <= n; i++) {
                    k = order[i]
                    printf "%-30s %14s %14s %16s %16s %14s %14s\n", k,
                        ratio(rate[k, "eddy"], rate[k, "kstreams"]), ratio(rate[k, "eddy"], rate[k, "flink"]),
                        ratio(per(cpu[k, "eddy"]), per(cpu[k, "kstreams"])), ratio(per(cpu[k, "eddy"]), per(cpu[k, "flink"])),
                        ratio(rss[k, "eddy"], rss[k, "kstreams"]), ratio(rss[k, "eddy"], rss[k, "flink"])
                }
                print "(rec/s and rec/CPU-s: eddy / peer, above 1 eddy is faster; RSS: eddy / peer, below 1 eddy uses less)"
            }'
    )
}

# scaleout: shuffle = "kafka" across instances (contract.md, "Scale-out with
# state"), on one real broker (scripts/kafka-broker.sh, in
# bench-out/scaleout/broker).  The first input file (BENCH_RECORDS records)
# is loaded once into a 12-partition topic without keys (so a user's records
# are spread over every partition); the job (scripts/bench/scaleout/) counts
# per user in value state and writes one {user, n} per record, exactly_once
# (a checkpoint every BENCH_KAFKA_INTERVAL_MS, default 2000), read_committed.
# Rows: shuffle = "local" on one instance, then shuffle = "kafka" on 1, 2
# and 3 instances (BENCH_SCALEOUT_INSTANCES), all started together, each
# instance with threads = 2 and the keyed stage at parallelism 6.  Each row
# reads the input from its start in a new group into a new output topic;
# its time is until its output reached the input's count, then every
# instance is stopped (SIGTERM) and the output counted again to the end.
# All instances share this machine (2 cores) with the broker: records/s per
# instance falls with more instances here; records per CPU second shows what
# the shuffle costs.
bench_scaleout() {
    local sdir=$OUT/scaleout bdir=$OUT/scaleout/broker kb=$OUT/scaleout/kbench brokers
    local interval=${BENCH_KAFKA_INTERVAL_MS:-2000} parts=12 nrec=$BENCH_RECORDS
    local counts=${BENCH_SCALEOUT_INSTANCES:-"1 2 3"}
    rm -rf "$sdir" && mkdir -p "$sdir"
    command -v kcat >/dev/null || { notes+=("scaleout: FAILED: kcat is not installed (scripts/install-deps.sh)"); status=1; return; }
    cc -O2 -o "$kb" scripts/bench/kafka/kbench.c -lrdkafka -ljansson
    if ! brokers=$(scripts/kafka-broker.sh start "$bdir" | head -n 1) || [ -z "$brokers" ]; then
        notes+=("scaleout: FAILED: the broker did not start (scripts/kafka-broker.sh start ${bdir#"$ROOT"/})")
        status=1
        return
    fi
    # shellcheck disable=SC2064  # the folder is known now
    trap "scripts/kafka-broker.sh stop '$bdir' || true" EXIT
    "$kb" topic "$brokers" scale-in "$parts"
    local load_s=$SECONDS
    if ! kcat -P -b "$brokers" -t scale-in -X linger.ms=50 -X batch.num.messages=10000 <"$INPUT/part-1.jsonl" \
            >"$sdir/load.log" 2>&1; then
        notes+=("scaleout: FAILED: kcat could not load the input (see ${sdir#"$ROOT"/}/load.log)")
        status=1
        scripts/kafka-broker.sh stop "$bdir" || true
        trap - EXIT
        return
    fi
    load_s=$((SECONDS - load_s))
    local srows=() n
    scaleout_run local 1
    for n in $counts; do scaleout_run kafka "$n"; done
    scripts/kafka-broker.sh stop "$bdir" || true
    trap - EXIT
    notes+=("" "scaleout: $nrec records over 100000 users, unkeyed in a $parts-partition topic (loaded in ${load_s} s); a running count per user, exactly_once, checkpoint every ${interval} ms; every instance threads = 2, parallelism 6, on this machine ($(nproc) cores) beside the broker")
    notes+=("records/s = the last 90% of the records / the time from 10% to 100% of the output; per instance = records/s / instances; whole run = records / time from start until the output was complete; rec/CPU-s = records / CPU seconds of all instances; ratios against shuffle=local on one instance")
    local line
    while IFS= read -r line; do notes+=("$line"); done < <(
        {
            printf 'row\trecords/s\tper instance\twhole run\tCPU s\trec/CPU-s\tpeak RSS MB\tvs local rec/s\tvs local per inst.\tvs local rec/CPU-s\tnote\n'
            printf '%s\n' "${srows[@]}" | awk -F '\t' '
                NR == 1 { br = $2; bp = $3; bc = $6 }
                function ratio(a, b) { return (a > 0 && b > 0 && a != "-" && b != "-") ? sprintf("%.2fx", a / b) : "-" }
                { printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", $1, $2, $3, $4, $5, $6, $7,
                    ratio($2, br), ratio($3, bp), ratio($6, bc), $8 }'
        } | awk -F '\t' '{ printf "%-20s %10s %12s %10s %7s %10s %12s %15s %18s %18s  %s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 }'
    )
}

# scaleout_run SHUFFLE N: one row of bench_scaleout: N instances of the job
# in their own folder, a new group and output topic; adds a line to srows:
# name, records/s, per instance, whole run, CPU s, rec/CPU-s, peak RSS MB
# (the largest instance), note.
scaleout_run() {
    local shuffle=$1 n=$2
    local name="$shuffle x$n" dir=$sdir/$shuffle-$n out=scale-out-$shuffle-$n group=bench-scale-$shuffle-$n-$$
    local want=$nrec
    rm -rf "$dir" && mkdir -p "$dir"
    sed -e "s/@IN@/scale-in/; s/@OUT@/$out/" scripts/bench/scaleout/pipeline.lua >"$dir/pipeline.lua"
    "$kb" topic "$brokers" "$out" 4
    echo "bench: scaleout: shuffle = \"$shuffle\", $n instance(s)"
    local i tpids=()
    for i in $(seq 1 "$n"); do
        sed -e "s/@NAME@/$group/; s/@SHUFFLE@/$shuffle/; s/@BROKERS@/$brokers/; s|@STATE@|state-$i|" \
            -e "s/@INTERVAL@/$((interval / 1000))s/" scripts/bench/scaleout/eddy.conf.lua >"$dir/i$i.conf.lua"
        (cd "$dir" && exec /usr/bin/time -o "time-$i.txt" -f "%e %M %U %S" \
            timeout -k 10 "$BENCH_TIMEOUT" "$EDDY_BIN" run "i$i.conf.lua" >"run-$i.log" 2>&1) &
        tpids+=($!)
    done
    local crc=0
    "$kb" count "$brokers" "$out" "$want" 120 >"$dir/count.txt" 2>&1 || crc=$?
    local tp pid early=""
    for tp in "${tpids[@]}"; do
        # time(1) runs timeout(1), which runs eddy
        pid=$(pgrep -P "$(pgrep -P "$tp" || echo 0)" || true)
        if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; else early=1; fi
    done
    local note=""
    for tp in "${tpids[@]}"; do
        for i in $(seq 1 600); do kill -0 "$tp" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$tp" 2>/dev/null; then
            note="an instance did not stop within 60 s of SIGTERM; "
            pkill -KILL -P "$(pgrep -P "$tp" || echo 0)" 2>/dev/null || true
        fi
        wait "$tp" || true
    done
    local mark secs got total cpu rss
    mark=$(awk '$1 == "mark" { print $2 }' "$dir/count.txt")
    read -r got secs < <(awk '$1 == "count" { print $2, $3 }' "$dir/count.txt")
    total=$("$kb" count "$brokers" "$out" 0 0 | awk '$1 == "count" { print $2 }')
    read -r cpu rss < <(for i in $(seq 1 "$n"); do tail -n 1 "$dir/time-$i.txt"; done |
        awk '{ c += $3 + $4; if ($2 > m) m = $2 } END { printf "%.1f %.0f\n", c, m / 1024 }')
    if [ "$crc" -ne 0 ] || [ "${total:-0}" != "$want" ]; then
        status=1
        note+="FAILED: ${total:-no} output records, expected $want"
        [ -n "$early" ] && note+="; an instance exited early"
        note+=" (see ${dir#"$ROOT"/}/run-*.log)"
        for i in $(seq 1 "$n"); do tail -n 20 "$dir/run-$i.log" | sed "s|^|  $name #$i: |" >&2; done
        srows+=("$name	-	-	-	${cpu:--}	-	${rss:--}	$note")
        return
    fi
    note+="complete after $secs s"
    srows+=("$(awk -v nm="$name" -v r="$nrec" -v s="$secs" -v m10="${mark:-0}" -v c="$cpu" -v m="$rss" -v k="$n" -v note="$note" \
        'BEGIN { if (s <= 0) s = 0.01; d = s - m10; if (d <= 0) d = 0.01; if (c <= 0) c = 0.01
                 rs = 0.9 * r / d
                 printf "%s\t%.0f\t%.0f\t%.0f\t%s\t%.0f\t%s\t%s", nm, rs, rs / k, r / s, c, r / c, m, note }')")
}

# ------------------------------------------------------------------------------

[ -x "$EDDY_BIN" ] || { echo "bench: no eddy binary at $EDDY_BIN (run make first)" >&2; exit 1; }
mkdir -p "$OUT"
generate
only=${BENCH_ONLY:-$(declare -F | sed -n 's/^declare -f bench_//p' | grep -vx -e kafka -e migrate)}
[ "$only" = all ] && only=$(declare -F | sed -n 's/^declare -f bench_//p')
for b in $only; do
    declare -F "bench_$b" >/dev/null || { echo "bench: unknown benchmark '$b'" >&2; exit 2; }
    echo "bench: $b"
    "bench_$b"
done

echo
echo "shared input: $RECORDS records ($BENCH_FILES files x $BENCH_RECORDS); state, join and windows have their own (notes below)"
echo "records/s = that benchmark's input records / wall time; vs baseline = throughput against the first row of its group"
{
    printf 'name\trecords/s\tpeak RSS MB\tvs baseline\t\n'
    printf '%s\n' "${rows[@]}"
} | awk -F '\t' '{ printf "%-28s %12s %12s %12s  %s\n", $1, $2, $3, $4, $5 }'
if [ ${#notes[@]} -gt 0 ]; then
    echo
    printf '%s\n' "${notes[@]}"
fi
exit "$status"
