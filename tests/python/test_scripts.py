"""Scripts (spec 2 "Scripts", section 3): defining aggregate and upcaster scripts, listing
them, redefinition, argument checks, ScriptError fields for syntax and shape errors, scripts
kept in the store (another handle, another process), print() to the logging logger "cairn",
and the script limits given to cairn.open."""

import logging
import subprocess
import sys
import textwrap
import threading

import pytest

import cairn
from conftest import PYTHON, check_usable, child_env

COUNTER = """\
return {
  init = function() return { n = 0 } end,
  apply = { Hit = function(s, e) s.n = s.n + 1 end },
  decide = { Hit = function(s, cmd) return { { type = "Hit" } } end },
}
"""
DOUBLE = COUNTER.replace("s.n + 1", "s.n + 2")
UPCASTERS = """\
return { Hit = { [1] = function(e) e.data = { upcast = true }; return e end } }
"""


def test_scripts_of_an_empty_store(store):
    assert store.scripts() == {"aggregate": [], "projection": [], "upcasters": []}


def test_define_aggregate_is_listed(store):
    assert store.define_aggregate("counter", COUNTER) is None
    assert store.scripts() == {"aggregate": ["counter"], "projection": [], "upcasters": []}


def test_scripts_names_are_sorted(store):
    for name in ("zeta", "alpha", "Mid", "beta-2", "beta"):
        store.define_aggregate(name, COUNTER)
    assert store.scripts()["aggregate"] == ["Mid", "alpha", "beta", "beta-2", "zeta"]


def test_define_upcasters_is_listed_as_upcasters(store):
    assert store.define_upcasters(UPCASTERS) is None
    assert store.scripts() == {"aggregate": [], "projection": [], "upcasters": ["upcasters"]}


def test_an_aggregate_named_upcasters_is_an_aggregate(store):
    store.define_aggregate("upcasters", COUNTER)
    assert store.scripts() == {"aggregate": ["upcasters"], "projection": [], "upcasters": []}
    store.append("x", [cairn.Event("Hit", 1)])
    assert store.get(1).data == 1  # not used as upcasters


def test_redefining_with_the_same_source_changes_nothing(store):
    store.define_aggregate("counter", COUNTER)
    store.append("counter-1", [cairn.Event("Hit")] * 1)
    head = store.head()
    store.define_aggregate("counter", COUNTER)
    assert store.scripts()["aggregate"] == ["counter"]
    assert store.head() == head
    assert store.load("counter-1").state == {"n": 1}


def test_redefining_with_other_source_replaces_the_script(store):
    store.define_aggregate("counter", COUNTER)
    store.append("counter-1", [cairn.Event("Hit"), cairn.Event("Hit")])
    assert store.load("counter-1").state == {"n": 2}
    store.define_aggregate("counter", DOUBLE)
    assert store.load("counter-1").state == {"n": 4}
    assert store.scripts()["aggregate"] == ["counter"]


def test_a_failed_definition_keeps_the_previous_one(store):
    store.define_aggregate("counter", COUNTER)
    store.append("counter-1", [cairn.Event("Hit")])
    with pytest.raises(cairn.ScriptError):
        store.define_aggregate("counter", "return {")
    with pytest.raises(cairn.ScriptError):
        store.define_aggregate("counter", "return { apply = 1 }")
    assert store.load("counter-1").state == {"n": 1}
    with pytest.raises(cairn.ScriptError):
        store.define_upcasters("return 5")
    assert store.scripts()["upcasters"] == []


def test_define_aggregate_argument_types(store):
    with pytest.raises(TypeError, match="name"):
        store.define_aggregate(1, COUNTER)
    with pytest.raises(TypeError, match="name"):
        store.define_aggregate(None, COUNTER)
    with pytest.raises(TypeError, match="source"):
        store.define_aggregate("counter", COUNTER.encode())
    with pytest.raises(TypeError, match="source"):
        store.define_aggregate("counter", None)
    with pytest.raises(TypeError):
        store.define_aggregate("counter")
    with pytest.raises(ValueError, match="name"):
        store.define_aggregate("bad\udc80", COUNTER)
    with pytest.raises(ValueError, match="source"):
        store.define_aggregate("counter", "-- \udc80\nreturn {}")
    assert store.scripts()["aggregate"] == []
    check_usable(store)


def test_script_names_are_1_to_255_bytes_without_nul(store):
    for bad in ("", "x" * 256, "\u00e9" * 128, "a\0b"):
        with pytest.raises(ValueError, match="name"):
            store.define_aggregate(bad, COUNTER)
    store.define_aggregate("x" * 255, COUNTER)
    store.define_aggregate("\u00e9" * 127, COUNTER)
    assert sorted(store.scripts()["aggregate"]) == sorted(["x" * 255, "\u00e9" * 127])


def test_unknown_top_level_fields_are_refused(store):
    with pytest.raises(cairn.ScriptError, match="aply") as ei:
        store.define_aggregate("typo", "return { aply = {} }")
    assert ei.value.script == "typo"
    with pytest.raises(cairn.ScriptError):
        store.define_upcasters("return { Hit = { [1] = function(e) return e end }, x = 1 }")
    assert store.scripts() == {"aggregate": [], "projection": [], "upcasters": []}


def test_define_upcasters_argument_types(store):
    with pytest.raises(TypeError, match="source"):
        store.define_upcasters(b"return {}")
    with pytest.raises(TypeError):
        store.define_upcasters()
    with pytest.raises(TypeError):
        store.define_upcasters("upcasters", "return {}")
    assert store.scripts()["upcasters"] == []


def test_syntax_error_raises_script_error_with_script_and_line(store):
    src = "return {\n  apply = {\n    Hit = function(s, e)\n      s.n = = 1\n    end,\n  },\n}\n"
    with pytest.raises(cairn.ScriptError) as ei:
        store.define_aggregate("counter", src)
    e = ei.value
    assert isinstance(e, cairn.Error)
    assert e.script == "counter"
    assert e.line == 4
    assert e.position is None
    assert "counter:4" in str(e)
    assert store.scripts()["aggregate"] == []


def test_syntax_error_in_upcasters_names_upcasters(store):
    with pytest.raises(cairn.ScriptError) as ei:
        store.define_upcasters("return {\n  Hit = { [1] = function(e) return e end\n")
    assert ei.value.script == "upcasters"
    assert ei.value.line is not None and ei.value.line >= 2


def test_bad_upcaster_shapes(store):
    for src in ("return { Hit = 5 }",
                "return { Hit = { [1] = 5 } }",
                "return { Hit = { [0] = function(e) return e end } }",
                "return { Hit = { x = function(e) return e end } }",
                "return { Hit = { [1.5] = function(e) return e end } }"):
        with pytest.raises(cairn.ScriptError) as ei:
            store.define_upcasters(src)
        assert ei.value.script == "upcasters", src
    assert store.scripts()["upcasters"] == []
    check_usable(store)


def test_bad_aggregate_shapes(store):
    for src in ("return { init = 5 }",
                "return { decide = 5 }",
                "return { compensate = { X = true } }",
                "return { snapshot_every = 0 }"):
        with pytest.raises(cairn.ScriptError) as ei:
            store.define_aggregate("shape", src)
        assert ei.value.script == "shape", src
    assert store.scripts()["aggregate"] == []


def test_script_error_attributes_exist_on_the_class():
    e = cairn.ScriptError("x")
    assert (e.script, e.line, e.position) == (None, None, None)
    e = cairn.CommandRejected("x")
    assert (e.reason, e.details) == (None, None)


def test_scripts_survive_reopening(store_path):
    with cairn.open(store_path, durability="none") as s:
        s.define_aggregate("counter", COUNTER)
        s.define_upcasters(UPCASTERS)
        s.append("counter-1", [cairn.Event("Hit"), cairn.Event("Hit")])
    with cairn.open(store_path, durability="none") as s:
        assert s.scripts() == {"aggregate": ["counter"], "projection": [],
                               "upcasters": ["upcasters"]}
        assert s.load("counter-1").state == {"n": 2}
        assert s.get(1).data == {"upcast": True}


def test_a_definition_is_seen_by_another_handle(store, store_path):
    with cairn.open(store_path, durability="none") as other:
        assert other.scripts()["aggregate"] == []
        store.define_aggregate("counter", COUNTER)
        assert other.scripts()["aggregate"] == ["counter"]
        other.execute("counter-1", "Hit")
        store.define_aggregate("counter", DOUBLE)
        assert other.load("counter-1").state == {"n": 2}


def test_scripts_are_seen_by_another_process(store, store_path):
    store.define_aggregate("counter", COUNTER)
    store.define_upcasters(UPCASTERS)
    store.execute("counter-1", "Hit")
    store.sync()
    child = textwrap.dedent("""
        import sys, cairn
        with cairn.open(sys.argv[1], durability="none") as s:
            print(s.scripts())
            s.execute("counter-1", "Hit")
            print(s.load("counter-1").state, s.get(1).data)
    """)
    p = subprocess.run([PYTHON, "-c", child, str(store_path)], env=child_env(),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [
        "{'aggregate': ['counter'], 'projection': [], 'upcasters': ['upcasters']}",
        "{'n': 2} {'upcast': True}"]
    assert store.load("counter-1").state == {"n": 2}


def test_a_redefinition_in_another_process_is_seen(store, store_path):
    store.define_aggregate("counter", COUNTER)
    store.execute("counter-1", "Hit")
    assert store.load("counter-1").state == {"n": 1}
    child = ("import sys, cairn\n"
             "with cairn.open(sys.argv[1], durability='none') as s:\n"
             f"    s.define_aggregate('counter', {DOUBLE!r})\n")
    p = subprocess.run([PYTHON, "-c", child, str(store_path)], env=child_env(),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert store.load("counter-1").state == {"n": 2}


def test_define_on_a_readonly_store_is_a_permission_error(store_path):
    with cairn.open(store_path, durability="none") as s:
        s.define_aggregate("counter", COUNTER)
        s.sync()
    with cairn.open(store_path, readonly=True) as ro:
        with pytest.raises(PermissionError):
            ro.define_aggregate("other", COUNTER)
        with pytest.raises(PermissionError):
            ro.define_upcasters(UPCASTERS)
        assert ro.scripts()["aggregate"] == ["counter"]


def test_script_calls_on_a_closed_store_raise_store_closed(store_path):
    s = cairn.open(store_path, durability="none")
    s.close()
    with pytest.raises(cairn.StoreClosed):
        s.define_aggregate("counter", COUNTER)
    with pytest.raises(cairn.StoreClosed):
        s.define_upcasters(UPCASTERS)
    with pytest.raises(cairn.StoreClosed):
        s.scripts()


def test_open_script_limit_arguments(store_path):
    with cairn.open(store_path, durability="none", script_instruction_limit=1234,
                    script_memory_limit=5 << 20) as s:
        assert (s.script_instruction_limit, s.script_memory_limit) == (1234, 5 << 20)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="script_instruction_limit"):
            cairn.open(store_path, script_instruction_limit=bad)
        with pytest.raises(ValueError, match="script_memory_limit"):
            cairn.open(store_path, script_memory_limit=bad)
    with pytest.raises(TypeError, match="script_memory_limit"):
        cairn.open(store_path, script_memory_limit="1")


def test_a_tiny_instruction_limit_applies_to_definitions(store_path):
    with cairn.open(store_path, durability="none", script_instruction_limit=10_000) as s:
        with pytest.raises(cairn.ScriptError, match="instruction limit") as ei:
            s.define_aggregate("busy", "for i = 1, 1e6 do end\nreturn {}")
        assert ei.value.script == "busy"
        s.define_aggregate("counter", COUNTER)
        check_usable(s)


def test_handles_with_different_limits(store_path):
    loop = "for i = 1, 100000 do end\nreturn { init = function() return {} end }"
    with cairn.open(store_path, durability="none") as big, \
            cairn.open(store_path, durability="none", script_instruction_limit=10_000) as small:
        big.define_aggregate("busy", loop)
        with pytest.raises(cairn.ScriptError, match="instruction limit"):
            small.define_aggregate("busy2", loop)
        assert big.scripts()["aggregate"] == ["busy"]


# ---------------------------------------------------------------------------------------
# print() goes to the logging logger "cairn"
# ---------------------------------------------------------------------------------------

PRINTER = """\
print("defining", 1, true, nil)
return {
  init = function() return { n = 0 } end,
  apply = { Hit = function(s, e) print("applying", e.version); s.n = s.n + 1 end },
  decide = {
    Hit = function(s, cmd) print("deciding on", s.n); return { { type = "Hit" } } end,
    Fail = function(s, cmd) print("about to fail"); error("boom") end,
    Bytes = function(s, cmd) print("bad \\xff bytes") return {} end,
    Many = function(s, cmd) for i = 1, cmd.data do print("line", i) end return {} end,
  },
}
"""


def cairn_records(caplog):
    return [r for r in caplog.records if r.name == "cairn"]


def test_print_goes_to_the_cairn_logger_at_info(store, caplog):
    caplog.set_level(logging.INFO, logger="cairn")
    store.define_aggregate("printer", PRINTER)
    recs = cairn_records(caplog)
    assert [r.getMessage() for r in recs] == ["printer: defining\t1\ttrue\tnil"]
    assert recs[0].levelno == logging.INFO
    assert recs[0].script == "printer"  # extra={"script": name}
    caplog.clear()
    store.execute("printer-1", "Hit")
    store.append("printer-1", [cairn.Event("Hit")])
    store.load("printer-1")
    msgs = [r.getMessage() for r in cairn_records(caplog)]
    assert msgs[0] == "printer: deciding on\t0"
    assert msgs[-2:] == ["printer: applying\t0", "printer: applying\t1"]
    assert all(r.levelno == logging.INFO for r in cairn_records(caplog))


def test_print_before_an_error_is_logged_and_the_error_raised(store, caplog):
    caplog.set_level(logging.INFO, logger="cairn")
    store.define_aggregate("printer", PRINTER)
    caplog.clear()
    with pytest.raises(cairn.ScriptError, match="boom"):
        store.execute("printer-1", "Fail")
    assert [r.getMessage() for r in cairn_records(caplog)] == ["printer: about to fail"]
    check_usable(store)


def test_print_of_invalid_utf8_is_replaced(store, caplog):
    caplog.set_level(logging.INFO, logger="cairn")
    store.define_aggregate("printer", PRINTER)
    caplog.clear()
    store.execute("printer-1", "Bytes")
    assert [r.getMessage() for r in cairn_records(caplog)] == ["printer: bad \ufffd bytes"]


def test_lines_are_logged_by_the_call_that_printed_them(store, caplog):
    # Appends may fold events for snapshots (running reducers): whatever a call printed is
    # logged before it returns, never left for a later call to log.
    caplog.set_level(logging.INFO, logger="cairn")
    store.define_aggregate("snap", """
        return {
          init = function() return { n = 0 } end,
          apply = { Hit = function(s, e) print("applying", e.version); s.n = s.n + 1 end },
          snapshot_every = 2,
        }""")
    for _ in range(3):
        store.append("snap-1", [cairn.Event("Hit"), cairn.Event("Hit"), cairn.Event("Hit")])
        store.head()
        caplog.clear()
        a = store.load("snap-1")
        lines = [r.getMessage() for r in cairn_records(caplog)]
        assert len(lines) == a.applied, lines
        assert lines == [f"snap: applying\t{v}" for v in range(a.version - a.applied + 1,
                                                                a.version + 1)]


def test_print_is_not_logged_below_info(store, caplog):
    caplog.set_level(logging.WARNING, logger="cairn")
    store.define_aggregate("printer", PRINTER)
    store.execute("printer-1", "Hit")
    assert cairn_records(caplog) == []


def test_many_printed_lines_are_all_logged_in_order(store, caplog):
    caplog.set_level(logging.INFO, logger="cairn")
    store.define_aggregate("printer", PRINTER)
    caplog.clear()
    store.execute("printer-1", "Many", 2000)
    assert [r.getMessage() for r in cairn_records(caplog)] == [
        f"printer: line\t{i}" for i in range(1, 2001)]


def test_print_from_several_threads(store, caplog):
    caplog.set_level(logging.INFO, logger="cairn")
    store.define_aggregate("printer", PRINTER)
    caplog.clear()
    errors = []

    def worker(k):
        try:
            for _ in range(20):
                store.execute(f"printer-{k}", "Hit")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert errors == []
    msgs = [r.getMessage() for r in cairn_records(caplog)]
    deciding = [m for m in msgs if m.startswith("printer: deciding on")]
    assert len(deciding) == 80
    # each thread's lines are logged by that thread
    for r in cairn_records(caplog):
        assert r.threadName != "MainThread"


def test_a_failing_log_handler_does_not_fail_the_call(store, monkeypatch):
    class Boom(logging.Handler):
        def emit(self, record):
            raise RuntimeError("handler failed")

    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    logger = logging.getLogger("cairn")
    handler = Boom()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        store.define_aggregate("printer", PRINTER)
        r = store.execute("printer-1", "Hit")
        assert r.version == 0
        with pytest.raises(cairn.ScriptError, match="boom"):  # the script's error wins
            store.execute("printer-1", "Fail")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert unraisable and all(isinstance(u.exc_value, RuntimeError) for u in unraisable)
    check_usable(store)
