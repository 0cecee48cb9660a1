"""atheris target: the Python-level argument parsing of cairn (Event construction, append,
reads with filters, JSON encoding of data/metadata) fed with arbitrary values.  Every call
must either work or raise one of the documented exceptions (TypeError, ValueError,
KeyError, cairn.Error subclasses); anything else -- another exception, a crash, a store
that stops working -- is a finding.

    python tests/fuzz/fuzz_python_args.py -max_total_time=60 tests/fuzz/corpus/python_args
"""

import sys
import tempfile

import atheris

with atheris.instrument_imports():
    import cairn

STORE = cairn.open(tempfile.mkdtemp(prefix="cairn-fuzz-") + "/s", durability="none")
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
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
