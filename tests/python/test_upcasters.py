"""Upcasters (spec section 3 "Upcasters"): applied in a chain on every read path --
read_stream, read_all, get and aggregate loads -- unless raw=True; the schema after upcaster
[n] is n + 1 whatever the function set; errors are ScriptErrors naming "upcasters"."""

import logging

import pytest

import cairn
from conftest import check_usable
from test_aggregates import ticks_during

# Deposited v1 {amount} -> v2 {amount, currency} -> v3 {cents, currency}
CHAIN = """\
return {
  Deposited = {
    [1] = function(e) e.data.currency = e.data.currency or "EUR"; return e end,
    [2] = function(e)
      e.data.cents = e.data.amount * 100
      e.data.amount = nil
      e.schema = 99          -- ignored: the schema becomes 3
      return e
    end,
  },
  Renamed = {
    [1] = function(e) e.metadata.upcast = true; return e end,
  },
}
"""


@pytest.fixture
def up(store):
    store.append("account-1", [
        cairn.Event("Deposited", {"amount": 5}),                               # schema 1
        cairn.Event("Deposited", {"amount": 7, "currency": "USD"}, schema=2),  # schema 2
        cairn.Event("Deposited", {"cents": 900, "currency": "GBP"}, schema=3), # current
        cairn.Event("Withdrawn", {"amount": 1}),                               # no upcasters
        cairn.Event("Renamed", {"x": 1}, metadata={"user": "u"}),
    ])
    store.define_upcasters(CHAIN)
    return store


UPCAST = [
    ("Deposited", 3, {"currency": "EUR", "cents": 500}),
    ("Deposited", 3, {"currency": "USD", "cents": 700}),
    ("Deposited", 3, {"cents": 900, "currency": "GBP"}),
    ("Withdrawn", 1, {"amount": 1}),
    ("Renamed", 2, {"x": 1}),
]
RAW = [
    ("Deposited", 1, {"amount": 5}),
    ("Deposited", 2, {"amount": 7, "currency": "USD"}),
    ("Deposited", 3, {"cents": 900, "currency": "GBP"}),
    ("Withdrawn", 1, {"amount": 1}),
    ("Renamed", 1, {"x": 1}),
]


def shape(events):
    return [(e.type, e.schema, e.data) for e in events]


def test_read_stream_applies_upcasters(up):
    assert shape(up.read_stream("account-1")) == UPCAST
    assert shape(up.read_stream("account-1", backwards=True)) == UPCAST[::-1]
    assert shape(up.read_stream("account-1", 1, limit=2)) == UPCAST[1:3]


def test_read_stream_raw_does_not(up):
    assert shape(up.read_stream("account-1", raw=True)) == RAW


def test_read_all_applies_upcasters(up):
    assert shape(up.read_all()) == UPCAST
    assert shape(up.read_all(types=["Deposited"])) == UPCAST[:3]
    assert shape(up.read_all(backwards=True, limit=2)) == UPCAST[:2:-1][:2]


def test_read_all_raw_does_not(up):
    assert shape(up.read_all(raw=True)) == RAW
    assert shape(up.read_all(types="Deposited", raw=True)) == RAW[:3]


def test_get_applies_upcasters(up):
    assert [shape([up.get(p)])[0] for p in range(1, 6)] == UPCAST


def test_get_raw_does_not(up):
    assert [shape([up.get(p, raw=True)])[0] for p in range(1, 6)] == RAW
    with pytest.raises(TypeError, match="raw"):
        up.get(1, raw=1)


def test_upcasters_may_change_metadata(up):
    e = up.get(5)
    assert e.metadata == {"user": "u", "upcast": True}
    assert up.get(5, raw=True).metadata == {"user": "u"}


def test_upcasting_keeps_the_events_identity(up):
    for a, b in zip(up.read_all(), up.read_all(raw=True)):
        assert (a.id, a.stream, a.version, a.position, a.timestamp_ns, a.tags) == \
            (b.id, b.stream, b.version, b.position, b.timestamp_ns, b.tags)


def test_upcasters_apply_to_events_appended_later(up):
    r = up.append("account-2", [cairn.Event("Deposited", {"amount": 1})])
    assert up.get(r.position).data == {"currency": "EUR", "cents": 100}
    assert up.get(r.position).schema == 3


def test_aggregate_loads_see_upcasted_events(up):
    up.define_aggregate("account", """
        return {
          init = function() return { cents = {}, schemas = {} } end,
          apply = { Deposited = function(s, e)
            s.cents[#s.cents + 1] = e.data.currency .. ":" .. e.data.cents
            s.schemas[#s.schemas + 1] = e.schema
          end },
        }""")
    a = up.load("account-1")
    assert a.state == {"cents": ["EUR:500", "USD:700", "GBP:900"], "schemas": [3, 3, 3]}
    assert a.version == 4


def test_execute_decides_on_upcasted_state(up):
    up.define_aggregate("account", """
        return {
          init = function() return { total = 0 } end,
          apply = { Deposited = function(s, e) s.total = s.total + e.data.cents end },
          decide = { Report = function(s, cmd)
            return { { type = "Reported", data = s.total } }
          end },
        }""")
    r = up.execute("account-1", "Report")
    assert up.get(r.position).data == 2100


def test_redefining_upcasters_applies_at_once(up):
    up.define_upcasters("""
        return { Withdrawn = {
          [1] = function(e) e.data.amount = -e.data.amount; return e end } }""")
    assert shape(up.read_all()) == [RAW[0], RAW[1], RAW[2], ("Withdrawn", 2, {"amount": -1}),
                                    RAW[4]]
    up.define_upcasters("return {}")
    assert shape(up.read_all()) == RAW


def test_an_open_iterator_after_redefinition(up):
    it = up.read_all()
    first = next(it)
    assert first.data == UPCAST[0][2]
    up.define_upcasters("return {}")
    rest = list(it)
    assert len(rest) == 4  # old or new upcasters, but no error and no lost event


def test_upcasters_may_change_the_type(store):
    store.define_upcasters("""
        return { Old = { [1] = function(e) e.type = "New"; return e end } }""")
    store.append("s", [cairn.Event("Old", 1)])
    assert [(e.type, e.schema) for e in store.read_stream("s")] == [("New", 2)]
    assert store.get(1).type == "New"
    assert [e.type for e in store.read_all(raw=True)] == ["Old"]
    store.define_aggregate("s", """
        return { apply = { New = function(s, e) s.new = true end,
                           Old = function(s, e) s.old = true end } }""")
    # the reducer is chosen by the upcasted type, as every reader sees it
    assert store.load("s").state == {"new": True}


def test_upcasters_may_replace_data_entirely(store):
    store.define_upcasters("""
        return { E = { [1] = function(e) e.data = { wrapped = e.data }; return e end,
                       [2] = function(e) e.data = nil; return e end } }""")
    store.append("s", [cairn.Event("E", [1, 2]), cairn.Event("E", "keep", schema=2)])
    assert [(e.schema, e.data) for e in store.read_stream("s")] == [(3, None), (3, None)]
    store.define_upcasters("""
        return { E = { [1] = function(e) e.data = { wrapped = e.data }; return e end } }""")
    assert [(e.schema, e.data) for e in store.read_stream("s")] == [
        (2, {"wrapped": [1, 2]}), (2, "keep")]


def test_bytes_events_reach_upcasters_as_strings(store):
    store.define_upcasters("""
        return { B = { [1] = function(e) e.data = { len = #e.data }; return e end } }""")
    store.append("s", [cairn.Event("B", b"\x00\xff\x01"), cairn.Event("Other", b"\x00\xff")])
    assert [e.data for e in store.read_all()] == [{"len": 3}, b"\x00\xff"]
    assert [e.data for e in store.read_all(raw=True)] == [b"\x00\xff\x01", b"\x00\xff"]


def test_upcasters_json_exactness(store):
    store.define_upcasters("""
        return { N = { [1] = function(e) e.data.succ = e.data.big + 1; return e end } }""")
    store.append("s", [cairn.Event("N", {"big": 2**53 + 1, "max": 2**63 - 1, "f": 0.1})])
    d = store.get(1).data
    assert d == {"big": 2**53 + 1, "max": 2**63 - 1, "f": 0.1, "succ": 2**53 + 2}
    assert type(d["f"]) is float and type(d["succ"]) is int


# ---------------------------------------------------------------------------------------
# Failures
# ---------------------------------------------------------------------------------------

FAILING = """\
return {
  E = {
    [1] = function(e)
      if e.data.bad then error("cannot upcast") end
      return e
    end,
  },
  Nothing = { [1] = function(e) return 42 end },
  Loop = { [1] = function(e) while true do end end },
}
"""


def test_an_upcaster_error_is_a_script_error_naming_upcasters(store):
    store.define_upcasters(FAILING)
    store.append("s", [cairn.Event("E", {}), cairn.Event("E", {"bad": True})])
    with pytest.raises(cairn.ScriptError, match="cannot upcast") as ei:
        list(store.read_stream("s"))
    e = ei.value
    assert e.script == "upcasters"
    assert e.line == 4
    assert e.position == 2
    with pytest.raises(cairn.ScriptError):
        store.get(2)
    with pytest.raises(cairn.ScriptError):
        list(store.read_all())
    assert store.get(1).data == {}
    assert [e.data for e in store.read_all(raw=True)] == [{}, {"bad": True}]
    check_usable(store)


def test_an_upcaster_error_does_not_break_the_iterator_before_it(store):
    store.define_upcasters(FAILING)
    store.append("s", [cairn.Event("E", {"i": 0}), cairn.Event("E", {"bad": True})])
    it = store.read_stream("s")
    assert next(it).data == {"i": 0}
    with pytest.raises(cairn.ScriptError):
        next(it)
    check_usable(store)


def test_an_upcaster_returning_a_non_table_is_a_script_error(store):
    store.define_upcasters(FAILING)
    store.append("s", [cairn.Event("Nothing", {})])
    with pytest.raises(cairn.ScriptError) as ei:
        store.get(1)
    assert ei.value.script == "upcasters"
    assert store.get(1, raw=True).data == {}
    check_usable(store)


def test_an_endless_upcaster_hits_the_instruction_limit(store):
    store.define_upcasters(FAILING)
    store.append("s", [cairn.Event("Loop", {})])
    with pytest.raises(cairn.ScriptError, match="instruction limit"):
        list(store.read_all())
    check_usable(store)


def test_an_upcaster_error_fails_an_aggregate_load(store):
    store.define_upcasters(FAILING)
    store.define_aggregate("s", "return { apply = { E = function(s, e) s.n = 1 end } }")
    store.append("s", [cairn.Event("E", {"bad": True})])
    with pytest.raises(cairn.ScriptError) as ei:
        store.load("s")
    assert ei.value.script == "upcasters"
    check_usable(store)


def test_upcasters_print_to_the_cairn_logger(store, caplog):
    caplog.set_level(logging.INFO, logger="cairn")
    store.define_upcasters("""
        return { E = { [1] = function(e) print("upcasting", e.position); return e end } }""")
    store.append("s", [cairn.Event("E", 1), cairn.Event("E", 2)])
    caplog.clear()
    list(store.read_all())
    store.get(1)
    list(store.read_all(raw=True))
    assert [r.getMessage() for r in caplog.records if r.name == "cairn"] == [
        "upcasters: upcasting\t1", "upcasters: upcasting\t2", "upcasters: upcasting\t1"]


def test_upcasting_releases_the_gil_on_every_event(store_path):
    # Events after the first come from the iterator's buffer; upcasting them runs Lua, which
    # must not hold the GIL either.
    with cairn.open(store_path, durability="none", script_instruction_limit=10**10,
                    script_time_limit=None) as s:
        s.append("s", [cairn.Event("Slow", i) for i in range(3)])
        s.define_upcasters("""
            return { Slow = { [1] = function(e)
              local x = 0
              for i = 1, 30000000 do x = x + i end
              return e
            end } }""")
        it = s.read_all()
        assert next(it).schema == 2  # the refill
        rest = []
        assert ticks_during(lambda: rest.extend(e.schema for e in it)) > 0.3
        assert rest == [2, 2]
        assert [e.schema for e in s.read_all(raw=True)] == [1, 1, 1]
