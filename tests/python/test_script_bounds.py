"""What scripts make the host hold is bounded.  JSON encoding of a shared subtree (issue 10, item 4): `local t = {1}; for i =
1, 40 do t = {t, t} end` is 41 tables in Lua and 2^40 values of JSON.  The encoded text
counts against script_memory_limit and the values encoded against the instruction budget
and the time limit, on every path that encodes a script's value: json.encode, event data
from a decider, reject details, aggregate state, projection state and emit.  Each fails fast
with ScriptError naming the limit, writes nothing, and the store keeps working."""

import time

import pytest

import cairn
from conftest import nothing_written
from test_sandbox import assert_usable

DAG = "local t = {1}; for i = 1, 40 do t = {t, t} end"
CAP = "memory limit exceeded"


@pytest.fixture
def small(store_path):
    with cairn.open(store_path, durability="none", script_memory_limit=4 << 20) as s:
        yield s


def decider(body):
    return ("return { decide = { Run = function(s, c)\n" + DAG + "\n" + body +
            "\nend } }")


@pytest.mark.parametrize("body, want", [
    ("return { { type = 'X', data = { v = json.encode(t) } } }", CAP),
    ("local ok = pcall(json.encode, t); return { { type = 'X', data = { ok = ok } } }", CAP),
    ("return { { type = 'X', data = { t = t } } }", CAP),
    ("reject('no', { t = t })", CAP),
])
def test_a_shared_subtree_fails_fast_inside_execute(small, body, want):
    small.define_aggregate("dag", decider(body))
    t0 = time.monotonic()
    with nothing_written(small), pytest.raises(cairn.ScriptError, match=want):
        small.execute("dag-1", "Run")
    assert time.monotonic() - t0 < 5
    assert_usable(small)


def test_the_budget_and_the_time_limit_stop_it_too(store_path):
    src = decider("local ok = pcall(json.encode, t); return { { type = 'X' } }")
    with cairn.open(store_path, durability="none", script_instruction_limit=100_000) as s:
        s.define_aggregate("dag", src)
        with nothing_written(s), pytest.raises(cairn.ScriptError, match="instruction limit"):
            s.execute("dag-1", "Run")
    with cairn.open(store_path, durability="none", script_instruction_limit=10**15,
                    script_memory_limit=1 << 40, script_time_limit=0.2) as s:
        t0 = time.monotonic()
        with nothing_written(s), pytest.raises(cairn.ScriptError, match="time limit"):
            s.execute("dag-1", "Run")
        assert time.monotonic() - t0 < 5


def test_aggregate_state_of_a_shared_subtree(small):
    small.define_aggregate("dag", "return { init = function() return {} end, apply = { X ="
                                  " function(s, e) " + DAG + " return { t = t } end } }")
    small.append("dag-1", [cairn.Event("X")])
    t0 = time.monotonic()
    with pytest.raises(cairn.ScriptError, match=CAP):
        small.load("dag-1")
    assert time.monotonic() - t0 < 5
    assert_usable(small)


@pytest.mark.parametrize("handler", [
    "function(s, e) " + DAG + " s.t = t end",
    "function(s, e) " + DAG + " emit('out-1', 'Y', { t = t }) end",
])
def test_projection_state_and_emit_of_a_shared_subtree(small, handler):
    small.define_projection("p", "return { init = function() return {} end,"
                                 " apply = { X = " + handler + " } }")
    small.append("in-1", [cairn.Event("X")])
    t0 = time.monotonic()
    small.run_projections()
    assert time.monotonic() - t0 < 5
    p = small.projection("p")
    assert p.status == "faulted" and CAP in p.error, p.error
    assert list(small.read_stream("out-1")) == []
    assert_usable(small)


# ---------------------------------------------------------------------------------------
# emit buffers (issue 10, item 5): the events a projection batch has emitted wait in C
# until the batch commits; they count against script_memory_limit.
# ---------------------------------------------------------------------------------------

FLOOD = """return { apply = { X = function(s, e)
  local big = string.rep('x', 8 << 20)
  for i = 1, 200 do emit('out-1', 'Big', { i = i, s = big }) end
end } }"""


def _flood(path, out):
    import resource
    with cairn.open(path, durability="none", script_memory_limit=64 << 20,
                    script_time_limit=None) as s:
        s.define_projection("flood", FLOOD)
        s.append("in-1", [cairn.Event("X")])
        s.run_projections()
        p = s.projection("flood")
        out.put((p.status, p.error, len(list(s.read_stream("out-1"))),
                 resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


def test_an_emit_flood_meets_the_memory_limit(store_path):
    import multiprocessing
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_flood, args=(store_path, out))
    proc.start()
    status, error, written, maxrss_kib = out.get(timeout=120)
    proc.join(30)
    assert status == "faulted" and CAP in error, error
    assert written == 0
    # 200 emits of 8 MiB were 1.6 GiB of buffers outside the cap; now the batch stops at
    # about 64 MiB of them (the bound leaves room for ASan's quarantine and shadow)
    assert maxrss_kib < 800 * 1024, maxrss_kib
    with cairn.open(store_path, durability="none") as s:
        assert_usable(s)
