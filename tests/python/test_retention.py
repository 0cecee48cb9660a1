"""Reclamation (docs/API.md section 6): removed events leave the file with every index entry,
their positions become holes that every reader, projection, subscription and verify
understands, the head never moves back, store.maintain() and `kill -9` in the middle.

The rules themselves (what is removed when): test_lifecycle.py.
"""

import os
import random
import signal
import time
import uuid

import pytest

import cairn

from conftest import make_events


def positions(it):
    return [e.position for e in it]


# ---------------------------------------------------------------------------------------
# Space
# ---------------------------------------------------------------------------------------

def test_a_store_with_retention_keeps_its_file_size_bounded(tmp_path):
    payload = "x" * 1000  # 1 KiB events
    sizes = {}
    for name, limit in (("without", None), ("with", 100)):
        with cairn.open(tmp_path / name, durability="none") as s:
            if limit:
                s.set_stream_metadata("log-1", max_count=limit)
            for i in range(20_000):
                s.append("log-1", [cairn.Event("Line", {"i": i, "p": payload})])
            assert len(list(s.read_stream("log-1"))) == (limit or 20_000)
            s.verify()
        sizes[name] = os.path.getsize(tmp_path / name / "data.mdb")
    print(f"\n20,000 appends of 1 KiB: data.mdb {sizes['without']:,} bytes without retention, "
          f"{sizes['with']:,} bytes with max_count=100")
    assert sizes["with"] * 20 < sizes["without"]
    assert sizes["with"] < 2 << 20


def test_maintain_reclaims_in_batches_and_frees_pages(store):
    store.append("big-1", make_events(10_000))
    store.append("keep-1", make_events(3))
    free_before = store.stat()["pages_free"]
    store.delete_stream("big-1")                     # reclaims 4,096 in its own commit
    seen = []
    rep = store.maintain(progress=lambda done, total: seen.append((done, total)))
    assert rep == {"streams": 1, "removed": 10_000 - 4096}
    assert seen and seen[-1] == (1, 1)
    assert store.maintain() == {"streams": 1, "removed": 0}
    assert store.stat()["pages_free"] > free_before
    assert [e.stream for e in store.read_all()] == ["keep-1"] * 3
    assert store.verify().events == 3 + 1              # keep-1 and the $StreamDeleted event


def test_maintain_arguments_and_modes(store_path):
    with cairn.open(store_path) as s:
        assert s.maintain() == {"streams": 0, "removed": 0}
        with pytest.raises(TypeError, match="progress"):
            s.maintain(progress=5)
        with pytest.raises(TypeError):
            s.maintain(5)

        def boom(done, total):
            raise RuntimeError("stop")
        s.append("a-1", make_events(2))
        s.set_stream_metadata("a-1", max_age=0)
        with pytest.raises(RuntimeError, match="stop"):
            s.maintain(progress=boom)
        assert list(s.read_stream("a-1")) == []      # the work was done all the same
        s.verify()
    with cairn.open(store_path, readonly=True) as s:
        with pytest.raises(PermissionError):
            s.maintain()
    s = cairn.open(store_path)
    s.close()
    with pytest.raises(cairn.StoreClosed):
        s.maintain()


# ---------------------------------------------------------------------------------------
# Indexes
# ---------------------------------------------------------------------------------------

def test_reclaimed_events_leave_every_index(store):
    comp_target = uuid.uuid4()
    old = [cairn.Event("Old", {"i": i}, tags=["t", "t", f"u{i}"],
                       metadata={"correlation_id": "c-1"}) for i in range(3)]
    old.append(cairn.Event("Undo", metadata={"compensates": str(comp_target)}))
    store.append("acct-1", old)
    store.append("other-1", [cairn.Event("Old", tags=["t"], metadata={"correlation_id": "c-1"})])
    store.append("acct-1", make_events(2, type="New", tags=["t"]))
    store.set_stream_metadata("acct-1", max_count=2)   # reclaims the first four now
    assert store.verify().events == 2 + 1 + 1
    for e in old:
        assert store.position_of(e.id) is None
    assert [e.stream for e in store.read_all(types="Old")] == ["other-1"]
    assert [e.type for e in store.read_all(categories="acct")] == ["New", "New"]
    assert [e.stream for e in store.read_all(tags="t")] == ["other-1", "acct-1", "acct-1"]
    assert list(store.read_all(tags="u1")) == []
    assert list(store.read_all(types="Undo")) == []
    # the ids are free again: an event copied back in is a new event
    r = store.append("acct-2", [old[0]])
    assert store.position_of(old[0].id) == r.position
    store.verify()


def test_retention_of_single_appends_in_the_index_tail(store):
    store.set_stream_metadata("s-1", max_count=1)
    for i in range(150):                   # single appends go to the index tail (64 at most)
        store.append("s-1", [cairn.Event("T", {"i": i}, tags=["x"])])
        store.append("o-1", [cairn.Event("T", {"i": i})])
        if i % 37 == 0:
            store.verify()
    assert [e.data for e in store.read_stream("s-1")] == [{"i": 149}]
    assert [e.data["i"] for e in store.read_all(tags="x")] == [149]
    assert len(list(store.read_all(streams="o-1", types="T"))) == 150
    store.verify()


def test_snapshots_of_a_stream_go_with_its_events(store):
    store.define_aggregate("acc", """return {
        init = function() return { n = 0 } end,
        apply = { ['*'] = function(s, e) s.n = s.n + 1 end },
        snapshot_every = 2 }""")
    store.append("acc-1", make_events(6))
    assert store.load("acc-1").state == {"n": 6}
    store.set_stream_metadata("acc-1", max_count=3)
    a = store.load("acc-1")
    assert (a.state, a.version, a.applied) == ({"n": 3}, 5, 3)
    store.verify()


# ---------------------------------------------------------------------------------------
# Holes
# ---------------------------------------------------------------------------------------

@pytest.fixture
def holey(store):
    """Positions 1..12; the events of gone-1 (every other position) and of the middle run
    4..6 of run-1 removed and reclaimed."""
    for i in range(3):
        store.append("gone-1", make_events(1))
        store.append("keep-1", make_events(1))
    store.append("run-1", make_events(3))                 # 7, 8, 9
    store.append("keep-1", make_events(3))                # 10, 11, 12
    store.delete_stream("gone-1")                         # 13: $StreamDeleted
    store.set_stream_metadata("run-1", max_count=None, truncate_before=3)  # 14: nothing more
    store.delete_stream("run-1")                          # 15
    return store


KEEP = [2, 4, 6, 10, 11, 12]


def test_reads_cross_holes_both_ways(holey):
    s = holey
    assert positions(s.read_all()) == KEEP
    assert positions(s.read_all(backwards=True)) == KEEP[::-1]
    assert positions(s.read_all(start=7)) == [10, 11, 12]
    assert positions(s.read_all(start=8, backwards=True)) == [6, 4, 2]
    assert positions(s.read_all(categories="keep")) == KEEP
    assert positions(s.read_all(streams=["keep-1", "$lifecycle"], backwards=True)) == \
        [15, 14, 13] + KEEP[::-1]
    paged, start = [], None                                # the paging loop of section 2
    while True:
        page = list(s.read_all(start, backwards=True, limit=2))
        if not page:
            break
        paged += page
        start = page[-1].position - 1
    assert positions(paged) == KEEP[::-1]
    for p in (1, 3, 5, 7, 8, 9):
        with pytest.raises(KeyError):
            s.get(p)
    assert s.get(15).type == "$StreamDeleted"
    assert s.verify().events == len(KEEP) + 3


def test_subscriptions_cross_holes(holey):
    with holey.subscribe(timeout=0) as sub:
        assert positions(sub) == KEEP
    with holey.subscribe(start=7, timeout=0) as sub:
        assert positions(sub) == [10, 11, 12]
    with holey.subscribe(name="n", timeout=0) as sub:
        assert positions(sub) == KEEP
    holey.append("keep-1", make_events(1))
    with holey.subscribe(name="n", timeout=0) as sub:
        assert positions(sub) == [16]


def test_projections_cross_holes(holey):
    holey.define_projection("count", """return {
        init = function() return { n = 0, last = 0 } end,
        apply = { ['*'] = function(s, e) s.n = s.n + 1; s.last = e.position end } }""")
    holey.run_projections()
    assert holey.projection("count").state() == {"n": len(KEEP), "last": 12}
    holey.projection("count").reset()
    holey.run_projections()
    assert holey.projection("count").state() == {"n": len(KEEP), "last": 12}


def test_the_head_stays_when_the_newest_events_are_removed(store_path):
    with cairn.open(store_path) as s:
        s.set_stream_metadata("tmp-1", max_age=1)           # position 1
        s.append("tmp-1", make_events(3))                   # 2..4: the newest
        last_ts = s.get(4).timestamp_ns
        time.sleep(1.1)
        assert s.maintain() == {"streams": 1, "removed": 3}
        assert s.head() == 4
        assert positions(s.read_all(streams="$lifecycle", backwards=True)) == [1]
        assert s.verify().head == 4
        assert s.stream_version("tmp-1") == 2
    with cairn.open(store_path) as s:
        assert s.head() == 4
        r = s.append("other-1", make_events(1))
        assert r.position == 5                              # positions are never reused
        assert s.get(5).timestamp_ns >= last_ts
        assert s.append("tmp-1", make_events(1)).version == 3
        for p in (2, 3, 4):
            with pytest.raises(KeyError):
                s.get(p)
        s.verify()


def test_max_age_is_reclaimed_at_the_next_write(store):
    store.set_stream_metadata("s-1", max_age=1)
    store.append("s-1", make_events(3))
    time.sleep(1.1)
    free = store.stat()["pages_free"]
    store.append("s-1", make_events(1))
    assert [e.version for e in store.read_stream("s-1")] == [3]
    assert store.maintain()["removed"] == 0                 # the write did it
    assert store.stat()["pages_free"] >= free
    store.verify()


def test_verify_while_events_are_reclaimed(store):
    """verify's counts pass compares index totals with the records its walk counted: events
    reclaimed meanwhile (by another thread here) are no damage; the check runs again."""
    import threading
    for k in range(200):
        store.append(f"s-{k}", make_events(50))
    done = threading.Event()

    def deleter():
        for k in range(200):
            store.delete_stream(f"s-{k}")
        done.set()
    t = threading.Thread(target=deleter)
    t.start()
    try:
        rounds = 0
        while not done.is_set() or rounds < 3:
            store.verify()
            rounds += 1
    finally:
        t.join()
    assert store.verify().events == 200   # the $StreamDeleted events


# ---------------------------------------------------------------------------------------
# kill -9: the effect and its $lifecycle event are both there or neither
# ---------------------------------------------------------------------------------------

def _killed_child(path, work, seconds):
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            with cairn.open(path, durability="none") as s:
                work(s)
        finally:
            os._exit(0)
    time.sleep(seconds)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _lifecycle_by_stream(s, type):
    return {e.data["stream"]: e.data for e in s.read_stream("$lifecycle") if e.type == type}


def test_kill_9_during_deletes(tmp_path):
    path = tmp_path / "store"
    rng = random.Random(13)
    for rnd in range(50):
        def work(s, rnd=rnd):
            for k in range(10**6):
                name = f"d-{rnd}-{k}"
                s.append(name, make_events(300 if k % 3 == 0 else 5))
                s.delete_stream(name, hard=k % 2 == 1)
        _killed_child(path, work, rng.uniform(0.02, 0.3))
        with cairn.open(path) as s:
            s.verify()
            deleted = _lifecycle_by_stream(s, "$StreamDeleted")
            for name in s.streams(f"d-{rnd}-"):
                if name in deleted:
                    if deleted[name]["hard"]:
                        with pytest.raises(cairn.StreamDeleted):
                            list(s.read_stream(name))
                    else:
                        assert list(s.read_stream(name)) == []
                        assert s.stream_metadata(name)["truncate_before"] == \
                            s.stream_version(name) + 1
                else:
                    assert len(list(s.read_stream(name))) == s.stream_version(name) + 1
                    assert s.stream_metadata(name)["truncate_before"] is None


def test_kill_9_during_retention(tmp_path):
    path = tmp_path / "store"
    rng = random.Random(6)
    with cairn.open(path) as s:
        s.set_stream_metadata("ret-1", max_count=10)
    for rnd in range(50):
        def work(s, rnd=rnd):
            for k in range(10**6):
                name = f"m-{rnd}-{k}"
                s.append(name, make_events(200))
                s.append("ret-1", make_events(k % 50 + 1))
                s.set_stream_metadata(name, max_count=k % 7 + 1)
                if k % 5 == 4:
                    s.maintain()
        _killed_child(path, work, rng.uniform(0.02, 0.3))
        with cairn.open(path) as s:
            s.verify()
            assert len(list(s.read_stream("ret-1"))) <= 10
            limited = _lifecycle_by_stream(s, "$StreamMetadataSet")
            for name in s.streams(f"m-{rnd}-"):
                m = s.stream_metadata(name)
                if name in limited:
                    assert m["max_count"] == limited[name]["max_count"]
                    assert len(list(s.read_stream(name))) == m["max_count"]
                else:
                    assert m["max_count"] is None
                    assert len(list(s.read_stream(name))) == 200
