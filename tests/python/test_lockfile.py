"""Operator mistakes on the store's files (docs/reliability.md, "Damaged files and operator
mistakes"): lock.mdb deleted under a running writer, a reader killed while it holds a snapshot.

* lock.mdb deleted: process A keeps writing, someone removes lock.mdb, process B opens the store
  and writes too.  Each reports every append it got an acknowledgement for; every one of them
  must be in the store afterwards, and verify() passes.  A refuses its writes (OSError saying
  lock.mdb was replaced) once B's lock.mdb is there; no two writers ever overlap (the OFD lock
  on data.mdb, independent of lock.mdb).
* killed reader: a child holding a read transaction is SIGKILLed; its LMDB reader slot would
  pin its snapshot forever while this process keeps the store open, and data.mdb would grow
  with every commit.  The store clears dead readers at open and every few commits.
"""

import os
import signal
import subprocess
import textwrap
import time

import pytest

import cairn

from conftest import PYTHON, child_env

WRITER = textwrap.dedent("""
    import sys, time, cairn
    path, stream, n, delay = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    s = cairn.open(path, durability="none")
    print("open", flush=True)
    for i in range(n):
        e = cairn.Event("Acked", {"i": i, "who": stream})
        try:
            s.append(stream, [e])
        except Exception as ex:
            print("err", type(ex).__name__, str(ex).replace("\\n", " "), flush=True)
            break
        print("ack", e.id, flush=True)
        time.sleep(delay)
    s.close()
""")


def start_writer(path, stream, n, delay):
    return subprocess.Popen([PYTHON, "-c", WRITER, str(path), stream, str(n), str(delay)],
                            stdout=subprocess.PIPE, text=True, env=child_env())


def acks(lines):
    return [line.split()[1] for line in lines if line.startswith("ack ")]


def test_deleted_lock_file_loses_no_acknowledged_append(store_path):
    with cairn.open(store_path) as s:
        s.append("seed", [cairn.Event("Seed", {})])
    lock = os.path.join(store_path, "lock.mdb")
    a = start_writer(store_path, "a", 400, 0.005)
    a_lines = [a.stdout.readline()]  # "open"
    for _ in range(20):
        a_lines.append(a.stdout.readline())
    os.remove(lock)
    b = start_writer(store_path, "b", 100, 0.005)
    b_out, _ = b.communicate(timeout=60)
    a_out, _ = a.communicate(timeout=60)
    a_lines += a_out.splitlines()
    b_lines = b_out.splitlines()
    assert b.returncode == 0 and a.returncode == 0
    a_acked, b_acked = acks(a_lines), acks(b_lines)
    assert len(b_acked) == 100, b_lines[-3:]
    # A stopped with a clear error once the lock file it opened was gone
    errs = [line for line in a_lines if line.startswith("err ")]
    assert errs and "OSError" in errs[0] and "lock.mdb" in errs[0], a_lines[-3:]
    with cairn.open(store_path) as s:
        s.verify()
        ids = {str(e.id) for e in s.read_all()}
        missing = [i for i in a_acked + b_acked if i not in ids]
        assert not missing, f"{len(missing)} of {len(a_acked)} + {len(b_acked)} acknowledged lost"
        assert s.head() == 1 + len(a_acked) + len(b_acked)


def test_deleted_lock_file_in_process_refuses_writes(store_path):
    s = cairn.open(store_path, durability="none")
    s.append("x", [cairn.Event("T", {})])
    os.remove(os.path.join(store_path, "lock.mdb"))
    try:
        with pytest.raises(OSError, match="lock.mdb"):
            s.append("x", [cairn.Event("T", {})])
        assert s.head() == 1  # reads still work
    finally:
        s.close()
    with cairn.open(store_path) as s2:  # a new open makes a new lock.mdb and writes again
        s2.append("x", [cairn.Event("T", {})])
        assert s2.head() == 2


# verify() holds one read transaction for its whole walk: killed while it runs, the child
# leaves its reader slot behind (it is in verify almost all the time)
READER = textwrap.dedent("""
    import sys, cairn
    s = cairn.open(sys.argv[1], readonly=True)
    s.verify()
    print("verifying", flush=True)
    while True:
        s.verify()
""")


def test_killed_reader_slot_is_reclaimed(store_path):
    size = lambda: os.path.getsize(os.path.join(store_path, "data.mdb"))
    with cairn.open(store_path, durability="none") as s:
        for i in range(50):
            s.append(f"s-{i}", [cairn.Event("T", {"pad": "x" * 200}) for _ in range(100)])
        child = subprocess.Popen([PYTHON, "-c", READER, str(store_path)],
                                 stdout=subprocess.PIPE, text=True, env=child_env())
        assert child.stdout.readline().strip() == "verifying"
        time.sleep(0.3)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        for i in range(200):
            s.append(f"s-{i % 50}", [cairn.Event("T", {"pad": "x" * 200})])
        before = size()
        for i in range(1000):
            s.append(f"s-{i % 50}", [cairn.Event("T", {"pad": "x" * 200})])
        grown = size() - before
        # the events themselves take about 0.5 MB; a pinned snapshot costs several pages
        # (4 KiB each) per commit on top: about 16 MB here
        assert grown < 2 << 20, f"data.mdb grew {grown} bytes over 1000 commits"
        s.verify()
