"""Reading: one stream and the global log in both directions with start and limit,
read_all filters alone and combined, get, the stream listing, RecordedEvent fields,
iterators that idle, are abandoned or overlap with writes, verify and sync."""

import datetime
import gc
import json
import os
import random
import sys
import time
import tracemalloc
import uuid

import pytest

import cairn
from conftest import check_usable, make_events, nothing_written


def positions(it):
    return [e.position for e in it]


def versions(it):
    return [e.version for e in it]


# ---------------------------------------------------------------------------------------
# read_stream
# ---------------------------------------------------------------------------------------

@pytest.fixture
def ten(store):
    """Stream "s" with versions 0..9 at positions 2,4,..,20 interleaved with stream "o"."""
    for _ in range(10):
        store.append("o", make_events(1))
        store.append("s", make_events(1))
    return store


def test_read_stream_forward_from_start(ten):
    got = list(ten.read_stream("s"))
    assert versions(got) == list(range(10))
    assert positions(got) == list(range(2, 21, 2))
    assert all(e.stream == "s" for e in got)


def test_read_stream_start_is_inclusive(ten):
    assert versions(ten.read_stream("s", 3)) == list(range(3, 10))
    assert versions(ten.read_stream("s", start=0)) == list(range(10))
    assert versions(ten.read_stream("s", start=9)) == [9]
    assert versions(ten.read_stream("s", start=10)) == []
    assert versions(ten.read_stream("s", start=1000)) == []


def test_read_stream_limit(ten):
    assert versions(ten.read_stream("s", limit=3)) == [0, 1, 2]
    assert versions(ten.read_stream("s", 4, limit=2)) == [4, 5]
    assert versions(ten.read_stream("s", 8, limit=5)) == [8, 9]
    assert versions(ten.read_stream("s", limit=100)) == list(range(10))


def test_read_stream_limit_zero_yields_nothing(ten):
    assert list(ten.read_stream("s", limit=0)) == []
    assert list(ten.read_stream("s", backwards=True, limit=0)) == []


def test_read_stream_backwards(ten):
    assert versions(ten.read_stream("s", backwards=True)) == list(range(9, -1, -1))
    assert versions(ten.read_stream("s", start=None, backwards=True)) == list(range(9, -1, -1))
    assert versions(ten.read_stream("s", 4, backwards=True)) == [4, 3, 2, 1, 0]
    assert versions(ten.read_stream("s", 0, backwards=True)) == [0]
    assert versions(ten.read_stream("s", 7, backwards=True, limit=3)) == [7, 6, 5]
    assert versions(ten.read_stream("s", backwards=True, limit=1)) == [9]
    assert positions(ten.read_stream("s", backwards=True, limit=2)) == [20, 18]


def test_read_stream_backwards_from_beyond_the_end_starts_at_the_last(ten):
    assert versions(ten.read_stream("s", 50, backwards=True, limit=2)) == [9, 8]


def test_nonexistent_stream_reads_empty(store):
    assert list(store.read_stream("nope")) == []
    assert list(store.read_stream("nope", backwards=True)) == []
    assert list(store.read_stream("nope", 5, limit=3)) == []
    store.append("nope-1", make_events(1))
    assert list(store.read_stream("nope")) == []
    assert list(store.read_stream("nope-")) == []


def test_read_stream_does_not_see_streams_sharing_a_prefix(store):
    store.append("ab", make_events(1))
    store.append("a", make_events(2))
    store.append("abc", make_events(3))
    assert [e.stream for e in store.read_stream("a")] == ["a", "a"]
    assert [e.stream for e in store.read_stream("ab", backwards=True)] == ["ab"]
    assert len(list(store.read_stream("abc", backwards=True))) == 3


def test_read_stream_many_events_crosses_refills(store):
    for i in range(5):
        store.append("big", make_events(500))
        store.append("other", make_events(7))
    assert versions(store.read_stream("big")) == list(range(2500))
    assert versions(store.read_stream("big", backwards=True)) == list(range(2499, -1, -1))
    assert versions(store.read_stream("big", 1234, limit=1000)) == list(range(1234, 2234))


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        ({"stream": 5}, TypeError),
        ({"stream": None}, TypeError),
        ({"stream": b"s"}, TypeError),
        ({"stream": "s", "start": "1"}, TypeError),
        ({"stream": "s", "start": 1.0}, TypeError),
        ({"stream": "s", "start": -2}, ValueError),
        ({"stream": "s", "limit": -1}, ValueError),
        ({"stream": "s", "limit": "3"}, TypeError),
    ],
    ids=lambda v: repr(v),
)
def test_read_stream_bad_arguments(ten, kwargs, exc):
    with nothing_written(ten), pytest.raises(exc):
        list(ten.read_stream(**kwargs))


# ---------------------------------------------------------------------------------------
# read_all
# ---------------------------------------------------------------------------------------

def test_read_all_forward(ten):
    got = list(ten.read_all())
    assert positions(got) == list(range(1, 21))
    assert [e.stream for e in got[:4]] == ["o", "s", "o", "s"]


def test_read_all_start_is_inclusive(ten):
    assert positions(ten.read_all(5)) == list(range(5, 21))
    assert positions(ten.read_all(start=20)) == [20]
    assert positions(ten.read_all(start=21)) == []
    assert positions(ten.read_all(start=1)) == list(range(1, 21))
    assert positions(ten.read_all(start=None)) == list(range(1, 21))


def test_read_all_resume_from_checkpoint(ten):
    seen = positions(ten.read_all(limit=7))
    checkpoint = seen[-1]
    rest = positions(ten.read_all(start=checkpoint + 1))
    assert seen + rest == list(range(1, 21))


def test_read_all_backwards(ten):
    assert positions(ten.read_all(backwards=True)) == list(range(20, 0, -1))
    assert positions(ten.read_all(None, backwards=True, limit=3)) == [20, 19, 18]
    assert positions(ten.read_all(5, backwards=True)) == [5, 4, 3, 2, 1]
    assert positions(ten.read_all(1, backwards=True)) == [1]
    assert positions(ten.read_all(12, backwards=True, limit=2)) == [12, 11]


def test_read_all_backwards_from_beyond_head_starts_at_head(ten):
    assert positions(ten.read_all(100, backwards=True, limit=2)) == [20, 19]


def test_read_all_limit(ten):
    assert positions(ten.read_all(limit=1)) == [1]
    assert positions(ten.read_all(3, limit=4)) == [3, 4, 5, 6]
    assert positions(ten.read_all(limit=1000)) == list(range(1, 21))


def test_read_all_limit_zero_yields_nothing(ten):
    assert list(ten.read_all(limit=0)) == []
    assert list(ten.read_all(backwards=True, limit=0)) == []
    assert list(ten.read_all(types="Tested", limit=0)) == []


def test_read_all_start_zero_is_the_first_event_forwards_and_nothing_backwards(ten):
    # position 0 is before the first event; only start=None means "from the end"
    assert positions(ten.read_all(0)) == list(range(1, 21))
    assert positions(ten.read_all(0, backwards=True, limit=2)) == []
    assert positions(ten.read_all(None, backwards=True, limit=2)) == [20, 19]


def test_read_all_on_empty_store(store):
    assert list(store.read_all()) == []
    assert list(store.read_all(backwards=True)) == []
    assert list(store.read_all(1, limit=5)) == []


def test_read_all_many_events_crosses_refills(store):
    for i in range(6):
        store.append(f"s-{i}", make_events(700))
    assert positions(store.read_all()) == list(range(1, 4201))
    assert positions(store.read_all(backwards=True)) == list(range(4200, 0, -1))
    assert positions(store.read_all(1000, limit=2000)) == list(range(1000, 3000))


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        ({"start": "1"}, TypeError),
        ({"start": 1.5}, TypeError),
        ({"start": -1}, ValueError),
        ({"limit": -1}, ValueError),
        ({"limit": 1.0}, TypeError),
        ({"types": 5}, TypeError),
        ({"types": [5]}, TypeError),
        ({"types": ["A", None]}, TypeError),
        ({"types": b"A"}, TypeError),
        ({"categories": 1}, TypeError),
        ({"categories": [b"x"]}, TypeError),
        ({"streams": [1]}, TypeError),
        ({"streams": object()}, TypeError),
        ({"tags": [None]}, TypeError),
        ({"tags": 3.0}, TypeError),
    ],
    ids=lambda v: repr(v),
)
def test_read_all_bad_arguments(ten, kwargs, exc):
    with nothing_written(ten), pytest.raises(exc):
        list(ten.read_all(**kwargs))


def test_read_all_arguments_after_start_are_keyword_only(ten):
    with pytest.raises(TypeError):
        ten.read_all(1, True)


# ---------------------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------------------

#   pos stream      type        tags
DATA = [
    ("account-1", "Opened", ("a", "x")),        # 1
    ("account-2", "Opened", ("a",)),            # 2
    ("order-1", "Placed", ("x",)),              # 3
    ("account-1", "Deposited", ("a", "x", "y")),  # 4
    ("order-1", "Paid", ("y",)),                # 5
    ("account-2", "Deposited", ()),             # 6
    ("accounting", "Opened", ("a", "y")),       # 7  category "accounting", not "account"
    ("order-2-x", "Placed", ("x", "y")),        # 8  category "order"
    ("account", "Opened", ()),                  # 9  no "-": its own category "account"
]


@pytest.fixture
def data_store(store):
    for stream, type_, tags in DATA:
        store.append(stream, [cairn.Event(type_, {"s": stream}, tags=list(tags))])
    return store


class GenOf(list):
    """A filter value that each test passes as a fresh generator."""


def materialize(filt):
    return {k: ((x for x in v) if isinstance(v, GenOf) else v) for k, v in filt.items()}


FILTERS = [
    ({"types": "Opened"}, [1, 2, 7, 9]),
    ({"types": ["Opened"]}, [1, 2, 7, 9]),
    ({"types": ("Paid", "Placed")}, [3, 5, 8]),
    ({"types": {"Paid"}}, [5]),
    ({"types": GenOf(["Paid", "Deposited"])}, [4, 5, 6]),
    ({"types": ["Nope"]}, []),
    ({"categories": "account"}, [1, 2, 4, 6, 9]),
    ({"categories": ["order"]}, [3, 5, 8]),
    ({"categories": ["accounting"]}, [7]),
    ({"categories": ["account", "accounting"]}, [1, 2, 4, 6, 7, 9]),
    ({"categories": ["acc"]}, []),
    ({"categories": ["order-1"]}, []),
    ({"streams": "order-1"}, [3, 5]),
    ({"streams": ["account-2", "accounting"]}, [2, 6, 7]),
    ({"streams": ["account"]}, [9]),
    ({"streams": ["order"]}, []),
    ({"tags": "x"}, [1, 3, 4, 8]),
    ({"tags": ["a", "x"]}, [1, 4]),
    ({"tags": ("x", "y")}, [4, 8]),
    ({"tags": ["a", "x", "y"]}, [4]),
    ({"tags": ["z"]}, []),
    ({"types": "Opened", "categories": "account"}, [1, 2, 9]),
    ({"types": ["Opened", "Placed"], "tags": "x"}, [1, 3, 8]),
    ({"categories": "account", "tags": "a"}, [1, 2, 4]),
    ({"streams": ["account-1", "order-1"], "types": ["Deposited", "Paid"]}, [4, 5]),
    ({"types": "Opened", "categories": "account", "streams": "account-2", "tags": "a"}, [2]),
    ({"types": "Opened", "streams": "order-1"}, []),
    ({"types": None, "categories": None, "streams": None, "tags": None},
     [1, 2, 3, 4, 5, 6, 7, 8, 9]),
]


@pytest.mark.parametrize("filt, want", FILTERS, ids=[repr(f[0]) for f in FILTERS])
def test_read_all_filters(data_store, filt, want):
    got = list(data_store.read_all(**materialize(filt)))
    assert positions(got) == want


@pytest.mark.parametrize("filt, want", FILTERS, ids=[repr(f[0]) for f in FILTERS])
def test_read_all_filters_backwards_with_start_and_limit(data_store, filt, want):
    def read(*args, **kw):
        return positions(data_store.read_all(*args, **kw, **materialize(filt)))

    assert read(backwards=True) == want[::-1]
    assert read(4) == [p for p in want if p >= 4]
    assert read(5, backwards=True) == [p for p in reversed(want) if p <= 5]
    assert read(limit=2) == want[:2]
    assert read(2, limit=1) == [p for p in want if p >= 2][:1]
    assert read(None, backwards=True, limit=1) == want[::-1][:1]


def test_long_filter_lists(data_store):
    names = [f"nope-{i}" for i in range(1000)] + ["order-1"]
    assert positions(data_store.read_all(streams=names)) == [3, 5]
    assert positions(data_store.read_all(types=[f"T{i}" for i in range(500)] + ["Paid"])) == [5]


def test_raw_reads_return_the_stored_events(data_store):
    def key(e):
        return (e.position, e.type, e.data, e.schema)

    assert [key(e) for e in data_store.read_all(raw=True)] == [
        key(e) for e in data_store.read_all()]
    assert [key(e) for e in data_store.read_stream("order-1", raw=True)] == [
        key(e) for e in data_store.read_stream("order-1")]


def test_filter_over_many_events_finds_sparse_matches(store):
    for i in range(30):
        store.append(f"noise-{i}", make_events(100))
        if i % 10 == 9:
            store.append("rare-1", [cairn.Event("Rare", i, tags=["r"])])
    got = list(store.read_all(types="Rare"))
    assert [e.data for e in got] == [9, 19, 29]
    assert positions(store.read_all(tags="r", backwards=True)) == positions(got)[::-1]
    assert positions(store.read_all(categories="rare", limit=2)) == positions(got)[:2]


def test_category_of_a_stream_is_the_part_before_the_first_dash(store):
    for s in ["user-1", "user-1-a", "user", "user-", "-x", "users-1"]:
        store.append(s, make_events(1))
    assert [e.stream for e in store.read_all(categories="user")] == [
        "user-1", "user-1-a", "user", "user-"]
    assert [e.stream for e in store.read_all(categories="users")] == ["users-1"]


# ---------------------------------------------------------------------------------------
# get
# ---------------------------------------------------------------------------------------

def test_get_returns_the_event_at_a_position(ten):
    for p in (1, 2, 11, 20):
        e = ten.get(p)
        assert isinstance(e, cairn.RecordedEvent)
        assert e.position == p
    assert ten.get(4).stream == "s" and ten.get(4).version == 1


@pytest.mark.parametrize("p", [0, 21, 10**6, 2**64 - 1])
def test_get_missing_position_raises_key_error(ten, p):
    with nothing_written(ten), pytest.raises(KeyError):
        ten.get(p)


def test_get_on_empty_store_raises_key_error(store):
    with pytest.raises(KeyError):
        store.get(1)


@pytest.mark.parametrize("p, exc", [("1", TypeError), (1.0, TypeError), (None, TypeError),
                                    (-1, (ValueError, KeyError))])
def test_get_bad_position(ten, p, exc):
    with nothing_written(ten), pytest.raises(exc):
        ten.get(p)


# ---------------------------------------------------------------------------------------
# streams()
# ---------------------------------------------------------------------------------------

def test_streams_sorted_and_prefixed(store):
    names = ["b-2", "a", "b-10", "ab", "B", "b", "é-1", "z", "a-"]
    for n in names:
        store.append(n, make_events(1))
        store.append(n, make_events(1))  # a second event must not list the name twice
    assert list(store.streams()) == sorted(names)
    assert list(store.streams("")) == sorted(names)
    assert list(store.streams("b")) == ["b", "b-10", "b-2"]
    assert list(store.streams(prefix="a")) == ["a", "a-", "ab"]
    assert list(store.streams("é")) == ["é-1"]
    assert list(store.streams("c")) == []
    assert list(store.streams("b-10-more")) == []


def test_streams_on_empty_store(store):
    assert list(store.streams()) == []


def test_streams_with_long_shared_prefixes_and_many_names(store):
    base = "p" * 1000
    names = [base + f"{i:024d}" for i in range(600)]  # 600 names of 1024 bytes
    names += [base[:999] + "o", base[:999] + "q", "q" * 1024, "o"]
    with store.transaction() as tx:
        for n in reversed(names):
            tx.append(n, make_events(1))
    assert all(len(n.encode()) <= 1024 for n in names)
    assert list(store.streams()) == sorted(names)
    want = sorted(n for n in names if n.startswith(base))
    assert len(want) == 600
    assert list(store.streams(base)) == want
    prefix = base + "0" * 21 + "1"   # names 100..199
    assert list(store.streams(prefix)) == [base + f"{i:024d}" for i in range(100, 200)]
    exact = base + f"{599:024d}"
    assert list(store.streams(exact)) == [exact]
    assert list(store.streams("p" * 1001)) == []


def test_streams_with_names_sharing_more_than_480_bytes(store):
    rnd = random.Random(7)
    base = "k" * 470
    names = {base, base + "a", base + "b" * 554}
    for _ in range(300):
        n = rnd.randrange(1, 1024 - 470)
        names.add(base + "".join(rnd.choice("ab-é") for _ in range(n))[: 1024 - 470 - 1])
    names = sorted(n for n in names if len(n.encode()) <= 1024)
    with store.transaction() as tx:
        for n in names:
            tx.append(n, make_events(1))
    assert list(store.streams()) == names
    for p in [base, base + "a", base + "ab", base + "a" * 20, base + "b" * 100,
              base + "é", base + "a" * 15 + "-", base + "b" * 554]:
        assert list(store.streams(p)) == [n for n in names if n.startswith(p)], p
    for n in names[::37]:
        assert store.stream_version(n) == 0
        assert [e.stream for e in store.read_stream(n)] == [n]
        assert [e.stream for e in store.read_all(streams=[n])] == [n]


def test_streams_iterator_can_be_consumed_slowly_while_writing(store):
    with store.transaction() as tx:
        for i in range(700):
            tx.append(f"s-{i:04d}", make_events(1))
    it = store.streams("s-")
    first = [next(it) for _ in range(10)]
    store.append("s-0005x", make_events(1))  # sorts after s-0005, already passed
    store.append("s-9999", make_events(1))   # sorts last
    rest = list(it)
    got = first + rest
    assert got == sorted(got) and len(set(got)) == len(got)
    assert set(f"s-{i:04d}" for i in range(700)) <= set(got)


@pytest.mark.parametrize("bad", [5, b"a", ["a"]])
def test_streams_bad_prefix_raises_type_error(store, bad):
    with pytest.raises(TypeError):
        list(store.streams(bad))


# ---------------------------------------------------------------------------------------
# RecordedEvent
# ---------------------------------------------------------------------------------------

def test_recorded_event_fields(store):
    u = uuid.uuid4()
    before = datetime.datetime.now(datetime.timezone.utc)
    store.append("pre-1", make_events(2))
    store.append("acc-1", [cairn.Event("Opened", {"owner": "ann"}, metadata={"by": "me"},
                                       id=u, schema=2, tags=["t1", "t2"])])
    after = datetime.datetime.now(datetime.timezone.utc)
    e = store.get(3)
    assert isinstance(e, cairn.RecordedEvent)
    assert e.stream == "acc-1"
    assert e.version == 0
    assert e.position == 3
    assert e.type == "Opened"
    assert e.data == {"owner": "ann"}
    assert e.metadata == {"by": "me"}
    assert isinstance(e.id, uuid.UUID) and e.id == u
    assert e.schema == 2
    assert isinstance(e.tags, tuple) and e.tags == ("t1", "t2")
    assert isinstance(e.timestamp, datetime.datetime)
    assert e.timestamp.tzinfo is not None
    assert e.timestamp.utcoffset() == datetime.timedelta(0)
    slack = datetime.timedelta(seconds=1)
    assert before - slack <= e.timestamp <= after + slack
    assert e.subject is None
    assert e.forgotten is False


def test_timestamp_ns_matches_timestamp(store):
    store.append("s", make_events(3))
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    for e in store.read_all():
        assert isinstance(e.timestamp_ns, int)
        assert e.timestamp == epoch + datetime.timedelta(microseconds=e.timestamp_ns // 1000)
    ns = [e.timestamp_ns for e in store.read_all()]
    assert ns == sorted(ns)


def test_recorded_event_defaults(store):
    store.append("s", [cairn.Event("T")])
    e = store.get(1)
    assert e.data is None
    assert e.metadata is None
    assert e.tags == ()
    assert e.schema == 1
    assert e.id.version == 7


def test_recorded_event_is_the_same_from_every_read_path(data_store):
    def key(e):
        return (e.stream, e.version, e.position, e.type, e.data, e.metadata, e.id, e.schema,
                e.tags, e.timestamp, e.subject, e.forgotten)

    for p in range(1, len(DATA) + 1):
        a = data_store.get(p)
        b = next(iter(data_store.read_all(p, limit=1)))
        c = next(iter(data_store.read_stream(a.stream, a.version, limit=1)))
        d = next(iter(data_store.read_all(p, backwards=True, limit=1)))
        assert key(a) == key(b) == key(c) == key(d)


def test_recorded_event_is_read_only(store):
    store.append("s", make_events(1))
    e = store.get(1)
    with pytest.raises(AttributeError):
        e.position = 5
    with pytest.raises(AttributeError):
        e.stream = "x"


LEAK_DATA = {"obj": {"k": [1000, 2.5, {"x": "text-x"}]}, "list": [[70000], {"y": None}],
             "s": "a string of some length", "n": 123456789}
LEAK_META = {"m": {"n": [1, 2]}, "why": "a reason"}
LEAK_BYTES = b"\x00raw bytes\xff"


def fill_leak(store):
    store.append("leak-1", [cairn.Event("Leak", LEAK_DATA, metadata=LEAK_META),
                            cairn.Event("Bytes", LEAK_BYTES)])


def readers(store):
    """The read paths (get, read_all both ways, read_stream), each as position -> event."""
    return [lambda p: store.get(p),
            lambda p: next(iter(store.read_all(p, limit=1))),
            lambda p: next(iter(store.read_all(p, backwards=True, limit=1))),
            lambda p: next(iter(store.read_stream("leak-1", p - 1, limit=1)))]


def decoded_values(v, out):
    """v and every value inside it (not dict keys), depth first, but for None, booleans and
    small ints: those are shared by the whole interpreter, and their counts move."""
    if not (v is None or isinstance(v, bool) or (isinstance(v, int) and -5 <= v <= 256)):
        out.append(v)
    if isinstance(v, dict):
        for x in v.values():
            decoded_values(x, out)
    elif isinstance(v, list):
        for x in v:
            decoded_values(x, out)
    return out


def refcounts(read):
    """sys.getrefcount of data, metadata and every value in them, once the event they came
    from is gone."""
    e = read()
    data, meta = e.data, e.metadata
    del e
    values = decoded_values(data, [])
    if meta is not None:
        decoded_values(meta, values)
    del data, meta
    return [sys.getrefcount(values[i]) for i in range(len(values))]


class Plain:
    """What a decoded event holds, made by the json module: the refcounts to expect."""

    def __init__(self, data, metadata):
        self.data, self.metadata = data, metadata


def test_decoded_data_and_metadata_hold_no_extra_reference(store):
    fill_leak(store)
    want = {1: refcounts(lambda: Plain(json.loads(json.dumps(LEAK_DATA)),
                                       json.loads(json.dumps(LEAK_META)))),
            2: refcounts(lambda: Plain(bytes(bytearray(LEAK_BYTES)), None))}
    assert len(want[1]) == 17 and len(want[2]) == 1  # every container and leaf counted
    for read in readers(store):
        for p in (1, 2):
            assert refcounts(lambda: read(p)) == want[p], f"position {p}"
    e = store.get(1)
    assert e.data == LEAK_DATA and e.metadata == LEAK_META and store.get(2).data == LEAK_BYTES


@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="under LeakSanitizer (tests/asan_python.sh), which reports leaked values "
                    "itself, and to which CPython 3.11's tracemalloc leaks its own traceback records")
def test_decoding_event_data_again_and_again_does_not_grow_memory(store):
    fill_leak(store)

    def decode_all():
        for read in readers(store):
            for p in (1, 2):
                e = read(p)
                assert (e.data, e.metadata) != (None, None)

    decode_all()  # warm up caches (interned names, free lists)
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for _ in range(300):  # 2,400 events decoded
            decode_all()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"{grown} bytes still held after 2,400 decoded events"


def test_timestamps_are_non_decreasing_along_positions(store):
    for i in range(50):
        store.append(f"t-{i % 3}", make_events(1 + i % 4))
    ts = [e.timestamp for e in store.read_all()]
    assert len(ts) > 50
    assert all(a <= b for a, b in zip(ts, ts[1:]))
    assert ts[-1] - ts[0] < datetime.timedelta(seconds=30)


def test_events_of_one_commit_share_a_plausible_timestamp(store):
    store.append("s", make_events(5))
    ts = [e.timestamp for e in store.read_stream("s")]
    assert all(a <= b for a, b in zip(ts, ts[1:]))
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs(now - ts[0]) < datetime.timedelta(seconds=5)


# ---------------------------------------------------------------------------------------
# Iterators: slow, abandoned, many at once, overlapping with writes
# ---------------------------------------------------------------------------------------

def test_iterator_consumed_slowly(store):
    store.append("s", make_events(300))
    it = store.read_all()
    got = []
    for e in it:
        got.append(e.position)
        if len(got) % 100 == 0:
            time.sleep(0.01)
            store.append("other", make_events(1))  # writes between next() calls
    assert got[:300] == list(range(1, 301))
    assert got == list(range(1, len(got) + 1))


def test_abandoned_iterators_leave_the_store_working(store):
    store.append("s", make_events(2000))
    for _ in range(50):
        it = store.read_all()
        next(it)
        it2 = store.read_stream("s", backwards=True)
        next(it2)
        del it, it2
    gc.collect()
    check_usable(store)
    store.append("s", make_events(2000))
    assert store.verify().events == 4001


def test_idle_iterators_do_not_pin_a_snapshot(store_path):
    # An LMDB reader that holds its snapshot stops the writer from reusing freed pages, so
    # every commit then grows the file (measured: ~120 MB for these 2000 commits, against
    # ~0.5 MB with no reader).  Idle iterators must not do that (spec 2, "Reading").
    s = cairn.open(store_path, durability="none")
    try:
        s.append("a", make_events(2000))
        with s.transaction() as tx:
            for i in range(600):
                tx.append(f"n-{i:04d}", make_events(1))
        idle = [s.read_all(), s.read_all(backwards=True), s.read_stream("a"),
                s.read_stream("a", backwards=True), s.read_all(types="Tested"),
                s.streams()]
        for it in idle:
            next(it)
        size0 = (store_path / "data.mdb").stat().st_size
        for i in range(2000):
            s.append(f"b-{i % 50}", [cairn.Event("T", {"i": i})])
        growth = (store_path / "data.mdb").stat().st_size - size0
        assert growth < 10 << 20, f"data.mdb grew by {growth} bytes: a reader pins a snapshot"
        # The idle iterators still finish correctly.
        assert next(idle[0]).position == 2
        assert len(list(idle[2])) == 1999
    finally:
        s.close()


def test_many_iterators_open_at_once_in_one_thread(store):
    for i in range(4):
        store.append(f"s-{i}", make_events(250))
    iters = [store.read_all() for _ in range(40)]
    iters += [store.read_stream(f"s-{i % 4}", backwards=bool(i % 2)) for i in range(40)]
    iters += [store.read_all(types="Tested", backwards=True) for _ in range(20)]
    firsts = [next(it) for it in iters]
    store.append("late", make_events(1))
    assert [e.position for e in firsts[:40]] == [1] * 40
    outs = [[] for _ in iters]
    # Round-robin: each iterator advances a little at a time.
    live = list(range(len(iters)))
    while live:
        nxt = []
        for i in live:
            try:
                outs[i].append(next(iters[i]))
            except StopIteration:
                continue
            nxt.append(i)
        live = nxt
    for i in range(40):
        assert [1] + positions(outs[i]) == list(range(1, len(outs[i]) + 2))
        assert len(outs[i]) + 1 in (1000, 1001)
    for k in range(40):
        i = 40 + k
        want = list(range(250)) if k % 2 == 0 else list(range(249, -1, -1))
        assert [firsts[i].version] + versions(outs[i]) == want
    for i in range(80, 100):
        got = [firsts[i].position] + positions(outs[i])
        assert got == list(range(got[0], 0, -1)) and got[0] in (1000, 1001)


def test_appending_while_iterating_forward(store):
    store.append("s", make_events(20))
    seen = []
    for e in store.read_all():
        seen.append(e.position)
        if len(seen) <= 5:
            store.append("s", make_events(1))
    assert seen[:20] == list(range(1, 21))
    assert seen == list(range(1, len(seen) + 1))
    assert 20 <= len(seen) <= 25
    assert store.head() == 25


def test_appending_while_iterating_a_stream_backwards(store):
    store.append("s", make_events(10))
    seen = []
    for e in store.read_stream("s", backwards=True):
        seen.append(e.version)
        store.append("s", make_events(1))
    assert seen == list(range(9, -1, -1))
    assert store.stream_version("s") == 19


def test_iterator_is_its_own_iterator(store):
    store.append("s", make_events(3))
    it = store.read_all()
    assert iter(it) is it
    assert next(it).position == 1
    assert [e.position for e in it] == [2, 3]
    with pytest.raises(StopIteration):
        next(it)


def test_reading_does_not_write(store_path):
    with cairn.open(store_path, durability="none") as s:
        s.append("a", make_events(5))
        s.sync()
        before = (store_path / "data.mdb").read_bytes()
        list(s.read_all())
        list(s.read_stream("a", backwards=True))
        list(s.streams())
        s.get(3)
        s.verify()
        s.sync()
        assert (store_path / "data.mdb").read_bytes() == before


# ---------------------------------------------------------------------------------------
# verify and sync
# ---------------------------------------------------------------------------------------

def test_verify_on_empty_store(store):
    r = store.verify()
    assert isinstance(r, cairn.VerifyReport)
    assert (r.events, r.streams, r.head) == (0, 0, 0)


def test_verify_counts(data_store):
    r = data_store.verify()
    assert r.events == len(DATA)
    assert r.streams == len({d[0] for d in DATA})
    assert r.head == len(DATA)


def test_verify_after_many_writes(store):
    for i in range(20):
        store.append(f"v-{i % 7}", make_events(10))
    with store.transaction() as tx:
        tx.append("v-x", make_events(3))
        tx.append("v-y", make_events(2))
    r = store.verify()
    assert (r.events, r.streams, r.head) == (205, 9, 205)


def test_sync_works_and_data_survives_reopen(store_path):
    s = cairn.open(store_path, durability="none")
    s.append("a", make_events(3))
    assert s.sync() is None
    s.append("a", make_events(1))
    s.sync()
    s.close()
    with cairn.open(store_path, durability="relaxed") as s:
        assert s.head() == 4
        s.sync()


# ---------------------------------------------------------------------------------------
# Checksums: a damaged record is reported, naming its position
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("payload", ["json", "bytes"])
def test_damaged_record_raises_corruption_error_naming_its_position(store_path, payload):
    marker = b"MARKER-0123456789-" * 8
    value = marker if payload == "bytes" else {"m": marker.decode()}
    with cairn.open(store_path, durability="full") as s:
        s.append("a", make_events(3))
        s.append("b", [cairn.Event("Marked", value)])
        s.append("a", make_events(2))
    data = store_path / "data.mdb"
    raw = bytearray(data.read_bytes())
    hits = []
    at = raw.find(marker)
    while at >= 0:
        hits.append(at)
        at = raw.find(marker, at + 1)
    assert hits, "the payload is not stored verbatim; this test needs another way to damage it"
    for at in hits:
        raw[at + 40] ^= 0x01  # one bit, inside the payload
    data.write_bytes(bytes(raw))

    with cairn.open(store_path, durability="none") as s:
        with pytest.raises(cairn.CorruptionError, match=r"\b4\b"):
            s.get(4)
        with pytest.raises(cairn.CorruptionError, match=r"\b4\b"):
            list(s.read_all())
        with pytest.raises(cairn.CorruptionError, match=r"\b4\b"):
            list(s.read_stream("b"))
        with pytest.raises(cairn.CorruptionError, match=r"\b4\b"):
            s.verify()
        # The undamaged records still read, and the handle keeps working.
        assert [e.position for e in s.read_stream("a")] == [1, 2, 3, 5, 6]
        assert s.get(5).version == 3
        assert [e.position for e in s.read_all(5)] == [5, 6]


def test_paging_backwards_through_read_all_ends_at_the_first_event(store):
    store.append("a-1", [cairn.Event("T", {"i": i}) for i in range(25)])
    seen, start = [], None
    while True:
        page = list(store.read_all(start, backwards=True, limit=7))
        if not page:
            break
        seen += [e.position for e in page]
        start = page[-1].position - 1  # reaches 0: before the first event, which reads nothing
        assert len(seen) <= 25, "paging wrapped around"
    assert seen == list(range(25, 0, -1))
    assert list(store.read_all(0, backwards=True)) == []
    assert [e.position for e in store.read_all(None, backwards=True, limit=1)] == [25]
    # and forwards again to the end
    seen, start = [], 0
    while page := list(store.read_all(start, limit=7)):
        seen += [e.position for e in page]
        start = page[-1].position + 1
    assert seen == list(range(1, 26))


def test_paging_backwards_through_read_stream_ends_at_version_zero(store):
    store.append("a-1", [cairn.Event("T", {"i": i}) for i in range(25)])
    seen, start = [], None
    while True:
        page = list(store.read_stream("a-1", start, backwards=True, limit=7))
        if not page:
            break
        seen += [e.version for e in page]
        start = page[-1].version - 1  # reaches -1: before the first version, which reads nothing
        assert len(seen) <= 25
    assert seen == list(range(24, -1, -1))
    assert list(store.read_stream("a-1", -1, backwards=True)) == []
    assert [e.version for e in store.read_stream("a-1", -1, limit=2)] == [0, 1]
    seen, start = [], 0
    while page := list(store.read_stream("a-1", start, limit=7)):
        seen += [e.version for e in page]
        start = page[-1].version + 1
    assert seen == list(range(25))
    with pytest.raises(ValueError, match=">= -1"):
        store.read_stream("a-1", -2)


def test_read_stream_start_far_below_minus_one_is_a_value_error(store):
    # a start below C long's range was taken for -1 with an OverflowError pending: a
    # SystemError ("returned a result with an exception set"), found by fuzz_python_args
    for start in [-(2**63) - 1, -(2**64), -530979183517013598302321]:
        with pytest.raises(ValueError, match=">= -1"):
            store.read_stream("a-1", start)


@pytest.mark.parametrize("call", [
    lambda s: list(s.read_all(types=["A\x00"])),
    lambda s: list(s.read_all(types="A\x00")),
    lambda s: list(s.read_all(categories=["a\x00"])),
    lambda s: list(s.read_all(streams=["a-1\x00"])),
    lambda s: list(s.read_all(tags=["t\x00"])),
    lambda s: list(s.streams("a\x00")),
    lambda s: s.subscribe(types=["A\x00"]),
])
def test_a_nul_in_a_filter_or_prefix_is_refused_like_a_nul_in_a_stream_name(store, call):
    store.append("a-1", [cairn.Event("A", tags=["t"])])
    with pytest.raises(ValueError, match="NUL"):
        call(store)
    assert [e.type for e in store.read_all(types=["A"])] == ["A"]  # still usable
