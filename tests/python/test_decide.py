"""Lua decision models over a consistency boundary (docs/API.md section 5, issue 14):
store.decide(aggregate, command, data, stream=..., metadata=...) folds the events the script's
boundary(cmd) selects, runs decide[command] on the result and appends what it returns to
`stream`, all in one write transaction; boundary snapshots where they are sound."""

import logging
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cairn
from conftest import check_usable, dump, run_together

# The course-subscription kata: a course has a capacity, a student takes at most two
# courses.  The state counts per course and per student, as the boundary selects the
# events of both (a subscription of this student to this course matches both items and is
# folded once).
COURSES = """
return {
  boundary = function(cmd)
    local c, s = cmd.data.course, cmd.data.student
    local items = { { types = { "CourseDefined", "CourseCapacityChanged", "StudentSubscribed" },
                      tags = { "course:" .. c } } }
    if s then items[2] = { types = { "StudentSubscribed" }, tags = { "student:" .. s } } end
    return items
  end,
  init = function() return { capacity = {}, taken = {}, courses_of = {}, pairs = {} } end,
  apply = {
    CourseDefined = function(s, e) s.capacity[e.data.course] = e.data.capacity end,
    CourseCapacityChanged = function(s, e) s.capacity[e.data.course] = e.data.capacity end,
    StudentSubscribed = function(s, e)
      local c, st = e.data.course, e.data.student
      s.taken[c] = (s.taken[c] or 0) + 1
      s.courses_of[st] = (s.courses_of[st] or 0) + 1
      s.pairs[c .. "/" .. st] = true
    end,
  },
  decide = {
    Define = function(s, cmd)
      if s.capacity[cmd.data.course] then reject("course exists") end
      return { { type = "CourseDefined", data = cmd.data, tags = { "course:" .. cmd.data.course } } }
    end,
    Subscribe = function(s, cmd)
      local c, st = cmd.data.course, cmd.data.student
      local cap = s.capacity[c]
      if not cap then reject("no such course", { course = c }) end
      if s.pairs[c .. "/" .. st] then reject("already subscribed") end
      if (s.taken[c] or 0) >= cap then reject("course full", { capacity = cap }) end
      if (s.courses_of[st] or 0) >= 2 then reject("too many courses", { student = st }) end
      return { { type = "StudentSubscribed", data = { course = c, student = st },
                 tags = { "course:" .. c, "student:" .. st } } }
    end,
    Peek = function(s, cmd) reject("peek", s) end,
    Nothing = function(s, cmd) return {} end,
  },
}
"""


def define(store, course, capacity):
    return store.append(f"course-{course}", [cairn.Event(
        "CourseDefined", {"course": course, "capacity": capacity}, tags=[f"course:{course}"])])


def subscribe(store, course, student, stream="subscriptions", **kw):
    return store.decide("courses", "Subscribe", {"course": course, "student": student},
                        stream=stream, **kw)


def peek(store, aggregate="courses", **data):
    with pytest.raises(cairn.CommandRejected) as err:
        store.decide(aggregate, "Peek", data, stream="peeks")
    assert err.value.reason == "peek"
    return err.value.details


@pytest.fixture
def courses(store):
    store.define_aggregate("courses", COURSES)
    return store


# ---------------------------------------------------------------------------------
# The rule as a decision model
# ---------------------------------------------------------------------------------
def test_capacity_is_enforced(courses):
    define(courses, "c1", 2)
    r1 = subscribe(courses, "c1", "s1")
    r2 = subscribe(courses, "c1", "s2")
    assert (r1.version, r2.version) == (0, 1)
    assert r2.position == r1.position + 1 == r2.first_position
    before = dump(courses)
    with pytest.raises(cairn.CommandRejected) as err:
        subscribe(courses, "c1", "s3")
    assert err.value.reason == "course full" and err.value.details == {"capacity": 2}
    assert err.value.script == "courses"
    assert dump(courses) == before  # nothing written
    e = courses.get(r2.position)
    assert (e.stream, e.type, e.data) == ("subscriptions", "StudentSubscribed",
                                          {"course": "c1", "student": "s2"})
    assert sorted(e.tags) == ["course:c1", "student:s2"]


def test_per_student_limit_spans_courses(courses):
    for c in ("c1", "c2", "c3"):
        define(courses, c, 10)
    subscribe(courses, "c1", "s1")
    subscribe(courses, "c2", "s1")
    with pytest.raises(cairn.CommandRejected) as err:
        subscribe(courses, "c3", "s1")
    assert err.value.reason == "too many courses" and err.value.details == {"student": "s1"}
    subscribe(courses, "c3", "s2")  # another student is not limited by s1's courses
    with pytest.raises(cairn.CommandRejected, match="already subscribed"):
        subscribe(courses, "c3", "s2")


def test_the_fold_sees_only_the_boundary(courses):
    define(courses, "c1", 5)
    define(courses, "c2", 5)
    subscribe(courses, "c2", "s7")
    subscribe(courses, "c2", "s1")
    subscribe(courses, "c1", "s2")
    # c1's events, and s1's subscriptions (to any course); not s7's to c2
    assert peek(courses, course="c1", student="s1") == {
        "capacity": {"c1": 5}, "taken": {"c1": 1, "c2": 1}, "courses_of": {"s1": 1, "s2": 1},
        "pairs": {"c1/s2": True, "c2/s1": True}}
    assert peek(courses, course="c3") == {"capacity": {}, "taken": {}, "courses_of": {},
                                          "pairs": {}}


def test_decide_sees_events_other_streams_appended(courses):
    define(courses, "c1", 2)  # by a plain append, to stream course-c1
    courses.append("legacy-import", [cairn.Event(
        "StudentSubscribed", {"course": "c1", "student": "old"}, tags=["course:c1", "student:old"])])
    subscribe(courses, "c1", "s1", stream="subscriptions-a")
    with pytest.raises(cairn.CommandRejected, match="course full"):
        subscribe(courses, "c1", "s2", stream="subscriptions-b")
    courses.append("course-c1", [cairn.Event(
        "CourseCapacityChanged", {"course": "c1", "capacity": 3}, tags=["course:c1"])])
    r = subscribe(courses, "c1", "s2", stream="subscriptions-b")
    assert (r.version, courses.get(r.position).stream) == (0, "subscriptions-b")


def test_the_query_matches_type_and_every_tag_of_an_item(courses):
    define(courses, "c1", 1)
    # tagged with the course but of another type; of the type but without the course tag
    courses.append("noise", [cairn.Event("Other", {}, tags=["course:c1"]),
                             cairn.Event("StudentSubscribed", {"course": "c1", "student": "x"},
                                         tags=["student:x"])])
    subscribe(courses, "c1", "s1")


def test_decide_sees_events_still_in_the_index_tail(store_path):
    # durable single appends leave their postings in the index tail (FORMAT.md)
    with cairn.open(store_path, durability="full") as s:
        s.define_aggregate("courses", COURSES)
        define(s, "c1", 3)
        for k in range(2):
            s.append(f"import-{k}", [cairn.Event("StudentSubscribed", {"course": "c1", "student": f"i{k}"},
                                                 tags=["course:c1", f"student:i{k}"])])
        subscribe(s, "c1", "s1")
        with pytest.raises(cairn.CommandRejected, match="course full"):
            subscribe(s, "c1", "s2")
        assert peek(s, course="c1")["taken"] == {"c1": 3}


def test_no_events_returns_position_none(courses):
    r = courses.decide("courses", "Nothing", {"course": "c1"}, stream="untouched")
    assert r == cairn.AppendResult(version=-1, position=None, first_position=None)
    subscribe_target = courses.append("untouched", [cairn.Event("X")])
    r = courses.decide("courses", "Nothing", {"course": "c1"}, stream="untouched")
    assert (r.version, r.position, r.first_position) == (0, None, None)
    assert courses.head() == subscribe_target.position


# ---------------------------------------------------------------------------------
# What a decided event carries
# ---------------------------------------------------------------------------------
EVENTS = """
return {
  boundary = function(cmd) return { { tags = { "t" } } } end,
  decide = {
    Many = function(s, cmd)
      return { { type = "A", data = { n = 1 }, metadata = { own = "a", clerk = "overridden" } },
               { type = "B", tags = { "t", "x:1" }, schema = 3 },
               { type = "C", data = { secret = "pii" }, subject = "user-1" } }
    end,
    SetMeta = function(s, cmd)
      cmd.metadata.added = true
      return { { type = "D" } }
    end,
  },
}
"""


def test_metadata_is_copied_onto_every_event(store):
    store.define_aggregate("ev", EVENTS)
    meta = {"correlation_id": "saga-1", "causation_id": "cmd-9", "clerk": "bob"}
    r = store.decide("ev", "Many", stream="out", metadata=meta)
    assert (r.version, r.first_position, r.position) == (2, 1, 3)
    a, b, c = store.read_stream("out")
    assert a.metadata == {**meta, "own": "a"}  # the call's keys win
    assert b.metadata == meta and c.metadata == meta
    r = store.decide("ev", "SetMeta", stream="out")
    assert store.get(r.position).metadata == {"added": True}


def test_events_carry_tags_schema_and_subject(store):
    store.define_aggregate("ev", EVENTS)
    store.decide("ev", "Many", stream="out")
    a, b, c = store.read_stream("out")
    assert (a.type, a.data, a.tags, a.schema) == ("A", {"n": 1}, (), 1)
    assert (b.type, b.data, sorted(b.tags), b.schema) == ("B", None, ["t", "x:1"], 3)
    assert (c.type, c.data, c.subject, c.forgotten) == ("C", {"secret": "pii"}, "user-1", False)
    assert [e.type for e in store.read_all(tags=["x:1"])] == ["B"]
    store.forget("user-1")
    c = store.get(c.position)
    assert (c.data, c.forgotten) == (None, True)


def test_decided_events_obey_the_event_rules(store):
    store.define_aggregate("bad", """
return {
  boundary = function(cmd) return {} end,
  decide = { X = function(s, cmd) return { { type = "A" }, { type = "B", tags = "vip" } } end },
}""")
    before = dump(store)
    with pytest.raises(cairn.ScriptError) as err:
        store.decide("bad", "X", stream="out")
    assert str(err.value) == "bad:4: decide.X: event 2: tags must be a list of strings, not a string"
    assert (err.value.script, err.value.line) == ("bad", 4)
    assert dump(store) == before


# ---------------------------------------------------------------------------------
# Errors: nothing written, the store usable afterwards
# ---------------------------------------------------------------------------------
def test_unknown_aggregate_is_a_key_error(courses):
    before = dump(courses)
    with pytest.raises(KeyError):
        courses.decide("nope", "Subscribe", {"course": "c1"}, stream="s")
    assert dump(courses) == before
    check_usable(courses)


def test_unknown_command_is_a_value_error(courses):
    before = dump(courses)
    with pytest.raises(ValueError, match="no decide handler for Enrol"):
        courses.decide("courses", "Enrol", {"course": "c1"}, stream="s")
    assert dump(courses) == before
    check_usable(courses)


def test_a_script_without_boundary_is_a_value_error(store):
    store.define_aggregate("account", """
return { decide = { Open = function(s, cmd) return { { type = "Opened" } } end } }""")
    before = dump(store)
    with pytest.raises(ValueError, match="aggregate account has no boundary"):
        store.decide("account", "Open", stream="account-1")
    assert dump(store) == before
    assert store.execute("account-1", "Open").version == 0  # execute needs no boundary


def test_arguments(courses):
    with pytest.raises(TypeError, match="stream"):
        courses.decide("courses", "Nothing", {"course": "c1"})
    with pytest.raises(TypeError):
        courses.decide("courses", "Nothing", b"bytes", stream="s")
    with pytest.raises(TypeError):
        courses.decide("courses", "Nothing", {"course": "c1"}, stream="s", metadata=[1])
    with pytest.raises(ValueError, match=r"\$"):
        courses.decide("courses", "Nothing", {"course": "c1"}, stream="$mine")
    with pytest.raises(ValueError):
        courses.decide("courses", "Nothing", {"course": "c1"}, stream="s",
                       metadata={"correlation_id": 42})
    with pytest.raises(TypeError):
        courses.decide("courses", "Nothing", {"course": "c1"}, stream="s", expected_version=0)
    assert courses.head() == 0


def test_a_hard_deleted_stream_takes_no_decided_events(courses):
    courses.delete_stream("closed", hard=True)
    with pytest.raises(cairn.StreamDeleted):
        courses.decide("courses", "Nothing", {"course": "c1"}, stream="closed")


def boundary_script(body):
    return ("return {\n"
            f"  boundary = function(cmd) {body} end,\n"
            "  decide = { X = function(s, cmd) return { { type = 'Done' } } end },\n"
            "}")


@pytest.mark.parametrize("body, message", [
    ("return 5",
     "bad:2: boundary must return a list of query items: boundary returned a number"),
    ("return nil",
     "bad:2: boundary must return a list of query items: boundary returned nil"),
    ("return { types = { 'A' } }",
     "bad:2: boundary must return a list of query items: boundary returned one query item, "
     "not a list of them: return { item } for one item"),
    ("return { { types = { 'A' } }, nil, { tags = { 't' } } }",
     "bad:2: boundary must return a list of query items: boundary returned a list with a hole: "
     "[2] is nil but [3] is not"),
    ("return { { tags = { 't' } }, 'x' }",
     "bad:2: boundary: item 2 must be a table {types = ..., tags = ...}, not a string"),
    ("return { { tag = { 't' } } }",
     "bad:2: boundary: item 1: unknown key 'tag' in a query item (it may have types and tags)"),
    ("return { { tags = 't' } }",
     "bad:2: boundary: item 1: tags must be a list of strings, not a string"),
    ("return { { types = { 'A', 7 } } }",
     "bad:2: boundary: item 1: types: each type must be a string, not an integer"),
    ("return { { types = {} } }",
     "bad:2: boundary: item 1: types must not be empty (leave it out for any type)"),
    ("return { { tags = { '' } } }",
     "bad:2: boundary: item 1: tags: each tag must be 1..1024 bytes of UTF-8, got 0"),
    ("return { { types = { string.rep('x', 256) } } }",
     "bad:2: boundary: item 1: type must be 1..255 bytes of UTF-8, got 256"),
    ("return { { tags = { t = 'x' } } }",
     "bad:2: boundary: item 1: tags must be a list of strings, but it has the key 't'"),
])
def test_a_boundary_returning_no_query_is_a_script_error(store, body, message):
    store.define_aggregate("bad", boundary_script(body))
    before = dump(store)
    with pytest.raises(cairn.ScriptError) as err:
        store.decide("bad", "X", stream="out")
    assert str(err.value) == message
    assert (err.value.script, err.value.line) == ("bad", 2)
    assert dump(store) == before
    check_usable(store)


def test_a_boundary_that_fails_is_a_script_error(store):
    store.define_aggregate("bad", """
local function course(cmd)
  return "course:" .. cmd.data.course   -- line 3: data is nil
end
return {
  boundary = function(cmd) return { { tags = { course(cmd) } } } end,
  decide = { X = function(s, cmd) return { { type = "Done" } } end },
}""")
    before = dump(store)
    with pytest.raises(cairn.ScriptError) as err:
        store.decide("bad", "X", stream="out")
    assert err.value.script == "bad" and err.value.line == 3
    assert "attempt to index a nil value" in str(err.value)
    assert dump(store) == before
    check_usable(store)


def test_reject_in_the_boundary_is_command_rejected(store):
    store.define_aggregate("picky", """
return {
  boundary = function(cmd)
    if not cmd.data then reject("data needed", { got = cmd.type }) end
    return {}
  end,
  decide = { X = function(s, cmd) return { { type = "Done" } } end },
}""")
    with pytest.raises(cairn.CommandRejected) as err:
        store.decide("picky", "X", stream="out")
    assert (err.value.reason, err.value.details) == ("data needed", {"got": "X"})
    assert store.head() == 0


def test_a_reducer_error_names_the_event(courses):
    courses.append("course-c1", [cairn.Event("CourseDefined", {"course": "c1", "capacity": 1},
                                             tags=["course:c1"]),
                                 cairn.Event("StudentSubscribed", {"course": "c1"},
                                             tags=["course:c1"])])
    before = dump(courses)
    with pytest.raises(cairn.ScriptError) as err:
        subscribe(courses, "c1", "s1")
    assert err.value.position == 2 and err.value.script == "courses"
    assert dump(courses) == before
    check_usable(courses)


def test_the_boundary_gets_the_command_table(store):
    store.define_aggregate("echo", """
local seen
return {
  boundary = function(cmd)
    seen = { type = cmd.type, data = cmd.data, metadata = cmd.metadata }
    return { { tags = { "none" } } }
  end,
  decide = { Echo = function(s, cmd) return { { type = "Seen", data = seen } } end },
}""")
    r = store.decide("echo", "Echo", {"x": [1, 2]}, stream="out", metadata={"m": "v"})
    assert store.get(r.position).data == {"type": "Echo", "data": {"x": [1, 2]},
                                          "metadata": {"m": "v"}}


def test_an_empty_boundary_selects_every_event(store):
    store.define_aggregate("all", """
return {
  boundary = function(cmd) return {} end,
  init = function() return { n = 0 } end,
  apply = { ["*"] = function(s, e) s.n = s.n + 1 end },
  decide = { Peek = function(s, cmd) reject("peek", s) end },
}""")
    store.append("a", [cairn.Event("X"), cairn.Event("Y", tags=["q"])])
    store.append("b", [cairn.Event("Z")])
    store.delete_stream("b")  # its $lifecycle event and its removed event are not selected
    assert peek(store, "all") == {"n": 2}


def test_upcasters_apply_to_the_folded_events(courses):
    courses.append("course-c1", [cairn.Event("CourseDefined", {"course": "c1", "size": 1},
                                             tags=["course:c1"], schema=1)])
    courses.define_upcasters("""
return { CourseDefined = { [1] = function(e) e.data.capacity = e.data.size; return e end } }""")
    subscribe(courses, "c1", "s1")
    with pytest.raises(cairn.CommandRejected, match="course full"):
        subscribe(courses, "c1", "s2")


def test_forgotten_events_fold_without_data(store):
    store.define_aggregate("people", """
return {
  boundary = function(cmd) return { { tags = { "people" } } } end,
  init = function() return { names = {}, forgotten = 0 } end,
  apply = { Joined = function(s, e)
    if e.forgotten then s.forgotten = s.forgotten + 1 else s.names[#s.names + 1] = e.data.name end
  end },
  decide = { Peek = function(s, cmd) reject("peek", s) end },
}""")
    store.append("p", [cairn.Event("Joined", {"name": "ann"}, tags=["people"], subject="ann"),
                       cairn.Event("Joined", {"name": "bob"}, tags=["people"], subject="bob")])
    assert peek(store, "people") == {"names": ["ann", "bob"], "forgotten": 0}
    store.forget("ann")
    assert peek(store, "people") == {"names": ["bob"], "forgotten": 1}


# ---------------------------------------------------------------------------------
# Concurrency: the fold, the decision and the write are one transaction
# ---------------------------------------------------------------------------------
def test_threads_deciding_the_last_seat_one_wins(courses):
    define(courses, "c1", 3)
    subscribe(courses, "c1", "s0")
    subscribe(courses, "c1", "s1")
    barrier = threading.Barrier(6)
    results, errors = [], []

    def attempt(k):
        try:
            barrier.wait(10)
            results.append(subscribe(courses, "c1", f"t{k}", stream=f"sub-t{k}"))
        except cairn.CommandRejected as e:
            results.append(e.reason)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=attempt, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in threads)
    won = [r for r in results if isinstance(r, cairn.AppendResult)]
    assert len(won) == 1 and sorted(r for r in results if isinstance(r, str)) == ["course full"] * 5
    assert len(list(courses.read_all(types=["StudentSubscribed"], tags=["course:c1"]))) == 3


RACER = """
import sys
import cairn
path, who, tries = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = cairn.open(path, durability="none")
print("ready", flush=True)
sys.stdin.readline()
won = 0
for i in range(tries):
    try:
        s.decide("courses", "Subscribe", {"course": "c1", "student": f"{who}-{i}"},
                 stream=f"sub-{who}")
        won += 1
    except cairn.CommandRejected as e:
        assert e.reason == "course full", e.reason
print(won)
"""


def test_processes_racing_for_the_seats_take_exactly_the_capacity(store_path):
    with cairn.open(store_path, durability="none") as s:
        s.define_aggregate("courses", COURSES)
        define(s, "c1", 7)
    outs = run_together(RACER, [(store_path, f"p{k}", 4) for k in range(4)])
    assert sum(int(o.split()[-1]) for o in outs) == 7
    with cairn.open(store_path, durability="none") as s:
        taken = list(s.read_all(types=["StudentSubscribed"]))
        assert len(taken) == 7 and len({e.data["student"] for e in taken}) == 7
        assert s.verify().events == 8


# ---------------------------------------------------------------------------------
# Boundary snapshots (API.md section 5: when they are sound)
# ---------------------------------------------------------------------------------
COUNTER = """
return {
  boundary = function(cmd) return { { tags = { "t:" .. cmd.data.t } } } end,
  init = function() return { n = 0, sum = 0 } end,
  apply = { ["*"] = function(s, e)
    print("fold " .. e.position)
    s.n = s.n + 1
    s.sum = s.sum + ((not e.forgotten and e.data and e.data.v) or 0)
  end },
  decide = {
    Fold = function(s, cmd) return {} end,
    Peek = function(s, cmd) reject("peek", s) end,
    Add = function(s, cmd) return { { type = "Added", data = { v = 1 }, tags = { "t:" .. cmd.data.t } } } end,
  },
  snapshot_every = 2,
}
"""


def folded(caplog):
    """The positions the reducer saw since the last call (and forget them)."""
    out = [int(r.getMessage().split()[-1]) for r in caplog.records
           if r.name == "cairn" and "fold " in r.getMessage()]
    caplog.clear()
    return out


@pytest.fixture
def counter(store, caplog):
    caplog.set_level(logging.INFO, logger="cairn")
    store.define_aggregate("counter", COUNTER)
    return store


def tagged(n, tag="t:x", v=1, **kw):
    return [cairn.Event("E", {"v": v}, tags=[tag], **kw) for _ in range(n)]


def test_a_snapshot_bounds_the_fold(counter, caplog):
    counter.append("a", tagged(3))
    counter.decide("counter", "Fold", {"t": "x"}, stream="out")
    assert folded(caplog) == [1, 2, 3]  # 3 >= snapshot_every: a snapshot at the head (3)
    assert peek(counter, "counter", t="x") == {"n": 3, "sum": 3}
    assert folded(caplog) == []
    counter.append("b", tagged(1) + tagged(1, tag="t:y"))
    counter.decide("counter", "Add", {"t": "x"}, stream="out")  # folds 4; 1 < 2: no snapshot
    assert folded(caplog) == [4]
    assert peek(counter, "counter", t="x") == {"n": 5, "sum": 5}  # 4 and the Added at 6
    assert folded(caplog) == [4, 6]
    counter.decide("counter", "Fold", {"t": "x"}, stream="out")  # a new one at 6
    assert folded(caplog) == [4, 6]
    assert peek(counter, "counter", t="x") == {"n": 5, "sum": 5}
    assert folded(caplog) == []


def test_a_rejected_decide_keeps_no_snapshot(counter, caplog):
    counter.append("a", tagged(3))
    peek(counter, "counter", t="x")
    peek(counter, "counter", t="x")
    assert folded(caplog) == [1, 2, 3, 1, 2, 3]


def test_snapshots_are_per_aggregate_and_query(counter, caplog):
    counter.define_aggregate("counter2", COUNTER)
    counter.append("a", tagged(2) + tagged(2, tag="t:y"))
    counter.decide("counter", "Fold", {"t": "x"}, stream="out")
    assert folded(caplog) == [1, 2]
    assert peek(counter, "counter", t="y") == {"n": 2, "sum": 2}
    assert peek(counter, "counter2", t="x") == {"n": 2, "sum": 2}
    assert folded(caplog) == [3, 4, 1, 2]


def test_without_snapshot_every_the_whole_boundary_is_folded(counter, caplog):
    counter.define_aggregate("plain", COUNTER.replace("snapshot_every = 2,", ""))
    counter.append("a", tagged(3))
    counter.decide("plain", "Fold", {"t": "x"}, stream="out")
    counter.decide("plain", "Fold", {"t": "x"}, stream="out")
    assert folded(caplog) == [1, 2, 3, 1, 2, 3]


def test_a_changed_script_or_upcasters_ignore_the_snapshot(counter, caplog):
    counter.append("a", tagged(2))
    counter.decide("counter", "Fold", {"t": "x"}, stream="out")
    folded(caplog)
    counter.define_aggregate("counter", COUNTER.replace("s.n + 1", "s.n + 10"))
    assert peek(counter, "counter", t="x") == {"n": 20, "sum": 2}
    counter.decide("counter", "Fold", {"t": "x"}, stream="out")
    assert folded(caplog) == [1, 2, 1, 2]
    counter.define_upcasters("return { E = { [1] = function(e) e.data.v = 5; return e end } }")
    assert peek(counter, "counter", t="x") == {"n": 20, "sum": 10}
    assert folded(caplog) == [1, 2]


def test_forget_drops_boundary_snapshots(counter, caplog):
    counter.append("a", tagged(2, subject="u1", v=7))
    counter.decide("counter", "Fold", {"t": "x"}, stream="out")
    assert peek(counter, "counter", t="x") == {"n": 2, "sum": 14}
    folded(caplog)
    counter.forget("u1")
    assert peek(counter, "counter", t="x") == {"n": 2, "sum": 0}
    assert folded(caplog) == [1, 2]


@pytest.mark.parametrize("lifecycle", [
    lambda s: s.delete_stream("a"),
    lambda s: s.set_stream_metadata("a", max_count=1),
    lambda s: s.set_stream_metadata("a", max_age=3600),   # removes nothing now
    lambda s: s.set_stream_metadata("never-written", truncate_before=1),
])
def test_no_boundary_snapshot_is_used_once_a_stream_has_lifecycle_rules(counter, caplog,
                                                                        lifecycle):
    counter.append("a", tagged(3))
    counter.decide("counter", "Fold", {"t": "x"}, stream="out")
    folded(caplog)
    lifecycle(counter)
    remaining = [e.position for e in counter.read_all(tags=["t:x"])]
    assert peek(counter, "counter", t="x") == {"n": len(remaining), "sum": len(remaining)}
    counter.decide("counter", "Fold", {"t": "x"}, stream="out")
    assert folded(caplog) == remaining + remaining


def test_events_aging_out_are_not_folded_from_a_snapshot(counter, caplog):
    # max_age hides events as the clock passes, with no write: a snapshot made before would
    # still count them
    counter.append("a", tagged(3))
    counter.decide("counter", "Fold", {"t": "x"}, stream="out")
    counter.set_stream_metadata("a", max_age=1)
    assert peek(counter, "counter", t="x") == {"n": 3, "sum": 3}
    time.sleep(1.1)
    assert list(counter.read_all(tags=["t:x"])) == []
    assert peek(counter, "counter", t="x") == {"n": 0, "sum": 0}


# A model check: decisions over random boundaries, with snapshots after every fold, give the
# states a brute-force fold of what read_all returns gives, across appends, deletes, retention
# and forgetting.
MODEL = """
return {
  boundary = function(cmd)
    local q = {}
    for i, it in ipairs(cmd.data) do q[i] = { types = it.types, tags = it.tags } end
    return q
  end,
  init = function() return { n = 0, sum = 0, last = 0 } end,
  apply = { ["*"] = function(s, e)
    s.n = s.n + 1
    s.last = e.position
    if not e.forgotten and e.data then s.sum = s.sum + e.data.v end
  end },
  decide = { Fold = function(s, cmd) return {} end, Peek = function(s, cmd) reject("peek", s) end },
  snapshot_every = 1,
}
"""

TAGS = ["a", "b", "c"]
TYPES = ["X", "Y"]
item_st = st.fixed_dictionaries({}, optional={
    "types": st.lists(st.sampled_from(TYPES), min_size=1, max_size=2, unique=True),
    "tags": st.lists(st.sampled_from(TAGS), min_size=1, max_size=2, unique=True)})
query_st = st.lists(item_st, min_size=0, max_size=2)
op_st = st.one_of(
    st.tuples(st.just("append"), st.sampled_from(["s1", "s2", "s3"]), st.sampled_from(TYPES),
              st.lists(st.sampled_from(TAGS), max_size=2, unique=True), st.integers(1, 9),
              st.sampled_from([None, "u1", "u2"])),
    st.tuples(st.just("decide"), query_st),
    st.tuples(st.just("delete"), st.sampled_from(["s1", "s2", "s3"])),
    st.tuples(st.just("retain"), st.sampled_from(["s1", "s2", "s3"]), st.integers(1, 3)),
    st.tuples(st.just("expire"), st.sampled_from(["s1", "s2", "s3"])),
    st.tuples(st.just("forget"), st.sampled_from(["u1", "u2"])),
)


def brute_force(store, query):
    n = total = last = 0
    for e in store.read_all():
        if query and not any(
                ("types" not in it or e.type in it["types"]) and
                all(t in e.tags for t in it.get("tags", [])) for it in query):
            continue
        n, last = n + 1, e.position
        total += e.data["v"] if e.data else 0
    return {"n": n, "sum": total, "last": last}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op_st, max_size=25), final=st.lists(query_st, min_size=1, max_size=3))
def test_boundary_snapshots_agree_with_a_full_fold(tmp_path_factory, ops, final):
    path = tmp_path_factory.mktemp("model") / "store"
    with cairn.open(path, durability="none") as s:
        s.define_aggregate("model", MODEL)
        for op in ops:
            if op[0] == "append":
                _, stream, typ, tags, v, subject = op
                s.append(stream, [cairn.Event(typ, {"v": v}, tags=tags, subject=subject)])
            elif op[0] == "decide":
                s.decide("model", "Fold", op[1], stream="decisions")
                with pytest.raises(cairn.CommandRejected) as err:
                    s.decide("model", "Peek", op[1], stream="decisions")
                assert err.value.details == brute_force(s, op[1])
            elif op[0] == "delete":
                s.delete_stream(op[1])
            elif op[0] == "retain":
                s.set_stream_metadata(op[1], max_count=op[2])
            elif op[0] == "expire":
                s.set_stream_metadata(op[1], max_age=0)
            else:
                s.forget(op[1])
        for q in final:
            with pytest.raises(cairn.CommandRejected) as err:
                s.decide("model", "Peek", q, stream="decisions")
            assert err.value.details == brute_force(s, q)
