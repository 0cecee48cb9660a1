"""The journal (`wal`, issue 15) as a Python user meets it: durable commits survive a crash and
are replayed by the next open, a clean close leaves the journal empty, and a store that needs
a replay but cannot be written is refused with nothing written.  The power-loss cases proper
are tests/c/test_wal.c and test_powerloss.py."""

import hashlib
import os
import shutil
import struct
import subprocess

import pytest

import cairn

REC_MAGIC = 0x43455243


def journal_records(path):
    """(generation of the newest valid header, txn ids of the records that follow it)."""
    with open(os.path.join(path, "wal"), "rb") as f:
        b = f.read()
    if len(b) < 8192:
        return None, []
    heads = []
    for at in (0, 4096):
        magic, version, gen, base = struct.unpack_from("<IIQQ", b, at)
        if magic == 0x4C415743 and version == 1:
            heads.append((gen, base))
    if not heads:
        return None, []
    gen, base = max(heads)
    at, txns = 8192, []
    while at + 24 <= len(b):
        magic, length, g, txn = struct.unpack_from("<IIQQ", b, at)
        if magic != REC_MAGIC or g != gen or txn != base + len(txns) + 1:
            break
        txns.append(txn)
        at += length
    return gen, txns


def crash_after_appends(path, n):
    """A child appends n events with durability full, one per call, and dies without closing."""
    pid = os.fork()
    if pid == 0:
        try:
            s = cairn.open(path)
            for i in range(n):
                s.append("a-1", [cairn.Event("T", {"i": i})])
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert status == 0


def test_durable_commits_after_a_crash_are_there_and_a_clean_close_empties_the_journal(tmp_path):
    path = str(tmp_path / "s")
    crash_after_appends(path, 10)
    _, txns = journal_records(path)
    assert len(txns) == 10  # the child journaled all ten, and no checkpoint came since
    with cairn.open(path) as s:  # alone: replays
        assert [e.data["i"] for e in s.read_stream("a-1")] == list(range(10))
        assert s.verify().events == 10
        s.append("a-1", [cairn.Event("T", {"i": 10})])
    assert journal_records(path)[1] == []  # a clean close checkpoints: nothing to replay
    with cairn.open(path, readonly=True) as s:
        assert s.stream_version("a-1") == 10


@pytest.fixture
def readonly_view(tmp_path):
    """A read-only bind mount of tmp_path/ro-src at tmp_path/ro (root and mount(8) needed)."""
    src, view = tmp_path / "ro-src", tmp_path / "ro"
    src.mkdir()
    view.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root and mount(8)")
    p = subprocess.run(["mount", "--bind", "-o", "ro", str(src), str(view)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {p.stderr.strip()}")
    # older kernels take "ro" only on a remount of the bind
    subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], capture_output=True)
    try:
        yield src, view
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)


def digest(path):
    h = hashlib.sha256()
    for name in sorted(os.listdir(path)):
        if name != "lock.mdb":
            with open(os.path.join(path, name), "rb") as f:
                h.update(name.encode() + f.read())
    return h.hexdigest()


def test_a_store_that_needs_a_replay_but_cannot_be_written_is_refused(readonly_view):
    src, view = readonly_view
    store = str(src / "s")
    crash_after_appends(store, 5)
    if not _really_readonly(view / "s"):
        pytest.skip("the bind mount is not read-only here")
    before = digest(store)
    with pytest.raises(PermissionError, match="open it once where it is writable"):
        cairn.open(str(view / "s"), readonly=True)
    assert digest(store) == before  # nothing written
    with cairn.open(store) as s:  # writable: replays, then the read-only view opens
        assert s.stream_version("a-1") == 4
    with cairn.open(str(view / "s"), readonly=True) as s:
        assert [e.data["i"] for e in s.read_stream("a-1")] == list(range(5))


def _really_readonly(d):
    try:
        with open(os.path.join(str(d), ".probe"), "wb"):
            pass
    except OSError:
        return True
    os.unlink(os.path.join(str(d), ".probe"))
    return False


def test_relaxed_and_none_commits_after_full_ones_leave_nothing_to_replay(tmp_path):
    """A commit without the journal checkpoints it first: its records could not be replayed
    past that commit."""
    path = str(tmp_path / "s")
    with cairn.open(path) as full, cairn.open(path, durability="none") as none:
        full.append("a-1", [cairn.Event("T")])
        assert len(journal_records(path)[1]) == 1
        none.append("a-1", [cairn.Event("T")])
        assert journal_records(path)[1] == []
        full.append("a-1", [cairn.Event("T")])
        assert len(journal_records(path)[1]) == 1
        assert full.stream_version("a-1") == 2


def _reader_that_wrote_once(path, stop_file, ready_file):
    """A process that made one durable commit (so it pinned a checkpoint), then only reads."""
    pid = os.fork()
    if pid == 0:
        try:
            import time
            s = cairn.open(path)
            s.append("once-1", [cairn.Event("T")])
            open(ready_file, "w").close()
            while not os.path.exists(stop_file):
                s.head()
                time.sleep(0.02)
        finally:
            os._exit(0)
    return pid


@pytest.mark.parametrize("with_reader", [False, True])
def test_a_process_that_wrote_once_does_not_keep_the_pages_others_free(tmp_path, with_reader):
    """The journal pins the snapshot of a process's last checkpoint; one that stays open after
    writing once drops it once other processes' checkpoints have left it 8 generations behind
    (on its reads), so their freed pages are reused: data.mdb stays small."""
    import time
    path = str(tmp_path / "s")
    cairn.open(path).close()
    stop, ready = str(tmp_path / "stop"), str(tmp_path / "ready")
    pid = _reader_that_wrote_once(path, stop, ready) if with_reader else None
    while pid and not os.path.exists(ready):
        time.sleep(0.01)
    with cairn.open(path) as s:
        for i in range(1500):
            s.append(f"a-{i}", [cairn.Event("T", {"i": i})])
            if i % 100 == 0:
                time.sleep(0.15)  # the reader reads meanwhile
    open(stop, "w").close()
    if pid:
        os.waitpid(pid, 0)
    size = os.path.getsize(os.path.join(path, "data.mdb"))
    # 1,500 commits of ~7 new pages each would be ~40 MiB if no freed page were reused
    assert size < 12 << 20, size
