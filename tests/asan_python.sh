#!/usr/bin/env bash
# Runs the pytest suite against an ASan+UBSan build of the extension (CPython itself is not
# sanitized: libasan is preloaded, leak detection off).  Each test file runs in its own
# pytest process.  Left out: the fault-injection, corruption and crash files (their child
# processes preload a shim of their own or are killed on purpose) and the limits file
# (16 MiB events are slow under ASan).  `make test-asan-python` calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
out=build-asan-python
ext=$("$py" -c "import sysconfig;print(sysconfig.get_config_var('EXT_SUFFIX'))")
inc=$("$py" -c "import sysconfig;print(sysconfig.get_paths()['include'])")
mkdir -p "$out/cairn"
cp python/cairn/*.py python/cairn/*.pyi python/cairn/py.typed "$out/cairn/"
gcc -shared -fPIC -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -D_GNU_SOURCE \
    -Icore/include -Icore/src -Ilua -I/usr/include/lua5.4 -Ibuild/generated -I"$inc" \
    core/src/*.c lua/*.c bindings/python/*.c \
    -llmdb -ljansson -lxxhash -llua5.4 -lpthread -lm -o "$out/cairn/_cairn$ext"
preload="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
failed=0
for f in tests/python/test_*.py; do
    case $f in *test_faults*|*test_corruption*|*test_crash*|*test_limits*) continue ;; esac
    # sanitizer reports go to files: pytest captures the test's stderr and a halted process
    # never prints it
    rm -f "$out"/sanitizer.*
    if LD_PRELOAD="$preload" ASAN_OPTIONS=detect_leaks=0:log_path="$out/sanitizer" \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path="$out/sanitizer" \
        PYTHONPATH="$out" "$py" -m pytest -q -p no:cacheprovider "$f" > "$out/$(basename "$f").log" 2>&1; then
        echo "asan: $f: $(tail -1 "$out/$(basename "$f").log")"
    else
        echo "asan: $f FAILED"; tail -30 "$out/$(basename "$f").log"
        cat "$out"/sanitizer.* 2>/dev/null | head -40; failed=1
    fi
done
exit $failed
