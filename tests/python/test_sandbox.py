"""The Lua sandbox (spec section 3): every escape attempt has its own test, and each checks
both the outcome (a clear ScriptError, or the harmless result) and that the store still
works afterwards (an append and an aggregate load).  Also the instruction and memory limits
(pcall cannot swallow them), error objects that are not strings, wrong script shapes, error
lines and positions, reject inside pcall, and JSON conversion edge cases."""

import resource

import pytest

import cairn
from conftest import check_usable, nothing_written, same

USABLE = """\
return {
  init = function() return { n = 0 } end,
  apply = { Ticked = function(s, e) s.n = s.n + 1 end },
}
"""


def assert_usable(store):
    """The store accepts an append and an aggregate loads (a fresh Lua call works)."""
    check_usable(store)
    store.define_aggregate("usable", USABLE)
    before = store.load("usable-1").state["n"]
    store.append("usable-1", [cairn.Event("Ticked")])
    assert store.load("usable-1").state == {"n": before + 1}


def probe_source(body):
    """An aggregate whose decide.Run runs `body` and records what it returns."""
    return (
        "return {\n"
        "  decide = { Run = function(s, cmd)\n"
        "    local v = (function()\n"
        f"{body}\n"
        "    end)()\n"
        "    return { { type = 'Result', data = { v = v } } }\n"
        "  end },\n"
        "}\n"
    )


def run(store, body):
    """Runs `body` (a Lua function body) in a decide handler; returns what it returned."""
    store.define_aggregate("probe", probe_source(body))
    r = store.execute("probe-1", "Run")
    return store.get(r.position).data.get("v")


def fails(store, body, match=None):
    """Runs `body`; it must raise ScriptError and write nothing.  Returns the error."""
    store.define_aggregate("probe", probe_source(body))
    with nothing_written(store), pytest.raises(cairn.ScriptError, match=match) as ei:
        store.execute("probe-1", "Run")
    assert ei.value.script == "probe"
    return ei.value


# ---------------------------------------------------------------------------------------
# What a script can reach
# ---------------------------------------------------------------------------------------

SANDBOX_GLOBALS = {
    "string", "table", "math", "utf8", "assert", "error", "ipairs", "next", "pairs", "pcall",
    "xpcall", "select", "tonumber", "tostring", "type", "rawequal", "rawget", "rawset",
    "rawlen", "setmetatable", "getmetatable", "print", "load", "json", "reject", "emit", "_G",
}
FORBIDDEN = {"io", "os", "debug", "package", "require", "dofile", "loadfile", "collectgarbage",
             "coroutine", "loadstring", "module", "newproxy", "setfenv", "getfenv"}


def test_globals_are_exactly_the_sandbox(store):
    names = run(store, """
        local names = {}
        for k in pairs(_G) do names[#names + 1] = k end
        table.sort(names)
        return names""")
    assert FORBIDDEN.isdisjoint(names)
    assert set(names) - {"_VERSION"} == SANDBOX_GLOBALS
    assert_usable(store)


def test_string_dump_is_absent(store):
    assert run(store, "return type(string.dump)") == "nil"
    fails(store, "return load(string.dump(function() return 1 end))")
    assert_usable(store)


def test_load_refuses_binary_chunks(store):
    got = run(store, """
        local f, err = load("\\27LuaT\\0\\25\\147\\r\\n\\26\\n")
        return { f == nil, tostring(err) }""")
    assert got[0] is True
    assert "binary" in got[1]
    assert_usable(store)


def test_load_refuses_a_reader_function(store):
    fails(store, "return load(function() return nil end)()", match="string expected")
    assert_usable(store)


def test_load_runs_chunks_in_the_scripts_own_environment(store):
    assert run(store, "return load('return type(os)')()") == "nil"
    assert run(store, "load('leaked = 41')(); return leaked + 1") == 42
    assert run(store, "return load('return y', 'chunk', 't', { y = 5 })()") == 5
    assert run(store, "return load('return _G')() == _G") is True
    assert_usable(store)


def test_os_is_absent(store, tmp_path):
    marker = tmp_path / "pwned"
    assert run(store, "return type(os)") == "nil"
    fails(store, f"os.execute('touch {marker}')", match="os")
    fails(store, "os.exit(1)")
    assert not marker.exists()
    assert_usable(store)


def test_io_is_absent(store, tmp_path):
    marker = tmp_path / "pwned"
    assert run(store, "return type(io)") == "nil"
    fails(store, f"io.open('{marker}', 'w'):write('x')", match="io")
    assert not marker.exists()
    assert_usable(store)


def test_debug_is_absent(store):
    assert run(store, "return type(debug)") == "nil"
    fails(store, "debug.sethook()", match="debug")
    assert_usable(store)


def test_package_is_absent(store):
    assert run(store, "return type(package)") == "nil"
    fails(store, "return package.loaded.os", match="package")
    assert_usable(store)


def test_require_is_absent(store):
    assert run(store, "return type(require)") == "nil"
    fails(store, "return require('os')", match="require")
    assert_usable(store)


def test_dofile_is_absent(store):
    assert run(store, "return type(dofile)") == "nil"
    fails(store, "return dofile('/etc/passwd')", match="dofile")
    assert_usable(store)


def test_loadfile_is_absent(store):
    assert run(store, "return type(loadfile)") == "nil"
    fails(store, "return loadfile('/etc/passwd')", match="loadfile")
    assert_usable(store)


def test_collectgarbage_is_absent(store):
    assert run(store, "return type(collectgarbage)") == "nil"
    fails(store, "collectgarbage('stop')", match="collectgarbage")
    assert_usable(store)


def test_math_random_is_absent(store):
    assert run(store, "return { type(math.random), type(math.randomseed) }") == ["nil", "nil"]
    fails(store, "return math.random(1, 6)", match="random")
    assert run(store, "return math.floor(3.7)") == 3  # the rest of math is there
    assert_usable(store)


def test_coroutine_is_absent(store):
    assert run(store, "return type(coroutine)") == "nil"
    assert_usable(store)


def test_forbidden_names_are_unreachable_through_indirection(store):
    got = run(store, """
        return { rawget(_G, "os") == nil, _ENV.io == nil, _G._G.debug == nil,
                 getmetatable("") == false, load("return require")() == nil }""")
    assert got == [True, True, True, True, True]
    assert_usable(store)


def test_string_metatable_is_protected(store):
    fails(store, "setmetatable(getmetatable(''), {})")
    assert run(store, "return getmetatable('')") is False
    assert_usable(store)


def test_gc_metamethods_are_refused(store):
    fails(store, "setmetatable({}, { __gc = function() while true do end end })", match="__gc")
    assert_usable(store)


def test_setmetatable_on_G_does_not_affect_other_scripts(store):
    store.define_aggregate("evil", """
        setmetatable(_G, { __index = function(t, k) return "evil" end,
                           __newindex = function(t, k, v) rawset(t, k, "evil") end })
        string.upper = function() return "pwned" end
        table.insert = nil
        json.encode = function() return "pwned" end
        leaked_global = "evil"
        return {
          init = function() return { probe = undefined_name } end,
        }""")
    assert store.load("evil-1").state == {"probe": "evil"}  # its own environment is changed
    got = run(store, """
        return { type(undefined_name), ("abc"):upper(), string.upper("x"), type(table.insert),
                 json.encode({1}), type(leaked_global) }""")
    assert got == ["nil", "ABC", "X", "function", "[1]", "nil"]
    assert store.load("evil-1").state == {"probe": "evil"}
    assert_usable(store)


def test_globals_set_by_one_call_do_not_leak_into_other_scripts(store):
    run(store, "shared_secret = 'x'; string.secret = 'y'; return 1")
    store.define_aggregate("other", """
        return { init = function()
          return { a = type(shared_secret), b = type(string.secret) }
        end }""")
    assert store.load("other-1").state == {"a": "nil", "b": "nil"}
    assert_usable(store)


# ---------------------------------------------------------------------------------------
# Limits: pcall cannot swallow them
# ---------------------------------------------------------------------------------------

def test_endless_loop_hits_the_instruction_limit(store):
    e = fails(store, "while true do end", match="instruction limit")
    assert e.line is not None
    assert_usable(store)


def test_endless_loop_inside_pcall_still_stops(store):
    fails(store, """
        local ok = pcall(function() while true do end end)
        return "escaped" """, match="instruction limit")
    assert_usable(store)


def test_endless_loop_inside_xpcall_with_a_looping_handler_still_stops(store):
    fails(store, """
        xpcall(function() while true do end end, function() while true do end end)
        return "escaped" """, match="instruction limit")
    assert_usable(store)


def test_pcall_in_an_endless_loop_still_stops(store):
    fails(store, """
        while true do pcall(function() while true do end end) end""", match="instruction limit")
    assert_usable(store)


def test_pattern_matching_is_counted(store):
    fails(store, """
        return string.find(string.rep("a", 100000), ".-.-.-.-.-b")""", match="instruction limit")
    assert_usable(store)


def test_table_move_is_counted(store):
    fails(store, "table.move({}, 1, 1e15, 2); return 1", match="instruction limit")
    assert_usable(store)


def test_instruction_limit_is_per_call_and_configurable(store_path):
    with cairn.open(store_path, durability="none", script_instruction_limit=200_000) as s:
        assert s.script_instruction_limit == 200_000
        s.define_aggregate("work", """
            return {
              init = function() return { n = 0 } end,
              apply = { Work = function(s, e)
                local x = 0
                for i = 1, e.data do x = x + i end
                s.n = s.n + 1
              end },
            }""")
        s.append("work-1", [cairn.Event("Work", 20_000) for _ in range(10)])
        assert s.load("work-1").state == {"n": 10}  # ~80k instructions per call, 10 calls
        s.append("work-1", [cairn.Event("Work", 1_000_000)])
        with pytest.raises(cairn.ScriptError, match="instruction limit") as ei:
            s.load("work-1")
        assert ei.value.position == 11
        assert ei.value.script == "work"
        check_usable(s)


def test_memory_bomb_hits_the_memory_limit(store):
    fails(store, """
        local s = "x"
        while true do s = s .. s end""", match="memory")
    assert_usable(store)


def test_memory_bomb_inside_pcall_still_stops(store):
    fails(store, """
        pcall(function() local s = "x" while true do s = s .. s end end)
        return "escaped" """, match="memory")
    assert_usable(store)


def test_string_rep_memory_bomb(store):
    fails(store, "return #string.rep('x', 1 << 30)", match="memory")
    fails(store, "local ok = pcall(string.rep, 'x', 1 << 30); return ok", match="memory")
    fails(store, "return #string.rep('x', 1 << 40)")  # Lua's own size check: > INT_MAX
    assert_usable(store)


def test_table_memory_bomb(store_path):
    # 64 MiB of small strings take about a second on a loaded machine: no time limit here
    with cairn.open(store_path, durability="none", script_time_limit=None) as store:
        fails(store, """
            local t = {}
            local i = 0
            while true do i = i + 1; t[i] = string.rep("y", 1000) .. i end""",
              match="memory")
        assert_usable(store)


def test_memory_limit_is_configurable(store_path):
    with cairn.open(store_path, durability="none", script_memory_limit=4 << 20) as s:
        assert s.script_memory_limit == 4 << 20
        s.define_aggregate("probe", probe_source("return #string.rep('x', 1 << 20)"))
        r = s.execute("probe-1", "Run")
        assert s.get(r.position).data == {"v": 1 << 20}
        s.define_aggregate("probe", probe_source("return #string.rep('x', 8 << 20)"))
        with pytest.raises(cairn.ScriptError, match="memory"):
            s.execute("probe-1", "Run")
        check_usable(s)


def test_memory_is_returned_after_a_limit_error(store):
    for _ in range(5):
        fails(store, "local s = 'x' while true do s = s .. s end", match="memory")
    assert run(store, "return #string.rep('x', 16 << 20)") == 16 << 20
    assert_usable(store)


def test_deep_recursion_is_a_script_error(store):
    fails(store, """
        local function f(n) return f(n + 1) + 1 end
        return f(1)""")
    assert_usable(store)


def test_deep_recursion_inside_pcall_is_caught_by_the_script(store):
    got = run(store, """
        local function f(n) return f(n + 1) + 1 end
        local ok, err = pcall(f, 1)
        return { ok, type(err) }""")
    assert got[0] is False
    assert_usable(store)


def test_deep_recursion_through_metamethods(store):
    fails(store, """
        local t = setmetatable({}, {})
        getmetatable(t).__index = function(tt, k) return tt[k] end
        return t.x""")
    assert_usable(store)


def test_deeply_nested_data_is_refused(store):
    fails(store, """
        local t = {}
        local cur = t
        for i = 1, 5000 do cur.x = {}; cur = cur.x end
        return t""")
    assert_usable(store)


# ---------------------------------------------------------------------------------------
# Error objects, shapes, lines and positions
# ---------------------------------------------------------------------------------------

def test_error_with_a_table_object(store):
    e = fails(store, "error({ code = 42 })", match="table")
    assert isinstance(str(e), str)
    assert_usable(store)


def test_error_with_nil(store):
    fails(store, "error(nil)", match="nil")
    assert_usable(store)


def test_error_with_a_number_and_a_boolean(store):
    fails(store, "error(42)", match="42")
    fails(store, "error(false)")
    assert_usable(store)


def test_error_object_with_a_hostile_tostring_is_not_called(store):
    fails(store, """
        error(setmetatable({}, { __tostring = function() while true do end end }))""")
    assert_usable(store)


def test_error_message_with_invalid_utf8(store):
    e = fails(store, 'error("bad \\xff\\xfe bytes")')
    assert "\ufffd" in str(e)
    assert_usable(store)


def test_script_returning_a_number_is_a_script_error(store):
    with pytest.raises(cairn.ScriptError) as ei:
        store.define_aggregate("shape", "return 42")
    assert ei.value.script == "shape"
    assert store.scripts()["aggregate"] == []
    assert_usable(store)


def test_script_returning_nothing_is_a_script_error(store):
    with pytest.raises(cairn.ScriptError):
        store.define_aggregate("shape", "local x = 1")
    assert_usable(store)


def test_apply_not_a_table_is_a_script_error(store):
    with pytest.raises(cairn.ScriptError, match="apply") as ei:
        store.define_aggregate("shape", "return { apply = 5 }")
    assert ei.value.script == "shape"
    assert_usable(store)


def test_apply_handler_not_a_function_is_a_script_error(store):
    with pytest.raises(cairn.ScriptError, match="apply.X"):
        store.define_aggregate("shape", "return { apply = { X = 1 } }")
    assert_usable(store)


def test_decide_handler_not_a_function_is_a_script_error(store):
    with pytest.raises(cairn.ScriptError, match="decide"):
        store.define_aggregate("shape", "return { decide = { Go = 'go' } }")
    assert_usable(store)


def test_snapshot_every_must_be_a_positive_integer(store):
    for bad in ("0", "-5", "1.5", "'10'"):
        with pytest.raises(cairn.ScriptError, match="snapshot_every"):
            store.define_aggregate("shape", f"return {{ snapshot_every = {bad} }}")
    assert_usable(store)


def test_shape_checks_do_not_run_script_code(store):
    # a metatable on the returned table must not be consulted while checking it or using it
    store.define_aggregate("shape", """
        return setmetatable({ apply = {} },
                            { __index = function() while true do end end })""")
    assert store.load("shape-1").state == {}
    assert_usable(store)


def test_syntax_error_has_the_line(store):
    with pytest.raises(cairn.ScriptError) as ei:
        store.define_aggregate(
            "broken", "return {\n  apply = {\n    X = function(s, e) s.n = end,\n  },\n}\n")
    assert ei.value.script == "broken"
    assert ei.value.line == 3
    assert ei.value.position is None
    assert_usable(store)


def test_runtime_error_at_the_top_level_has_the_line(store):
    with pytest.raises(cairn.ScriptError) as ei:
        store.define_aggregate("broken", "local a = 1\nlocal b = nil\nlocal c = b.x\nreturn {}\n")
    assert ei.value.script == "broken"
    assert ei.value.line == 3
    assert_usable(store)


def test_runtime_error_in_a_reducer_has_line_and_position(store):
    store.define_aggregate("acct", """\
return {
  init = function() return { n = 0 } end,
  apply = {
    E = function(s, e)
      if e.data.bad then
        local x = nil
        return x.boom
      end
      s.n = s.n + 1
    end,
  },
}
""")
    store.append("other", [cairn.Event("X")])
    store.append("acct-1", [cairn.Event("E", {}), cairn.Event("E", {})])
    r = store.append("acct-1", [cairn.Event("E", {"bad": True})])
    with pytest.raises(cairn.ScriptError) as ei:
        store.load("acct-1")
    e = ei.value
    assert e.script == "acct"
    assert e.line == 7
    assert e.position == r.position == 4
    assert "acct:7" in str(e)
    assert store.load("acct-1", version=1).state == {"n": 2}
    assert_usable(store)


def test_runtime_error_in_decide_has_the_line(store):
    e = fails(store, "local t = nil\nreturn t.x")
    assert e.line == 5  # probe_source puts the body on line 4
    assert_usable(store)


def test_reject_inside_pcall_still_rejects(store):
    store.define_aggregate("probe", probe_source("""
        local ok = pcall(reject, "no way", { x = 1 })
        local ok2 = pcall(function() reject("again") end)
        return "escaped" """))
    with nothing_written(store), pytest.raises(cairn.CommandRejected) as ei:
        store.execute("probe-1", "Run")
    assert ei.value.reason == "no way"
    assert ei.value.details == {"x": 1}
    assert_usable(store)


def test_reject_inside_xpcall_still_rejects(store):
    store.define_aggregate("probe", probe_source("""
        xpcall(function() reject("nope") end, function(m) return m end)
        return "escaped" """))
    with nothing_written(store), pytest.raises(cairn.CommandRejected, match="nope"):
        store.execute("probe-1", "Run")
    assert_usable(store)


def test_reject_with_a_non_string_reason_is_a_script_error(store):
    fails(store, "reject({})", match="reason")
    assert_usable(store)


def test_emit_outside_projections_is_a_script_error(store):
    fails(store, "emit('s', 'T', {}, {})", match="emit")
    assert_usable(store)


# ---------------------------------------------------------------------------------------
# JSON through a script
# ---------------------------------------------------------------------------------------

EDGE_INTS = {"max": 2**63 - 1, "min": -2**63, "big": 2**53 + 1, "neg_big": -(2**53 + 1)}


def test_int64_edges_stay_exact_through_decide(store):
    store.define_aggregate("probe", """
        return { decide = { Run = function(s, cmd)
          local d = cmd.data
          return { { type = 'Result', data = {
            max = d.max, min = d.min, big = d.big, neg_big = d.neg_big,
            types = { math.type(d.max), math.type(d.min), math.type(d.big) },
            lua_max = math.maxinteger, lua_min = math.mininteger, succ = d.big + 1,
            roundtrip = json.decode(json.encode(d)) } } }
        end } }""")
    r = store.execute("probe-1", "Run", EDGE_INTS)
    data = store.get(r.position).data
    for k, v in EDGE_INTS.items():
        assert same(data[k], v), k
        assert same(data["roundtrip"][k], v), k
    assert data["types"] == ["integer", "integer", "integer"]
    assert same(data["lua_max"], 2**63 - 1) and same(data["lua_min"], -2**63)
    assert same(data["succ"], 2**53 + 2)
    assert_usable(store)


def test_int64_edges_stay_exact_in_state(store):
    store.define_aggregate("keep", """
        return { apply = { Set = function(s, e) s.v = e.data end } }""")
    store.append("keep-1", [cairn.Event("Set", EDGE_INTS)])
    assert same(store.load("keep-1").state["v"], EDGE_INTS)
    assert_usable(store)


def test_floats_round_trip_through_a_script(store):
    values = {"tenth": 0.1, "huge": 1e300, "tiny": 5e-324, "neg": -2.5, "whole": 2.0,
              "third": 1 / 3}
    store.define_aggregate("probe", """
        return { decide = { Run = function(s, cmd)
          local d = cmd.data
          return { { type = 'Result', data = {
            same = d, types = { math.type(d.tenth), math.type(d.whole) },
            made = { tenth = 0.1, huge = 1e300, whole = 2.0, sum = 0.1 + 0.2 },
            roundtrip = json.decode(json.encode(d)) } } }
        end } }""")
    r = store.execute("probe-1", "Run", values)
    data = store.get(r.position).data
    assert same(data["same"], values)
    assert same(data["roundtrip"], values)
    assert data["types"] == ["float", "float"]
    assert same(data["made"], {"tenth": 0.1, "huge": 1e300, "whole": 2.0, "sum": 0.1 + 0.2})
    assert_usable(store)


def test_json_null_round_trips(store):
    store.define_aggregate("probe", """
        return { decide = { Run = function(s, cmd)
          return { { type = 'Result', data = {
            is_null = cmd.data.a == json.null, a = cmd.data.a, list = { 1, json.null, 3 },
            decoded = json.decode('{"x":null}').x == json.null } } }
        end } }""")
    r = store.execute("probe-1", "Run", {"a": None})
    assert store.get(r.position).data == {"is_null": True, "a": None, "list": [1, None, 3],
                                          "decoded": True}
    assert_usable(store)


def test_empty_table_is_an_object(store):
    assert run(store, "return {}") == {}
    assert run(store, "return { {}, { 1 } }") == [{}, [1]]
    assert_usable(store)


def test_nan_in_state_is_a_script_error(store):
    store.define_aggregate("nan", """
        return { apply = { E = function(s, e) s.x = 0/0 end } }""")
    store.append("nan-1", [cairn.Event("E")])
    with pytest.raises(cairn.ScriptError, match="NaN") as ei:
        store.load("nan-1")
    assert ei.value.script == "nan"
    assert_usable(store)


def test_nan_in_event_data_is_a_script_error(store):
    fails(store, "return 0/0", match="NaN")
    assert_usable(store)


def test_infinity_in_event_data_is_a_script_error(store):
    fails(store, "return math.huge")
    fails(store, "return { x = -math.huge }")
    assert_usable(store)


def test_invalid_utf8_string_in_event_data_is_a_script_error(store):
    fails(store, 'return "\\xff\\xfe"', match="UTF-8")
    assert_usable(store)


def test_function_in_event_data_is_a_script_error(store):
    fails(store, "return { f = print }")
    assert_usable(store)


def test_cycle_in_state_is_a_script_error(store):
    store.define_aggregate("cyc", """
        return { apply = { E = function(s, e) s.me = s end } }""")
    store.append("cyc-1", [cairn.Event("E")])
    with pytest.raises(cairn.ScriptError):
        store.load("cyc-1")
    assert_usable(store)


def test_mixed_table_is_a_script_error(store):
    fails(store, "return { 1, 2, x = 3 }")
    fails(store, "return { [1] = 'a', [3] = 'c' }")
    assert_usable(store)


def test_metatables_are_not_consulted_when_encoding(store):
    got = run(store, """
        return setmetatable({ a = 1 }, {
          __pairs = function() while true do end end,
          __index = function() while true do end end,
          __len = function() while true do end end })""")
    assert got == {"a": 1}
    assert_usable(store)


def test_json_encode_and_decode_errors_are_script_errors(store):
    fails(store, "return json.decode('{not json')", match="json.decode")
    fails(store, "return json.encode(0/0)", match="json.encode")
    got = run(store, "local ok, err = pcall(json.decode, '[1,'); return { ok, type(err) }")
    assert got == [False, "string"]
    assert_usable(store)


def test_bytes_data_reaches_lua_as_a_string(store):
    store.define_aggregate("raw", """
        return { apply = { B = function(s, e) s.len = #e.data; s.type = type(e.data) end } }""")
    store.append("raw-1", [cairn.Event("B", b"\x00\x01\xff")])
    assert store.load("raw-1").state == {"len": 3, "type": "string"}
    assert_usable(store)


def test_many_failed_calls_do_not_grow_the_process(store):
    fails(store, "local s = 'x' while true do s = s .. s end", match="memory")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(10):
        fails(store, "local s = 'x' while true do s = s .. s end", match="memory")
        fails(store, "while true do end", match="instruction")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert after - before < 200 * 1024, (before, after)  # KiB on Linux
    assert_usable(store)
