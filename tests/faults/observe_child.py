"""Child process of tests/python/test_faults.py, run with LD_PRELOAD=libcairn_faults.so, for
what the shim observes rather than breaks.  Prints one JSON object.

    observe_child.py clock DIR    timestamps of events appended before, while and after the wall
                                  clock (CLOCK_REALTIME) is stepped back an hour, and verify()
"""

import ctypes
import json
import os
import sys
import time

import cairn

lib = ctypes.CDLL(None)
lib.cairn_fault_clock_step.argtypes = [ctypes.c_longlong]

HOUR_NS = 3600 * 10**9


def ev(i):
    return cairn.Event("Observed", {"i": i})


def clock(root):
    out = {}
    with cairn.open(os.path.join(root, "clock"), durability="none") as s:
        for i in range(3):
            s.append("before-1", [ev(i)])
        out["head_before"] = s.head()
        wall = time.time_ns()
        lib.cairn_fault_clock_step(-HOUR_NS)
        out["python_clock_stepped"] = wall - time.time_ns()  # about an hour: the shim works
        s.append("during-1", [ev(10)])
        s.append("during-1", [ev(11), ev(12), ev(13)])
        with s.transaction() as t:
            t.append("during-2", [ev(14)])
            t.append("during-3", [ev(15)])
        out["head_during"] = s.head()
        lib.cairn_fault_clock_step(HOUR_NS)
        s.append("after-1", [ev(20)])
        out["now"] = time.time_ns()
        out["events"] = [[e.position, e.stream, e.timestamp_ns] for e in s.read_all()]
        try:
            out["verify"] = list(s.verify())
        except cairn.Error as exc:
            out["verify"] = f"{type(exc).__name__}: {exc}"
        out["head"] = s.head()
    print(json.dumps(out))


if __name__ == "__main__":
    {"clock": clock}[sys.argv[1]](sys.argv[2])
