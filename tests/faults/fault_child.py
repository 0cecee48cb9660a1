"""Child process of tests/python/test_faults.py, run with LD_PRELOAD=libcairn_faults.so.

    fault_child.py STORE CALL ERRNO NTH DURABILITY

Seeds the store (when new), arms the shim to fail the NTH call CALL on data.mdb with ERRNO,
then appends batches until one raises (or 40 batches pass).  After each append it records
what is visible; after the failure it disarms, checks that nothing of the failed call is
visible, appends again (reopening the store only if the environment refuses: LMDB marks an
environment fatal when a meta-page write fails) and runs verify().  Prints one JSON object.

CALL "open-mmap" fails the mmap of data.mdb during cairn.open instead.
CALL "sync" arms fdatasync and calls store.sync() (durability "none") instead of appending.
CALL "tmpfs" injects nothing: STORE is on a small tmpfs with a filler file STORE + ".filler";
the child appends until the disk is full (ERRNO, NTH unused), deletes the filler and goes on.
"""

import ctypes
import json
import os
import sys

import cairn

lib = ctypes.CDLL(None)
if hasattr(lib, "cairn_fault_arm"):  # the shim is preloaded (not for "tmpfs")
    lib.cairn_fault_calls.restype = ctypes.c_long
    lib.cairn_fault_fired.restype = ctypes.c_long
    lib.cairn_fault_arm.argtypes = [ctypes.c_char_p, ctypes.c_long, ctypes.c_char_p, ctypes.c_long]
else:
    lib = None


def arm(call, nth, err):
    assert lib.cairn_fault_arm(call.encode(), nth, err.encode(), 1) == 0, call


def disarm():
    if lib:
        lib.cairn_fault_arm(b"any", 0, b"EIO", 1)


def state(store):
    events = [(e.position, e.stream, e.version, e.id, e.type, tuple(e.tags), repr(e.data))
              for e in store.read_all()]
    streams = sorted(store.streams())
    return store.head(), events, {s: store.stream_version(s) for s in streams}


def batch(k):
    return [cairn.Event("Faulted", {"k": k, "j": j, "pad": "x" * (200 * j)}, tags=["f", f"k{k % 3}"])
            for j in range(3)]


def describe(exc):
    return {"type": type(exc).__name__, "cairn_error": isinstance(exc, cairn.Error),
            "oserror": isinstance(exc, OSError), "message": str(exc)}


def main():
    path, call, err, nth, durability = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    out = {"call": call, "errno": err, "nth": nth, "durability": durability}
    disarm()
    if not os.path.exists(path):
        s = cairn.open(path, durability="none")
        for i in range(60):
            s.append(f"seed-{i % 7}", [cairn.Event("Seeded", {"i": i}, tags=[f"t{i % 4}"])])
        s.sync()
        s.close()

    if call == "open-mmap":
        arm("mmap", nth, err)
        try:
            s = cairn.open(path, durability=durability)
            out["raised"] = None
            s.close()
        except Exception as exc:  # noqa: BLE001 -- we report whatever it is
            out["raised"] = describe(exc)
        out["fired"] = lib.cairn_fault_fired()
        disarm()
        s = cairn.open(path, durability=durability)
        before = state(s)
        s.append("after-1", batch(0))
        out["recovered"] = True
        out["reopened"] = False
        out["verify"] = list(s.verify())
        out["head_ok"] = s.head() == before[0] + 3
        s.close()
        print(json.dumps(out))
        return

    if call == "tmpfs":
        return out_of_space(path, durability, out)
    s = cairn.open(path, durability=durability)
    if call == "sync":
        s.append("sync-1", batch(0))
        before = state(s)
        arm("fdatasync", nth, err)
        try:
            s.sync()
            out["raised"] = None
        except Exception as exc:  # noqa: BLE001
            out["raised"] = describe(exc)
        out["fired"] = lib.cairn_fault_fired()
        disarm()
        out["unchanged"] = state(s) == before
        s.sync()
        out["recovered"] = True
        out["reopened"] = False
        out["verify"] = list(s.verify())
        out["head_ok"] = True
        s.close()
        print(json.dumps(out))
        return

    arm(call, nth, err)
    out["raised"] = None
    attempts = 0
    for k in range(80):
        before = state(s)
        version = before[2].get("fault-1", -1)
        attempts += 1
        events = batch(k)
        try:
            s.append("fault-1", events, expected_version=version)
        except Exception as exc:  # noqa: BLE001
            out["raised"] = describe(exc)
            break
        if lib.cairn_fault_fired():
            # failed underneath, yet the append reported success: allowed once, for a
            # checkpoint after a durable commit (its record is flushed in the journal); the
            # next append must then fail
            if out.get("fired_after_success"):
                break
            out["fired_after_success"] = k
    out["attempts"] = attempts
    out["fired"] = lib.cairn_fault_fired()
    disarm()
    if out["raised"] is None:
        s.close()
        print(json.dumps(out))
        return

    # nothing of the failed call is visible (in this process; the parent looks from a fresh one)
    try:
        out["unchanged"] = state(s) == before
        out["ids_absent"] = all(_absent(s, e.id) for e in events)
    except Exception as exc:  # noqa: BLE001 -- a fatal environment refuses reads too
        out["unchanged"] = None
        out["read_after_fault"] = describe(exc)

    # the next append works (after a reopen if the environment was marked fatal)
    out["reopened"] = False
    try:
        r = s.append("fault-1", events, expected_version=version)
    except Exception as exc:  # noqa: BLE001
        out["append_after_fault"] = describe(exc)
        s.close()
        s = cairn.open(path, durability=durability)
        out["reopened"] = True
        out["unchanged_after_reopen"] = state(s) == before
        r = s.append("fault-1", events, expected_version=version)
    out["recovered"] = r.position == before[0] + 3 and r.version == version + 3
    got = [s.get(p) for p in range(r.first_position, r.position + 1)]
    out["readback_ok"] = [g.id for g in got] == [e.id for e in events] and \
        [g.data for g in got] == [e.data for e in events]
    out["verify"] = list(s.verify())
    out["head_ok"] = s.head() == before[0] + 3
    s.close()
    print(json.dumps(out))


def out_of_space(path, durability, out):
    """Fills the file system; each ENOSPC must leave the store as it was, and freeing space
    (the filler file, then nothing more: the second round ends the test) lets appends go on."""
    s = cairn.open(path, durability=durability)
    out["rounds"] = []
    for rnd in range(2):
        info = {"raised": None}
        for k in range(2000):
            before = state(s)
            version = before[2].get("fill-1", -1)
            events = [cairn.Event("Fill", {"k": k, "pad": "y" * 3000}) for _ in range(4)]
            try:
                s.append("fill-1", events, expected_version=version)
            except Exception as exc:  # noqa: BLE001
                info["raised"] = describe(exc)
                info["appends"] = k
                break
        if info["raised"] is None:
            out["rounds"].append(info)
            break
        try:
            info["unchanged"] = state(s) == before
        except Exception as exc:  # noqa: BLE001
            info["unchanged"] = None
            info["read_after_fault"] = describe(exc)
        if rnd == 0:
            os.unlink(path + ".filler")  # the fault clears
            try:
                r = s.append("fill-1", events, expected_version=version)
            except Exception as exc:  # noqa: BLE001
                info["append_after_fault"] = describe(exc)
                s.close()
                s = cairn.open(path, durability=durability)
                info["reopened"] = True
                r = s.append("fill-1", events, expected_version=version)
            info["recovered"] = r.position == before[0] + 4
            info["readback_ok"] = [s.get(p).id for p in range(r.first_position, r.position + 1)] == \
                [e.id for e in events]
        info["verify"] = list(s.verify())
        out["rounds"].append(info)
    out["head"] = s.head()
    s.close()
    print(json.dumps(out))


def _absent(store, event_id):
    """No event with this id is readable (the id index and the log agree it is absent)."""
    return all(e.id != event_id for e in store.read_all(backwards=True, limit=10))


if __name__ == "__main__":
    main()
