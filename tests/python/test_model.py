"""Model-based test of the write and read contract (docs/API.md sections 1-2).

A Hypothesis state machine drives random sequences of appends (every expected-version kind,
exact retries, wrong reuses of ids), multi-stream transactions (some failing), reads with
filters, stream listings and close/reopen against a real store, and compares every answer
with a small in-memory model of the spec: streams -> positions, the global log, the calls
that wrote (for idempotent retries).  After every step the whole log is read back and
compared with the model (head, gapless positions, versions, ids, types, data, metadata, tags).

Reproducible: derandomized, no example database.  CAIRN_MODEL_EXAMPLES=N raises the number
of examples (default 200; each runs up to 50 steps, CAIRN_MODEL_STEPS) for long runs.
"""

import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

import cairn

from conftest import same

# Totals over the run, printed at exit with CAIRN_MODEL_STATS=1 (figures for docs/reliability.md).
STATS = {"examples": 0, "steps": 0, "events": 0, "max_events": 0}


def note(what):
    STATS[what] = STATS.get(what, 0) + 1
if os.environ.get("CAIRN_MODEL_STATS"):
    import atexit

    atexit.register(lambda: print("\ncairn model stats:", STATS))

EXAMPLES = int(os.environ.get("CAIRN_MODEL_EXAMPLES", "200"))
STEPS = int(os.environ.get("CAIRN_MODEL_STEPS", "50"))

# A small pool, so that streams collide often; long names (1,024 bytes, multi-byte UTF-8,
# names sharing the first 480 bytes, which streams() indexes by prefix + digest) included.
P480 = "p" * 480
STREAMS = [
    "a",
    "account-1",
    "account-2",
    "account-10",
    "order-1",
    "ü-1",
    P480 + "a",
    P480 + "a" * 544,  # 1,024 bytes
    P480 + "b",
    "é" * 512,  # 1,024 bytes, 512 characters
    "s" * 1023 + "-",  # 1,024 bytes, category "s" * 1023
]
PREFIXES = ["", "a", "acc", "account-", "account-1", "order-1x", P480, P480 + "a", "é", "s",
            "zzz", "ü"]
TYPES = ["A", "B", "Created", "ü-type", "T" * 255]
TAGS = ["t1", "t2", "t3", "tag-ü", "x" * 1024]


def category(stream):
    return stream.split("-", 1)[0]


def categories_of_pool():
    return sorted({category(s) for s in STREAMS}) + ["nope"]


text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)
datas = json_values | st.binary(max_size=16)
metadatas = st.none() | st.dictionaries(text, json_values, max_size=2)
event_specs = st.fixed_dictionaries({
    "type": st.sampled_from(TYPES),
    "data": datas,
    "metadata": metadatas,
    "tags": st.lists(st.sampled_from(TAGS), unique=True, max_size=3),
    "schema": st.integers(1, 3),
})
EV_KINDS = ["any", "no_stream", "exists", "exact", "wrong"]


class Ev:
    """The model's copy of one written event."""

    __slots__ = ("position", "stream", "version", "type", "data", "metadata", "tags", "id",
                 "schema")

    def __init__(self, position, stream, version, event):
        self.position = position
        self.stream = stream
        self.version = version
        self.type = event.type
        self.data = event.data
        self.metadata = event.metadata
        self.tags = tuple(event.tags)
        self.id = event.id
        self.schema = event.schema


def check_event(got, ev):
    assert got.position == ev.position
    assert got.stream == ev.stream
    assert got.version == ev.version, (got.version, ev.version)
    assert got.id == ev.id
    assert got.type == ev.type
    assert got.schema == ev.schema
    assert got.tags == ev.tags
    assert same(got.data, ev.data), (got.data, ev.data)
    assert same(got.metadata, ev.metadata), (got.metadata, ev.metadata)


def check_events(got, want):
    got = list(got)
    assert [g.position for g in got] == [w.position for w in want]
    for g, w in zip(got, want):
        check_event(g, w)


class StoreModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="cairn-model-")
        self.path = os.path.join(self.dir, "store")
        self.store = cairn.open(self.path, durability="none")
        self.log = []  # Ev, index = position - 1
        self.streams = {}  # name -> [Ev] by version
        self.calls = []  # (stream, [Event], (version, position, first_position))
        self.written = {}  # id -> Ev
        self.steps = 0

    def teardown(self):
        STATS["examples"] += 1
        STATS["steps"] += self.steps
        STATS["events"] += len(self.log)
        STATS["max_events"] = max(STATS["max_events"], len(self.log))
        try:
            self.store.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers --------------------------------------------------------------------------

    def version(self, stream, pending=None):
        if pending is not None and stream in pending:
            return pending[stream]
        return len(self.streams.get(stream, ())) - 1

    @staticmethod
    def expectation(data, kind, cur):
        """(expected_version argument, whether it holds for current version cur)."""
        if kind == "any":
            return cairn.ANY, True
        if kind == "no_stream":
            return cairn.NO_STREAM, cur == -1
        if kind == "exists":
            return cairn.STREAM_EXISTS, cur >= 0
        if kind == "exact":
            return cur, True  # -1 is NO_STREAM's value
        choices = [cur + 1, cur + 2, cur + 7]
        if cur >= 1:
            choices.append(cur - 1)
        if cur >= 0:
            choices.append(0 if cur > 0 else 3)
        return data.draw(st.sampled_from(choices), label="wrong"), False

    def new_events(self, data, max_n=5):
        specs = data.draw(st.lists(event_specs, min_size=1, max_size=max_n), label="events")
        return [cairn.Event(s["type"], s["data"], metadata=s["metadata"], tags=s["tags"],
                            schema=s["schema"]) for s in specs]

    def record(self, stream, events):
        """Adds a successful write of events to the model; returns (version, last, first)."""
        first = len(self.log) + 1
        lst = self.streams.setdefault(stream, [])
        for e in events:
            ev = Ev(len(self.log) + 1, stream, len(lst), e)
            self.log.append(ev)
            lst.append(ev)
            self.written[e.id] = ev
        result = (len(lst) - 1, len(self.log), first)
        self.calls.append((stream, list(events), result))
        return result

    def snapshot(self):
        return (self.store.head(), {s: self.store.stream_version(s) for s in STREAMS})

    # -- writes ---------------------------------------------------------------------------

    @rule(data=st.data(), stream=st.sampled_from(STREAMS), kind=st.sampled_from(EV_KINDS))
    def append(self, data, stream, kind):
        events = self.new_events(data)
        cur = self.version(stream)
        ev, ok = self.expectation(data, kind, cur)
        if ok:
            note("append ok " + kind)
            r = self.store.append(stream, events, expected_version=ev)
            want = self.record(stream, events)
            assert (r.version, r.position, r.first_position) == want
        else:
            note("append WrongExpectedVersion " + kind)
            before = self.snapshot()
            with pytest.raises(cairn.WrongExpectedVersion) as info:
                self.store.append(stream, events, expected_version=ev)
            assert info.value.stream == stream
            assert info.value.expected == ev
            assert info.value.actual == cur
            assert self.snapshot() == before

    @precondition(lambda self: self.calls)
    @rule(data=st.data(), kind=st.sampled_from(EV_KINDS + ["stale"]),
          how=st.sampled_from(["list", "iter", "tx"]))
    def retry(self, data, kind, how):
        """The exact ids of an earlier call (plain or inside a transaction), same order, same
        stream: its result, no write, whatever expected_version says now; also as the only
        append of a transaction."""
        i = data.draw(st.integers(0, len(self.calls) - 1), label="call")
        stream, events, want = self.calls[i]
        cur = self.version(stream)
        if kind == "stale":
            ev = want[0] - len(events)  # the expectation the first call could have had
        else:
            ev, _ = self.expectation(data, kind, cur)
        note("retry")
        before = self.snapshot()
        if how == "tx":
            with self.store.transaction() as tx:
                tx.append(stream, events, expected_version=ev)
            (r,) = tx.results
        else:
            r = self.store.append(stream, list(events) if how == "list" else iter(events),
                                  expected_version=ev)
        assert (r.version, r.position, r.first_position) == want
        assert self.snapshot() == before

    @precondition(lambda self: self.calls)
    @rule(data=st.data(), how=st.sampled_from(["subset", "superset", "other_stream",
                                               "reversed", "two_calls", "in_tx"]))
    def reuse_ids_wrongly(self, data, how):
        i = data.draw(st.integers(0, len(self.calls) - 1), label="call")
        stream, events, _ = self.calls[i]
        target = stream
        if how == "subset" and len(events) >= 2:
            k = data.draw(st.integers(1, len(events) - 1), label="k")
            start = data.draw(st.integers(0, len(events) - k), label="start")
            batch = events[start:start + k]
        elif how == "reversed" and len(events) >= 2:
            batch = events[::-1]
        elif how == "two_calls" and len(self.calls) >= 2:
            j = data.draw(st.integers(0, len(self.calls) - 1).filter(lambda j: j != i), label="j")
            batch = list(events) + list(self.calls[j][1])
            if self.calls[j][0] != stream:
                target = data.draw(st.sampled_from([stream, self.calls[j][0]]), label="target")
        elif how == "other_stream":
            target = data.draw(st.sampled_from([s for s in STREAMS if s != stream]), label="to")
            batch = list(events)
        else:  # superset (also the fallback for the cases above that need more)
            fresh = self.new_events(data, max_n=2)
            pos = data.draw(st.integers(0, len(fresh)), label="pos")
            batch = fresh[:pos] + list(events) + fresh[pos:]
        note("DuplicateEvent " + how)
        before = self.snapshot()
        with pytest.raises(cairn.DuplicateEvent) as info:
            if how == "in_tx":
                other = data.draw(st.sampled_from(STREAMS), label="other")
                with self.store.transaction() as tx:
                    tx.append(other, self.new_events(data, max_n=2))
                    tx.append(target, batch)
                assert False, "transaction with a wrong reuse committed"
            self.store.append(target, batch)
        dup = info.value
        if dup.position is not None:
            ev = self.log[dup.position - 1]
            assert ev.id in {e.id for e in batch}, "DuplicateEvent names an id not given"
            # .stream is not specified; cairn names the stream of the failing call.
            assert dup.stream in (None, target) or how == "in_tx"
        assert self.snapshot() == before

    @rule(data=st.data(), n=st.integers(1, 3), fail=st.sampled_from(["no", "no", "expect",
                                                                     "raise"]))
    def transaction(self, data, n, fail):
        requests = []
        pending = {}
        first_failure = None
        for k in range(n):
            stream = data.draw(st.sampled_from(STREAMS), label="stream")
            kind = data.draw(st.sampled_from(EV_KINDS if fail == "expect" else
                                             ["any", "exact", "exists", "no_stream"]),
                             label="kind")
            cur = self.version(stream, pending)
            if fail != "expect" and kind in ("exists", "no_stream"):
                kind = "exists" if cur >= 0 else "no_stream"
            ev, ok = self.expectation(data, kind, cur)
            events = self.new_events(data, max_n=3)
            if not ok and first_failure is None:
                first_failure = (stream, ev, cur)
            requests.append((stream, events, ev))
            pending[stream] = cur + len(events)
        before = self.snapshot()
        tx = None
        if first_failure is None and fail != "raise":
            with self.store.transaction() as tx:
                for stream, events, ev in requests:
                    tx.append(stream, events, expected_version=ev)
                assert self.store.head() == before[0], "written before the block exited"
            got = [(r.version, r.position, r.first_position) for r in tx.results]
            want = [self.record(stream, events) for stream, events, _ in requests]
            assert got == want
            note("transaction ok")
            return
        note("transaction failed " + fail)
        exc = cairn.WrongExpectedVersion if first_failure is not None else RuntimeError
        with pytest.raises(exc) as info:
            with self.store.transaction() as tx:
                for stream, events, ev in requests:
                    tx.append(stream, events, expected_version=ev)
                if fail == "raise":
                    raise RuntimeError("abort")
        if first_failure is not None:
            assert (info.value.stream, info.value.expected, info.value.actual) == first_failure
        assert tx.results is None
        assert self.snapshot() == before

    @rule(durability=st.sampled_from(["none", "relaxed"]))
    def reopen(self, durability):
        note("reopen")
        self.store.close()
        with pytest.raises(cairn.StoreClosed):
            self.store.head()
        self.store = cairn.open(self.path, durability=durability)

    # -- reads ----------------------------------------------------------------------------

    @rule(data=st.data(), stream=st.sampled_from(STREAMS), backwards=st.booleans(),
          limit=st.none() | st.integers(0, 4), raw=st.booleans())
    def read_stream(self, data, stream, backwards, limit, raw):
        evs = self.streams.get(stream, [])
        start = data.draw(st.none() | st.integers(-1, len(evs) + 2), label="start")
        if backwards:
            top = len(evs) - 1 if start is None else min(start, len(evs) - 1)
            want = evs[:top + 1][::-1]
        else:
            want = evs[max(start or 0, 0):]
        if limit is not None:
            want = want[:limit]
        note("read_stream")
        check_events(self.store.read_stream(stream, start, backwards=backwards, limit=limit,
                                            raw=raw), want)

    @rule(data=st.data(), backwards=st.booleans(), limit=st.none() | st.integers(0, 6))
    def read_all(self, data, backwards, limit):
        head = len(self.log)
        start = data.draw(st.none() | st.integers(0, head + 2), label="start")

        def a_filter(pool, label):
            return data.draw(st.none() | st.none() | st.sampled_from(pool)
                             | st.lists(st.sampled_from(pool), max_size=3), label=label)

        types = a_filter(TYPES, "types")
        cats = a_filter(categories_of_pool(), "categories")
        streams = a_filter(STREAMS + ["nope-1"], "streams")
        tags = a_filter(TAGS, "tags")

        def one_of(flt, value):
            if flt is None:
                return True
            return value == flt if isinstance(flt, str) else value in flt

        def keep(ev):
            if not (one_of(types, ev.type) and one_of(cats, category(ev.stream))
                    and one_of(streams, ev.stream)):
                return False
            if tags is None:
                return True
            wanted = [tags] if isinstance(tags, str) else tags
            return bool(wanted) and all(t in ev.tags for t in wanted)

        if backwards:
            top = head if start is None else min(start, head)  # 0: before the first event
            want = [ev for ev in reversed(self.log[:top]) if keep(ev)]
        else:
            want = [ev for ev in self.log[max(start or 1, 1) - 1:] if keep(ev)]
        if limit is not None:
            want = want[:limit]
        note("read_all" + (" filtered" if (types, cats, streams, tags) != (None,) * 4 else "")
             + (" tags" if tags is not None else ""))
        got = self.store.read_all(start, backwards=backwards, limit=limit, types=types,
                                  categories=cats, streams=streams, tags=tags)
        check_events(got, want)

    @rule(data=st.data())
    def get(self, data):
        p = data.draw(st.integers(0, len(self.log) + 2), label="position")
        if 1 <= p <= len(self.log):
            check_event(self.store.get(p), self.log[p - 1])
        else:
            with pytest.raises(KeyError):
                self.store.get(p)

    @rule(stream=st.sampled_from(STREAMS + ["never"]))
    def stream_version(self, stream):
        assert self.store.stream_version(stream) == self.version(stream)

    @rule(prefix=st.sampled_from(PREFIXES))
    def list_streams(self, prefix):
        want = sorted((s for s in self.streams if s.startswith(prefix)),
                      key=lambda s: s.encode())
        assert list(self.store.streams(prefix)) == want

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def log_matches(self):
        self.steps += 1
        assert self.store.head() == len(self.log)
        got = list(self.store.read_all())
        assert [g.position for g in got] == list(range(1, len(self.log) + 1)), "gap in positions"
        for g, w in zip(got, self.log):
            check_event(g, w)
        for s, evs in self.streams.items():
            assert [ev.version for ev in evs] == list(range(len(evs)))


StoreModel.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
)
TestStoreModel = StoreModel.TestCase
