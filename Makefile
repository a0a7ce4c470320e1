# eddy — stream processor daemon.  One Makefile; targets: all run test asan tsan bench fuzz.
#
# ---- options ---------------------------------------------------------------
# CC        compiler (gcc by default; `make asan` uses clang-compatible flags too)
# CXX       C++ compiler for core/*.cc (the JSON codec: RapidJSON is C++)
# OPT       optimisation flags for the normal build
# SAN       extra flags for the sanitizer build (set by `make asan`, `make tsan`)
# BUILD     object directory (build/ normally, build-asan/ for `make asan`,
#           build-tsan/ for `make tsan`)
# TSAN_SPECS the e2e specs `make tsan` runs (those that run several workers:
#           worker threads, the event loop, checkpoints, reload, Kafka mock)
# TSAN_EXTRA more TSAN_OPTIONS for `make tsan` (halt_on_error=0: every report
#           of a run, not only the first of each process)
# EXAMPLE   the config `make run` runs
# FUZZ_TIME seconds each fuzz target runs in `make fuzz` (`make test` runs each 3 s)
# ---------------------------------------------------------------------------
CC      ?= cc
CXX     ?= c++
OPT     ?= -O2 -g
SAN     ?=
BUILD   ?= build
BIN     ?= bin/eddy
EXAMPLE ?= examples/wordcount/eddy.conf.lua
FUZZ_TIME ?= 300

PKGS    := luajit libevent_pthreads rdkafka rocksdb msgpack jansson libcrypto
CFLAGS  += $(OPT) $(SAN) -std=gnu11 -Wall -Wextra -Werror -MMD -MP -D_GNU_SOURCE \
           $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -I/usr/include/luajit-2.1 -iquote core
CXXFLAGS += $(OPT) $(SAN) -std=gnu++17 -Wall -Wextra -Werror -MMD -MP -D_GNU_SOURCE \
           -I/usr/include/luajit-2.1 -iquote core
# UBSan's vptr check needs the C++ runtime of UBSan, which linking with the C
# driver leaves out; simdjson's header has virtual calls
CXXFLAGS += $(if $(findstring undefined,$(SAN)),-fno-sanitize=vptr)
LDLIBS  += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -levent -lcsv -ldouble-conversion -lsimdjson -lstdc++ -lpthread -lm -ldl
LDFLAGS += $(SAN) -Wl,-E

SRCS    := $(wildcard core/*.c) $(wildcard core/*.cc)
OBJS    := $(patsubst core/%.cc,$(BUILD)/%.o,$(SRCS:core/%.c=$(BUILD)/%.o))
LIBOBJS := $(filter-out $(BUILD)/main.o,$(OBJS))
CTESTS  := $(patsubst spec/c/%.c,$(BUILD)/spec/%,$(wildcard spec/c/test_*.c))

.PHONY: all run test asan tsan bench deps clean ctests fuzz fuzzers fuzz-bins
all: $(BIN)

$(BIN): $(OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: core/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/%.o: core/%.cc
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -c -o $@ $<

$(BUILD)/spec/%: spec/c/%.c $(LIBOBJS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -iquote spec/c $(LDFLAGS) -o $@ $< $(LIBOBJS) $(LDLIBS)

ctests: $(CTESTS)

# libFuzzer targets (spec/fuzz/fuzz_*.c) over the core built with clang,
# ASan and UBSan in build-fuzz/
FUZZERS := $(patsubst spec/fuzz/%.c,$(BUILD)/fuzz/%,$(wildcard spec/fuzz/fuzz_*.c))

$(BUILD)/fuzz/%: spec/fuzz/%.c $(LIBOBJS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fsanitize=fuzzer $(LDFLAGS) -o $@ $< $(LIBOBJS) $(LDLIBS)

fuzz-bins: $(FUZZERS)

fuzzers:
	@$(MAKE) --no-print-directory BUILD=build-fuzz CC=clang CXX=clang++ OPT="-O1 -g -fno-omit-frame-pointer" \
	  SAN="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=undefined -fsanitize-ignorelist=$(CURDIR)/scripts/sanitizer-ignore.txt" fuzz-bins

fuzz: deps
	@$(MAKE) --no-print-directory fuzzers
	scripts/fuzz.sh $(FUZZ_TIME)

deps:
	@scripts/install-deps.sh

run: deps
	@$(MAKE) --no-print-directory all
	$(BIN) run $(EXAMPLE)

test: deps
	@$(MAKE) --no-print-directory all ctests
	@$(MAKE) --no-print-directory fuzzers
	@EDDY_BIN=$(BIN) BUILD=$(BUILD) scripts/test.sh

asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan BIN=build-asan/eddy CC=clang CXX=clang++ \
	  OPT="-O1 -g -fno-omit-frame-pointer" \
	  SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fsanitize-ignorelist=$(CURDIR)/scripts/sanitizer-ignore.txt" all ctests
	@$(MAKE) --no-print-directory fuzzers
	@EDDY_BIN=build-asan/eddy BUILD=build-asan EDDY_ASAN=1 \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:quarantine_size_mb=8 UBSAN_OPTIONS=print_stacktrace=1 \
	  scripts/test.sh

# ThreadSanitizer: the core, the C unit tests and TSAN_SPECS built with clang
# -fsanitize=thread in build-tsan/.  LuaJIT, librdkafka, RocksDB and libevent
# are not instrumented: scripts/tsan-suppressions.txt names the reports inside
# them (each with why it is not eddy's race).  Reports go to files under
# build-tsan/reports/ (log_path); scripts/test.sh counts each as a failure.
# TSAN runs eddy several times slower: the specs' timeouts are tripled
# (EDDY_TEST_SLOW, spec/support/eddy.lua).
# shuffle = "kafka" (restores on another thread's watch, standby flags, the
# group's members read by the admin server) by kafka_shuffle_admin_spec, on
# the real broker (scripts/test.sh starts one).
# Checkpoints are exercised by event_time_exact_spec (exactly_once stops and
# restarts, a savepoint --stop) and reload_spec; a dry run's thread beside the
# workers and the event loop by reload_dryrun_spec; checkpoint_spec's 20 kills
# would add ~8 minutes here (add it to TSAN_SPECS for a longer run).
TSAN_SPECS ?= spec/e2e/pipeline_spec.lua spec/e2e/backpressure_spec.lua \
              spec/e2e/event_time_exact_spec.lua spec/e2e/reload_spec.lua \
              spec/e2e/kafka_mock_spec.lua spec/e2e/kafka_shuffle_admin_spec.lua \
              spec/e2e/reload_dryrun_spec.lua

tsan: deps
	@$(MAKE) --no-print-directory BUILD=build-tsan BIN=build-tsan/eddy CC=clang CXX=clang++ \
	  OPT="-O1 -g -fno-omit-frame-pointer" SAN="-fsanitize=thread" all ctests
	@rm -rf build-tsan/reports && mkdir -p build-tsan/reports
	@EDDY_BIN=build-tsan/eddy BUILD=build-tsan EDDY_TSAN=1 EDDY_TEST_SLOW=3 FUZZ_SECONDS=0 SPECS="$(TSAN_SPECS)" \
	  SANITIZER_REPORTS=$(CURDIR)/build-tsan/reports \
	  TSAN_OPTIONS="suppressions=$(CURDIR)/scripts/tsan-suppressions.txt log_path=$(CURDIR)/build-tsan/reports/tsan halt_on_error=1 second_deadlock_stack=1 $(TSAN_EXTRA)" \
	  scripts/test.sh

bench: deps
	@$(MAKE) --no-print-directory all
	scripts/bench.sh

clean:
	rm -rf build build-asan build-tsan build-fuzz bin/eddy

-include $(OBJS:.o=.d) $(OBJS:$(BUILD)/%.o=build-asan/%.d) $(OBJS:$(BUILD)/%.o=build-tsan/%.d) $(OBJS:$(BUILD)/%.o=build-fuzz/%.d)
