"""Dynamic consistency boundaries from Python (docs/API.md section 5): cairn.QueryItem,
cairn.Query, cairn.Condition, store.query and append conditions, every rule of the section,
a multi-process race for the last seat of a course, and a model-based test of query against
a brute-force filter (Hypothesis)."""

import multiprocessing
import pickle

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cairn

Q, I, C = cairn.Query, cairn.QueryItem, cairn.Condition


@pytest.fixture
def store(tmp_path):
    s = cairn.open(str(tmp_path / "s"), durability="none")
    yield s
    s.close()


def ev(type_, *tags, data=None):
    return cairn.Event(type_, data, tags=list(tags))


def positions(it):
    return [e.position for e in it]


def course(c):
    return Q(I(types=["StudentSubscribed"], tags=[f"course:{c}"]))


@pytest.fixture
def courses(store):
    store.append("c-1", [ev("CapacityChanged", "course:c1")])  # 1
    store.append("s-1", [ev("StudentSubscribed", "course:c1", "student:s1")])  # 2
    store.append("s-2", [ev("StudentSubscribed", "course:c2", "student:s1")])  # 3
    store.append("s-3", [ev("StudentSubscribed", "course:c1", "student:s2")])  # 4
    store.append("c-2", [ev("CapacityChanged", "course:c2")])  # 5
    store.append("x-1", [ev("Other", "course:c1", "student:s1", "misc")])  # 6
    return store


# --- the values ---------------------------------------------------------------------------
def test_query_values_hold_their_fields_and_compare_by_value():
    item = I(types="A", tags=["t1", "t2"])
    assert item.types == ("A",) and item.tags == ("t1", "t2")
    assert I().types is None and I().tags is None
    assert Q(item, I()).items == (item, I())
    assert Q().items == ()
    c = C(Q(item), after=3)
    assert c.query == Q(item) and c.after == 3 and C(Q()).after is None
    assert item == I(types=("A",), tags=("t1", "t2")) and hash(item) == hash(I("A", ["t1", "t2"]))
    assert item != I(types="A", tags=["t2", "t1"])  # the lists as given
    assert c == C(Q(item), 3) and c != C(Q(item), 4) and hash(c) == hash(C(Q(item), 3))
    for v in (item, Q(item), c, C(Q())):
        assert pickle.loads(pickle.dumps(v)) == v
        assert eval(repr(v), {"cairn": cairn}) == v
    with pytest.raises(AttributeError):
        item.types = ("B",)


@pytest.mark.parametrize(
    "make, exc, words",
    [
        (lambda: I(types=[]), ValueError, "types: an empty list"),
        (lambda: I(tags=()), ValueError, "tags: an empty list"),
        (lambda: I(tags=["a\0b"]), ValueError, "tags"),
        (lambda: I(tags=[""]), ValueError, "tags"),
        (lambda: I(types=["x" * 256]), ValueError, "types"),
        (lambda: I(tags=["x" * 1025]), ValueError, "tags"),
        (lambda: I(types=[1]), TypeError, "types must contain only str"),
        (lambda: I(tags=b"ab"), TypeError, "tags"),
        (lambda: I(tags=5), TypeError, "tags"),
        (lambda: Q(["not an item"]), TypeError, "Query(*items)"),
        (lambda: Q(I(), "x"), TypeError, "QueryItem"),
        (lambda: Q(items=[I()]), TypeError, "positional"),
        (lambda: C(I()), TypeError, "query must be a cairn.Query"),
        (lambda: C(Q(), after=-1), ValueError, "after"),
        (lambda: C(Q(), after="3"), TypeError, "after"),
    ],
)
def test_bad_values_are_refused_naming_the_argument(make, exc, words):
    with pytest.raises(exc, match=None) as info:
        make()
    assert words in str(info.value)


# --- query --------------------------------------------------------------------------------
def test_an_item_matches_any_of_its_types_and_all_of_its_tags(courses):
    assert positions(courses.query(course("c1"))) == [2, 4]
    assert positions(courses.query(Q(I(tags=["course:c1", "student:s1"])))) == [2, 6]
    assert positions(courses.query(Q(I(types=["CapacityChanged", "Other"])))) == [1, 5, 6]
    assert positions(courses.query(Q(I(types="CapacityChanged", tags="course:c2")))) == [5]
    assert positions(courses.query(Q(I(tags=["course:c9"])))) == []
    assert positions(courses.query(Q(I(types=["Nope"])))) == []


def test_a_query_matches_any_item_in_position_order_without_duplicates(courses):
    q = Q(course("c1").items[0], I(types="CapacityChanged", tags="course:c1"),
          I(tags=["course:c1", "student:s1"]))
    assert positions(courses.query(q)) == [1, 2, 4, 6]
    assert positions(courses.query(q, backwards=True)) == [6, 4, 2, 1]
    assert positions(courses.query(q, 3)) == [4, 6]  # start is inclusive
    assert positions(courses.query(q, 5, backwards=True, limit=2)) == [4, 2]
    assert positions(courses.query(q, limit=0)) == []
    assert positions(courses.query(q, 0, backwards=True)) == []  # before the first
    assert positions(courses.query(Q())) == [1, 2, 3, 4, 5, 6]
    assert positions(courses.query(Q(I()))) == [1, 2, 3, 4, 5, 6]


def test_query_returns_recorded_events_with_the_head_at_the_call(courses):
    res = courses.query(course("c1"))
    assert res.head == 6 == courses.head()
    courses.append("s-4", [ev("StudentSubscribed", "course:c1")])  # 7, after the call
    got = list(res)
    assert [(e.stream, e.type, e.tags) for e in got] == [
        ("s-1", "StudentSubscribed", ("course:c1", "student:s1")),
        ("s-3", "StudentSubscribed", ("course:c1", "student:s2")),
    ]
    assert res.head == 6  # nothing after it was yielded
    back = courses.query(course("c1"), backwards=True)
    courses.append("s-5", [ev("StudentSubscribed", "course:c1")])
    assert positions(back) == [7, 4, 2] and back.head == 7
    with pytest.raises(AttributeError, match="store.query"):
        courses.read_all().head


def test_a_forward_read_cut_by_its_limit_is_complete_up_to_its_last_event(courses):
    res = courses.query(course("c1"), limit=1)
    assert res.head == 6  # before the limit is reached: the head at the call
    assert positions(res) == [2] and res.head == 2  # cut: the events after 2 were not read
    # a condition made from it still covers the match the read did not reach (4)
    with pytest.raises(cairn.ConditionFailed) as info:
        courses.append("s-9", [ev("StudentSubscribed", "course:c1")],
                       condition=C(course("c1"), after=res.head))
    assert info.value.positions == [4]
    res = courses.query(course("c1"), limit=5)  # not cut: complete up to the head
    assert positions(res) == [2, 4] and res.head == 6
    res = courses.query(course("c1"), 3, limit=1)
    assert positions(res) == [4] and res.head == 4
    assert courses.query(course("c1"), limit=0).head == 0  # nothing seen
    assert courses.query(course("c1"), 4, limit=0).head == 3
    res = courses.query(course("c1"), backwards=True, limit=1)  # the newest: nothing newer skipped
    assert positions(res) == [4] and res.head == 6


def test_an_empty_store_has_head_zero(store):
    res = store.query(Q())
    assert res.head == 0 and list(res) == []


def test_matching_uses_the_stored_type_not_the_upcast_one(store):
    store.define_upcasters("return { OldName = { [1] = function(e) e.type = 'NewName' return e end } }")
    store.append("a", [ev("OldName", "k")])
    assert [e.type for e in store.query(Q(I(types=["OldName"])))] == ["NewName"]
    assert list(store.query(Q(I(types=["NewName"])))) == []
    with pytest.raises(cairn.ConditionFailed):
        store.append("b", [ev("X")], condition=C(Q(I(types=["OldName"]))))


def test_lifecycle_events_and_removed_events_never_match(store):
    store.append("gone", [ev("T", "k")])
    store.append("kept", [ev("T", "k")])
    store.delete_stream("gone")  # $lifecycle's event at 3
    assert positions(store.query(Q())) == [2]
    assert positions(store.query(Q(I(tags="k")))) == [2]
    assert positions(store.query(Q(I(types=["$StreamDeleted"])))) == []
    r = store.append("kept", [ev("T")], condition=C(Q(), after=2))  # $lifecycle does not count
    assert r.position == 4


def test_a_closed_store_refuses_queries_and_conditional_appends(tmp_path):
    s = cairn.open(str(tmp_path / "c"), durability="none")
    s.append("a", [ev("T", "k")])
    live = s.query(Q(I(tags="k")))
    s.close()
    with pytest.raises(cairn.StoreClosed):
        s.query(Q())
    with pytest.raises(cairn.StoreClosed):
        s.append("a", [ev("T")], condition=C(Q()))
    with pytest.raises(cairn.StoreClosed):  # an iterator made before the close
        next(live)
    with cairn.open(str(tmp_path / "c"), readonly=True) as r:
        assert r.head() == 1


def test_query_refuses_what_is_no_query(store):
    with pytest.raises(TypeError, match="cairn.Query"):
        store.query(I())
    with pytest.raises(ValueError, match="start"):
        store.query(Q(), -1)
    with pytest.raises(TypeError, match="backwards"):
        store.query(Q(), backwards="yes")


# --- conditions ---------------------------------------------------------------------------
def test_a_condition_after_the_last_match_holds(courses):
    res = courses.query(course("c1"))
    r = courses.append("s-9", [ev("StudentSubscribed", "course:c1")],
                       condition=C(course("c1"), after=res.head))
    assert r.position == 7
    # events the query does not match may come after `after`
    courses.append("other", [ev("StudentSubscribed", "course:c2")])
    r = courses.append("s-10", [ev("StudentSubscribed", "course:c1")],
                       condition=C(course("c1"), after=7))
    assert r.position == 9


def test_a_failed_condition_names_the_lowest_positions_and_writes_nothing(courses):
    with pytest.raises(cairn.ConditionFailed) as info:
        courses.append("s-9", [ev("StudentSubscribed")], condition=C(course("c1")))
    assert info.value.positions == [2, 4]
    assert isinstance(info.value, cairn.Error) and "condition" in str(info.value)
    with pytest.raises(cairn.ConditionFailed) as info:  # after is exclusive
        courses.append("s-9", [ev("StudentSubscribed")], condition=C(course("c1"), after=2))
    assert info.value.positions == [4]
    with pytest.raises(cairn.ConditionFailed) as info:  # at most five, the lowest
        courses.append("s-9", [ev("StudentSubscribed")], condition=C(Q(), after=0))
    assert info.value.positions == [1, 2, 3, 4, 5]
    assert courses.head() == 6 and courses.stream_version("s-9") == -1
    assert courses.append("s-9", [ev("StudentSubscribed")]).position == 7  # still usable


def test_bad_conditions_are_refused_and_nothing_is_written(store):
    with pytest.raises(TypeError, match="condition must be a cairn.Condition"):
        store.append("a", [ev("T")], condition=Q())
    with pytest.raises(TypeError, match="condition"):
        with store.transaction() as tx:
            tx.append("a", [ev("T")], condition="x")
    assert store.head() == 0
    assert store.append("a", [ev("T")], condition=None).position == 1


def test_in_a_transaction_conditions_see_earlier_appends_and_follow_expected_versions(store):
    user = Q(I(tags=["username:ann"]))
    with pytest.raises(cairn.ConditionFailed) as info:
        with store.transaction() as tx:
            tx.append("user-1", [ev("Registered", "username:ann")], condition=C(user))
            tx.append("user-2", [ev("Registered", "username:ann")], condition=C(user))
    assert info.value.positions == [1]  # the first append's, never committed
    assert store.head() == 0 and tx.results is None
    store.append("order-1", [ev("Placed")])
    with pytest.raises(cairn.WrongExpectedVersion):  # both fail: the version is checked first
        with store.transaction() as tx:
            tx.append("user-1", [ev("Registered", "username:ann")], condition=C(user))
            tx.append("order-1", [ev("Paid")], expected_version=5,
                      condition=C(Q(I(types="Placed"))))
    with store.transaction() as tx:  # both hold: one commit
        tx.append("user-1", [ev("Registered", "username:ann")], condition=C(user))
        tx.append("order-1", [ev("Paid")], expected_version=0, condition=C(Q(I(types="Paid"))))
    assert [r.position for r in tx.results] == [2, 3]


def test_a_retry_returns_the_earlier_result_and_checks_neither(store):
    events = [ev("Registered", "username:bob")]
    cond = C(Q(I(tags=["username:bob"])))
    first = store.append("user-7", events, expected_version=cairn.NO_STREAM, condition=cond)
    again = store.append("user-7", events, expected_version=cairn.NO_STREAM, condition=cond)
    assert again == first and store.head() == 1
    with pytest.raises(cairn.ConditionFailed):  # new events: checked
        store.append("user-8", [ev("Registered", "username:bob")], condition=cond)


def test_a_read_only_store_answers_queries_and_refuses_conditional_appends(tmp_path):
    path = str(tmp_path / "ro")
    with cairn.open(path, durability="none") as s:
        s.append("a", [ev("T", "k")])
    with cairn.open(path, readonly=True) as r:
        assert positions(r.query(Q(I(tags="k")))) == [1]
        with pytest.raises(PermissionError, match="read-only"):
            r.append("a", [ev("T", "k")], condition=C(Q(), after=1))


# --- the last seat, taken by several processes at once -------------------------------------
CAPACITY = 5


def take_seats(path, student, out):
    """Subscribe `student` to course c1 while it has room: read, decide, append on condition."""
    taken = retries = 0
    with cairn.open(path, durability="none") as s:
        q = course("c1")
        for attempt in range(200):
            seen = s.query(q)
            if len(list(seen)) >= CAPACITY:
                break
            try:
                s.append(f"student-{student}-{attempt}",
                         [ev("StudentSubscribed", "course:c1", f"student:{student}")],
                         condition=C(q, after=seen.head))
                taken += 1
            except cairn.ConditionFailed:
                retries += 1
    out.put((student, taken, retries))


def test_processes_racing_for_the_last_seats_take_exactly_the_capacity(tmp_path):
    path = str(tmp_path / "race")
    cairn.open(path).close()
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=take_seats, args=(path, n, out)) for n in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    with cairn.open(path, readonly=True) as s:
        assert len(list(s.query(course("c1")))) == CAPACITY
    assert sum(taken for _, taken, _ in results) == CAPACITY


# --- query against a brute-force filter ------------------------------------------------------
TYPES = ["A", "B", "C"]
TAGS = ["t0", "t1", "t2", "t3"]
events_st = st.lists(
    st.tuples(st.sampled_from(TYPES), st.sets(st.sampled_from(TAGS)), st.booleans()),
    max_size=40,
)
item_st = st.builds(
    lambda types, tags: I(types=types, tags=tags),
    st.none() | st.lists(st.sampled_from(TYPES), min_size=1, max_size=3),
    st.none() | st.lists(st.sampled_from(TAGS), min_size=1, max_size=3),
)
query_st = st.lists(item_st, max_size=3).map(lambda items: Q(*items))


def model_matches(query, type_, tags):
    if not query.items:
        return True
    return any((item.types is None or type_ in item.types)
               and (item.tags is None or set(item.tags) <= tags) for item in query.items)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=events_st, queries=st.lists(query_st, min_size=1, max_size=4),
       start=st.none() | st.integers(0, 45), backwards=st.booleans(), limit=st.none() | st.integers(0, 10),
       after=st.integers(0, 45))
def test_query_agrees_with_a_brute_force_filter(tmp_path_factory, events, queries, start, backwards,
                                                limit, after):
    path = str(tmp_path_factory.mktemp("model") / "s")
    with cairn.open(path, durability="none") as s:
        batch = []
        for type_, tags, alone in events:  # single appends go to the index tail, batches not
            batch.append(ev(type_, *sorted(tags)))
            if alone:
                s.append("m", batch)
                batch = []
        if batch:
            s.append("m", batch)
        log = [(e.position, e.type, set(e.tags)) for e in s.read_all()]
        for q in queries:
            want = [p for p, t, g in log if model_matches(q, t, g)]
            if backwards:
                want.reverse()
            if start is not None:
                want = [p for p in want if (p <= start if backwards else p >= start)]
            if start == 0 and backwards:
                want = []
            if limit is not None:
                want = want[:limit]
            assert positions(s.query(q, start, backwards=backwards, limit=limit)) == want
            conflicts = [p for p, t, g in log if p > after and model_matches(q, t, g)][:5]
            if conflicts:
                with pytest.raises(cairn.ConditionFailed) as info:
                    s.append("z", [ev("Z")], condition=C(q, after=after))
                assert info.value.positions == conflicts
