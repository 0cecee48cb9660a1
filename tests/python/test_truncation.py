"""A truncated data.mdb (docs/reliability.md, "Truncated data.mdb").

A store holding every kind of record (single and batched appends, transactions, tags, large
events, an aggregate with snapshots, a partitioned projection, a durable subscription) is cut
at every page boundary below its size, and each copy is opened read-write and read-only in a
child process, so that a crash (LMDB touching a page past the end of the map: SIGBUS) is
counted as a failure instead of ending the suite.  Every open must either raise
CorruptionError and leave the file as it was, or -- when the cut took only pages nothing
reaches any more -- open a store that verifies and reads back whole.
"""

import os
import shutil
import subprocess

import pytest

import cairn

from conftest import PYTHON, child_env

PAGE = 4096

# Opens each (path, mode) given on stdin and prints one line per open, flushed, so that the
# parent knows which open a crash interrupted.
OPENER = """
import sys, cairn
for line in sys.stdin:
    path, mode = line.split()
    try:
        with cairn.open(path, readonly=mode == "ro") as s:
            s.verify()
            n = sum(1 for _ in s.read_all())
            print("whole" if n == s.head() else f"short {n} of {s.head()}", flush=True)
    except cairn.CorruptionError as e:
        print("corrupt", str(e).replace("\\n", " "), flush=True)
    except Exception as e:
        print("other", type(e).__name__, e, flush=True)
"""

BANK = """
return {
  init = function() return { n = 0 } end,
  apply = { Done = function(s, e) s.n = s.n + 1 end },
  decide = { Do = function(s, c) return {{ type = 'Done', data = { n = s.n } }} end },
  snapshot_every = 3,
}
"""
PARTS = """
return {
  partition = function(e) return e.stream end,
  init = function() return { n = 0 } end,
  apply = { ['*'] = function(s, e) s.n = s.n + 1 end },
}
"""


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    path = tmp_path_factory.mktemp("trunc") / "store"
    with cairn.open(path, durability="none") as s:
        s.define_aggregate("acct", BANK)
        s.define_projection("parts", PARTS)
        for i in range(200):
            s.append(f"a-{i % 7}", [cairn.Event("T", {"i": i, "pad": "y" * 300}, tags=["t"])])
        s.append("batch", [cairn.Event("B", {"i": i}) for i in range(200)])
        s.append("big", [cairn.Event("Big", {"s": "z" * 20000}) for _ in range(3)])
        with s.transaction() as t:
            t.append("tx-1", [cairn.Event("X", {})])
            t.append("tx-2", [cairn.Event("X", {})])
        for _ in range(7):
            s.execute("acct-1", "Do", {})
        s.run_projections()
        with s.subscribe(name="reader") as sub:
            for _, _ in zip(range(25), sub):
                pass
    return path


def open_all(jobs):
    """Runs the opener over `jobs` [(path, mode)], restarting it after a crash; returns one
    result per job: its output line, or "crash <rc> <stderr>"."""
    results = []
    while len(results) < len(jobs):
        rest = jobs[len(results):]
        r = subprocess.run([PYTHON, "-c", OPENER], input="".join(f"{p} {m}\n" for p, m in rest),
                           capture_output=True, text=True, env=child_env(), timeout=300)
        lines = r.stdout.splitlines()
        results += lines
        if len(lines) < len(rest):
            results.append(f"crash {r.returncode} {r.stderr[-300:]}")
    return results


def test_every_truncation_size_is_refused_or_whole(original, tmp_path):
    data = os.path.join(original, "data.mdb")
    full = os.path.getsize(data)
    assert full >= 80 * PAGE
    jobs, sizes = [], {}
    for size in range(PAGE, full, PAGE):
        path = tmp_path / f"cut-{size}"
        os.makedirs(path)
        with open(data, "rb") as src, open(path / "data.mdb", "wb") as dst:
            dst.write(src.read(size))
        sizes[str(path)] = size
        jobs += [(str(path), "rw"), (str(path), "ro")]
    results = open_all(jobs)
    bad = [(p, m, r) for (p, m), r in zip(jobs, results)
           if not (r.startswith("corrupt") or r == "whole")]
    assert not bad, f"{len(bad)} of {len(jobs)} opens: {bad[:4]}"
    refused = [(p, r) for (p, m), r in zip(jobs, results) if r.startswith("corrupt")]
    for p, r in refused:
        if sizes[p] >= 2 * PAGE:  # below two pages LMDB's own open says it
            assert "cut short or overwritten" in r and "page " in r, r
    for p, size in sizes.items():
        assert os.path.getsize(os.path.join(p, "data.mdb")) == size  # nothing written
    # both modes agree on every cut, and nearly every cut takes reachable pages
    assert all(results[i][:5] == results[i + 1][:5] for i in range(0, len(jobs), 2))
    assert len(refused) >= 0.8 * len(jobs)


def test_the_uncut_store_still_opens(original):
    with cairn.open(original, readonly=True) as s:
        assert s.head() == 200 + 200 + 3 + 2 + 7
        s.verify()


def test_a_store_cut_to_nothing_is_refused(original, tmp_path):
    # found by `make hostile`: a read-write open made a new, empty store of it (head 0, verify
    # clean), and a read-only one wrote 8 KiB of fresh meta pages before refusing
    path = tmp_path / "store"
    shutil.copytree(original, path)
    os.truncate(path / "data.mdb", 0)
    for readonly in (False, True):
        with pytest.raises(cairn.CorruptionError, match="cut to nothing"):
            cairn.open(path, readonly=readonly)
        assert os.path.getsize(path / "data.mdb") == 0


def test_an_unfinished_creation_is_completed_by_a_writer_only(tmp_path):
    # LMDB makes data.mdb before it writes the meta pages: a crash in between leaves an empty
    # file and no notify file; a read-write open makes the store, a read-only one writes nothing
    path = tmp_path / "store"
    os.makedirs(path)
    open(path / "data.mdb", "wb").close()
    with pytest.raises(FileNotFoundError, match="no store here"):
        cairn.open(path, readonly=True)
    assert os.path.getsize(path / "data.mdb") == 0
    with cairn.open(path) as s:
        s.append("a-1", [cairn.Event("T")])
    with cairn.open(path, readonly=True) as s:
        assert s.head() == 1


def _files(path):
    return {n: (path / n).read_bytes() for n in sorted(os.listdir(path))}


def test_a_new_stores_first_setup_is_smaller_than_any_store_holding_an_event(tmp_path):
    # the core takes a small data.mdb without a commit's meta page for a creation the power
    # cut (core/src/filecheck.c, cairn__file_unmade: at most 6 pages); a store holding an
    # event never is one, not even a backup's compacted copy of one event (7 pages; a backup
    # has no notify file), so it is never made afresh
    path = tmp_path / "store"
    cairn.open(path).close()
    assert os.path.getsize(path / "data.mdb") <= 6 * PAGE
    with cairn.open(path) as s:
        s.append("a-1", [cairn.Event("T")])
        s.backup(tmp_path / "copy")
    assert os.path.getsize(path / "data.mdb") > 6 * PAGE
    assert os.path.getsize(tmp_path / "copy" / "data.mdb") > 6 * PAGE
    assert not os.path.exists(tmp_path / "copy" / "notify")
    with open(tmp_path / "copy" / "data.mdb", "r+b") as f:  # both meta headers zeroed
        f.write(bytes(512))
        f.seek(PAGE)
        f.write(bytes(512))
    before = (tmp_path / "copy" / "data.mdb").read_bytes()
    for readonly in (False, True):
        with pytest.raises(cairn.CorruptionError):
            cairn.open(tmp_path / "copy", readonly=readonly)
        assert (tmp_path / "copy" / "data.mdb").read_bytes() == before


def test_meta_pages_of_a_set_up_store_lost_with_notify_there_are_refused(tmp_path):
    # a store just set up (4 pages) whose meta page 1 (the first commit's) was zeroed looks
    # like a creation the power cut -- but its notify file says a setup committed
    path = tmp_path / "store"
    cairn.open(path).close()
    with open(path / "data.mdb", "r+b") as f:
        f.seek(PAGE)
        f.write(bytes(512))
    before = _files(path)
    for readonly in (False, True):
        with pytest.raises(cairn.CorruptionError,
                           match="holds no meta page of a commit, but this directory held a "
                                 "store .its notify file is there."):
            cairn.open(path, readonly=readonly)
        assert _files(path) == before
    # without notify nothing tells it from a creation the power cut: made afresh
    os.unlink(path / "notify")
    with pytest.raises(FileNotFoundError, match="no store here"):
        cairn.open(path, readonly=True)
    with cairn.open(path) as s:
        assert s.head() == 0 and s.verify().events == 0


@pytest.mark.parametrize("notify", [True, False], ids=["notify", "no-notify"])
def test_a_store_of_events_whose_meta_pages_are_zeroed_is_refused(original, tmp_path, notify):
    # never made afresh, even without notify (a backup's copy has none): it is far larger
    # than a creation leaves data.mdb
    path = tmp_path / "store"
    shutil.copytree(original, path)
    with open(path / "data.mdb", "r+b") as f:
        f.write(bytes(2 * PAGE))
    if not notify:
        os.unlink(path / "notify")
    before = {n: b for n, b in _files(path).items() if n != "lock.mdb"}
    for readonly in (False, True):
        with pytest.raises(cairn.CorruptionError):
            cairn.open(path, readonly=readonly)
        assert {n: b for n, b in _files(path).items() if n != "lock.mdb"} == before
