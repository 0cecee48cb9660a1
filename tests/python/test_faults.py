"""I/O faults during appends (docs/reliability.md, "I/O faults").

Each case runs tests/faults/fault_child.py in a child Python process with
LD_PRELOAD=build/libcairn_faults.so, which fails the Nth fdatasync / pwrite / writev / mmap
(... ) on data.mdb with EIO or ENOSPC.  The child appends until the injected failure and
reports: the call raised (OSError or cairn.Error) with a message naming the error, nothing of
it is visible, the next append works (and whether that needed a reopen), verify() passes.
Then this process -- no shim, a fresh LMDB environment reading the file -- verifies the store
again.  Out of space for real: a 2 MiB tmpfs (skipped when mounting is not possible).

tests/faults/observe_child.py uses the shim to watch instead of break: the sync calls each
durability mode makes per commit, and timestamps while the wall clock steps back.
"""

import errno
import json
import os
import shutil
import subprocess
import uuid

import pytest

import cairn

from conftest import PYTHON, child_env

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SHIM = os.path.join(ROOT, "build", "libcairn_faults.so")
CHILD = os.path.join(ROOT, "tests", "faults", "fault_child.py")
OBSERVE = os.path.join(ROOT, "tests", "faults", "observe_child.py")

ERRTEXT = {"EIO": os.strerror(errno.EIO), "ENOSPC": os.strerror(errno.ENOSPC),
           "ENOMEM": os.strerror(errno.ENOMEM)}

needs_shim = pytest.mark.skipif(not os.path.exists(SHIM),
                                reason="build/libcairn_faults.so not built (make build)")


def run_child(store, call, err, nth, durability, preload=True, timeout=120, file="data.mdb"):
    env = child_env()
    if preload:
        env["LD_PRELOAD"] = SHIM
        env["CAIRN_FAULT_FILE"] = file
    p = subprocess.run([PYTHON, CHILD, str(store), call, err, str(nth), durability], env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"child died ({p.returncode}): {p.stderr[-3000:]}"
    return json.loads(p.stdout.strip().splitlines()[-1])


def fresh_verify(store):
    """A fresh environment in this process (no shim) finds the store sound."""
    with cairn.open(store, durability="none") as s:
        report = s.verify()
        head = s.head()
    assert report.head == head and report.events == head
    return report


def check_failed_cleanly(r, err):
    assert r["fired"] >= 1, r
    raised = r["raised"]
    assert raised is not None, f"the injected failure did not fail the append: {r}"
    assert raised["oserror"] or raised["cairn_error"], r
    assert ERRTEXT[err] in raised["message"], r  # the cause is named
    if r["unchanged"] is None:  # the environment refused to read: must have needed a reopen
        assert r["reopened"] and r["unchanged_after_reopen"], r
    else:
        assert r["unchanged"] and r["ids_absent"], r
    assert r["recovered"] and r["readback_ok"] and r["head_ok"], r
    assert r["verify"][0] == r["verify"][2], r


# (call, errno, nth, durability, file): every write path a commit takes on data.mdb and on
# the journal (wal).  A single-event commit here makes 1 writev (data pages) and 1 pwrite
# (meta page, or a lone data page) on data.mdb; relaxed adds 1 fdatasync of data.mdb; full
# instead writes its record to wal (1 pwrite) and flushes wal (1 fdatasync), and data.mdb is
# flushed only at checkpoints: the first full commit of a process, then every 32.  nth > 1
# reaches later calls (later appends); a fault in a checkpoint that follows a durable commit
# fails the next append (fault_child.py allows that once).
APPEND_CASES = [
    (call, err, 1, dur, "data.mdb")
    for call in ("fdatasync", "pwrite", "writev")
    for err in ("EIO", "ENOSPC")
    for dur in ("full", "relaxed")
] + [
    ("pwrite", "EIO", 1, "none", "data.mdb"), ("writev", "ENOSPC", 1, "none", "data.mdb"),
    ("fdatasync", "EIO", 2, "full", "data.mdb"), ("fdatasync", "EIO", 3, "full", "data.mdb"),
    ("pwrite", "ENOSPC", 2, "full", "data.mdb"), ("pwrite", "EIO", 3, "relaxed", "data.mdb"),
    ("writev", "EIO", 2, "full", "data.mdb"), ("writev", "ENOSPC", 3, "relaxed", "data.mdb"),
    ("fdatasync", "EIO", 1, "full", "wal"), ("fdatasync", "EIO", 2, "full", "wal"),
    ("fdatasync", "ENOSPC", 5, "full", "wal"), ("pwrite", "EIO", 1, "full", "wal"),
    ("pwrite", "ENOSPC", 20, "full", "wal"),
]


@needs_shim
@pytest.mark.parametrize("call,err,nth,durability,file", APPEND_CASES)
def test_append_fault(tmp_path, call, err, nth, durability, file):
    store = tmp_path / "store"
    r = run_child(store, call, err, nth, durability, file=file)
    check_failed_cleanly(r, err)
    report = fresh_verify(store)
    assert report.head == r["verify"][2]


@needs_shim
@pytest.mark.parametrize("err", ["EIO", "ENOMEM"])
def test_mmap_fault_at_open(tmp_path, err):
    """The map of data.mdb fails: open raises, nothing is written, the next open works."""
    store = tmp_path / "store"
    r = run_child(store, "open-mmap", err, 1, "full")
    assert r["fired"] == 1, r
    raised = r["raised"]
    assert raised is not None, r
    # ENOMEM from mmap is cairn's CAIRN_ENOMEM: MemoryError, as for any allocation failure
    assert raised["oserror"] or raised["cairn_error"] or \
        (err == "ENOMEM" and raised["type"] == "MemoryError"), r
    assert r["recovered"] and r["head_ok"], r
    fresh_verify(store)


@needs_shim
@pytest.mark.parametrize("err", ["EIO", "ENOSPC"])
def test_sync_fault(tmp_path, err):
    """store.sync() (durability "none") reports a failed fdatasync; a later sync works."""
    store = tmp_path / "store"
    r = run_child(store, "sync", err, 1, "none")
    assert r["fired"] == 1, r
    assert r["raised"] is not None and ERRTEXT[err] in r["raised"]["message"], r
    assert r["unchanged"] and r["recovered"], r
    fresh_verify(store)


@needs_shim
@pytest.mark.parametrize("call", ["fsync", "pwritev", "msync"])
def test_calls_not_on_the_write_path(tmp_path, call):
    """LMDB 0.9.24 as cairn opens it (no MDB_WRITEMAP) syncs with fdatasync, writes data pages
    with pwrite/writev and never calls fsync, pwritev or msync on data.mdb: a fault there
    cannot reach an append.  Documented here so that a change of flags shows up."""
    r = run_child(tmp_path / "store", call, "EIO", 1, "full")
    assert r["fired"] == 0 and r["raised"] is None, r
    fresh_verify(tmp_path / "store")


def observe(what, tmp_path, file="data.mdb"):
    """tests/faults/observe_child.py WHAT under the shim (counting the calls on `file`, ""
    for every file): what it saw, as a dict."""
    env = {**child_env(), "LD_PRELOAD": SHIM, "CAIRN_FAULT_FILE": file}
    p = subprocess.run([PYTHON, OBSERVE, what, str(tmp_path)], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, f"child died ({p.returncode}): {p.stderr[-3000:]}"
    return json.loads(p.stdout.strip().splitlines()[-1])


# What one commit flushes, per durability (docs/API.md section 2), as (data.mdb, wal): full
# writes its record to the journal and flushes that once (LMDB commits with MDB_NOSYNC; data.mdb
# is flushed at checkpoints only); relaxed (MDB_NOMETASYNC) syncs data.mdb's data and writes its
# meta page without a sync; none (MDB_NOSYNC) syncs nothing.  Never fsync or msync (no
# MDB_WRITEMAP), never an O_DSYNC write (LMDB's synchronous meta page is not used).
COMMIT_SYNCS = {"full": (0, 1), "relaxed": (1, 0), "none": (0, 0)}
NOTHING_ELSE = {"fsync": 0, "msync": 0, "dsync_writes": 0}
# Two handles taking turns (observe_child.TURNS): a commit of another durability after full
# ones checkpoints first (a data.mdb flush and the journal's new header: +1, +1), and so does
# the first full commit after them; the same durability again costs what it costs alone.
TURN_SYNCS = [("full", (0, 1)), ("full", (0, 1)), ("none", (1, 1)), ("none", (0, 0)),
              ("relaxed", (1, 0)), ("relaxed", (1, 0)), ("full", (1, 2)), ("relaxed", (2, 1)),
              ("none", (0, 0)), ("full", (1, 2))]


@needs_shim
def test_each_durability_makes_its_own_syncs_per_commit(tmp_path):
    seen = {}
    for f in ("data.mdb", "wal"):
        (tmp_path / f).mkdir()
        seen[f] = observe("syncs", tmp_path / f, file=f)
    for i, f in enumerate(("data.mdb", "wal")):
        for mode, want in COMMIT_SYNCS.items():
            r = seen[f][mode]
            one = {"fdatasync": want[i], **NOTHING_ELSE}
            assert r["single"] == [one] * 4, (f, mode, r)  # one-event appends: one commit each
            assert r["many"] == one, (f, mode, r)  # 50 events in one append: still one commit
            assert r["transaction"] == one, (f, mode, r)  # two streams, one commit
            # sync() flushes the data file once, whatever the handle's durability
            assert r["sync"] == {"fdatasync": 1 - i, **NOTHING_ELSE}, (f, mode, r)
        # two handles on one store share LMDB's environment (and its flags): each commit syncs
        # as the handle that makes it says, whatever the other did before
        assert seen[f]["turns"] == [[mode, {"fdatasync": want[i], **NOTHING_ELSE}]
                                    for mode, want in TURN_SYNCS], (f, seen[f]["turns"])


@needs_shim
def test_timestamps_stay_non_decreasing_when_the_wall_clock_steps_back(tmp_path):
    """Events appended while CLOCK_REALTIME reads an hour earlier than before get the last
    event's timestamp at least, in single appends, multi-event appends and transactions;
    once the clock is back they follow it again; verify() finds the order sound."""
    r = observe("clock", tmp_path)
    hour = 3600 * 10**9
    assert hour - 10**9 < r["python_clock_stepped"] < hour + 10**9, r  # the step happened
    ts = {p: t for p, _, t in r["events"]}
    before, during = r["head_before"], r["head_during"]
    assert during - before == 6 and r["head"] == during + 1, r
    order = [ts[p] for p in sorted(ts)]
    assert order == sorted(order), f"timestamps went back along positions: {r['events']}"
    for p in range(before + 1, during + 1):  # clamped, not an hour back, nor moved ahead
        assert ts[before] <= ts[p] < ts[before] + 10**9, (p, r["events"])
    assert ts[during + 1] > r["now"] - 60 * 10**9, r  # the clock's own time again
    assert r["verify"] == [10, 5, 10], r  # 10 events in 5 streams, no damage found


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("durability", ["full", "none"])
def test_out_of_space_tmpfs(small_tmpfs, durability):
    """A real full disk: every failed append leaves the store as it was; once space is freed
    the next append works; verify passes throughout and from a fresh process."""
    store = small_tmpfs / f"store-{uuid.uuid4().hex[:6]}"
    with open(str(store) + ".filler", "wb") as f:
        f.write(b"\0" * 300_000)
    r = run_child(store, "tmpfs", "ENOSPC", 0, durability, preload=False)
    first, second = r["rounds"]
    for rnd in (first, second):
        assert rnd["raised"] is not None, r
        # LMDB turns a short write into EIO; the message says the file system is full
        assert rnd["raised"]["oserror"] or rnd["raised"]["cairn_error"], r
        assert "full" in rnd["raised"]["message"], r
        assert rnd["unchanged"], r
        assert rnd["verify"][0] == rnd["verify"][2], r
    assert first.get("recovered") and first.get("readback_ok"), r
    report = fresh_verify(store)
    assert report.head == r["head"]
