"""Projections (spec: docs/API.md section 2 "Projections", section 3 "Projection")."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import cairn
from conftest import PACKAGE_ROOT
from test_aggregates import ticks_during

COUNT = """
return {
  source = %s,
  init = function() return { n = 0, sum = 0 } end,
  apply = { ['*'] = function(s, e) s.n = s.n + 1; s.sum = s.sum + (e.data and e.data.i or 0) end },
}
"""


def count(source="{}"):
    return COUNT % source


def ev(type="Deposited", i=0, **kw):
    return cairn.Event(type, {"i": i}, **kw)


def fill(store):
    store.append("account-1", [ev("Deposited", 1), ev("Withdrawn", 2)])
    store.append("account-2", [ev("Deposited", 4, tags=["vip"])])
    store.append("order-1", [ev("Placed", 8, tags=["vip"])])


# --- definition ------------------------------------------------------------------


def test_define_lists_and_checks(store):
    store.define_projection("p", count())
    assert store.scripts()["projection"] == ["p"]
    with pytest.raises(cairn.ScriptError):
        store.define_projection("bad", "return {")
    with pytest.raises(cairn.ScriptError):
        store.define_projection("bad", "return { apply = 3 }")
    with pytest.raises(cairn.ScriptError):
        store.define_projection("bad", "return { mode = 'sometimes', apply = {} }")
    assert store.scripts()["projection"] == ["p"]


def test_unknown_projection_is_keyerror(store):
    with pytest.raises(KeyError):
        store.projection("nope")
    with pytest.raises(KeyError):
        store.run_projections("nope")
    with pytest.raises(KeyError):
        store.delete_projection("nope")
    with pytest.raises(TypeError):
        store.projection(3)


def test_state_none_before_first_run(store):
    fill(store)
    store.define_projection("p", count())
    p = store.projection("p")
    assert p.state() is None
    assert p.position == 0
    assert p.status == "ok" and p.error is None
    assert store.run_projections() == 4
    assert p.state() == {"n": 4, "sum": 15}
    assert p.position == 4


def test_state_exists_after_a_run_over_nothing(store):
    store.define_projection("p", count())
    assert store.run_projections("p") == 0
    assert store.projection("p").state() == {"n": 0, "sum": 0}


@pytest.mark.parametrize(
    "source, n, total",
    [
        ("{ categories = { 'account' } }", 3, 7),
        ("{ streams = { 'account-2', 'order-1' } }", 2, 12),
        ("{ types = { 'Deposited' } }", 2, 5),
        ("{ tags = { 'vip' } }", 2, 12),
        ("{ categories = { 'account' }, types = { 'Deposited' } }", 2, 5),
        ("{}", 4, 15),
    ],
)
def test_sources_of_each_kind(store, source, n, total):
    fill(store)
    store.define_projection("p", count(source))
    assert store.run_projections("p") == n
    p = store.projection("p")
    assert p.state() == {"n": n, "sum": total}
    assert p.position == 4  # advances over the events outside the source too


def test_position_advances_over_events_outside_source(store):
    store.define_projection("p", count("{ categories = { 'nothing' } }"))
    store.append("a-1", [ev() for _ in range(10)])
    assert store.run_projections() == 0
    p = store.projection("p")
    assert p.position == 10 == store.head()
    assert p.state() == {"n": 0, "sum": 0}


def test_projection_is_a_live_view(store):
    store.define_projection("p", count())
    p = store.projection("p")
    store.append("a-1", [ev(i=3)])
    store.run_projections()
    assert p.state() == {"n": 1, "sum": 3}
    store.append("a-1", [ev(i=4)])
    store.run_projections()
    assert p.state() == {"n": 2, "sum": 7} and p.position == 2


def test_catch_up_in_batches(store):
    store.append("a-1", [ev(i=i) for i in range(3500)])
    store.define_projection("p", count())
    assert store.run_projections() == 3500
    assert store.projection("p").state() == {"n": 3500, "sum": sum(range(3500))}


def test_handler_may_return_a_new_state(store):
    store.define_projection(
        "p",
        "return { apply = { ['*'] = function(s, e) return { last = e.data.i } end } }",
    )
    store.append("a-1", [ev(i=1), ev(i=2)])
    store.run_projections()
    assert store.projection("p").state() == {"last": 2}


def test_upcasted_events(store):
    store.append("a-1", [ev(i=1)])
    store.define_upcasters(
        "return { Deposited = { [1] = function(e) e.data.i = e.data.i * 10; return e end } }"
    )
    store.define_projection("p", count())
    store.run_projections()
    assert store.projection("p").state() == {"n": 1, "sum": 10}


# --- partitions --------------------------------------------------------------------

PARTS = """
return {
  source = { categories = { 'account' } },
  partition = function(e) return e.stream end,
  init = function() return { n = 0 } end,
  apply = { Deposited = function(s, e) s.n = s.n + 1 end },
}
"""


def test_partitioned_state(store):
    store.define_projection("p", PARTS)
    store.append("account-b", [ev(), ev()])
    store.append("account-a", [ev()])
    store.append("order-1", [ev()])
    store.run_projections()
    p = store.projection("p")
    assert list(p.partitions()) == ["account-a", "account-b"]
    assert p.state("account-a") == {"n": 1}
    assert p.state("account-b") == {"n": 2}
    assert p.state("account-c") is None  # until its first event
    assert p.state() is None
    assert p.position == 4


def test_partition_must_be_a_string(store):
    store.define_projection("p", "return { partition = function(e) return {} end, apply = {} }")
    store.append("a-1", [ev()])
    store.run_projections()
    p = store.projection("p")
    assert p.status == "faulted" and "partition" in p.error


def test_a_partition_that_is_not_utf8_faults_the_projection(store):
    # its state could never be reached: partitions() would show U+FFFD, state() None
    store.define_projection(
        "p", "return { partition = function(e) return e.data.i == 1 and '\\xff\\xfe' or 'ok' end,"
             " init = function() return { n = 0 } end,"
             " apply = { ['*'] = function(s, e) s.n = s.n + 1 end } }")
    store.append("a-1", [ev(i=0), ev(i=1), ev(i=2)])
    store.run_projections()
    p = store.projection("p")
    assert p.status == "faulted" and "UTF-8" in p.error
    assert p.position == 1  # stopped at the event before
    assert list(p.partitions()) == ["ok"] and p.state("ok") == {"n": 1}


# --- faults --------------------------------------------------------------------------

FAULTY = """
return {
  init = function() return { n = 0 } end,
  apply = { Deposited = function(s, e)
    if e.data.i == 1234 then error('boom') end
    s.n = s.n + 1
  end },
}
"""


def test_fault_stops_only_that_projection(store):
    store.define_projection("bad", FAULTY)
    store.define_projection("good", count())
    store.append("a-1", [ev(i=i) for i in range(2000)])
    store.run_projections()
    bad, good = store.projection("bad"), store.projection("good")
    assert bad.status == "faulted"
    assert "boom" in bad.error and "line 5" in bad.error and "position 1235" in bad.error
    assert bad.position == 1234
    assert bad.state() == {"n": 1234}  # exactly the events before the failing one
    assert good.status == "ok" and good.state()["n"] == 2000
    # skipped until reset
    store.append("a-1", [ev(i=1)])
    assert store.run_projections() == 1
    assert bad.position == 1234
    # reset: resumes from scratch; with the fault fixed by a redefinition it completes
    bad.reset()
    assert bad.status == "ok" and bad.error is None and bad.state() is None
    store.run_projections("bad")
    assert bad.status == "faulted" and bad.position == 1234
    store.define_projection("bad", FAULTY.replace("1234", "-1"))
    assert bad.status == "ok" and bad.position == 0
    store.run_projections()
    assert bad.state() == {"n": 2001}


def test_state_that_does_not_encode_faults_at_its_event(store):
    store.define_projection(
        "p",
        """return { init = function() return { n = 0 } end, apply = { ['*'] = function(s, e)
          s.n = s.n + 1
          if e.data.i == 1503 then s.bad = function() end end
        end } }""",
    )
    store.append("a-1", [ev(i=i) for i in range(3000)])
    store.run_projections()
    p = store.projection("p")
    assert p.status == "faulted"
    assert "cannot encode" in p.error and "event position 1504" in p.error
    assert p.position == 1503 and p.state() == {"n": 1503}


def test_fault_in_init_and_reject(store):
    store.define_projection("p", "return { init = function() error('no init') end, apply = {} }")
    store.run_projections()
    p = store.projection("p")
    assert p.status == "faulted" and "no init" in p.error
    store.define_projection(
        "r", "return { apply = { ['*'] = function(s, e) reject('nope', {}) end } }"
    )
    store.append("a-1", [ev()])
    store.run_projections()
    assert store.projection("r").status == "faulted" and "nope" in store.projection("r").error


def test_instruction_limit_faults(store_path):
    with cairn.open(store_path, durability="none", script_instruction_limit=10_000) as s:
        s.define_projection("p", "return { apply = { ['*'] = function() while true do end end } }")
        s.append("a-1", [ev()])
        s.run_projections()
        assert s.projection("p").status == "faulted"


# --- redefinition ----------------------------------------------------------------------


def test_redefine_same_source_changes_nothing(store):
    store.define_projection("p", count())
    store.append("a-1", [ev(i=1)])
    store.run_projections()
    store.define_projection("p", count())
    p = store.projection("p")
    assert p.position == 1 and p.state() == {"n": 1, "sum": 1}


def test_redefine_other_source_resets(store):
    store.define_projection("p", count())
    store.append("a-1", [ev(i=1), ev(i=2)])
    store.run_projections()
    store.define_projection("p", count("{ types = { 'Nope' } }"))
    p = store.projection("p")
    assert p.position == 0 and p.state() is None
    store.run_projections()
    assert p.state() == {"n": 0, "sum": 0} and p.position == 2


def test_delete_projection(store):
    store.define_projection("p", count())
    store.run_projections()
    p = store.projection("p")
    store.delete_projection("p")
    assert store.scripts()["projection"] == []
    with pytest.raises(KeyError):
        p.position
    with pytest.raises(KeyError):
        p.state()
    store.define_projection("p", count())
    assert store.projection("p").state() is None


# --- emit ---------------------------------------------------------------------------------

EMITTER = """
return {
  source = { categories = { 'order' } },
  init = function() return { n = 0 } end,
  apply = { Placed = function(s, e)
    s.n = s.n + 1
    emit('audit-1', 'Seen', { i = e.data.i }, { source = e.id })
    if e.data.i % 2 == 0 then emit('audit-2', 'Even', { i = e.data.i }) end
  end },
}
"""


def test_emit_appends_in_the_same_commit(store):
    store.define_projection("p", EMITTER)
    store.append("order-1", [ev("Placed", i) for i in range(4)])
    store.run_projections()
    seen = list(store.read_stream("audit-1"))
    assert [e.data["i"] for e in seen] == [0, 1, 2, 3]
    assert seen[0].metadata["source"] == str(store.get(1).id)
    assert [e.data["i"] for e in store.read_stream("audit-2")] == [0, 2]


def test_emit_exactly_once_across_reset(store):
    store.define_projection("p", EMITTER)
    store.append("order-1", [ev("Placed", i) for i in range(1500)])
    store.run_projections()
    head = store.head()
    ids = [e.id for e in store.read_stream("audit-1")]
    p = store.projection("p")
    p.reset()
    store.run_projections()
    assert store.head() == head
    assert [e.id for e in store.read_stream("audit-1")] == ids
    assert p.state() == {"n": 1500}


def test_emit_errors_are_faults(store):
    store.define_projection(
        "p", "return { apply = { ['*'] = function(s, e) emit('$bad', 'X', {}) end } }"
    )
    store.append("a-1", [ev()])
    store.run_projections()
    p = store.projection("p")
    assert p.status == "faulted" and "emit" in p.error
    assert store.head() == 1


def test_emit_only_in_projections(store):
    store.define_aggregate(
        "a",
        "return { decide = { Go = function(s, c) emit('x-1', 'X', {}); return {} end } }",
    )
    with pytest.raises(cairn.ScriptError):
        store.execute("a-1", "Go")


# --- inline ---------------------------------------------------------------------------------

INLINE = """
return {
  mode = 'inline',
  source = { categories = { 'account' } },
  init = function() return { n = 0, sum = 0 } end,
  apply = { Deposited = function(s, e)
    if e.data.i < 0 then error('negative') end
    s.n = s.n + 1; s.sum = s.sum + e.data.i
  end },
}
"""


def test_inline_is_always_current(store):
    store.define_projection("inl", INLINE)
    p = store.projection("inl")
    store.append("account-1", [ev(i=5)])
    assert p.state() == {"n": 1, "sum": 5} and p.position == 1
    with store.transaction() as tx:
        tx.append("account-2", [ev(i=1)])
        tx.append("other-1", [ev(i=100)])
    assert p.state() == {"n": 2, "sum": 6} and p.position == 3
    assert store.run_projections() == 0  # nothing for the runner to do


def test_inline_failure_fails_the_append(store):
    store.define_projection("inl", INLINE)
    store.append("account-1", [ev(i=5)])
    with pytest.raises(cairn.ScriptError) as ei:
        store.append("account-1", [ev(i=1), ev(i=-1)])
    assert ei.value.script == "inl"
    assert store.head() == 1
    assert store.stream_version("account-1") == 0
    assert store.projection("inl").state() == {"n": 1, "sum": 5}
    assert store.projection("inl").status == "ok"


def test_inline_follows_execute(store):
    store.define_aggregate(
        "account",
        "return { decide = { Dep = function(s, c) return { { type = 'Deposited', data = { i = c.data.i } } } end } }",
    )
    store.define_projection("inl", INLINE)
    store.execute("account-1", "Dep", {"i": 3})
    assert store.projection("inl").state() == {"n": 1, "sum": 3}
    with pytest.raises(cairn.ScriptError):
        store.execute("account-1", "Dep", {"i": -3})
    assert store.head() == 1


def test_inline_catches_up_at_define(store):
    store.append("account-1", [ev(i=i) for i in range(100)])
    store.define_projection("inl", INLINE)
    p = store.projection("inl")
    assert p.state() == {"n": 100, "sum": sum(range(100))} and p.position == 100


def test_inline_define_over_failing_events_fails(store):
    store.append("account-1", [ev(i=-1)])
    with pytest.raises(cairn.ScriptError):
        store.define_projection("inl", INLINE)
    assert store.scripts()["projection"] == []
    store.append("account-1", [ev(i=2)])  # appends keep working


# --- runner ---------------------------------------------------------------------------------


def wait_for(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def test_runner_keeps_projection_current(store):
    store.define_projection("p", count())
    p = store.projection("p")
    store.start_projections()
    store.start_projections()  # idempotent
    try:
        for i in range(5):
            store.append("a-1", [ev(i=i)])
            assert wait_for(lambda: p.position == store.head())
        assert p.state() == {"n": 5, "sum": 10}
    finally:
        store.stop_projections()
    store.append("a-1", [ev(i=5)])
    time.sleep(0.2)
    assert p.position == 5
    store.stop_projections()  # no-op


def test_runner_sees_other_processes(store, store_path):
    store.define_projection("p", count())
    store.start_projections()
    code = textwrap.dedent(
        f"""
        import cairn
        with cairn.open({str(store_path)!r}) as s:
            s.append("a-1", [cairn.Event("X", {{"i": 1}})])
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": PACKAGE_ROOT})
    try:
        assert wait_for(lambda: store.projection("p").position == 1)
    finally:
        store.stop_projections()


def test_close_stops_runner(store_path):
    s = cairn.open(store_path, durability="none")
    s.define_projection("p", count())
    s.start_projections()
    s.append("a-1", [ev()])
    s.close()
    with pytest.raises(cairn.StoreClosed):
        s.start_projections()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_runner_and_fork(store):
    store.define_projection("p", count())
    store.start_projections()
    try:
        pid = os.fork()
        if pid == 0:  # the child: the runner thread is not here; closing must not wait for it
            try:
                store.close()
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        store.append("a-1", [ev(i=1)])
        assert wait_for(lambda: store.projection("p").position == 1)
    finally:
        store.stop_projections()


def test_concurrent_runners_apply_each_event_once(store, store_path):
    """Two threads and a process catch up the same projection at once: batches serialize on
    the write lock and each reads the position inside its own transaction."""
    import threading

    store.define_projection("p", EMITTER)
    n = 20_000
    for k in range(n // 2000):
        store.append("order-1", [ev("Placed", k * 2000 + i) for i in range(2000)])
    child = subprocess.Popen(
        [sys.executable, "-c", KILL_CHILD, str(store_path)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": PACKAGE_ROOT},
    )
    assert child.stdout.readline() == b"go\n"
    threads = [threading.Thread(target=store.run_projections) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert child.wait(timeout=60) == 0
    p = store.projection("p")
    assert p.state() == {"n": n}
    assert [e.data["i"] for e in store.read_stream("audit-1")] == list(range(n))


def test_run_projections_releases_the_gil_while_scripts_run(store_path):
    with cairn.open(store_path, durability="none", script_instruction_limit=10**10,
                    script_time_limit=None) as s:
        s.define_projection("work", """
            return { init = function() return { n = 0 } end,
                     apply = { Work = function(st, e)
                       local x = 0
                       for i = 1, e.data do x = x + i end
                       st.n = st.n + 1
                     end } }""")
        s.append("work-1", [cairn.Event("Work", 10_000_000) for _ in range(2)])
        assert ticks_during(s.run_projections) > 0.3
        assert s.projection("work").state() == {"n": 2}


# --- crash safety -----------------------------------------------------------------------------

KILL_CHILD = """
import sys, cairn
s = cairn.open(sys.argv[1], durability="none")
sys.stdout.write("go\\n"); sys.stdout.flush()
s.run_projections("p")
"""


def test_exactly_once_under_kill_9(store_path):
    """A child runs run_projections over a large backlog and is SIGKILLed at a random moment,
    three times; afterwards the state equals a fresh rebuild and every emit exists once."""
    src = EMITTER
    n = 60_000
    with cairn.open(store_path, durability="none") as s:
        s.define_projection("p", src)
        for k in range(n // 2000):
            s.append("order-1", [ev("Placed", k * 2000 + i) for i in range(2000)])
    rng = random.Random()
    partial = []
    done_before = 0
    for attempt in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", KILL_CHILD, str(store_path)],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": PACKAGE_ROOT},
        )
        assert child.stdout.readline() == b"go\n"
        # the kill lands a random moment after the child's next commit, not a fixed time after
        # its start: on a loaded machine (or under ASan) 100 ms may not reach the first batch.
        # The watcher is read-only: a writable open begins a write txn, and LMDB's writer lock
        # went to the child's next batch again and again until its run was over
        with cairn.open(store_path, readonly=True) as w:
            deadline = time.monotonic() + 60
            while w.projection("p").position <= done_before and time.monotonic() < deadline:
                time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.03))
        child.send_signal(signal.SIGKILL)
        child.wait()
        with cairn.open(store_path, durability="none") as s:
            p = s.projection("p")
            partial.append(0 < p.position < n)
            done_before = p.position
            if p.position:  # state and position committed together
                done = min(p.position, n)  # past n: caught up (emitted events follow n)
                assert p.state() == {"n": done}
                assert s.stream_version("audit-1") == done - 1
    assert any(partial), "no kill landed in the middle of a run"
    with cairn.open(store_path, durability="none") as s:
        s.run_projections("p")
        # a second projection of the same source, run from scratch (emits disabled)
        s.define_projection("fresh", "local function noop() end\n" + src.replace("emit(", "noop("))
        s.run_projections("fresh")
        assert s.projection("p").state() == s.projection("fresh").state() == {"n": n}
        audit = [e.data["i"] for e in s.read_stream("audit-1")]
        assert audit == list(range(n))  # every emit exactly once, in order
        assert s.stream_version("audit-2") == n // 2 - 1


# --- command line ------------------------------------------------------------------------------


def cli(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "cairn", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": PACKAGE_ROOT},
        timeout=60,
        **kw,
    )


def test_cli_projections_run(store, store_path):
    store.define_projection("p", count())
    store.append("a-1", [ev(i=i) for i in range(2500)])
    r = cli("projections", "run", str(store_path))
    assert r.returncode == 0, r.stderr
    assert "processed 2500 events" in r.stdout
    assert "p\tok\t2500" in r.stdout
    assert store.projection("p").state() == {"n": 2500, "sum": sum(range(2500))}
    r = cli("projections", "list", "--json", str(store_path))
    assert r.returncode == 0 and '"position": 2500' in r.stdout


SLOW = """
return {
  init = function() return { n = 0 } end,
  apply = { ['*'] = function(s, e) for _ = 1, 200000 do end; s.n = s.n + 1 end },
}
"""


def test_cli_progress_only_on_a_terminal(store, store_path):
    import pty

    store.define_projection("p", SLOW)
    store.append("a-1", [ev(i=i) for i in range(400)])
    r = cli("projections", "run", str(store_path))  # stderr is a pipe
    assert r.returncode == 0 and "processed 400 events" in r.stdout
    assert r.stderr == ""
    store.projection("p").reset()
    main, child = pty.openpty()
    try:
        r = subprocess.run(
            [sys.executable, "-m", "cairn", "projections", "run", str(store_path)],
            stdout=subprocess.PIPE,
            stderr=child,
            text=True,
            env={**os.environ, "PYTHONPATH": PACKAGE_ROOT},
            timeout=60,
        )
        os.close(child)
        child = -1
        err = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            err += chunk
    finally:
        os.close(main)
        if child >= 0:
            os.close(child)
    assert r.returncode == 0 and "processed 400 events" in r.stdout
    assert b"projections: " in err and b"/400 events" in err


CLI_FAULTY = """
return {
  init = function() return { n = 0 } end,
  apply = { ['*'] = function(s, e) if e.data.i == 3 then error('boom') end; s.n = s.n + 1 end },
}
"""


def test_cli_projections_run_exits_nonzero_when_a_projection_is_faulted(store, store_path):
    store.define_projection("good", count())
    store.define_projection("bad", CLI_FAULTY)
    store.append("a-1", [ev(i=i) for i in range(6)])
    r = cli("projections", "run", str(store_path))
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "bad\tfaulted" in r.stdout and "good\tok\t6" in r.stdout
    assert "projection bad is faulted" in r.stderr and "boom" in r.stderr
    assert "Traceback" not in r.stderr
    store.delete_projection("bad")
    r = cli("projections", "run", str(store_path))
    assert r.returncode == 0, r.stderr


def test_cli_projections_run_quiet_prints_nothing_but_errors(store, store_path):
    store.define_projection("good", count())
    store.append("a-1", [ev(i=i) for i in range(6)])
    r = cli("projections", "run", "--quiet", str(store_path))
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    store.define_projection("bad", CLI_FAULTY)
    r = cli("projections", "run", "--quiet", str(store_path))
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "projection bad is faulted" in r.stderr


def test_cli_projections_list_says_when_there_are_none(store, store_path):
    store.append("a-1", [ev()])
    r = cli("projections", "list", str(store_path))
    assert r.returncode == 0 and r.stdout == f"no projections in {store_path}\n"
    r = cli("projections", "list", "--json", str(store_path))
    assert r.returncode == 0 and r.stdout == ""


def test_cli_help_and_mistakes(tmp_path, store, store_path):
    assert cli("--help").returncode == 0
    r = cli("projections", "run", "--help")
    assert r.returncode == 0 and "--follow" in r.stdout
    for args in (
        ("projections", "run", str(tmp_path / "missing")),
        ("projections", "run", "--name", "nope", str(store_path)),
        ("projections", "frobnicate", str(store_path)),
        ("projections",),
    ):
        r = cli(*args)
        assert r.returncode != 0
        assert "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_cli_follow(store, store_path):
    store.define_projection("p", count())
    p = subprocess.Popen(
        [sys.executable, "-m", "cairn", "projections", "run", "--follow", "--quiet", str(store_path)],
        env={**os.environ, "PYTHONPATH": PACKAGE_ROOT},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_for(lambda: store.projection("p").state() is not None, 10)
        store.append("a-1", [ev(i=7)])
        assert wait_for(lambda: store.projection("p").position == 1, 10)
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=10)
    assert p.returncode == 0, err
    assert store.projection("p").state() == {"n": 1, "sum": 7}


def test_long_catch_up_keeps_every_event_a_handler_kept(store):
    # Batched catch-up refills one set of event tables; a handler that keeps them must
    # still see every event's own values (the run detects it and goes again fresh).
    store.define_projection("keep", """
return {
  init = function() return { items = {}, ids = {} } end,
  apply = { T = function(s, e) s.items[#s.items + 1] = e.data; s.ids[#s.ids + 1] = e.id end },
}
""")
    for start in range(0, 1500, 500):
        store.append("k-1", [cairn.Event("T", {"i": i}) for i in range(start, start + 500)])
    store.run_projections("keep")
    state = store.projection("keep").state()
    assert [d["i"] for d in state["items"]] == list(range(1500))
    assert state["ids"] == [str(e.id) for e in store.read_stream("k-1")]


def test_long_catch_up_emits_once_per_event_and_index(store):
    store.define_projection("em", """
return {
  apply = { T = function(s, e) if e.data.i % 100 == 0 then emit("out-1", "Seen", { i = e.data.i }); emit("out-1", "Again", { i = e.data.i }) end end },
}
""")
    store.append("k-1", [cairn.Event("T", {"i": i}) for i in range(2000)])
    store.run_projections("em")
    out = [(e.type, e.data["i"]) for e in store.read_stream("out-1")]
    assert out == [(t, i) for i in range(0, 2000, 100) for t in ("Seen", "Again")]
    store.projection("em").reset()
    store.run_projections("em")
    assert [(e.type, e.data["i"]) for e in store.read_stream("out-1")] == out


def test_inline_mode_computed_by_the_script_is_honoured(store):
    # whether a projection is inline is what its script says, however it says it
    store.define_projection("dyn", """
local m = "in" .. "line"
return { mode = m, init = function() return { n = 0 } end, apply = { T = function(s, e) s.n = s.n + 1 end } }
""")
    store.append("d-1", [cairn.Event("T")])
    store.append("d-1", [cairn.Event("T")])
    assert store.projection("dyn").state() == {"n": 2}
