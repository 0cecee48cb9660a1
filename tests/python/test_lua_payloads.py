"""How Lua sees what Python wrote (spec section 3, "An event in Lua"): `e.bytes` tells an
opaque bytes payload (a Lua string of those bytes) from JSON data (a JSON string is a Lua
string too), in every place a script gets an event -- reducers (short folds and the long ones
that reuse their tables), projections, compensations, upcasters -- and an upcaster may set it;
what a decide handler's `cmd` holds; the Lua <-> JSON rules that surprise."""

import pytest

import cairn

RECORDER = """\
local function seen(s, e)
  s.seen[#s.seen + 1] = { bytes = e.bytes, kind = type(e.data), len = type(e.data) == "string" and #e.data or -1 }
end
return {
  init = function() return { seen = {} } end,
  apply = { ["*"] = seen },
  compensate = {
    Blob = function(s, e)
      return { { type = "Undone", data = { bytes = e.bytes, len = #e.data } } }
    end,
  },
}
"""

PAYLOADS = [
    cairn.Event("Blob", b"\x00\xff bytes"),  # opaque
    cairn.Event("Text", "\x00\xff bytes"),  # a JSON string (the same characters as text)
    cairn.Event("Obj", {"a": 1}),
    cairn.Event("Empty"),
]
EXPECTED = [
    {"bytes": True, "kind": "string", "len": 8},
    {"bytes": False, "kind": "string", "len": 9},  # U+00FF is two bytes of UTF-8
    {"bytes": False, "kind": "table", "len": -1},
    {"bytes": False, "kind": "nil", "len": -1},
]


def test_scripts_tell_bytes_payloads_from_json_strings(store):
    store.define_aggregate("rec", RECORDER)
    store.append("rec-1", PAYLOADS)
    assert store.load("rec-1").state["seen"] == EXPECTED
    # a compensation handler gets the event to undo with the same field
    r = store.compensate("rec-1", 0)
    assert store.get(r.position).data == {"bytes": True, "len": 8}


def test_a_long_fold_sets_bytes_for_every_event(store):
    # 512 events or more: the fold refills one set of event tables (spec section 3)
    store.define_aggregate("rec", RECORDER)
    evs = [PAYLOADS[i % 4] for i in range(600)]
    store.append("rec-1", [cairn.Event(e.type, e.data) for e in evs])
    assert store.load("rec-1").state["seen"] == [EXPECTED[i % 4] for i in range(600)]


PROJECTION = """\
return {
  source = { categories = { "rec" } },
  init = function() return { seen = {} } end,
  apply = { ["*"] = function(s, e)
    s.seen[#s.seen + 1] = { bytes = e.bytes, kind = type(e.data), len = type(e.data) == "string" and #e.data or -1 }
  end },
}
"""


def test_projections_see_bytes(store):
    store.define_projection("rec", PROJECTION)
    store.append("rec-1", PAYLOADS)
    store.run_projections()
    assert store.projection("rec").state()["seen"] == EXPECTED


UPCASTERS = """\
return {
  ToText  = { [1] = function(e) e.data = "now text"; e.bytes = false; return e end },
  Keep    = { [1] = function(e) e.data = e.data .. "!"; return e end },          -- stays bytes
  Decode  = { [1] = function(e) e.data = json.decode(e.data); return e end },   -- bytes -> JSON
  ToBytes = { [1] = function(e) e.bytes = true; return e end },                 -- text -> bytes
  Fresh   = { [1] = function(e) return { type = e.type, data = e.data } end },  -- as the event was
  Bad     = { [1] = function(e) e.bytes = "yes"; return e end },
}
"""


def test_an_upcaster_may_set_bytes(store):
    store.append("up-1", [
        cairn.Event("ToText", b"\xffraw"),
        cairn.Event("Keep", b"\xffraw"),
        cairn.Event("Decode", b'{"k": [1]}'),
        cairn.Event("ToBytes", "t\xe9xt"),
        cairn.Event("Fresh", b"\xffraw"),
        cairn.Event("Fresh", "text"),
    ])
    store.append("bad-1", [cairn.Event("Bad", b"x")])
    store.define_upcasters(UPCASTERS)
    want = ["now text", b"\xffraw!", {"k": [1]}, "t\xe9xt".encode(), b"\xffraw", "text"]
    for got in [[e.data for e in store.read_stream("up-1")], [store.get(p).data for p in range(1, 7)]]:
        assert got == want and [type(g) for g in got] == [type(w) for w in want]
    assert [e.data for e in store.read_stream("up-1", raw=True)][:2] == [b"\xffraw", b"\xffraw"]
    with pytest.raises(cairn.ScriptError, match="bytes") as err:
        store.get(7)
    assert err.value.script == "upcasters" and err.value.position == 7
    # an aggregate load upcasts event tables itself: its reducers see what the upcaster set
    store.define_aggregate("up", RECORDER)
    store.define_aggregate("bad", RECORDER)
    assert store.load("up-1").state["seen"] == [
        {"bytes": False, "kind": "string", "len": 8},
        {"bytes": True, "kind": "string", "len": 5},
        {"bytes": True, "kind": "table", "len": -1},  # bytes describes a string data only
        {"bytes": True, "kind": "string", "len": 5},
        {"kind": "string", "len": 4},  # a fresh table: no bytes field
        {"kind": "string", "len": 4},
    ]
    with pytest.raises(cairn.ScriptError, match="bytes"):
        store.load("bad-1")


CMD = """\
return {
  decide = {
    Show = function(s, cmd)
      local keys = {}
      for k in pairs(cmd) do keys[#keys + 1] = k end
      table.sort(keys)
      cmd.metadata.added_by_decide = true   -- the call's metadata: merged over every event
      return { { type = "Shown", data = { keys = keys, type = cmd.type, data = cmd.data,
                                          meta = cmd.metadata, has_data = cmd.data ~= nil } } }
    end,
  },
}
"""


def test_a_decide_handler_cmd_holds_type_data_and_metadata(store):
    store.define_aggregate("c", CMD)
    r = store.execute("c-1", "Show", {"x": [1, "two"]}, metadata={"user": "ann"})
    e = store.get(r.position)
    assert e.data == {"keys": ["data", "metadata", "type"], "type": "Show",
                      "data": {"x": [1, "two"]}, "meta": {"user": "ann", "added_by_decide": True},
                      "has_data": True}
    assert e.metadata == {"user": "ann", "added_by_decide": True}
    r = store.execute("c-1", "Show")  # no data, no metadata: cmd.data nil, cmd.metadata {}
    e = store.get(r.position)
    assert e.data == {"keys": ["metadata", "type"], "type": "Show",
                      "meta": {"added_by_decide": True}, "has_data": False}
    r = store.execute("c-1", "Show", "a string")
    assert store.get(r.position).data["data"] == "a string"
    with pytest.raises(TypeError, match="data"):
        store.execute("c-1", "Show", b"bytes")  # a command's data is JSON only


JSON_RULES = """\
return {
  decide = {
    Rules = function(s, cmd)
      local d = cmd.data
      return { { type = "Ruled", data = {
        empty = {},                       -- {} is an object
        from_empty_list = d.list,         -- [] decodes to {} and so comes back an object
        dropped = nil,                    -- a nil value drops the key
        null = json.null,                 -- JSON null
        null_is_truthy = d.null and true or false,
        null_is_json_null = d.null == json.null,
        list = { 1, json.null, 3 },       -- json.null keeps a place in an array
        int = 3, float = 3.0, big = 9007199254740993,
        text = json.encode({ b = 1, a = { 1, 2 } }),
      } } }
    end,
    Holes = function(s, cmd) return { { type = "X", data = { 1, nil, 3 } } } end,
    Mixed = function(s, cmd) return { { type = "X", data = { 1, k = 2 } } } end,
    Binary = function(s, cmd) return { { type = "X", data = "\\xff" } } end,
  },
}
"""


def test_lua_json_rules_are_as_documented(store):
    store.define_aggregate("j", JSON_RULES)
    r = store.execute("j-1", "Rules", {"list": [], "null": None})
    assert store.get(r.position).data == {
        "empty": {}, "from_empty_list": {}, "null": None, "null_is_truthy": True,
        "null_is_json_null": True, "list": [1, None, 3], "int": 3, "float": 3.0,
        "big": 9007199254740993, "text": '{"a":[1,2],"b":1}',
    }
    assert type(store.get(r.position).data["float"]) is float
    with pytest.raises(cairn.ScriptError, match="holes"):
        store.execute("j-1", "Holes")
    with pytest.raises(cairn.ScriptError, match="string keys"):
        store.execute("j-1", "Mixed")
    with pytest.raises(cairn.ScriptError, match="UTF-8"):
        store.execute("j-1", "Binary")
