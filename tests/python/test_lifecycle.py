"""Stream lifecycle (docs/API.md section 6): the reserved `$lifecycle` stream and the rules of
`$` streams, soft and hard deletes, retention limits enforced at read time.

Reclamation, holes, maintenance and crashes: test_retention.py.
"""

import contextlib
import time

import pytest

import cairn

from conftest import check_usable, dump, make_events


def lifecycle(store):
    return [(e.type, e.data) for e in store.read_stream("$lifecycle")]


def full_dump(store):
    """dump() plus what it skips: the `$` streams and every stream's limits."""
    names = list(store.streams()) + list(store.streams("$"))
    return (dump(store), lifecycle(store),
            {n: store.stream_metadata(n) for n in names})


@contextlib.contextmanager
def nothing_written(store):
    before = full_dump(store)
    yield
    assert full_dump(store) == before, "a failed call changed the store"
    check_usable(store)


def visible(store, stream):
    return [e.version for e in store.read_stream(stream)]


# ---------------------------------------------------------------------------------------
# `$` streams
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["$lifecycle", "$x", "$"])
def test_users_cannot_append_to_dollar_streams(store, name):
    store.append("s", make_events(1))
    with nothing_written(store), pytest.raises(ValueError, match="reserved"):
        store.append(name, make_events(1))
    with nothing_written(store), pytest.raises(ValueError, match="reserved"):
        with store.transaction() as tx:
            tx.append("s", make_events(1))
            tx.append(name, make_events(1))


def test_lifecycle_events_are_skipped_by_default_reads_unless_named(store):
    store.append("order-1", make_events(2, type="Placed"))
    store.delete_stream("order-1")
    store.append("order-2", make_events(1, type="Placed"))
    assert [e.stream for e in store.read_all()] == ["order-2"]
    assert [e.stream for e in store.read_all(backwards=True)] == ["order-2"]
    assert list(store.read_all(types="$StreamDeleted")) == []
    named = [e.type for e in store.read_all(streams="$lifecycle")]
    assert named == ["$StreamDeleted"]
    assert [e.type for e in store.read_all(categories=["$lifecycle"])] == ["$StreamDeleted"]
    assert [e.stream for e in store.read_all(streams=["$lifecycle", "order-2"])] == \
        ["$lifecycle", "order-2"]
    assert [e.type for e in store.read_all(streams="$lifecycle", types="$StreamDeleted")] == \
        ["$StreamDeleted"]
    with store.subscribe(timeout=0) as sub:
        assert [e.stream for e in sub] == ["order-2"]
    with store.subscribe(timeout=0, streams="$lifecycle") as sub:
        assert [e.type for e in sub] == ["$StreamDeleted"]


def test_streams_lists_dollar_streams_only_for_a_dollar_prefix(store):
    store.append("a-1", make_events(1))
    store.delete_stream("a-1")
    assert list(store.streams()) == ["a-1"]
    assert list(store.streams("$")) == ["$lifecycle"]
    assert list(store.streams("$life")) == ["$lifecycle"]
    assert list(store.streams("a")) == ["a-1"]


def test_get_returns_lifecycle_events_and_read_stream_reads_them(store):
    store.append("a-1", make_events(3))
    pos = store.delete_stream("a-1", hard=True)
    e = store.get(pos)
    assert (e.stream, e.type, e.version) == ("$lifecycle", "$StreamDeleted", 0)
    assert e.data == {"stream": "a-1", "hard": True, "version": 2}
    assert [x.position for x in store.read_stream("$lifecycle")] == [pos]
    assert store.stream_version("$lifecycle") == 0
    store.verify()


def test_projections_skip_dollar_streams_unless_their_source_names_them(store):
    count = "return { init = function() return { n = 0 } end, " \
            "apply = { ['*'] = function(s, e) s.n = s.n + 1 end }%s }"
    store.define_projection("all", count % "")
    store.define_projection("audit", count % ", source = { streams = { '$lifecycle' } }")
    store.append("a-1", make_events(2))
    store.delete_stream("a-1")
    store.append("b-1", make_events(1))
    store.run_projections()
    assert store.projection("audit").state() == {"n": 1}
    # the deleted stream's events are gone from a rebuild too
    store.projection("all").reset()
    store.run_projections()
    assert store.projection("all").state() == {"n": 1}


# ---------------------------------------------------------------------------------------
# Soft delete
# ---------------------------------------------------------------------------------------

def test_soft_delete_removes_the_events_from_every_read(store):
    store.append("order-1", make_events(3, type="Placed", tags=["t"]))
    store.append("other-1", make_events(1, type="Placed", tags=["t"]))
    pos = store.delete_stream("order-1")
    assert pos == 5 and store.head() == 5
    assert visible(store, "order-1") == []
    assert list(store.read_stream("order-1", backwards=True)) == []
    assert [e.stream for e in store.read_all()] == ["other-1"]
    for kw in ({"types": "Placed"}, {"categories": "order"}, {"streams": "order-1"},
               {"tags": ["t"]}):
        assert [e.stream for e in store.read_all(**kw)] in ([], ["other-1"])
        assert [e.stream for e in store.read_all(backwards=True, **kw)] in ([], ["other-1"])
    for p in (1, 2, 3):
        with pytest.raises(KeyError):
            store.get(p)
    with store.subscribe(timeout=0) as sub:
        assert [e.stream for e in sub] == ["other-1"]
    assert store.stream_version("order-1") == 2
    assert lifecycle(store) == [
        ("$StreamDeleted", {"stream": "order-1", "hard": False, "version": 2})]
    assert store.stream_metadata("order-1")["truncate_before"] == 3
    store.verify()


def test_soft_delete_continues_numbering_after_the_last_version(store):
    store.append("s-1", make_events(3))
    store.delete_stream("s-1")
    with nothing_written(store), pytest.raises(cairn.WrongExpectedVersion) as ei:
        store.append("s-1", make_events(1), expected_version=cairn.NO_STREAM)
    assert ei.value.actual == 2
    r = store.append("s-1", make_events(1), expected_version=cairn.STREAM_EXISTS)
    assert r.version == 3
    r = store.append("s-1", make_events(1), expected_version=3)
    assert r.version == 4
    assert visible(store, "s-1") == [3, 4]
    assert [e.version for e in store.read_stream("s-1", start=0)] == [3, 4]
    assert [e.version for e in store.read_stream("s-1", backwards=True)] == [4, 3]
    assert [e.version for e in store.read_stream("s-1", start=2, backwards=True)] == []


def test_delete_checks_expected_version_against_the_last_version(store):
    store.append("s-1", make_events(2))
    with nothing_written(store), pytest.raises(cairn.WrongExpectedVersion) as ei:
        store.delete_stream("s-1", expected_version=0)
    assert (ei.value.expected, ei.value.actual, ei.value.stream) == (0, 1, "s-1")
    with nothing_written(store), pytest.raises(cairn.WrongExpectedVersion):
        store.delete_stream("s-1", expected_version=cairn.NO_STREAM)
    store.delete_stream("s-1", expected_version=cairn.STREAM_EXISTS)
    # deleted again: the kept version is what expected_version is checked against
    with nothing_written(store), pytest.raises(cairn.WrongExpectedVersion):
        store.delete_stream("s-1", expected_version=cairn.NO_STREAM)
    store.delete_stream("s-1", expected_version=1)
    assert [t for t, _ in lifecycle(store)] == ["$StreamDeleted"] * 2


def test_soft_delete_of_a_stream_without_events_writes_its_event(store):
    store.delete_stream("never-1")
    assert lifecycle(store) == [
        ("$StreamDeleted", {"stream": "never-1", "hard": False, "version": -1})]
    assert store.append("never-1", make_events(1), expected_version=cairn.NO_STREAM).version == 0
    assert visible(store, "never-1") == [0]


def test_load_sees_only_the_events_that_remain(store):
    store.define_aggregate("acc", """return {
        init = function() return { n = 0 } end,
        apply = { ['*'] = function(s, e) s.n = s.n + e.data.i + 1 end },
        snapshot_every = 1 }""")
    store.append("acc-1", make_events(3))          # n = 1 + 2 + 3
    assert store.load("acc-1").state == {"n": 6}
    store.delete_stream("acc-1")
    a = store.load("acc-1")
    assert a.state == {"n": 0} and a.version == 2
    store.append("acc-1", make_events(1))
    assert store.load("acc-1").state == {"n": 1}


# ---------------------------------------------------------------------------------------
# Hard delete
# ---------------------------------------------------------------------------------------

def test_hard_delete_is_a_tombstone(store):
    store.append("s-1", make_events(2))
    store.append("s-2", make_events(1))
    store.delete_stream("s-1", hard=True)
    with pytest.raises(cairn.StreamDeleted) as ei:
        list(store.read_stream("s-1"))
    assert ei.value.stream == "s-1" and isinstance(ei.value, cairn.Error)
    with pytest.raises(cairn.StreamDeleted):
        list(store.read_stream("s-1", backwards=True))
    for exp in (cairn.ANY, cairn.NO_STREAM, cairn.STREAM_EXISTS, 1, 5):
        with nothing_written(store), pytest.raises(cairn.StreamDeleted) as ei:
            store.append("s-1", make_events(1), expected_version=exp)
        assert ei.value.stream == "s-1"
    with nothing_written(store), pytest.raises(cairn.StreamDeleted) as ei:
        with store.transaction() as tx:
            tx.append("s-2", make_events(1))
            tx.append("s-1", make_events(1))
    assert ei.value.stream == "s-1"
    with nothing_written(store), pytest.raises(cairn.StreamDeleted):
        store.delete_stream("s-1")
    with nothing_written(store), pytest.raises(cairn.StreamDeleted):
        store.delete_stream("s-1", hard=True)
    with nothing_written(store), pytest.raises(cairn.StreamDeleted):
        store.set_stream_metadata("s-1", max_count=5)
    assert store.stream_version("s-1") == 1
    assert "s-1" not in {e.stream for e in store.read_all()}
    assert list(store.read_all(streams="s-1")) == []
    with pytest.raises(KeyError):
        store.get(1)
    assert lifecycle(store) == [
        ("$StreamDeleted", {"stream": "s-1", "hard": True, "version": 1})]
    store.verify()


def test_hard_delete_of_a_soft_deleted_stream_and_of_an_unused_name(store):
    store.append("s-1", make_events(1))
    store.delete_stream("s-1")
    store.delete_stream("s-1", hard=True)
    with pytest.raises(cairn.StreamDeleted):
        store.append("s-1", make_events(1))
    store.delete_stream("unused-1", hard=True)
    with nothing_written(store), pytest.raises(cairn.StreamDeleted):
        store.append("unused-1", make_events(1), expected_version=cairn.NO_STREAM)
    with pytest.raises(cairn.StreamDeleted):
        list(store.read_stream("unused-1"))
    assert store.stream_version("unused-1") == -1


def test_load_and_execute_of_a_hard_deleted_stream_raise(store):
    store.define_aggregate("acc", """return { apply = {},
        decide = { Go = function(s, c) return { { type = 'Went' } } end } }""")
    store.append("acc-1", make_events(1))
    store.delete_stream("acc-1", hard=True)
    with pytest.raises(cairn.StreamDeleted):
        store.load("acc-1")
    with nothing_written(store), pytest.raises(cairn.StreamDeleted):
        store.execute("acc-1", "Go")


def test_the_tombstone_survives_reopening(store_path):
    with cairn.open(store_path) as s:
        s.append("s-1", make_events(1))
        s.delete_stream("s-1", hard=True)
    with cairn.open(store_path) as s:
        with pytest.raises(cairn.StreamDeleted):
            s.append("s-1", make_events(1))
    with cairn.open(store_path, readonly=True) as s:
        with pytest.raises(cairn.StreamDeleted):
            list(s.read_stream("s-1"))


# ---------------------------------------------------------------------------------------
# Bad input to delete_stream and set_stream_metadata
# ---------------------------------------------------------------------------------------

BAD_DELETES = [
    ("dollar", ("$lifecycle",), {}, ValueError, "reserved"),
    ("empty", ("",), {}, ValueError, "stream"),
    ("nul", ("a\0b",), {}, ValueError, "stream"),
    ("int-stream", (5,), {}, TypeError, "stream"),
    ("bad-expected", ("s-1",), {"expected_version": -3}, ValueError, "expected_version"),
    ("bool-expected", ("s-1",), {"expected_version": True}, TypeError, "expected_version"),
    ("hard-int", ("s-1",), {"hard": 1}, TypeError, "hard"),
    ("positional-hard", ("s-1", cairn.ANY), {}, TypeError, "positional"),
]


@pytest.mark.parametrize("args, kw, exc, match", [b[1:] for b in BAD_DELETES],
                         ids=[b[0] for b in BAD_DELETES])
def test_bad_delete_raises_and_writes_nothing(store, args, kw, exc, match):
    store.append("s-1", make_events(1))
    with nothing_written(store), pytest.raises(exc, match=match):
        store.delete_stream(*args, **kw)


BAD_LIMITS = [
    ("max_count-0", {"max_count": 0}, ValueError, "max_count"),
    ("max_count-negative", {"max_count": -1}, ValueError, "max_count"),
    ("max_count-float", {"max_count": 2.0}, TypeError, "max_count"),
    ("max_count-bool", {"max_count": True}, TypeError, "max_count"),
    ("max_age-negative", {"max_age": -1}, ValueError, "max_age"),
    ("max_age-float", {"max_age": 1.5}, TypeError, "max_age"),
    ("max_age-str", {"max_age": "60"}, TypeError, "max_age"),
    ("truncate_before-negative", {"truncate_before": -1}, ValueError, "truncate_before"),
    ("truncate_before-huge-negative", {"truncate_before": -2**70}, ValueError,
     "truncate_before"),
    ("unknown", {"max_size": 3}, TypeError, "max_size"),
]


@pytest.mark.parametrize("kw, exc, match", [b[1:] for b in BAD_LIMITS],
                         ids=[b[0] for b in BAD_LIMITS])
def test_bad_stream_metadata_raises_and_writes_nothing(store, kw, exc, match):
    store.append("s-1", make_events(3))
    with nothing_written(store), pytest.raises(exc, match=match):
        store.set_stream_metadata("s-1", **kw)
    assert visible(store, "s-1") == [0, 1, 2]


def test_stream_metadata_of_a_dollar_stream_is_readable_but_not_settable(store):
    assert store.stream_metadata("$lifecycle") == \
        {"max_count": None, "max_age": None, "truncate_before": None}
    with nothing_written(store), pytest.raises(ValueError, match="reserved"):
        store.set_stream_metadata("$lifecycle", max_count=1)


def test_lifecycle_calls_on_a_readonly_or_closed_store(store_path):
    with cairn.open(store_path) as s:
        s.append("s-1", make_events(1))
    with cairn.open(store_path, readonly=True) as s:
        with pytest.raises(PermissionError):
            s.delete_stream("s-1")
        with pytest.raises(PermissionError):
            s.set_stream_metadata("s-1", max_count=1)
        assert s.stream_metadata("s-1")["max_count"] is None
    s = cairn.open(store_path)
    s.close()
    for call in (lambda: s.delete_stream("s-1"), lambda: s.stream_metadata("s-1"),
                 lambda: s.set_stream_metadata("s-1")):
        with pytest.raises(cairn.StoreClosed):
            call()


# ---------------------------------------------------------------------------------------
# Retention limits at read time
# ---------------------------------------------------------------------------------------

def test_set_stream_metadata_writes_its_event_and_sets_all_three(store):
    store.append("s-1", make_events(5))
    pos = store.set_stream_metadata("s-1", max_count=3, truncate_before=1)
    assert store.get(pos).data == {"stream": "s-1", "version": 4, "max_count": 3,
                                   "max_age": None, "truncate_before": 1}
    assert store.stream_metadata("s-1") == \
        {"max_count": 3, "max_age": None, "truncate_before": 1}
    store.set_stream_metadata("s-1", max_age=3600)           # the others: no limit now
    assert store.stream_metadata("s-1") == \
        {"max_count": None, "max_age": 3600, "truncate_before": None}
    assert store.stream_metadata("unknown-1") == \
        {"max_count": None, "max_age": None, "truncate_before": None}
    assert [t for t, _ in lifecycle(store)] == ["$StreamMetadataSet"] * 2


def test_max_count_keeps_the_newest_events_on_every_read(store):
    store.append("s-1", make_events(5, type="T", tags=["x"]))
    store.set_stream_metadata("s-1", max_count=2)
    assert visible(store, "s-1") == [3, 4]
    assert [e.version for e in store.read_all()] == [3, 4]
    assert [e.version for e in store.read_all(types="T", backwards=True)] == [4, 3]
    assert [e.version for e in store.read_all(tags="x")] == [3, 4]
    store.append("s-1", make_events(1, type="T"))
    assert visible(store, "s-1") == [4, 5]
    with pytest.raises(KeyError):
        store.get(4)
    assert store.get(5).version == 4


def test_truncate_before_and_limits_set_before_the_first_event(store):
    store.set_stream_metadata("s-1", truncate_before=2)
    assert store.stream_version("s-1") == -1
    assert list(store.streams()) == []
    store.append("s-1", make_events(4), expected_version=cairn.NO_STREAM)
    assert visible(store, "s-1") == [2, 3]
    assert [e.version for e in store.read_stream("s-1", start=1)] == [2, 3]
    assert [e.version for e in store.read_stream("s-1", start=3, backwards=True)] == [3, 2]


def test_lowering_a_limit_never_brings_removed_events_back(store):
    store.append("s-1", make_events(5))
    store.set_stream_metadata("s-1", max_count=1)
    store.set_stream_metadata("s-1", max_count=None)
    assert visible(store, "s-1") == [4]
    store.set_stream_metadata("s-1", truncate_before=3)
    store.set_stream_metadata("s-1", truncate_before=0)
    assert visible(store, "s-1") == [4]


def test_max_age_hides_old_events_at_read_time(store):
    store.append("s-1", make_events(2))
    store.set_stream_metadata("s-1", max_age=1)
    assert visible(store, "s-1") == [0, 1]
    time.sleep(1.1)
    store.append("s-1", make_events(1))
    assert visible(store, "s-1") == [2]
    assert [e.version for e in store.read_all()] == [2]
    store.set_stream_metadata("s-1", max_age=0)
    assert visible(store, "s-1") == []
    store.set_stream_metadata("s-1", max_age=None)   # removed stays removed
    assert visible(store, "s-1") == []
    store.append("s-1", make_events(1))
    assert visible(store, "s-1") == [3]


@pytest.mark.parametrize("n", [1, 16, 17, 300])
def test_reads_over_the_log_apply_every_streams_limits(store, n):
    """Events hidden at read time (max_age, nothing reclaimed yet) in reads over the log: a
    few streams with limits are all read at the start of a read; more are looked up (and
    remembered) stream by stream; names past 480 bytes are keyed by a digest."""
    names = [f"s-{k}" for k in range(n)] + ["L" * 600 + "-1"]
    for name in names:
        store.append(name, make_events(3))
    store.append("free-1", make_events(2))
    for name in names:
        store.set_stream_metadata(name, max_age=1)
    time.sleep(1.1)
    for name in names[: n // 2]:                        # their old events are reclaimed
        store.append(name, make_events(1))
    got = {}
    for e in store.read_all():
        got.setdefault(e.stream, []).append(e.version)
    for i, name in enumerate(names):
        assert got.get(name) == ([3] if i < n // 2 else None)
    assert got["free-1"] == [0, 1]
    assert list(store.read_all(streams=names[-1])) == []
    assert [e.stream for e in store.read_all(backwards=True, limit=1)] == \
        [names[n // 2 - 1] if n > 1 else "free-1"]
    store.verify()
