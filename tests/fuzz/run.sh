#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for SECONDS seconds
# (default 60) on its corpus in tests/fuzz/corpus/<target>/, adding what it finds there
# only with MERGE=1.  `make fuzz` runs it; `make test` runs it for a few seconds.
# fuzz_store (the write/read path against a real store) keeps its stores in /dev/shm.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-${FUZZ_SECONDS:-60}}
out=build-fuzz
cc=$(command -v clang-14 || command -v clang)
mkdir -p "$out"
srcs="core/base/*.c core/src/*.c lua/*.c"
flags="-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -D_GNU_SOURCE
       -Icore/include -Icore/base -Icore/src -Ilua -I/usr/include/lua5.4"
libs="-llmdb -ljansson -lxxhash -llua5.4 -lpthread -lm"
targets="record json_lua script store"
for t in $targets; do
    # shellcheck disable=SC2086
    [ "$out/fuzz_$t" -nt "tests/fuzz/fuzz_$t.c" ] && [ -z "$(find core lua -newer "$out/fuzz_$t" -name '*.[ch]' | head -1)" ] ||
        $cc $flags tests/fuzz/fuzz_$t.c $srcs $libs -o "$out/fuzz_$t"
done
for t in $targets; do
    corpus=tests/fuzz/corpus/$t
    work=$out/corpus-$t
    rm -rf "$work"; mkdir -p "$work"
    echo "== fuzz_$t for ${secs}s (corpus: $(ls "$corpus" | wc -l) files)"
    status=0
    "$out/fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
        "$work" "$corpus" > "$out/fuzz_$t.log" 2>&1 || status=$?
    grep -E "^(INFO: seed|#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss)|ERROR|SUMMARY|Test unit written" \
        "$out/fuzz_$t.log" || true
    [ "$status" = 0 ] || { echo "fuzz_$t found a failure (exit $status; $out/fuzz_$t.log)"; exit 1; }
    if [ "${MERGE:-0}" = 1 ]; then "$out/fuzz_$t" -merge=1 "$corpus" "$work" > /dev/null 2>&1; fi
done
# The Python-level target (atheris, from .venv): argument parsing and JSON encoding, with
# coverage feedback from the extension too.  The extension (bindings/python, core/src, lua/)
# is built for it into build-fuzz-py/ with clang, -fsanitize=fuzzer-no-link,address,undefined,
# and runs with the ASan runtime that carries atheris's libFuzzer preloaded (atheris:
# "Fuzzing Native Extensions").  PY_NATIVE=0 runs it against python/ instead (the Python
# package alone is instrumented then).
py=${PYTHON:-.venv/bin/python}
pyout=build-fuzz-py
pypath=python
preload=
if [ "${PY_NATIVE:-1}" = 1 ]; then
    ext=$("$py" -c "import sysconfig;print(sysconfig.get_config_var('EXT_SUFFIX'))")
    inc=$("$py" -c "import sysconfig;print(sysconfig.get_paths()['include'])")
    so=$pyout/cairn/_cairn$ext
    mkdir -p "$pyout/cairn"
    cp python/cairn/*.py python/cairn/*.pyi python/cairn/py.typed "$pyout/cairn/"
    if [ ! -e "$so" ] || [ -n "$(find core lua bindings/python -newer "$so" -name '*.[ch]' | head -1)" ]; then
        echo "== building $so (clang, fuzzer-no-link + ASan + UBSan)"
        # shellcheck disable=SC2086
        $cc -shared -fPIC -g -O1 -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all \
            -fno-omit-frame-pointer -D_GNU_SOURCE -Icore/include -Icore/base -Icore/src -Ilua -I/usr/include/lua5.4 \
            -I"$inc" core/base/*.c core/src/*.c lua/*.c bindings/python/*.c $libs -o "$so"
    fi
    pypath=$pyout
    preload=$("$py" -c "import atheris,os;print(os.path.join(atheris.path(),'asan_with_fuzzer.so'))")
fi
work=$out/corpus-python_args
rm -rf "$work"; mkdir -p "$work"
echo "== fuzz_python_args for ${secs}s ($([ -n "$preload" ] && echo "native coverage: $pypath" || echo "Python coverage only"))"
status=0
LD_PRELOAD=$preload ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 PYTHONPATH=$pypath \
    "$py" tests/fuzz/fuzz_python_args.py -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 "$work" tests/fuzz/corpus/python_args > "$out/fuzz_python_args.log" 2>&1 || status=$?
grep -E "^(INFO: seed|#[0-9]+.*(INITED|DONE)|stat::number_of_executed_units)|ERROR|SUMMARY|Uncaught|Traceback" \
    "$out/fuzz_python_args.log" || true
[ "$status" = 0 ] || { echo "fuzz_python_args found a failure (exit $status; $out/fuzz_python_args.log)"; exit 1; }
if [ "${MERGE:-0}" = 1 ]; then
    LD_PRELOAD=$preload ASAN_OPTIONS=detect_leaks=0 PYTHONPATH=$pypath "$py" tests/fuzz/fuzz_python_args.py \
        -merge=1 tests/fuzz/corpus/python_args "$work" > /dev/null 2>&1
fi
