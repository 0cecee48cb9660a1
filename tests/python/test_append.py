"""Appending: versions and positions, expected versions, idempotent retries and duplicate
ids, Event validation, stream-name validation, the JSON value model, multi-stream
transactions.  Every failure is checked to write nothing and to leave the store usable."""

import json
import math
import sys
import threading
import types
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cairn
from cairn import _cairn
from conftest import check_usable, make_events, nothing_written, same

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def fields(r):
    return (r.version, r.position, r.first_position)


# ---------------------------------------------------------------------------------------
# Versions, positions, AppendResult
# ---------------------------------------------------------------------------------------

def test_constants():
    assert cairn.NO_STREAM == -1
    assert cairn.ANY == -2            # docs/API.md "Constants"
    assert cairn.STREAM_EXISTS == -4
    markers = {cairn.ANY, cairn.NO_STREAM, cairn.STREAM_EXISTS}
    assert len(markers) == 3
    assert all(isinstance(m, int) and m < 0 for m in markers)


def test_empty_store_head_and_versions(store):
    assert store.head() == 0
    assert store.stream_version("nothing-here") == -1


def test_versions_and_positions_are_gapless(store):
    r1 = store.append("acc-1", make_events(3))
    assert fields(r1) == (2, 3, 1)
    r2 = store.append("acc-2", make_events(2))
    assert fields(r2) == (1, 5, 4)
    r3 = store.append("acc-1", make_events(1))
    assert fields(r3) == (3, 6, 6)
    assert store.head() == 6
    assert store.stream_version("acc-1") == 3
    assert store.stream_version("acc-2") == 1
    got = [(e.stream, e.version, e.position) for e in store.read_all()]
    assert got == [("acc-1", 0, 1), ("acc-1", 1, 2), ("acc-1", 2, 3),
                   ("acc-2", 0, 4), ("acc-2", 1, 5), ("acc-1", 3, 6)]


def test_append_result_is_an_append_result(store):
    r = store.append("s", make_events(2))
    assert isinstance(r, cairn.AppendResult)
    assert isinstance(r.version, int) and isinstance(r.position, int)
    assert isinstance(r.first_position, int)


def test_events_of_one_call_are_written_in_order(store):
    evs = make_events(50)
    store.append("order-1", evs)
    assert [e.id for e in store.read_stream("order-1")] == [e.id for e in evs]
    assert [e.data["i"] for e in store.read_all()] == list(range(50))


def test_generator_of_events_is_accepted(store):
    r = store.append("gen-1", (cairn.Event("T", i) for i in range(4)))
    assert fields(r) == (3, 4, 1)
    assert [e.data for e in store.read_stream("gen-1")] == [0, 1, 2, 3]


def test_tuple_of_events_is_accepted(store):
    r = store.append("tup-1", tuple(make_events(2)))
    assert fields(r) == (1, 2, 1)


# ---------------------------------------------------------------------------------------
# Expected versions
# ---------------------------------------------------------------------------------------

def test_any_always_succeeds(store):
    store.append("s", make_events(1), expected_version=cairn.ANY)
    store.append("s", make_events(1), expected_version=cairn.ANY)
    assert store.stream_version("s") == 1


def test_no_stream_succeeds_on_a_new_stream(store):
    r = store.append("s", make_events(2), expected_version=cairn.NO_STREAM)
    assert r.version == 1


def test_stream_exists_succeeds_on_an_existing_stream(store):
    store.append("s", make_events(1))
    r = store.append("s", make_events(1), expected_version=cairn.STREAM_EXISTS)
    assert r.version == 1


def test_exact_version_succeeds(store):
    store.append("s", make_events(1), expected_version=cairn.NO_STREAM)
    store.append("s", make_events(1), expected_version=0)
    r = store.append("s", make_events(3), expected_version=1)
    assert fields(r) == (4, 5, 3)


@pytest.mark.parametrize(
    "existing, expected, actual",
    [
        (0, cairn.NO_STREAM, 1),        # stream has versions 0..1
        (None, cairn.STREAM_EXISTS, -1),
        (None, 0, -1),
        (0, 0, 1),
        (0, 2, 1),
        (0, 5, 1),
    ],
    ids=["no_stream-on-existing", "stream_exists-on-missing", "exact-on-missing",
         "exact-too-low", "exact-too-high", "exact-far-ahead"],
)
def test_wrong_expected_version_raises_and_writes_nothing(store, existing, expected, actual):
    if existing is not None:
        store.append("acc-7", make_events(2))
    with nothing_written(store):
        with pytest.raises(cairn.WrongExpectedVersion) as ei:
            store.append("acc-7", make_events(3), expected_version=expected)
    err = ei.value
    assert isinstance(err, cairn.Error)
    assert err.stream == "acc-7"
    assert err.expected == expected
    assert err.actual == actual


def test_wrong_expected_version_does_not_consume_event_ids(store):
    store.append("s", make_events(1))
    evs = make_events(2)
    with pytest.raises(cairn.WrongExpectedVersion):
        store.append("s", evs, expected_version=5)
    # The same Event objects can still be written: nothing of them was recorded.
    r = store.append("s", evs, expected_version=0)
    assert fields(r) == (2, 3, 2)


@pytest.mark.parametrize("bad", [-3, -5, -100, INT64_MIN])
def test_unknown_negative_expected_version_raises_value_error(store, bad):
    store.append("s", make_events(1))
    with nothing_written(store), pytest.raises(ValueError, match="expected_version"):
        store.append("s", make_events(1), expected_version=bad)


@pytest.mark.parametrize("bad", ["0", 1.0, None, [0], True, False])
def test_non_int_expected_version_raises_type_error(store, bad):
    store.append("s", make_events(1))
    with nothing_written(store), pytest.raises(TypeError, match="expected_version"):
        store.append("s", make_events(1), expected_version=bad)


def test_expected_version_out_of_int64_raises_value_error(store):
    with nothing_written(store), pytest.raises(ValueError, match="expected_version"):
        store.append("s", make_events(1), expected_version=2**63)


def test_expected_version_is_keyword_only(store):
    with nothing_written(store), pytest.raises(TypeError):
        store.append("s", make_events(1), cairn.ANY)


# ---------------------------------------------------------------------------------------
# Bad events arguments
# ---------------------------------------------------------------------------------------

def test_empty_events_raises_value_error(store):
    with nothing_written(store):
        with pytest.raises(ValueError, match="events"):
            store.append("s", [])
        with pytest.raises(ValueError, match="events"):
            store.append("s", iter(()))
        with pytest.raises(ValueError, match="events"):
            store.append("s", [], expected_version=cairn.NO_STREAM)


@pytest.mark.parametrize(
    "events",
    [
        [{"type": "T"}],
        ["T"],
        [None],
        [("T", {})],
        "events",
    ],
    ids=["dict", "str", "None", "tuple", "bare-str"],
)
def test_non_event_items_raise_type_error(store, events):
    with nothing_written(store), pytest.raises(TypeError):
        store.append("s", events)


def test_non_event_after_good_events_writes_nothing(store):
    with nothing_written(store), pytest.raises(TypeError):
        store.append("s", make_events(3) + [object()])


def test_non_iterable_events_raises_type_error(store):
    with nothing_written(store):
        with pytest.raises(TypeError):
            store.append("s", 42)
        with pytest.raises(TypeError):
            store.append("s", cairn.Event("T"))


def test_generator_that_raises_writes_nothing(store):
    class Boom(Exception):
        pass

    def gen():
        yield cairn.Event("T", 1)
        raise Boom()

    with nothing_written(store), pytest.raises(Boom):
        store.append("s", gen())


# ---------------------------------------------------------------------------------------
# Idempotency and duplicates
# ---------------------------------------------------------------------------------------

def test_retry_of_same_events_returns_same_result_and_writes_nothing(store):
    evs = make_events(3)
    r1 = store.append("pay-1", evs, expected_version=cairn.NO_STREAM)
    with nothing_written(store):
        r2 = store.append("pay-1", evs, expected_version=cairn.NO_STREAM)
    assert fields(r2) == fields(r1) == (2, 3, 1)


def test_retry_after_other_writes_returns_original_result(store):
    evs = make_events(2)
    r1 = store.append("pay-1", evs, expected_version=cairn.NO_STREAM)
    store.append("pay-1", make_events(1), expected_version=1)
    store.append("pay-2", make_events(4))
    with nothing_written(store):
        # expected_version is stale (and even impossible) but is not checked on a retry.
        r2 = store.append("pay-1", evs, expected_version=cairn.NO_STREAM)
        r3 = store.append("pay-1", evs, expected_version=40)
        r4 = store.append("pay-1", list(evs))
    assert fields(r2) == fields(r3) == fields(r4) == fields(r1) == (1, 2, 1)


def test_retry_identified_by_ids_not_objects(store):
    evs = make_events(2)
    r1 = store.append("s", evs)
    copies = [cairn.Event(e.type, e.data, id=e.id) for e in evs]
    with nothing_written(store):
        r2 = store.append("s", copies)
    assert fields(r2) == fields(r1)


def test_retry_of_single_event_append(store):
    e = cairn.Event("T", 1)
    r1 = store.append("s", [e])
    store.append("s", make_events(1))
    with nothing_written(store):
        assert fields(store.append("s", [e], expected_version=cairn.NO_STREAM)) == fields(r1)


@pytest.mark.parametrize(
    "pick, stream",
    [
        (lambda a: a[:2], "s"),                      # subset (prefix)
        (lambda a: a[1:], "s"),                      # subset (suffix)
        (lambda a: a[1:2], "s"),                     # one of them
        (lambda a: list(reversed(a)), "s"),          # same ids, other order
        (lambda a: a + make_events(1), "s"),         # superset
        (lambda a: make_events(1) + a, "s"),         # superset, new event first
        (lambda a: a, "other"),                      # same call, other stream
        (lambda a: a[:1], "other"),                  # subset, other stream
    ],
    ids=["prefix", "suffix", "middle", "reordered", "superset", "superset-front",
         "other-stream", "subset-other-stream"],
)
def test_other_reuse_of_written_ids_raises_duplicate_event(store, pick, stream):
    written = make_events(3)
    store.append("s", written)
    store.append("other", make_events(1))
    with nothing_written(store), pytest.raises(cairn.DuplicateEvent):
        store.append(stream, pick(written))


def test_ids_from_two_earlier_calls_raise_duplicate_event(store):
    a, b = make_events(2), make_events(2)
    store.append("s", a)
    store.append("s", b)
    with nothing_written(store), pytest.raises(cairn.DuplicateEvent):
        store.append("s", a + b)


def test_duplicate_within_one_call_raises_duplicate_event(store):
    e = cairn.Event("T", 1)
    with nothing_written(store):
        with pytest.raises(cairn.DuplicateEvent):
            store.append("s", [e, e])
        with pytest.raises(cairn.DuplicateEvent):
            store.append("s", [e, cairn.Event("U", 2, id=e.id)])
        with pytest.raises(cairn.DuplicateEvent):
            store.append("s", make_events(2) + [e] + make_events(1) + [e])
    # The id is still free afterwards.
    assert store.append("s", [e]).version == 0


def test_duplicate_event_is_a_cairn_error():
    assert issubclass(cairn.DuplicateEvent, cairn.Error)
    assert issubclass(cairn.WrongExpectedVersion, cairn.Error)


# ---------------------------------------------------------------------------------------
# Event construction
# ---------------------------------------------------------------------------------------

def test_event_defaults_and_generated_id():
    e = cairn.Event("Opened")
    assert e.type == "Opened"
    assert e.data is None
    assert e.metadata is None
    assert e.schema == 1
    assert tuple(e.tags) == ()
    assert isinstance(e.id, uuid.UUID)
    assert e.id.version == 7
    assert e.id == e.id  # stable
    assert cairn.Event("Opened").id != e.id


def test_generated_ids_are_unique():
    ids = {cairn.Event("T").id for _ in range(2000)}
    assert len(ids) == 2000


def test_event_id_is_fixed_at_construction(store):
    e = cairn.Event("T", 1)
    before = e.id
    store.append("s", [e])
    assert e.id == before
    assert store.get(1).id == before


def test_event_accepts_uuid_id(store):
    u = uuid.uuid4()
    e = cairn.Event("T", id=u)
    assert e.id == u
    store.append("s", [e])
    got = store.get(1).id
    assert isinstance(got, uuid.UUID) and got == u


def test_event_accepts_str_id(store):
    u = uuid.uuid4()
    e = cairn.Event("T", id=str(u))
    assert e.id == u
    e2 = cairn.Event("T", id=str(uuid.uuid4()).upper())
    store.append("s", [e, e2])
    assert [x.id for x in store.read_stream("s")] == [u, e2.id]


@pytest.mark.parametrize("bad", ["not-a-uuid", "", "1234", str(uuid.uuid4())[:-1]])
def test_event_bad_str_id_raises_value_error(bad):
    with pytest.raises(ValueError, match="id"):
        cairn.Event("T", id=bad)


@pytest.mark.parametrize("bad", [42, 1.5, ["x"], {"id": 1}])
def test_event_bad_id_type_raises_type_error(bad):
    with pytest.raises(TypeError, match="id"):
        cairn.Event("T", id=bad)


def test_event_keeps_attributes():
    e = cairn.Event("T", {"a": 1}, metadata={"m": True}, schema=3, tags=["x", "y"])
    assert e.type == "T"
    assert e.data == {"a": 1}
    assert e.metadata == {"m": True}
    assert e.schema == 3
    assert tuple(e.tags) == ("x", "y")


def test_event_options_are_keyword_only():
    with pytest.raises(TypeError):
        cairn.Event("T", {}, {"meta": 1})


def test_event_type_is_required():
    with pytest.raises(TypeError):
        cairn.Event()


# A bad subject is refused at construction, before anything could be written (the rules:
# tests/python/test_crypto.py, which tests encryption itself).
@pytest.mark.parametrize("subject,exc", [("", ValueError), ("x" * 2000, ValueError),
                                         (5, TypeError), (b"user-42", TypeError),
                                         (["user-42"], TypeError)])
def test_a_bad_event_subject_is_refused(store, subject, exc):
    store.append("s", make_events(1))
    with nothing_written(store):
        with pytest.raises(exc, match="subject"):
            store.append("s", [cairn.Event("T", {"secret": 1}, subject=subject)])
        with pytest.raises(exc, match="subject"):
            with store.transaction() as tx:
                tx.append("s", [cairn.Event("T", subject=subject)])
    assert tx.results is None


def test_event_subject_none_is_fine(store):
    e = cairn.Event("T", {"a": 1}, subject=None)
    assert e.subject is None
    assert cairn.Event("T").subject is None
    store.append("s", [e])
    got = store.get(1)
    assert (got.subject, got.forgotten, got.data) == (None, False, {"a": 1})


# Bad event arguments may be rejected when the Event is built or when it is appended;
# either way: the right exception, naming the argument, and nothing written.
BAD_EVENTS = [
    ("type-empty", lambda: cairn.Event(""), ValueError, "type"),
    ("type-256-bytes", lambda: cairn.Event("t" * 256), ValueError, "type"),
    ("type-256-utf8-bytes", lambda: cairn.Event("é" * 128), ValueError, "type"),
    ("type-nul", lambda: cairn.Event("Op\0ened"), ValueError, "type"),
    ("type-int", lambda: cairn.Event(5), TypeError, "type"),
    ("type-bytes", lambda: cairn.Event(b"Opened"), TypeError, "type"),
    ("type-None", lambda: cairn.Event(None), TypeError, "type"),
    ("type-surrogate", lambda: cairn.Event("bad\ud800"), ValueError, "type"),
    ("schema-0", lambda: cairn.Event("T", schema=0), ValueError, "schema"),
    ("schema-negative", lambda: cairn.Event("T", schema=-1), ValueError, "schema"),
    ("schema-2**32", lambda: cairn.Event("T", schema=2**32), ValueError, "schema"),
    ("schema-str", lambda: cairn.Event("T", schema="1"), TypeError, "schema"),
    ("schema-float", lambda: cairn.Event("T", schema=1.0), TypeError, "schema"),
    ("metadata-list", lambda: cairn.Event("T", metadata=[1]), TypeError, "metadata"),
    ("metadata-str", lambda: cairn.Event("T", metadata="m"), TypeError, "metadata"),
    ("metadata-int", lambda: cairn.Event("T", metadata=3), TypeError, "metadata"),
    ("tags-int-item", lambda: cairn.Event("T", tags=[1]), TypeError, "tags"),
    ("tags-bytes-item", lambda: cairn.Event("T", tags=[b"x"]), TypeError, "tags"),
    ("tags-None-item", lambda: cairn.Event("T", tags=["a", None]), TypeError, "tags"),
    ("tags-int", lambda: cairn.Event("T", tags=5), TypeError, "tags"),
    ("tag-empty", lambda: cairn.Event("T", tags=[""]), ValueError, "tag"),
    ("tag-nul", lambda: cairn.Event("T", tags=["a\0b"]), ValueError, "tag"),
    ("tag-surrogate", lambda: cairn.Event("T", tags=["a\udfff"]), ValueError, "tag"),
    ("tag-1025-bytes", lambda: cairn.Event("T", tags=["t" * 1025]), ValueError, "tag"),
    ("tags-65536", lambda: cairn.Event("T", tags=[f"{i}" for i in range(65536)]), ValueError,
     "tags"),
    ("metadata-int-key", lambda: cairn.Event("T", metadata={1: "x"}), TypeError, "metadata"),
    ("metadata-nan", lambda: cairn.Event("T", metadata={"x": math.nan}), TypeError, "metadata"),
]


@pytest.mark.parametrize("make, exc, name", [b[1:] for b in BAD_EVENTS],
                         ids=[b[0] for b in BAD_EVENTS])
def test_bad_event_argument_raises_and_writes_nothing(store, make, exc, name):
    store.append("s", make_events(1))
    with nothing_written(store), pytest.raises(exc, match=name):
        store.append("s", [make()])
    with nothing_written(store), pytest.raises(exc, match=name):
        store.append("s", make_events(2) + [make()])


def test_type_limits_are_in_utf8_bytes(store):
    longest = "é" * 127 + "x"  # 255 bytes
    assert len(longest.encode()) == 255
    store.append("s", [cairn.Event(longest), cairn.Event("t" * 255), cairn.Event("Überweisung")])
    assert [e.type for e in store.read_stream("s")] == [longest, "t" * 255, "Überweisung"]


def test_tag_of_1024_bytes_works(store):
    tag = "é" * 512
    store.append("s", [cairn.Event("T", tags=[tag, "t" * 1024])])
    assert store.get(1).tags == (tag, "t" * 1024)


def test_many_tags_round_trip(store):
    tags = [f"tag-{i}" for i in range(300)]
    store.append("s", [cairn.Event("T", tags=tags)])
    assert store.get(1).tags == tuple(tags)


def test_tags_accept_tuple_and_keep_order(store):
    store.append("s", [cairn.Event("T", tags=("b", "a", "c"))])
    assert store.get(1).tags == ("b", "a", "c")


def test_schema_round_trips(store):
    store.append("s", [cairn.Event("T", schema=7), cairn.Event("T"),
                       cairn.Event("T", schema=2**32 - 1)])
    assert [e.schema for e in store.read_stream("s")] == [7, 1, 2**32 - 1]


# ---------------------------------------------------------------------------------------
# Stream names
# ---------------------------------------------------------------------------------------

BAD_STREAMS = [
    ("empty", "", ValueError),
    ("1025-bytes", "s" * 1025, ValueError),
    ("1026-utf8-bytes", "é" * 513, ValueError),
    ("nul", "acc\0-1", ValueError),
    ("dollar", "$all", ValueError),
    ("dollar-only", "$", ValueError),
    ("surrogate", "acc-\udc00", ValueError),
    ("int", 5, TypeError),
    ("bytes", b"acc-1", TypeError),
    ("None", None, TypeError),
]


@pytest.mark.parametrize("name, exc", [b[1:] for b in BAD_STREAMS],
                         ids=[b[0] for b in BAD_STREAMS])
def test_bad_stream_name_raises_and_writes_nothing(store, name, exc):
    store.append("s", make_events(1))
    with nothing_written(store), pytest.raises(exc, match="stream"):
        store.append(name, make_events(1))
    with nothing_written(store), pytest.raises(exc, match="stream"):
        store.append(name, make_events(1), expected_version=cairn.NO_STREAM)


@pytest.mark.parametrize("name", ["s" * 1024, "é" * 512, "x" * 1022 + "é", "a$b", "-", "a-",
                                  " ", "ünïcødé-名前-🙂"])
def test_valid_stream_names_round_trip(store, name):
    r = store.append(name, make_events(2), expected_version=cairn.NO_STREAM)
    assert r.version == 1
    assert store.stream_version(name) == 1
    assert [e.stream for e in store.read_stream(name)] == [name, name]
    assert list(store.streams()) == [name]


def test_long_names_sharing_a_prefix_are_distinct_streams(store):
    base = "p" * 1023
    store.append(base + "a", make_events(1))
    store.append(base + "b", make_events(2))
    store.append(base, make_events(3))
    assert store.stream_version(base + "a") == 0
    assert store.stream_version(base + "b") == 1
    assert store.stream_version(base) == 2


# ---------------------------------------------------------------------------------------
# Data and metadata values
# ---------------------------------------------------------------------------------------

ROUND_TRIP = {
    "none": None,
    "true": True,
    "false": False,
    "zero": 0,
    "int64-max": INT64_MAX,
    "int64-min": INT64_MIN,
    "neg-int64-max": -INT64_MAX,
    "float-0.1": 0.1,
    "float-1e300": 1e300,
    "float-neg-zero": -0.0,
    "float-1.0": 1.0,
    "float-tiny": 5e-324,
    "float-max": 1.7976931348623157e308,
    "str": "hello",
    "str-empty": "",
    "str-unicode": "ünïcødé 名前 🙂 \u2028\u2029 \x7f",
    "str-escapes": "quote\" backslash\\ nul\0 tab\t newline\n ctrl\x01\x1f",
    "list-empty": [],
    "dict-empty": {},
    "bytes": b"\x00\xff binary \x80",
    "bytes-empty": b"",
    "nested": {
        "a": [1, 2.5, "three", None, True, {"b": [[], {}, [{"c": -0.0}]]}],
        "ünï": {"": "empty key", "k\u00e9y": INT64_MIN, "\n\"\\": 1},
        "big": [INT64_MAX, -INT64_MAX, 1e-300, 123456789.123456789],
    },
    "deep": [[[[[[[[[[[[[[[[[[[[{"deep": 1}]]]]]]]]]]]]]]]]]]]],
}


@pytest.mark.parametrize("key", list(ROUND_TRIP))
def test_data_round_trips_exactly(store, key):
    value = ROUND_TRIP[key]
    store.append("s", [cairn.Event("T", value)])
    got = store.get(1).data
    assert same(got, value), (got, value)
    assert same(next(iter(store.read_stream("s"))).data, value)
    assert same(next(iter(store.read_all())).data, value)


def test_nul_in_object_key_round_trips(store):
    # JSON holds any string as a key ("\u0000" included), so such a dict is JSON-compatible
    # and must come back as it went in (spec 1/2: data comes back as it went in).
    value = {"k\0ey": 1, "\0": {"in\0ner": [None]}}
    store.append("s", [cairn.Event("T", value, metadata={"m\0": True})])
    got = store.get(1)
    assert same(got.data, value)
    assert same(got.metadata, {"m\0": True})


@pytest.mark.parametrize("key", [k for k in ROUND_TRIP if isinstance(ROUND_TRIP[k], dict)])
def test_metadata_round_trips_exactly(store, key):
    value = ROUND_TRIP[key]
    store.append("s", [cairn.Event("T", metadata=value)])
    assert same(store.get(1).metadata, value)


def test_metadata_none_comes_back_none(store):
    store.append("s", [cairn.Event("T", {"x": 1})])
    assert store.get(1).metadata is None


def test_bytes_come_back_as_bytes_not_str(store):
    store.append("s", [cairn.Event("T", b"abc"), cairn.Event("T", "abc")])
    a, b = store.read_stream("s")
    assert type(a.data) is bytes and a.data == b"abc"
    assert type(b.data) is str and b.data == "abc"


def test_tuples_come_back_as_lists(store):
    store.append("s", [cairn.Event("T", (1, (2, "x"), {"t": ()}))])
    assert same(store.get(1).data, [1, [2, "x"], {"t": []}])


@pytest.mark.parametrize("make", [bytearray, memoryview], ids=["bytearray", "memoryview"])
def test_bytes_like_data_comes_back_as_bytes(store, make):
    store.append("s", [cairn.Event("T", make(b"\x00ab\xff"))])
    got = store.get(1).data
    assert type(got) is bytes and got == b"\x00ab\xff"


def nested(depth):
    value = 1
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def nesting_of(value):
    """Depth of a value made by nested(), walked without recursion."""
    depth = 0
    while not isinstance(value, int):
        value = value[0] if isinstance(value, list) else value["k"]
        depth += 1
    assert value == 1
    return depth


def test_deep_nesting_within_the_limit_round_trips(store):
    store.append("s", [cairn.Event("T", nested(990), metadata={"m": nested(900)})])
    got = store.get(1)
    assert nesting_of(got.data) == 990
    assert nesting_of(got.metadata["m"]) == 900


@pytest.mark.parametrize("where", ["data", "metadata"])
def test_nesting_deeper_than_the_limit_raises_value_error(store, where):
    value = nested(1010)
    kw = {"data": value} if where == "data" else {"metadata": {"m": value}}
    with nothing_written(store), pytest.raises(ValueError, match=where):
        store.append("s", [cairn.Event("T", **kw)])
    with nothing_written(store), pytest.raises(ValueError, match=where):
        kw = {"data": nested(100_000)} if where == "data" else {"metadata": {"m": nested(100_000)}}
        store.append("s", [cairn.Event("T", **kw)])


def test_large_data_round_trips(store):
    blob = bytes(range(256)) * 4096  # 1 MiB
    text = {"t": "x" * (1 << 20)}
    store.append("s", [cairn.Event("T", blob), cairn.Event("T", text)])
    assert store.get(1).data == blob
    assert store.get(2).data == text


def test_record_just_under_the_limit_round_trips(store):
    blob = b"\xab" * (15 << 20)
    r = store.append("s", [cairn.Event("Big", blob)])
    assert store.get(r.position).data == blob


def test_many_events_in_one_call(store):
    evs = [cairn.Event("Small", i) for i in range(10_000)]
    r = store.append("many", evs, expected_version=cairn.NO_STREAM)
    assert (r.version, r.position, r.first_position) == (9_999, 10_000, 1)
    assert [e.data for e in store.read_stream("many", 9_990)] == list(range(9_990, 10_000))


def test_record_over_16_mib_raises_value_error(store):
    with nothing_written(store), pytest.raises(ValueError, match="data"):
        store.append("s", [cairn.Event("T", b"x" * (17 << 20))])
    with nothing_written(store), pytest.raises(ValueError, match="data"):
        store.append("s", [cairn.Event("T", b"x" * ((16 << 20) - 10))])
    with nothing_written(store), pytest.raises(ValueError, match="data"):
        store.append("s", make_events(1) + [cairn.Event("T", {"s": "y" * (17 << 20)})])


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 2**64, 10**30, -(10**30)],
                         ids=["2**63", "-2**63-1", "2**64", "1e30", "-1e30"])
@pytest.mark.parametrize("where", ["data", "metadata"])
def test_int_outside_int64_raises_value_error(store, value, where):
    if where == "data":
        make = lambda: cairn.Event("T", {"n": [value]})  # noqa: E731
    else:
        make = lambda: cairn.Event("T", {}, metadata={"n": value})  # noqa: E731
    with nothing_written(store), pytest.raises(ValueError, match=where):
        store.append("s", [make()])


def test_top_level_int_outside_int64_raises_value_error(store):
    with nothing_written(store), pytest.raises(ValueError, match="data"):
        store.append("s", [cairn.Event("T", 2**63)])


class Opaque:
    pass


UNHOLDABLE = {
    "nan": math.nan,
    "inf": math.inf,
    "-inf": -math.inf,
    "set": {1, 2},
    "frozenset": frozenset(),
    "object": Opaque(),
    "int-key": {1: "a"},
    "none-key": {None: "a"},
    "tuple-key": {(1, 2): "a"},
    "bytes-key": {b"k": "a"},
    "nested-bytes": [b"x"],
    "complex": 1j,
    "function": len,
    "type": int,
    "deep-nan": {"a": [{"b": [math.nan]}]},
    "deep-key": [{"ok": {2: "x"}}],
}


@pytest.mark.parametrize("key", list(UNHOLDABLE))
def test_unholdable_data_raises_type_error_naming_data(store, key):
    value = UNHOLDABLE[key]
    with nothing_written(store), pytest.raises(TypeError, match="data"):
        store.append("s", [cairn.Event("T", value)])
    with nothing_written(store), pytest.raises(TypeError, match="data"):
        store.append("s", make_events(1) + [cairn.Event("T", {"wrapped": value})])


@pytest.mark.parametrize("key", list(UNHOLDABLE))
def test_unholdable_metadata_raises_type_error_naming_metadata(store, key):
    value = UNHOLDABLE[key]
    with nothing_written(store), pytest.raises(TypeError, match="metadata"):
        store.append("s", [cairn.Event("T", {"ok": 1}, metadata={"m": value})])


def test_self_referencing_data_raises_without_crashing(store):
    loop = []
    loop.append(loop)
    d = {}
    d["d"] = d
    for value in (loop, d):
        with nothing_written(store), pytest.raises((ValueError, TypeError, RecursionError)):
            store.append("s", [cairn.Event("T", value)])


def test_surrogate_in_data_raises_or_round_trips(store):
    value = {"s": "lone \ud800 surrogate"}
    try:
        store.append("s", [cairn.Event("T", value)])
    except (ValueError, TypeError):
        assert store.head() == 0
        check_usable(store)
    else:
        assert store.get(1).data == value


def test_subclasses_of_json_types_are_written_as_base_values(store):
    class MyDict(dict):
        pass

    class MyStr(str):
        pass

    class MyInt(int):
        pass

    value = MyDict(a=MyStr("x"), b=[MyInt(3)])
    try:
        store.append("s", [cairn.Event("T", value)])
    except TypeError as e:
        assert "data" in str(e)
        check_usable(store)
    else:
        assert same(store.get(1).data, {"a": "x", "b": [3]})


# Keys without NUL: that case has its own test above (test_nul_in_object_key_round_trips).
keys = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"), max_size=8)
json_values = st.recursive(
    st.none() | st.booleans()
    | st.integers(min_value=INT64_MIN, max_value=INT64_MAX)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(keys, children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=json_values | st.binary(), metadata=st.none() | st.dictionaries(keys, json_values))
def test_any_json_value_round_trips(store, data, metadata):
    r = store.append("prop", [cairn.Event("T", data, metadata=metadata)])
    got = store.get(r.position)
    assert same(got.data, data)
    assert same(got.metadata, metadata)


@settings(max_examples=300, deadline=None)
@given(value=json_values, ensure_ascii=st.booleans(), indent=st.sampled_from([None, 0, 2]))
def test_json_converters_agree_with_the_json_module(value, ensure_ascii, indent):
    """The encoder writes what json.dumps writes compactly in UTF-8; the decoder reads what
    json.loads reads, also text the encoder never writes (\\u escapes, white space): the
    Lua host's encoder writes the states and events the decoder reads too."""
    compact = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    assert _cairn._json_dumps(value) == compact.encode()
    text = json.dumps(value, ensure_ascii=ensure_ascii, indent=indent)
    assert same(_cairn._json_loads(text.encode()), json.loads(text))


@pytest.mark.parametrize("text", [b"", b"{", b"[1,]", b'{"a" 1}', b"01", b"1.", b"-", b"nul",
                                  b'"\\ud800"', b'"\x01"', b"1 2", b"9223372036854775808"])
def test_json_decoder_refuses_what_is_not_json(text):
    with pytest.raises(ValueError):
        _cairn._json_loads(text)


def test_store_works_after_a_series_of_failures(store):
    store.append("s", make_events(1))
    failures = [
        lambda: store.append("s", [cairn.Event("T", math.nan)]),
        lambda: store.append("", make_events(1)),
        lambda: store.append("s", []),
        lambda: store.append("s", make_events(1), expected_version=7),
        lambda: store.append("s", [cairn.Event("T", 2**64)]),
        lambda: store.append("s", ["x"]),
    ]
    for f in failures:
        with pytest.raises((ValueError, TypeError, cairn.Error)):
            f()
    assert store.head() == 1
    check_usable(store)
    assert store.verify().events == 2


# ---------------------------------------------------------------------------------------
# Multi-stream transactions
# ---------------------------------------------------------------------------------------

def test_transaction_writes_all_streams_in_one_commit(store):
    store.append("order-1", make_events(4))
    a, b = make_events(2), make_events(1)
    with store.transaction() as tx:
        tx.append("order-1", a, expected_version=3)
        tx.append("stock-9", b, expected_version=cairn.NO_STREAM)
        assert store.head() == 4  # nothing written while the block runs
    assert len(tx.results) == 2
    assert all(isinstance(r, cairn.AppendResult) for r in tx.results)
    assert [fields(r) for r in tx.results] == [(5, 6, 5), (0, 7, 7)]
    assert store.head() == 7
    assert [e.id for e in store.read_all(start=5)] == [e.id for e in a + b]


def test_transaction_appends_to_one_stream_see_each_other(store):
    with store.transaction() as tx:
        tx.append("s", make_events(1), expected_version=cairn.NO_STREAM)
        tx.append("s", make_events(2), expected_version=0)
        tx.append("s", make_events(1), expected_version=cairn.STREAM_EXISTS)
        tx.append("s", make_events(1), expected_version=3)
    assert [fields(r) for r in tx.results] == [(0, 1, 1), (2, 3, 2), (3, 4, 4), (4, 5, 5)]
    assert [e.version for e in store.read_stream("s")] == [0, 1, 2, 3, 4]


def test_transaction_expectations_checked_in_call_order(store):
    with nothing_written(store):
        with pytest.raises(cairn.WrongExpectedVersion) as ei:
            with store.transaction() as tx:
                tx.append("s", make_events(1), expected_version=0)
                tx.append("s", make_events(1), expected_version=cairn.NO_STREAM)
    assert tx.results is None
    assert (ei.value.stream, ei.value.expected, ei.value.actual) == ("s", 0, -1)


def test_transaction_failing_expectation_writes_nothing(store):
    store.append("b", make_events(2))
    with nothing_written(store):
        with pytest.raises(cairn.WrongExpectedVersion) as ei:
            with store.transaction() as tx:
                tx.append("a", make_events(3), expected_version=cairn.NO_STREAM)
                tx.append("b", make_events(1), expected_version=cairn.NO_STREAM)
                tx.append("c", make_events(1))
    assert tx.results is None
    assert (ei.value.stream, ei.value.expected, ei.value.actual) == ("b", cairn.NO_STREAM, 1)


def test_transaction_exception_in_block_writes_nothing(store):
    class Boom(Exception):
        pass

    store.append("a", make_events(1))
    with nothing_written(store):
        with pytest.raises(Boom):
            with store.transaction() as tx:
                tx.append("a", make_events(1), expected_version=0)
                tx.append("b", make_events(1))
                raise Boom()
    assert tx.results is None


def test_transaction_duplicate_writes_nothing(store):
    e = cairn.Event("T")
    store.append("a", [e])
    with nothing_written(store):
        with pytest.raises(cairn.DuplicateEvent):
            with store.transaction() as tx:
                tx.append("b", make_events(1))
                tx.append("c", [e])
    assert tx.results is None


def test_transaction_duplicate_across_its_own_appends_writes_nothing(store):
    e = cairn.Event("T")
    with nothing_written(store):
        with pytest.raises(cairn.DuplicateEvent):
            with store.transaction() as tx:
                tx.append("b", [e])
                tx.append("c", [e])
    assert tx.results is None


@pytest.mark.parametrize(
    "bad, exc",
    [
        (lambda tx: tx.append("", make_events(1)), ValueError),
        (lambda tx: tx.append("$x", make_events(1)), ValueError),
        (lambda tx: tx.append(3, make_events(1)), TypeError),
        (lambda tx: tx.append("a", []), ValueError),
        (lambda tx: tx.append("a", ["x"]), TypeError),
        (lambda tx: tx.append("a", [cairn.Event("T", math.nan)]), TypeError),
        (lambda tx: tx.append("a", [cairn.Event("T", 2**63)]), ValueError),
        (lambda tx: tx.append("a", make_events(1), expected_version=-3), ValueError),
    ],
    ids=["empty-stream", "dollar-stream", "int-stream", "no-events", "non-event", "nan",
         "big-int", "bad-expected"],
)
def test_transaction_bad_argument_raises_and_writes_nothing(store, bad, exc):
    with nothing_written(store):
        with pytest.raises(exc):
            with store.transaction() as tx:
                tx.append("ok", make_events(1))
                bad(tx)
    assert tx.results is None


def test_transaction_retry_returns_earlier_result(store):
    evs = make_events(2)
    r1 = store.append("a", evs)
    with nothing_written(store):
        with store.transaction() as tx:
            tx.append("a", evs, expected_version=cairn.NO_STREAM)
    assert [fields(r) for r in tx.results] == [fields(r1)]


def test_retry_of_one_part_of_a_transaction_returns_that_parts_result(store):
    a, b = make_events(2), make_events(3)
    with store.transaction() as tx:
        tx.append("a", a)
        tx.append("b", b)
    with nothing_written(store):
        rb = store.append("b", b, expected_version=cairn.NO_STREAM)
        ra = store.append("a", a, expected_version=7)
    assert fields(ra) == fields(tx.results[0]) == (1, 2, 1)
    assert fields(rb) == fields(tx.results[1]) == (2, 5, 3)
    with nothing_written(store), pytest.raises(cairn.DuplicateEvent):
        store.append("a", a + b)


def test_empty_transaction_writes_nothing_and_succeeds(store):
    with nothing_written(store):
        with store.transaction() as tx:
            pass
    assert tx.results == []


def test_transaction_does_not_hold_the_writer_lock_while_the_block_runs(store):
    errors = []

    def writer():
        try:
            store.append("other", make_events(1))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    with store.transaction() as tx:
        tx.append("mine", make_events(1), expected_version=cairn.NO_STREAM)
        t = threading.Thread(target=writer)
        t.start()
        t.join(10)
        assert not t.is_alive(), "an append from another thread blocked on the transaction"
    assert errors == []
    assert [fields(r) for r in tx.results] == [(0, 2, 2)]
    assert [e.stream for e in store.read_all()] == ["other", "mine"]


def test_transaction_expectation_checked_at_commit_not_at_call(store):
    store.append("s", make_events(1))
    competing = make_events(1)
    with pytest.raises(cairn.WrongExpectedVersion) as ei:
        with store.transaction() as tx:
            tx.append("s", make_events(1), expected_version=0)
            tx.append("t", make_events(1))
            store.append("s", competing, expected_version=0)  # a competing writer wins
    assert tx.results is None
    assert (ei.value.expected, ei.value.actual) == (0, 1)
    assert store.head() == 2
    assert [e.id for e in store.read_all()][1] == competing[0].id
    assert store.stream_version("t") == -1
    check_usable(store)


def test_transaction_is_used_for_one_with_block_only(store):
    tx = store.transaction()
    assert tx.results is None
    assert repr(tx) == "<cairn.Transaction new, 0 append(s) queued>"
    with pytest.raises(RuntimeError, match="only allowed inside its with block"):
        tx.append("s", make_events(1))  # before the block
    with tx:
        tx.append("s", make_events(2))
        assert repr(tx) == "<cairn.Transaction open, 1 append(s) queued>"
    assert repr(tx) == "<cairn.Transaction done, 0 append(s) queued>"
    with pytest.raises(RuntimeError, match="only allowed inside its with block"):
        tx.append("s", make_events(1))  # after it
    with pytest.raises(RuntimeError, match="one with block only"):
        with tx:
            pass
    assert [fields(r) for r in tx.results] == [(1, 2, 1)]
    assert store.head() == 2


def test_transaction_on_a_store_closed_before_its_commit_writes_nothing(store_path):
    s = cairn.open(store_path, durability="none")
    with pytest.raises(cairn.StoreClosed):
        with s.transaction() as tx:
            tx.append("s", make_events(1))
            s.close()
    assert tx.results is None
    with cairn.open(store_path) as again:
        assert again.head() == 0


def test_transaction_type_lives_in_the_extension(store, monkeypatch):
    """store.transaction() does not look anything up in the cairn package (it once imported
    cairn.Transaction from it): with the package gone from sys.modules it still works."""
    assert cairn.Transaction is _cairn.Transaction
    monkeypatch.setitem(sys.modules, "cairn", types.ModuleType("cairn"))
    with store.transaction() as tx:
        tx.append("s", make_events(1))
    assert type(tx) is _cairn.Transaction
    assert [fields(r) for r in tx.results] == [(0, 1, 1)]


@pytest.mark.parametrize("second_stream", ["b-1", "a-1"])
def test_an_id_repeated_inside_one_transaction_says_it_appears_twice(store, second_stream):
    e = cairn.Event("T")
    with pytest.raises(cairn.DuplicateEvent) as ei:
        with store.transaction() as tx:
            tx.append("a-1", [e])
            tx.append(second_stream, [cairn.Event("T", id=e.id)])
    # the position the first append held was never committed: no message may cite it
    assert str(ei.value).endswith(f"event id {e.id} appears twice in this transaction")
    assert ei.value.position is None
    assert store.head() == 0
    store.append("a-1", [e])  # usable; and a later repeat cites the committed position
    with pytest.raises(cairn.DuplicateEvent, match=f"event id {e.id} was already written at position 1"):
        store.append("b-1", [cairn.Event("T", id=e.id)])


def test_error_messages_say_what_happened(store, store_path):
    # a failing marker is named, not printed as its code
    with pytest.raises(cairn.WrongExpectedVersion, match=r"expected an existing stream \(STREAM_EXISTS\), actual version -1"):
        store.append("a-1", [cairn.Event("T")], expected_version=cairn.STREAM_EXISTS)
    store.append("a-1", [cairn.Event("T")])
    with pytest.raises(cairn.WrongExpectedVersion, match=r"expected no stream \(NO_STREAM\), actual version 0"):
        store.append("a-1", [cairn.Event("T")], expected_version=cairn.NO_STREAM)
    # bounds state the real limit
    with pytest.raises(ValueError, match=r"at most 2\*\*63 - 1.*9223372036854775808"):
        store.append("a-1", [cairn.Event("T")], expected_version=2**63)
    store.define_aggregate("acc", "return { init = function() return {} end, apply = {}, "
                                  "decide = {}, compensate = {} }")
    store.append("acc-1", [cairn.Event("T")])
    with pytest.raises(ValueError, match=str(2**70)):
        store.compensate("acc-1", 2**70)
    # bytes is not a list of str
    with pytest.raises(TypeError, match="bytes is not a list of str"):
        list(store.read_all(types=b"T"))
    # a NUL in a command name is refused, not cut from the message
    with pytest.raises(ValueError, match="must not contain NUL"):
        store.execute("acc-1", "A\x00B")
    # one rule, one wording for the script limits
    for bad in (-1, 0):
        with pytest.raises(ValueError, match=f"script_instruction_limit must be a positive int, got {bad}"):
            cairn.open(store_path, script_instruction_limit=bad)
    # a lone surrogate in a subscription name says "not valid UTF-8" like every other argument
    with pytest.raises(ValueError, match="not valid UTF-8"):
        store.subscribe(name="x\udc80")
    with pytest.raises(ValueError, match="not valid UTF-8"):
        store.checkpoint("x\udc80")
    assert store.head() == 2  # nothing written by any of them
