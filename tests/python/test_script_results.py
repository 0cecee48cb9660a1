"""What scripts hand back to the store (spec section 3): the lists of events `decide` and
`compensate` return, their event tables, `emit`'s arguments and what upcasters return are held
to the rules `cairn.Event` holds its arguments to. A bad one is a ScriptError naming the
script, the line of the handler and (where there is one) the position; nothing is written and
the store goes on working."""

import re
import uuid

import pytest

import cairn
from conftest import check_usable, nothing_written


def line_of(src, needle):
    """The 1-based line of src on which needle first appears."""
    for i, text in enumerate(src.splitlines(), 1):
        if needle in text:
            return i
    raise AssertionError(f"{needle!r} is not in the source")


# ---------------------------------------------------------------------------------------
# decide and compensate return a list of events (issue 11 item 3)
# ---------------------------------------------------------------------------------------
LISTS = """\
return {
  decide = {
    Single = function(s, cmd) return { type = "Happened", data = { x = 1 } } end,
    Mixed = function(s, cmd) return { { type = "Happened" }, type = "Happened" } end,
    Holes = function(s, cmd) return { [1] = { type = "Happened" }, [3] = { type = "Happened" } } end,
    Number = function(s, cmd) return 42 end,
    Empty = function(s, cmd) return {} end,
    Nil = function(s, cmd) return nil end,
    One = function(s, cmd) return { { type = "Happened" } } end,
    Other = function(s, cmd) return { { type = "Other" } } end,
  },
  compensate = {
    Happened = function(s, e) return { type = "Undone" } end,
    Other = function(s, e) return { { type = "Undone" }, why = "mixed" } end,
  },
}
"""


@pytest.fixture
def lists(store):
    store.define_aggregate("lib", LISTS)
    return store


@pytest.mark.parametrize("command", ["Single", "Mixed", "Holes", "Number"])
def test_decide_must_return_a_list_of_events(lists, command):
    # A single event table (the easy slip: `return { type = ... }`) wrote nothing and raised
    # nothing; a list with other keys or holes dropped what was not 1..n.
    with nothing_written(lists), pytest.raises(
        cairn.ScriptError, match="decide must return a list of events"
    ) as ei:
        lists.execute("lib-1", command)
    assert ei.value.script == "lib"
    assert ei.value.line == line_of(LISTS, f"{command} = function")
    assert f"decide.{command}" in str(ei.value)
    assert lists.stream_version("lib-1") == -1


@pytest.mark.parametrize("command", ["Empty", "Nil"])
def test_decide_returning_an_empty_table_or_nil_writes_nothing(lists, command):
    # {} is the empty list: a command that decides nothing (the expectation still holds)
    r = lists.execute("lib-1", command)
    assert r.version == -1 and r.position is None
    assert lists.head() == 0


@pytest.mark.parametrize("command", ["One", "Other"])
def test_compensate_must_return_a_list_of_events(lists, command):
    lists.execute("lib-1", command)
    (event,) = lists.read_stream("lib-1")
    with nothing_written(lists), pytest.raises(
        cairn.ScriptError, match="compensate must return a list of events"
    ) as ei:
        lists.compensate("lib-1", 0)
    assert ei.value.script == "lib"
    assert ei.value.position == event.position
    assert ei.value.line == line_of(LISTS, f"    {event.type} = function(s, e)")
    assert lists.stream_version("lib-1") == 0


# ---------------------------------------------------------------------------------------
# The event tables of decide and compensate are checked as cairn.Event checks its arguments
# (issue 11 item 4)
# ---------------------------------------------------------------------------------------
UUID = "0190f5a2-7c1e-7d3a-9b2c-4d5e6f708192"

# name -> (the Lua list a decide handler returns, what the ScriptError says)
BAD_EVENTS = {
    "misspelt_key": ('{ { type = "X", dta = { a = 1 } } }', r"event 1: unknown key 'dta'"),
    "positional_field": ('{ { type = "X", { a = 1 } } }', r"event 1: unknown key \[1\]"),
    "no_type": ("{ { data = { a = 1 } } }", "event 1: type must be a string, not nil"),
    "type_a_number": ("{ { type = 7 } }", "type must be a string, not an integer"),
    "empty_type": ('{ { type = "" } }', r"type must be 1\.\.255 bytes of UTF-8, got 0"),
    "long_type": ('{ { type = string.rep("x", 256) } }', "got 256"),
    "type_with_nul": ('{ { type = "a\\0b" } }', "type must not contain NUL characters"),
    "type_not_utf8": ('{ { type = "\\255" } }', "type is not valid UTF-8"),
    "tags_a_string": ('{ { type = "X", tags = "vip" } }', "tags must be a list of strings, not a string"),
    "tags_keyed": ('{ { type = "X", tags = { vip = true } } }', "tags must be a list of strings, but it has the key 'vip'"),
    "tags_with_holes": ('{ { type = "X", tags = { [1] = "a", [3] = "b" } } }', "without holes"),
    "tag_a_number": ('{ { type = "X", tags = { "a", 2 } } }', "each tag must be a string, not an integer"),
    "empty_tag": ('{ { type = "X", tags = { "" } } }', r"each tag must be 1\.\.1024 bytes of UTF-8, got 0"),
    "tag_with_nul": ('{ { type = "X", tags = { "a\\0" } } }', "each tag must not contain NUL"),
    "too_many_tags": (
        '(function() local t = {} for i = 1, 65536 do t[i] = "t" end return { { type = "X", tags = t } } end)()',
        "at most 65535 tags per event, got 65536",
    ),
    "metadata_a_list": ('{ { type = "X", metadata = { 1, 2 } } }', r"metadata must be an object \(a table with string keys\), not a list"),
    "metadata_a_string": ('{ { type = "X", metadata = "m" } }', "metadata must be a table with string keys or nil, not a string"),
    "metadata_mixed": ('{ { type = "X", metadata = { a = 1, [2] = 1 } } }', r"but it has the key \[2\]"),
    "metadata_reserved_key": ('{ { type = "X", metadata = { correlation_id = 42 } } }', "correlation_id must be a str, not a number"),
    "schema_zero": ('{ { type = "X", schema = 0 } }', "schema must be an int from 1 to 4294967295, got 0"),
    "schema_too_big": ('{ { type = "X", schema = 4294967296 } }', "got 4294967296"),
    "schema_a_float": ('{ { type = "X", schema = 2.0 } }', "schema must be an integer, not a float"),
    "schema_a_string": ('{ { type = "X", schema = "2" } }', "schema must be an integer, not a string"),
    "id_not_a_uuid": ('{ { type = "X", id = "nope" } }', "id: 'nope' is not a UUID"),
    "id_a_number": ('{ { type = "X", id = 5 } }', "id must be a UUID string, not an integer"),
    "data_a_function": ('{ { type = "X", data = { f = print } } }', "event 1: data: cannot encode a function value at \\$\\.f"),
    "event_a_number": ("{ 42 }", "event 1: an event must be a table, not an integer"),
    "second_event_bad": ('{ { type = "X" }, { type = "X", tags = "t" } }', "event 2: tags must be a list"),
}

RESULTS = (
    "return {\n  decide = {\n"
    + "".join(f"    {name} = function(s, cmd) return {lua} end,\n" for name, (lua, _) in BAD_EVENTS.items())
    + f"""    Good = function(s, cmd)
      return {{ {{ type = "X", data = json.null, metadata = {{ k = "v" }}, tags = {{ "a", "b" }},
                 schema = 3, id = "{UUID}" }},
               {{ type = "Y", metadata = {{}}, tags = {{}} }} }}
    end,
    Plain = function(s, cmd) return {{ {{ type = "X" }} }} end,
  }},
  compensate = {{
    X = function(s, e) return {{ {{ type = "Undone", dta = 1 }} }} end,
  }},
}}
"""
)


@pytest.fixture
def results(store):
    store.define_aggregate("res", RESULTS)
    return store


@pytest.mark.parametrize("name", list(BAD_EVENTS))
def test_a_decided_event_is_checked_as_cairn_event_checks_its_arguments(results, name):
    # misspelt keys were ignored, tags = "vip" dropped, a list as metadata stored (and read
    # back as what the contract forbids), schemas cut to 32 bits; now each is a ScriptError
    # naming the script, the handler's line, the event and the rule
    with nothing_written(results), pytest.raises(cairn.ScriptError, match=BAD_EVENTS[name][1]) as ei:
        results.execute("res-1", name)
    assert ei.value.script == "res"
    assert ei.value.line == line_of(RESULTS, f" {name} = function")
    assert f"decide.{name}: event " in str(ei.value)
    assert results.stream_version("res-1") == -1


def test_a_compensating_event_is_checked_as_cairn_event_checks_its_arguments(results):
    results.execute("res-1", "Plain")
    (event,) = results.read_stream("res-1")
    with nothing_written(results), pytest.raises(cairn.ScriptError, match="unknown key 'dta'") as ei:
        results.compensate("res-1", 0)
    assert ei.value.script == "res" and ei.value.position == event.position
    assert ei.value.line == line_of(RESULTS, "X = function(s, e)")
    assert "compensate.X: event 1: " in str(ei.value)


def test_a_decided_event_may_carry_what_cairn_event_takes(results):
    r = results.execute("res-1", "Good", metadata={"correlation_id": "c-1"})
    x, y = results.read_stream("res-1")
    assert r.version == 1
    assert (x.type, x.data, x.schema, x.tags, str(x.id)) == ("X", None, 3, ("a", "b"), UUID)
    assert x.metadata == {"k": "v", "correlation_id": "c-1"}
    assert (y.type, y.metadata, y.tags, y.schema) == ("Y", {"correlation_id": "c-1"}, (), 1)


# ---------------------------------------------------------------------------------------
# emit(stream, type, data, metadata) in projections (issue 11 item 4)
# ---------------------------------------------------------------------------------------
BAD_EMITS = {
    "metadata_a_list": ('emit("out-1", "X", {}, { 1, 2 })', r"emit: metadata must be an object \(a table with string keys\), not a list"),
    "metadata_a_string": ('emit("out-1", "X", {}, "m")', "emit: metadata must be a table with string keys or nil, not a string"),
    "metadata_mixed": ('emit("out-1", "X", {}, { a = 1, [2] = 1 })', r"emit: metadata must be an object .*but it has the key \[2\]"),
    "empty_type": ('emit("out-1", "", {})', r"emit: type must be 1\.\.255 bytes of UTF-8, got 0"),
    "type_not_utf8": ('emit("out-1", "\\255", {})', "emit: type is not valid UTF-8"),
    "fifth_argument": ('emit("out-1", "X", {}, {}, { "tag" })', r"emit takes \(stream, type, data, metadata\), not 5 arguments"),
    "data_a_function": ('emit("out-1", "X", { f = print })', r"emit: data: cannot encode a function value at \$\.f"),
}


@pytest.mark.parametrize("name", list(BAD_EMITS))
def test_an_emitted_event_is_checked_as_cairn_event_checks_its_arguments(store, name):
    # a list as metadata was stored (and read back as a list), a fifth argument dropped
    src = f"return {{\n  apply = {{\n    Go = function(s, e)\n      {BAD_EMITS[name][0]}\n    end,\n  }},\n}}\n"
    store.define_projection("em", src)
    store.append("in-1", [cairn.Event("Other"), cairn.Event("Go")])
    with nothing_written(store):
        assert store.run_projections() == 1  # the event before the failing one
    p = store.projection("em")
    assert p.status == "faulted"
    assert p.position == 1
    assert p.error.startswith("em:4: ") and "(line 4, event position 2)" in p.error
    assert re.search(BAD_EMITS[name][1], p.error), p.error
    assert list(store.read_stream("out-1")) == []


def test_an_inline_projections_bad_emit_fails_the_write(store):
    src = 'return { mode = "inline", apply = { Go = function(s, e) emit("out-1", "X", {}, { 1 }) end } }'
    store.define_projection("em", src)
    with nothing_written(store), pytest.raises(cairn.ScriptError, match="emit: metadata must be an object") as ei:
        store.append("in-1", [cairn.Event("Go")])
    assert ei.value.script == "em" and ei.value.line == 1


# ---------------------------------------------------------------------------------------
# What upcasters return (issue 11 item 4): an event, as cairn.Event would have it
# ---------------------------------------------------------------------------------------
BAD_UPCASTS = {
    "empty_type": ('e.type = ""', r"type must be 1\.\.255 bytes of UTF-8, got 0"),
    "no_type": ("e.type = nil", "type must be a string, not nil"),
    "type_not_utf8": ('e.type = "\\255"', "type is not valid UTF-8"),
    "misspelt_key": ("e.dta = e.data", "unknown key 'dta'"),
    "metadata_a_list": ("e.metadata = { 1, 2 }", r"metadata must be an object \(a table with string keys\), not a list"),
    "metadata_a_string": ('e.metadata = "m"', "metadata must be a table with string keys or nil, not a string"),
    "metadata_reserved_key": ("e.metadata = { correlation_id = 42 }", "correlation_id must be a str, not a number"),
    "tags_a_string": ('e.tags = "vip"', "tags must be a list of strings, not a string"),
    "id_not_a_uuid": ('e.id = "x"', "id: 'x' is not a UUID"),
}


def upcasters_with(change):
    return f"return {{\n  Deposited = {{\n    [1] = function(e)\n      {change}\n      return e\n    end,\n  }},\n}}\n"


@pytest.mark.parametrize("name", list(BAD_UPCASTS))
def test_an_upcast_event_is_checked_as_cairn_event_checks_its_arguments(store, name):
    # an upcaster could set type = '' (read back as an event with an empty type), a list as
    # metadata (read back as a list), tags = "vip"; now every read path refuses it, naming
    # the upcaster, its line and the position of the event
    change, rule = BAD_UPCASTS[name]
    store.append("acc-1", [cairn.Event("Other"), cairn.Event("Deposited", {"amount": 1})])
    store.define_upcasters(upcasters_with(change))
    store.define_aggregate("acc", "return { apply = { Deposited = function(s, e) s.n = 1 end } }")
    store.define_projection("seen", "return { apply = { Deposited = function(s, e) s.n = 1 end } }")
    reads = {
        "read_stream": lambda: list(store.read_stream("acc-1")),
        "read_all": lambda: list(store.read_all()),
        "get": lambda: store.get(2),
        "load": lambda: store.load("acc-1"),  # a fold
    }
    for what, read in reads.items():
        with pytest.raises(cairn.ScriptError, match=rule) as ei:
            read()
        e = ei.value
        assert (e.script, e.line, e.position) == ("upcasters", 3, 2), what
        assert str(e).startswith("upcasters:3: Deposited[1] returned an invalid event: "), what
        assert "(event at position 2)" in str(e), what
    store.run_projections()
    p = store.projection("seen")
    assert p.status == "faulted" and re.search(rule, p.error) and p.position == 1
    # nothing written, the raw events intact, the store usable
    assert store.head() == 2
    assert [e.type for e in store.read_stream("acc-1", raw=True)] == ["Other", "Deposited"]
    check_usable(store)


def test_an_upcast_event_whose_data_cannot_be_json_is_refused_where_it_is_read(store):
    store.append("acc-1", [cairn.Event("Other"), cairn.Event("Deposited", {"amount": 1})])
    store.define_upcasters(upcasters_with("e.data = { f = print }"))
    with pytest.raises(cairn.ScriptError, match=r"^upcasters: data: cannot encode a function value at \$\.f \(event at position 2\)") as ei:
        store.get(2)
    assert (ei.value.script, ei.value.position) == ("upcasters", 2)
    check_usable(store)


def test_an_upcaster_may_still_change_type_data_and_metadata(store):
    store.append("acc-1", [cairn.Event("Deposited", {"amount": 1}, tags=["t"])])
    store.define_upcasters(upcasters_with('e.type = "Credited"; e.data = { cents = 100 }; e.metadata = { why = "v2" }; e.tags = { "t" }'))
    (e,) = store.read_stream("acc-1")
    assert (e.type, e.data, e.metadata, e.schema, e.tags) == ("Credited", {"cents": 100}, {"why": "v2"}, 2, ("t",))


# ---------------------------------------------------------------------------------------
# Errors that say whose they are (issue 11 item 11)
# ---------------------------------------------------------------------------------------
REFUSING = """\
return {
  mode = "inline",
  apply = {
    Boom = function(s, e) error("boom") end,
    Nope = function(s, e) reject("nope") end,
    Fn = function(s, e) s.f = print end,
  },
}
"""


@pytest.mark.parametrize(
    "type, says",
    [("Boom", r"refit:4: boom"), ("Nope", "reject: nope"), ("Fn", r"refit: state: cannot encode a function value at \$\.f")],
)
def test_an_inline_projection_that_fails_says_it_refused_the_write_and_the_way_out(store, type, says):
    # every write the projection failed on raised only the Lua message ("boom"; a reject was
    # even a CommandRejected of an append), as if the write itself were wrong
    store.define_aggregate("acc", f'return {{ decide = {{ Go = function(s, c) return {{ {{ type = "{type}" }} }} end }} }}')
    store.define_projection("refit", REFUSING)
    for write in (lambda: store.append("acc-1", [cairn.Event(type)]), lambda: store.execute("acc-1", "Go")):
        with nothing_written(store), pytest.raises(cairn.ScriptError) as ei:
            write()
        msg = str(ei.value)
        assert msg.startswith("inline projection refit refused the write (nothing was written): "), msg
        assert re.search(says, msg), msg
        assert msg.endswith("to write again, fix it (define_projection) or remove it (delete_projection)")
        assert ei.value.script == "refit"
    store.delete_projection("refit")  # the way out
    assert store.append("acc-1", [cairn.Event(type)]).version == 0


def test_a_state_that_cannot_be_encoded_names_its_script(store):
    # "cannot encode a function value at $.f" did not say whose state it was
    store.define_aggregate("acc", "return { apply = { F = function(s, e) s.f = print end, C = function(s, e) s.me = s end } }")
    store.append("acc-1", [cairn.Event("F")])
    store.append("acc-2", [cairn.Event("C")])
    with pytest.raises(cairn.ScriptError, match=r"^acc: state: cannot encode a function value at \$\.f$") as ei:
        store.load("acc-1")
    assert ei.value.script == "acc"
    with pytest.raises(cairn.ScriptError, match="^acc: state: cannot encode a table that contains itself") as ei:
        store.load("acc-2")
    assert ei.value.script == "acc"
    store.define_projection("parts", "return { partition = function(e) return e.stream end, apply = { F = function(s, e) s.f = print end } }")
    store.run_projections()
    p = store.projection("parts")
    assert p.status == "faulted"
    assert p.error.startswith("parts: state of partition 'acc-1': cannot encode a function value at $.f"), p.error
    check_usable(store)


def test_a_decided_events_own_id_and_a_command_id_exclude_each_other(results):
    # execute(..., id=) replaced the event's own id without a word
    with nothing_written(results), pytest.raises(cairn.ScriptError, match="an event's own id and a command id exclude each other") as ei:
        results.execute("res-1", "Good", id=uuid.uuid4())
    assert ei.value.script == "res" and "decide.Good: event 1: " in str(ei.value)
    r = results.execute("res-1", "Plain", id=uuid.uuid4())  # events without ids of their own
    assert r.version == 0
