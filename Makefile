# cairn -- entry points.  `make` builds, `make test` runs every test (C and Python under ASan+UBSan too),
# `make demo` runs the example application, `make bench` the benchmarks.
# Debian packages are installed when missing (scripts/deps.sh); Python tools live in .venv.

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := all

# The interpreter the extension is built for, resolved through pyenv shims to the real binary;
# .venv is made from the same one.
PYTHON ?= $(shell python3 -c 'import sys;print(sys.executable)')
# Debian's cmake (installed by deps) unless told otherwise.
CMAKE ?= $(shell command -v /usr/bin/cmake || command -v cmake)
CTEST ?= $(shell command -v /usr/bin/ctest || command -v ctest)
JOBS ?= 2
CMAKE_ARGS ?=

BUILD := build
BUILD_ASAN := build-asan
VENV := .venv
VENV_PY := $(VENV)/bin/python

# Output of UBSan/ASan goes to the test log; make every report fatal and readable.
export ASAN_OPTIONS ?= detect_leaks=1:abort_on_error=0:strict_string_checks=1
export UBSAN_OPTIONS ?= print_stacktrace=1:halt_on_error=1

# One heavy step at a time: the machine has two cores and each build already uses both.
.NOTPARALLEL:


.PHONY: all deps build build-asan venv test test-c test-asan test-python test-fuzz fuzz valgrind test-asan-python demo bench bench-compare clean \
	distclean format format-check soak crash hostile powerloss

all: build

deps:
	@scripts/deps.sh

build: deps
	@echo "== configure + build ($(BUILD)/, Release -O2 -g, python: $(PYTHON))"
	@$(CMAKE) -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=$(PYTHON) \
		$(CMAKE_ARGS) --log-level=WARNING > /dev/null
	@$(CMAKE) --build $(BUILD) -j$(JOBS) -- --no-print-directory

build-asan: deps
	@echo "== configure + build ($(BUILD_ASAN)/, Debug, ASan+UBSan)"
	@$(CMAKE) -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=Debug -DCAIRN_SANITIZE=ON \
		-DCAIRN_PYTHON=OFF $(CMAKE_ARGS) --log-level=WARNING > /dev/null
	@$(CMAKE) --build $(BUILD_ASAN) -j$(JOBS) -- --no-print-directory

# .venv is (re)made when missing, made from another interpreter, or when requirements-dev.txt
# changed; the stamp records both.
venv:
	@want="$(PYTHON) $$(sha256sum requirements-dev.txt | cut -c1-16)"; \
	if [ -x $(VENV_PY) ] && [ "$$(cat $(VENV)/.stamp 2>/dev/null)" = "$$want" ]; then exit 0; fi; \
	echo "== venv ($(VENV)/ from $(PYTHON))"; \
	if [ -x $(VENV_PY) ] && [ "$$(sed -n 1p $(VENV)/.stamp 2>/dev/null | cut -d' ' -f1)" != "$(PYTHON)" ]; then \
		rm -rf $(VENV); fi; \
	[ -x $(VENV_PY) ] || $(PYTHON) -m venv $(VENV); \
	$(VENV_PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt 2>&1 \
		| { grep -v "is ignored: it is neither a file nor a directory" || true; }; \
	echo "$$want" > $(VENV)/.stamp

test-c: build
	@echo "== C tests ($(BUILD)/)"
	@cd $(BUILD) && $(CTEST) --output-on-failure -j$(JOBS)

test-asan: build-asan
	@echo "== C tests under ASan+UBSan ($(BUILD_ASAN)/)"
	@cd $(BUILD_ASAN) && $(CTEST) --output-on-failure -j$(JOBS)

test-python: build venv
	@echo "== Python tests"
	@PYTHONPATH=python $(VENV_PY) -m pytest -q tests/python

# A short run of every libFuzzer target over its checked-in corpus (tests/fuzz/run.sh);
# `make fuzz` runs them for FUZZ_SECONDS each (default 60).
FUZZ_SMOKE_SECONDS ?= 3
FUZZ_SECONDS ?= 60
test-fuzz: build venv
	@echo "== fuzz targets, $(FUZZ_SMOKE_SECONDS) s each"
	@PYTHON=$(VENV_PY) CMAKE=$(CMAKE) JOBS=$(JOBS) tests/fuzz/run.sh $(FUZZ_SMOKE_SECONDS)

fuzz: build venv
	@PYTHON=$(VENV_PY) CMAKE=$(CMAKE) JOBS=$(JOBS) tests/fuzz/run.sh $(FUZZ_SECONDS)

# valgrind memcheck over every C test program (about 1 min here): definite leaks and every memory
# error fail the run, in forked children too (valgrind follows fork(); a child's errors turn
# its exit status into 9, which the test sees).  CAIRN_UNDER_VALGRIND=1 makes test_fault start
# its map-growth test from 1 GiB, not 16 GiB (valgrind cannot map the 64 GiB it grows to);
# tests/valgrind.supp is for deliberate leaks (none at present).  --fair-sched=yes: valgrind
# runs one thread at a time, and with its default lock handoff test_concurrency's reader
# thread starved the writers (15 min instead of 30 s).
VALGRIND_TESTS ?= $(sort $(basename $(notdir $(wildcard tests/c/test_*.c))))
valgrind: build
	@start=$$SECONDS; for t in $(VALGRIND_TESTS); do \
		s=$$SECONDS; \
		CAIRN_UNDER_VALGRIND=1 TMPDIR=$(abspath $(BUILD))/test-tmp \
		valgrind -q --fair-sched=yes --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite \
			--suppressions=tests/valgrind.supp \
			$(BUILD)/$$t > $(BUILD)/valgrind-$$t.log 2>&1 || { echo "== valgrind $$t FAILED"; tail -40 $(BUILD)/valgrind-$$t.log; exit 1; }; \
		echo "== valgrind $$t: clean ($$((SECONDS - s)) s)"; \
	done; echo "valgrind: $(words $(VALGRIND_TESTS)) test programs clean in $$((SECONDS - start)) s"

# The pytest suite against an ASan+UBSan build of the extension with LeakSanitizer on
# (PYTHONMALLOC=malloc; tests/lsan-python.supp): about 90 s, part of `make test`.
test-asan-python: build venv
	@echo "== Python tests against the extension under ASan+UBSan+LSan"
	@PYTHON=$(VENV_PY) CMAKE=$(CMAKE) JOBS=$(JOBS) tests/asan_python.sh

test: format-check test-c test-asan test-python test-fuzz test-asan-python

# Reliability harnesses (docs/reliability.md): `make soak` runs the multi-process concurrency
# soak for SOAK_SECONDS (default 150), then `make hostile` (issue 10's hostile scripts and
# damaged files at the default limits, about a minute); `make crash` runs CRASH_ROUNDS SIGKILL
# rounds.  Each on a scratch directory in build/ (the real disk), removed afterwards when it
# passes.
SOAK_SECONDS ?= 150
CRASH_ROUNDS ?= 200
CRASH_SEED ?= 1
soak: build venv
	@echo "== concurrency soak ($(SOAK_SECONDS) s)"
	@rm -rf $(BUILD)/soak-data
	@PYTHONPATH=python $(VENV_PY) tests/reliability/soak.py --seconds $(SOAK_SECONDS) $(BUILD)/soak-data
	@rm -rf $(BUILD)/soak-data
	@$(MAKE) --no-print-directory hostile

hostile: build venv
	@echo "== hostile scripts and damaged files (truncation, bombs, memory, reader, lockfile)"
	@rm -rf $(BUILD)/hostile-data
	@PYTHONPATH=python $(VENV_PY) tests/reliability/hostile.py $(BUILD)/hostile-data
	@rm -rf $(BUILD)/hostile-data

crash: build venv
	@echo "== crash rounds ($(CRASH_ROUNDS), seed $(CRASH_SEED))"
	@rm -rf $(BUILD)/crash-data
	@PYTHONPATH=python $(VENV_PY) tests/reliability/crash.py --quiet --rounds $(CRASH_ROUNDS) \
		--seed $(CRASH_SEED) $(BUILD)/crash-data
	@rm -rf $(BUILD)/crash-data

# `make powerloss` runs POWERLOSS_ROUNDS power losses (default 300, a few minutes): a writer
# with durability full under the LD_PRELOAD shim $(BUILD)/libcairn_power.so, which journals the
# bytes every unflushed write overwrites; after the kill the journal is played backwards, as if
# the power had gone, and a fresh process checks the store (docs/reliability.md, "Power loss").
# `make test` runs 20 rounds and the harness's self-tests (tests/python/test_powerloss.py,
# which builds the shim with the same command, tests/reliability/powerloss.py: SHIM_CMD).
POWERLOSS_ROUNDS ?= 300
POWERLOSS_SEED ?= 1
$(BUILD)/libcairn_power.so: tests/reliability/power_shim.c
	@mkdir -p $(BUILD)
	@gcc -shared -fPIC -O2 -Wall -Wextra -o $@ $< -ldl -lpthread

powerloss: build venv $(BUILD)/libcairn_power.so
	@echo "== power-loss rounds ($(POWERLOSS_ROUNDS), seed $(POWERLOSS_SEED))"
	@rm -rf $(BUILD)/powerloss-data
	@PYTHONPATH=python $(VENV_PY) tests/reliability/powerloss.py --quiet --rounds $(POWERLOSS_ROUNDS) \
		--seed $(POWERLOSS_SEED) --shim $(BUILD)/libcairn_power.so $(BUILD)/powerloss-data
	@rm -rf $(BUILD)/powerloss-data

# The bank example on a fresh ./demo-store (demo-backup is where its closing `cairn backup` writes),
# then the course-subscription kata (consistency boundaries, spec section 5) on ./demo-courses.
demo: build
	@rm -rf demo-store demo-backup demo-courses
	PYTHONPATH=python $(PYTHON) examples/bank.py --store demo-store
	@echo
	PYTHONPATH=python $(PYTHON) examples/courses.py --store demo-courses

# bench/run runs every benchmark, one after another, each on a scratch directory in build/ (the
# real disk).  BENCH_EVENTS=N makes a quick run (the benchmarks' own default is large).
BENCH_EVENTS ?=
bench: build venv
	@PYTHONPATH=python PYTHON=$(abspath $(VENV_PY)) BENCH_EVENTS=$(BENCH_EVENTS) bench/run

# Before/after: the core benchmarks against the library of commit REV and of this tree,
# interleaved in one run (bench/compare.py).  `make bench-compare REV=42cc64e^`
bench-compare: build
	@test -n "$(REV)" || { echo "usage: make bench-compare REV=<commit> [ROUNDS=4]"; exit 2; }
	@$(PYTHON) bench/compare.py "$(REV)" --rounds $(or $(ROUNDS),4)

# The C style is .clang-format's, applied by clang-format-14 (Debian 12's, installed by deps) to
# every C file under core/ (whichever subdirectory), lua/, bindings/python/, tests/c/ and the
# fuzz targets.  `make format` rewrites them; `make format-check` changes nothing and fails, with
# clang-format's report, when any of them differs (the first step of `make test`).
CLANG_FORMAT ?= clang-format-14
FORMAT_FILES = $(shell find core lua bindings/python tests/c -name '*.[ch]' | sort) $(wildcard tests/fuzz/*.c)
format: deps
	@$(CLANG_FORMAT) -i $(FORMAT_FILES)

format-check: deps
	@log=$$($(CLANG_FORMAT) --dry-run -Werror $(FORMAT_FILES) 2>&1) && \
		echo "format-check: all $(words $(FORMAT_FILES)) files as .clang-format wants them" || { \
		echo "$$log"; \
		echo "format-check: $$(echo "$$log" | grep -o '^[^: ]*:[0-9]*:[0-9]*: error' | cut -d: -f1 | sort -u | wc -l)" \
			"of $(words $(FORMAT_FILES)) files differ from .clang-format (make format rewrites them)"; exit 1; }

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) build-asan-python build-fuzz build-fuzz-py build-py demo-store demo-backup demo-courses \
		python/cairn/_cairn*.so

distclean: clean
	rm -rf $(VENV) .pytest_cache .hypothesis
