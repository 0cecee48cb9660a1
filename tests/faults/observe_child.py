"""Child process of tests/python/test_faults.py, run with LD_PRELOAD=libcairn_faults.so, for
what the shim observes rather than breaks.  Prints one JSON object.

    observe_child.py syncs DIR    the sync calls of each commit, per durability mode: data.mdb's
                                  fdatasync / fsync / msync calls and its O_DSYNC writes (LMDB's
                                  synchronous meta-page write), for single appends, a multi-event
                                  append, a transaction, sync(), and two handles of different
                                  durability taking turns on one store
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
lib.cairn_fault_arm.argtypes = [ctypes.c_char_p, ctypes.c_long, ctypes.c_char_p, ctypes.c_long]
lib.cairn_fault_calls.argtypes = [ctypes.c_char_p]
lib.cairn_fault_calls.restype = ctypes.c_long
lib.cairn_fault_dsync_writes.restype = ctypes.c_long
lib.cairn_fault_clock_step.argtypes = [ctypes.c_longlong]

HOUR_NS = 3600 * 10**9
# the handle of each commit in "syncs": every change of mode, and a repeat of each
TURNS = ("full", "full", "none", "none", "relaxed", "relaxed", "full", "relaxed", "none", "full")


def reset():
    """Disarmed, every counter at zero."""
    lib.cairn_fault_arm(b"any", 0, b"EIO", 1)


def counts():
    out = {c: lib.cairn_fault_calls(c.encode()) for c in ("fdatasync", "fsync", "msync")}
    out["dsync_writes"] = lib.cairn_fault_dsync_writes()
    return out


def counted(fn):
    """The counters over one call of fn."""
    reset()
    fn()
    return counts()


def ev(i):
    return cairn.Event("Observed", {"i": i})


def syncs(root):
    out = {}
    for mode in ("full", "relaxed", "none"):
        with cairn.open(os.path.join(root, mode), durability=mode) as s:
            s.append("c-1", [ev(0)])  # the stream exists from here on
            r = {"single": [counted(lambda i=i: s.append("c-1", [ev(i)])) for i in range(1, 5)],
                 "many": counted(lambda: s.append("c-2", [ev(i) for i in range(50)])),
                 "sync": counted(s.sync)}

            def tx():
                with s.transaction() as t:
                    t.append("c-1", [ev(100)])
                    t.append("c-3", [ev(101), ev(102)])

            r["transaction"] = counted(tx)
            out[mode] = r
    # durability is the handle's, but LMDB's sync flags are the environment's: two handles on
    # one store share it, and each commit must follow the handle that makes it
    path = os.path.join(root, "shared")
    handles = {mode: cairn.open(path, durability=mode) for mode in ("full", "relaxed", "none")}
    try:
        handles["full"].append("t-1", [ev(0)])
        out["turns"] = [[mode, counted(lambda s=handles[mode]: s.append("t-1", [ev(1)]))]
                        for mode in TURNS]
    finally:
        for s in handles.values():
            s.close()
    reset()
    print(json.dumps(out))


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
    {"syncs": syncs, "clock": clock}[sys.argv[1]](sys.argv[2])
