"""A peer's own test suite against cairn's DCB (docs/API.md section 5, issue 14).

Python's `eventsourcing` (9.5.6, requirements-dev.txt) ships the test case it runs against
its own DCB recorders (in memory, PostgreSQL): `eventsourcing.dcb.tests.DCBRecorderTestCase`,
whose `_test_append_read` and `_test_append_subscribe` take any
`eventsourcing.dcb.api.DCBRecorder`. `CairnDCBRecorder` below presents a cairn store as one,
through cairn's public API only (`store.query`, `store.append(..., condition=)`,
`store.subscribe`), and both methods run against it, each on a fresh store.

The adapter is test code: it translates names, not semantics, except where the two
libraries disagree. Where they do, and which is right:

- **head of a read with a limit.** eventsourcing (and UmaDB): with `limit`, `head` is the
  position of the last event returned (None when none is), so `read(after=1, limit=1)` of
  three events has head 2. eventsourcing is right, and cairn's first draft of section 5
  (head = the store's head always) was wrong: `head` is what a caller passes on as the
  condition's `after`, and after a forward read that the limit cut short at position p, any
  later head lets an append through although events matching the query in (p, head] were
  never seen by the decision -- the lost update DCB exists to prevent. This test case found
  it; section 5 now makes `res.head` the last event's position once the limit is reached,
  and the adapter passes cairn's head on as it is (read after the iteration, as
  eventsourcing's own users do). What still differs, both sound: a limit the result did not
  reach leaves cairn's head at the store's head (eventsourcing: the last event returned,
  which only narrows the condition); and `limit=0` gives cairn `start - 1` (0 without a
  start), eventsourcing None, which the test case asserts and the adapter maps.
- **empty lists in a query item.** eventsourcing's `DCBQueryItem` defaults `types` and
  `tags` to `[]`, meaning "any"; `cairn.QueryItem(types=[])` raises `ValueError`. cairn is
  right for cairn: in `read_all(types=[])` an empty list matches nothing, and one call
  must not give `[]` the opposite meaning; refusing it makes the mistake loud. The adapter
  passes `None` for an empty list.
- **empty store.** eventsourcing's head is None, cairn's 0; as an `after` both mean "the
  whole log" (positions start at 1), and the test case accepts either (`head or 0`).
- **bounds.** eventsourcing's `read(after=)` is exclusive; cairn's `store.query(q, start=)`
  is inclusive like every cairn read (section 1), while `Condition(q, after=)` is exclusive
  in both. The adapter reads from `after + 1`.
- **streams.** A DCB recorder has none; the adapter writes every event to one stream and
  returns `AppendResult.position`, the last position, as eventsourcing's `append` does.
  `ConditionFailed` becomes eventsourcing's `IntegrityError`.
- **subscriptions by query.** cairn subscribes by filters (types AND all of tags: one
  query item); the adapter filters several items in Python. The test case only
  subscribes to everything.
"""

import pytest
from eventsourcing.dcb import tests as es_tests
from eventsourcing.dcb.api import (
    DCBAppendCondition,
    DCBEvent,
    DCBQuery,
    DCBQueryItem,
    DCBReadResponse,
    DCBRecorder,
    DCBSequencedEvent,
    DCBSubscription,
)
from eventsourcing.persistence import IntegrityError, ProgrammingError

import cairn

STREAM = "dcb"


def cairn_query(query):
    """A cairn.Query for an eventsourcing DCBQuery (None, or no items: every event)."""
    items = [] if query is None else query.items
    return cairn.Query(*[cairn.QueryItem(types=list(i.types) or None, tags=list(i.tags) or None)
                         for i in items])


def dcb_event(e):
    return DCBSequencedEvent(event=DCBEvent(type=e.type, data=e.data, tags=list(e.tags)),
                             position=e.position)


class CairnReadResponse(DCBReadResponse):
    def __init__(self, res, limit):
        self._res = res
        self._events = map(dcb_event, res)
        self._limit = limit

    @property
    def head(self):  # cairn's own (section 5); only limit=0 differs (see the module's docstring)
        return None if self._limit == 0 else self._res.head

    def __next__(self):
        return next(self._events)


class CairnSubscription(DCBSubscription):
    def __init__(self, recorder, query=None, after=None):
        super().__init__(recorder, query, after)
        items = [] if query is None else query.items
        one = items[0] if len(items) == 1 else DCBQueryItem()
        self._match = None
        if len(items) > 1:
            self._match = lambda e: any((not i.types or e.type in i.types) and set(i.tags) <= set(e.tags)
                                        for i in items)
        self._sub = recorder.store.subscribe((after or 0) + 1, types=one.types or None,
                                             tags=one.tags or None)

    def stop(self):
        super().stop()
        self._sub.close()

    def __next__(self):
        for e in self._sub:
            if self._has_been_stopped:
                break
            if self._match is None or self._match(e):
                return dcb_event(e)
        raise StopIteration


class CairnDCBRecorder(DCBRecorder):
    def __init__(self, store):
        self.store = store

    def read(self, query=None, *, after=None, limit=None):
        start = None if after is None else after + 1
        return CairnReadResponse(self.store.query(cairn_query(query), start, limit=limit), limit)

    def append(self, events, condition=None):
        if not events:
            raise ProgrammingError("no events to append")
        cond = None
        if condition is not None:
            cond = cairn.Condition(cairn_query(condition.fail_if_events_match), after=condition.after)
        try:
            r = self.store.append(STREAM, [cairn.Event(e.type, bytes(e.data), tags=list(e.tags))
                                           for e in events], condition=cond)
        except cairn.ConditionFailed as err:
            raise IntegrityError(f"condition failed at positions {err.positions}") from err
        return r.position

    def subscribe(self, query=None, *, after=None):
        return CairnSubscription(self, query, after)


@pytest.fixture
def recorder(store):
    return CairnDCBRecorder(store)


@pytest.fixture
def case():
    return es_tests.DCBRecorderTestCase()


def test_eventsourcing_append_read(case, recorder):
    case._test_append_read(recorder)


def test_eventsourcing_append_read_after_earlier_events(case, store):
    # the same, on a store that already holds events of other types and tags: the positions
    # the test case expects are offset by them, and none of them matches its queries
    for i in range(5):
        store.append(f"other-{i}", [cairn.Event("Other", {"i": i}, tags=["other", f"o:{i}"])])
    case._test_append_read(CairnDCBRecorder(store), initial_position=5)


def test_eventsourcing_append_subscribe(case, recorder):
    case._test_append_subscribe(recorder)


def test_a_subscription_by_several_items_yields_what_a_read_by_them_returns(recorder):
    # the adapter's own part (cairn subscribes by one item's filters): checked against query
    recorder.append([DCBEvent("A", b"1", ["x"]), DCBEvent("B", b"2", ["y"]),
                     DCBEvent("C", b"3", ["x", "y"]), DCBEvent("A", b"4", ["y"])])
    q = DCBQuery([DCBQueryItem(types=["A"], tags=["x"]), DCBQueryItem(tags=["x", "y"])])
    with recorder.subscribe(q, after=0) as sub:
        got = [next(sub).position for _ in range(2)]
    assert got == [e.position for e in recorder.read(q)] == [1, 3]


def test_the_adapters_conditions_are_cairns(recorder, store):
    # a failed condition leaves nothing written, and the IntegrityError carries cairn's error
    recorder.append([DCBEvent("A", b"1", ["x"])])
    with pytest.raises(IntegrityError) as info:
        recorder.append([DCBEvent("A", b"2", ["x"])], DCBAppendCondition(DCBQuery([DCBQueryItem(tags=["x"])])))
    assert isinstance(info.value.__cause__, cairn.ConditionFailed)
    assert list(info.value.__cause__.positions) == [1]
    assert store.head() == 1
