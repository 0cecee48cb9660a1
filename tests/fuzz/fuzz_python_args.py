"""atheris target: the Python-level argument parsing of cairn (Event construction, append,
reads with filters, JSON encoding of data/metadata) fed with arbitrary values.  Every call
must either work or raise one of the documented exceptions (TypeError, ValueError,
KeyError, cairn.Error subclasses); anything else -- another exception, a crash, a store
that stops working -- is a finding.

    python tests/fuzz/fuzz_python_args.py -max_total_time=60 tests/fuzz/corpus/python_args
"""

import atexit
import os
import shlex
import shutil
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    import cairn

# One store for a few thousand inputs, then a fresh one: reads without a limit would
# otherwise slow down as the store grows.
# libFuzzer may leave with _exit (merge, crashes): stores of processes gone are removed here.
BASE = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
for old in os.listdir(BASE):
    if old.startswith("cairn-fuzz-py-") and not os.path.exists("/proc/" + old[14:]):
        shutil.rmtree(os.path.join(BASE, old), True)
TMP = os.path.join(BASE, "cairn-fuzz-py-%d" % os.getpid())
os.makedirs(TMP, exist_ok=True)
atexit.register(shutil.rmtree, TMP, True)
STORE = None
RUNS = 0


def fresh_store():
    global STORE
    if STORE is not None:
        STORE.close()
        shutil.rmtree(TMP + "/s", True)
    STORE = cairn.open(TMP + "/s", durability="none")


fresh_store()
OK = (TypeError, ValueError, KeyError, cairn.Error, OverflowError, UnicodeError, RecursionError)


def value(fdp, depth=0):
    kind = fdp.ConsumeIntInRange(0, 9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 10))
    if kind == 3:
        return fdp.ConsumeFloat()
    if kind == 4:
        return fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 40))
    if kind == 5:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40))
    if kind == 6:
        return object()
    if kind == 7:
        return [value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    if kind == 8:
        return tuple(value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3)))
    return {(fdp.ConsumeUnicode(8) if fdp.ConsumeBool() else value(fdp, depth + 1)): value(fdp, depth + 1)
            for _ in range(fdp.ConsumeIntInRange(0, 4))}


def TestOneInput(data):
    global RUNS
    RUNS += 1
    if RUNS % 2000 == 0:
        fresh_store()
    fdp = atheris.FuzzedDataProvider(data)
    op = fdp.ConsumeIntInRange(0, 4)
    try:
        if op == 0:
            ev = cairn.Event(value(fdp), value(fdp), metadata=value(fdp), schema=value(fdp),
                             tags=value(fdp))
            STORE.append(value(fdp) if fdp.ConsumeBool() else "fuzz-1", [ev],
                         expected_version=value(fdp) if fdp.ConsumeBool() else cairn.ANY)
        elif op == 1:
            STORE.append("fuzz-1", [cairn.Event("T", value(fdp), metadata=value(fdp))])
        elif op == 2:
            list(STORE.read_all(value(fdp), backwards=fdp.ConsumeBool(), limit=value(fdp),
                                types=value(fdp), categories=value(fdp), tags=value(fdp)))
        elif op == 3:
            list(STORE.read_stream(value(fdp), value(fdp), limit=value(fdp)))
        else:
            STORE.get(value(fdp))
    except OK:
        pass
    # the store keeps working after whatever happened
    STORE.append("fuzz-ok", [cairn.Event("Ok")])


if __name__ == "__main__":
    # libFuzzer runs argv[0] again through the shell for -merge=1 (and -fork/-jobs): make
    # that "python this-file", the file itself is not executable
    argv0 = shlex.quote(sys.executable) + " " + shlex.quote(sys.argv[0])
    atheris.Setup([argv0] + sys.argv[1:], TestOneInput)
    atheris.Fuzz()
