#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for SECONDS seconds
# (default 60) on its corpus in tests/fuzz/corpus/<target>/, adding what it finds there
# only with MERGE=1.  `make fuzz` runs it; `make test` runs it for a few seconds.
# fuzz_store (the write/read path against a real store) keeps its stores in /dev/shm.
# Everything is built from CMakeLists.txt with CAIRN_FUZZ=ON (clang, -g -O1, asserts on) in one
# CMake tree, build-fuzz/: the fuzz_* executables there, the extension for the Python-level
# target into build-fuzz-py/cairn/ (below).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-${FUZZ_SECONDS:-60}}
out=build-fuzz
pyout=build-fuzz-py
py=${PYTHON:-.venv/bin/python}
case $py in /*) ;; */*) py=$PWD/$py ;; esac
cc=$(command -v clang-14 || command -v clang)
cmake=${CMAKE:-$(command -v /usr/bin/cmake || command -v cmake)}
targets="record json_lua script store filecheck"
native=${PY_NATIVE:-1}
"$cmake" -S . -B "$out" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS_DEBUG="-g -O1" \
    -DCAIRN_FUZZ=ON -DCAIRN_TESTS=OFF -DCAIRN_PYTHON="$([ "$native" = 1 ] && echo ON || echo OFF)" \
    -DPython3_EXECUTABLE="$py" -DCAIRN_PYTHON_OUTPUT_DIR="$PWD/$pyout/cairn" --log-level=WARNING > /dev/null
# build TARGET...: quiet unless it fails
build() {
    "$cmake" --build "$out" --target "$@" -j"${JOBS:-2}" > "$out/build.log" 2>&1 ||
        { tail -40 "$out/build.log"; exit 1; }
}
# shellcheck disable=SC2046
build $(printf 'fuzz_%s ' $targets)
for t in $targets; do
    corpus=tests/fuzz/corpus/$t
    work=$out/corpus-$t
    rm -rf "$work"; mkdir -p "$work"
    echo "== fuzz_$t for ${secs}s (corpus: $(ls "$corpus" | wc -l) files)"
    status=0
    # fuzz_filecheck's inputs are whole data.mdb files (its seeds: real stores of 20-28 pages)
    maxlen=; [ "$t" = filecheck ] && maxlen=-max_len=131072
    "$out/fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
        $maxlen "$work" "$corpus" > "$out/fuzz_$t.log" 2>&1 || status=$?
    grep -E "^(INFO: seed|#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss)|ERROR|SUMMARY|Test unit written" \
        "$out/fuzz_$t.log" || true
    [ "$status" = 0 ] || { echo "fuzz_$t found a failure (exit $status; $out/fuzz_$t.log)"; exit 1; }
    if [ "${MERGE:-0}" = 1 ]; then "$out/fuzz_$t" -merge=1 "$corpus" "$work" > /dev/null 2>&1; fi
done
# The Python-level target (atheris, from .venv): argument parsing and JSON encoding, with
# coverage feedback from the extension too.  The extension (CMake target cairn_python) is built
# for it into build-fuzz-py/cairn/, a copy of the package, instrumented as the C targets are
# (-fsanitize=fuzzer-no-link,address,undefined), and runs with the ASan runtime that carries
# atheris's libFuzzer preloaded (atheris: "Fuzzing Native Extensions").  PY_NATIVE=0 runs it
# against python/ instead (the Python package alone is instrumented then).
pypath=python
preload=
if [ "$native" = 1 ]; then
    mkdir -p "$pyout/cairn"
    cp python/cairn/*.py python/cairn/*.pyi python/cairn/py.typed "$pyout/cairn/"
    build cairn_python
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
