"""What scripts hand back to the store (spec section 3): the lists of events `decide` and
`compensate` return, their event tables, `emit`'s arguments and what upcasters return are held
to the rules `cairn.Event` holds its arguments to. A bad one is a ScriptError naming the
script, the line of the handler and (where there is one) the position; nothing is written and
the store goes on working."""

import pytest

import cairn
from conftest import nothing_written


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
