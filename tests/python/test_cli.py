"""The command line, looking inside a store (docs/API.md section 4): info, streams, read,
log, export, load; --help of every command; user mistakes; the output forms (tab-separated
in a pipe, aligned and coloured on a terminal, NO_COLOR); `import cairn` without rich."""

import json
import os
import subprocess
import sys

import pytest

import cairn
import cairn.cli

from cli_support import bank, cli, jsonl, mistake, ok, on_terminal
from conftest import PACKAGE_ROOT

COMMANDS = [
    ("info",), ("streams",), ("read",), ("log",), ("tail",), ("append",), ("import",),
    ("export",), ("define",), ("load",), ("execute",), ("compensate",), ("rollback",), ("delete",), ("retention",),
    ("projections",), ("projections", "list"), ("projections", "run"),
    ("projections", "state"), ("projections", "reset"), ("verify",), ("backup",), ("bench",),
]


@pytest.fixture
def shop(tmp_path):
    path = tmp_path / "shop"
    bank(path)
    return path


def test_import_cairn_does_not_import_the_terminal_library():
    r = subprocess.run([sys.executable, "-c", "import sys, cairn, cairn.cli; "
                        "assert 'rich' not in sys.modules, 'rich imported'"],
                       env={**os.environ, "PYTHONPATH": PACKAGE_ROOT}, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(cmd):
    r = ok(*cmd, "--help")
    assert "usage: cairn " + " ".join(cmd) in r.stdout
    assert "example" in r.stdout
    assert r.stderr == ""


def test_top_level_help_and_version():
    r = ok("--help")
    for (name, *_) in COMMANDS:
        assert name in r.stdout
    assert ok("--version").stdout.strip() == f"cairn {cairn.__version__}"


@pytest.mark.parametrize("args", [
    (),
    ("frobnicate",),
    ("read",),
    ("log", "{path}", "--limit", "many"),
    ("log", "{path}", "--limit", "-3"),
    ("read", "{path}", "order-1", "--from", "x"),
    ("load", "{path}", "account-1", "--at", "yesterday"),
    ("append", "{path}", "a-1", "T", "--expected-version", "soon"),
    ("info", "{path}", "--bogus"),
    ("projections",),
    ("projections", "frobnicate", "{path}"),
    ("define", "{path}", "widget", "x", "f.lua"),
    ("bench", "{path}", "--seconds", "0"),
], ids=lambda a: " ".join(a) or "nothing")
def test_argparse_mistakes_are_one_line_and_exit_2(shop, args):
    line = mistake(*[a.format(path=shop) for a in args], code=2)
    assert line.startswith("cairn") and "error:" in line and "--help" in line


@pytest.mark.parametrize("cmd", [
    ("info",), ("streams",), ("read", "{p}", "order-1"), ("log",), ("export",),
    ("load", "{p}", "account-1"), ("execute", "{p}", "account-1", "Open"),
    ("compensate", "{p}", "account-1", "0"), ("rollback", "{p}", "t-1"),
    ("projections", "list"), ("projections", "run"), ("projections", "state", "{p}", "x"),
    ("projections", "reset", "{p}", "x"), ("verify",), ("backup", "{p}", "{dest}"),
    ("tail",),
], ids=lambda a: " ".join(a))
def test_a_command_on_a_path_without_a_store_never_makes_one(tmp_path, cmd):
    for p in (tmp_path / "missing", tmp_path / "empty"):
        if p.name == "empty":
            p.mkdir(exist_ok=True)
        args = [a.format(p=p, dest=tmp_path / "dest") for a in cmd]
        if len(args) == 1 or (args[0] == "projections" and len(args) == 2):
            args.append(str(p))
        line = mistake(*args, code=1)
        assert line == f"cairn: error: no cairn store at {p}" + (
            " (no such directory)" if p.name == "missing" else "")
        assert (not p.exists()) if p.name == "missing" else os.listdir(p) == []
        assert not (tmp_path / "dest").exists()


def test_a_directory_of_something_else_is_refused(tmp_path):
    import lmdb

    env = lmdb.open(str(tmp_path / "other"), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"k", b"v")
    env.close()
    line = mistake("info", tmp_path / "other")
    assert "not a cairn store" in line


# -- info -------------------------------------------------------------------------------------
def test_info_json(shop):
    with cairn.open(shop) as s:
        with s.subscribe(1, name="mailer", timeout=0) as sub:
            for _, _ in zip(range(2), sub):
                pass
        s.append("account-1", [cairn.Event("Deposited", {"amount": 1})])  # lag 1
    (d,) = jsonl(ok("info", "--json", shop))
    assert d["head"] == d["events"] == 9 and d["streams"] == 4
    assert d["file_bytes"] == os.path.getsize(shop / "data.mdb")
    assert d["pages_used"] > 0 and d["pages_free"] >= 0 and d["page_size"] == 4096
    assert d["scripts"] == {"aggregates": ["account"], "projections": ["balances"],
                            "upcasters": False}
    assert d["projections"] == [{"name": "balances", "position": 8, "lag": 1, "status": "ok",
                                 "error": None}]
    assert d["subscriptions"] == [{"name": "mailer", "checkpoint": 2, "lag": 7}]


def test_info_human_in_a_pipe_and_on_a_terminal(shop):
    r = ok("info", shop)
    assert "head\t8\n" in r.stdout and "streams\t4\n" in r.stdout
    assert "balances\tok\t8\t0\t" in r.stdout
    assert "\x1b[" not in r.stdout  # no colour in a pipe
    rc, _, shown = on_terminal("info", shop, stdout_tty=True)
    text = shown.decode()
    assert rc == 0 and "PROJECTION" in text and "\x1b[" in text  # header, colour
    assert "free pages" in text
    rc, _, shown = on_terminal("info", shop, stdout_tty=True, NO_COLOR="1")
    assert rc == 0 and "PROJECTION" in shown.decode() and b"\x1b[" not in shown


# -- streams ----------------------------------------------------------------------------------
def test_streams(shop):
    assert jsonl(ok("streams", "--json", shop)) == [
        {"stream": "account-1", "version": 1}, {"stream": "account-2", "version": 1},
        {"stream": "account-3", "version": 1}, {"stream": "order-1", "version": 1}]
    assert ok("streams", shop, "--prefix", "order").stdout == "order-1\t1\n"
    assert ok("streams", shop, "--prefix", "zzz").stdout == ""


# -- read and log: the event line -------------------------------------------------------------
def test_read_json_is_the_event_line(shop):
    lines = jsonl(ok("read", shop, "order-1", "--json"))
    with cairn.open(shop, readonly=True) as s:
        e0, e1 = list(s.read_stream("order-1"))
    assert lines[0] == {
        "position": 7, "stream": "order-1", "version": 0, "type": "OrderPlaced",
        "data": {"item": "lamp"}, "metadata": None, "id": str(e0.id), "schema": 1,
        "tags": ["customer:ann"], "timestamp": e0.timestamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
    assert lines[1]["data"] is None and lines[1]["data_base64"] == "AP9yYXc="
    assert lines[0]["timestamp"].endswith("Z") and len(lines[0]["timestamp"]) == 27


def test_read_options(shop):
    def versions(*a):
        return [d["version"] for d in jsonl(ok("read", shop, "account-1", "--json", *a))]

    assert versions() == [0, 1]
    assert versions("--backwards") == [1, 0]
    assert versions("--from", "1") == [1]
    assert versions("--from", "0", "--backwards") == [0]
    assert versions("--limit", "1") == [0]
    r = ok("read", shop, "account-1")
    assert r.stdout.splitlines()[0].split("\t")[2:] == ["account-1", "0", "Opened",
                                                        '{"owner":"o1"}']


def test_read_a_missing_stream_is_a_mistake(shop):
    assert "no stream named 'nope'" in mistake("read", shop, "nope")


def test_log_filters(shop):
    def positions(*a):
        return [d["position"] for d in jsonl(ok("log", shop, "--json", *a))]

    assert positions() == list(range(1, 9))
    assert positions("--backwards", "--limit", "2") == [8, 7]
    assert positions("--from", "7") == [7, 8]
    assert positions("--from", "3", "--backwards") == [3, 2, 1]
    assert positions("--type", "Opened") == [1, 3, 5]
    assert positions("--type", "Opened", "--type", "Blob") == [1, 3, 5, 8]
    assert positions("--category", "order") == [7, 8]
    assert positions("--category", "account", "--type", "Deposited") == [2, 4, 6]
    assert positions("--stream", "account-2", "--stream", "order-1") == [3, 4, 7, 8]
    assert positions("--tag", "customer:ann") == [7]
    assert positions("--tag", "customer:ann", "--tag", "other") == []


def test_log_on_a_terminal_is_aligned_and_coloured(shop):
    rc, _, shown = on_terminal("log", shop, stdout_tty=True)
    text = shown.decode()
    assert rc == 0 and "\x1b[" in text
    assert "account-1@0" in text and "#customer:ann" in text and "<5 bytes>" in text
    rc, _, shown = on_terminal("log", shop, stdout_tty=True, NO_COLOR="1")
    assert rc == 0 and b"\x1b[" not in shown and b"account-1@0" in shown


def test_log_into_a_closed_pipe_ends_quietly(tmp_path):
    path = tmp_path / "big"
    with cairn.open(path, durability="none") as s:
        s.append("a-1", [cairn.Event("E", {"i": i}) for i in range(20000)])
    p = subprocess.Popen(f"{sys.executable} -m cairn log {path} | head -1", shell=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env={**os.environ, "PYTHONPATH": PACKAGE_ROOT})
    out, err = p.communicate(timeout=60)
    assert out.count(b"\n") == 1 and err == b""


def test_upcasters_apply_unless_raw(shop):
    with cairn.open(shop) as s:
        s.define_upcasters("""return { OrderPlaced = { [1] = function(e)
            e.data.qty = 1; return e end } }""")
    (up,) = jsonl(ok("log", shop, "--json", "--type", "OrderPlaced"))
    (raw,) = jsonl(ok("log", shop, "--json", "--type", "OrderPlaced", "--raw"))
    assert up["data"] == {"item": "lamp", "qty": 1} and up["schema"] == 2
    assert raw["data"] == {"item": "lamp"} and raw["schema"] == 1
    (exp,) = [d for d in jsonl(ok("export", shop)) if d["type"] == "OrderPlaced"]
    assert exp["data"] == raw["data"]  # export writes events as stored


# -- export -----------------------------------------------------------------------------------
def test_export_writes_the_event_lines(shop):
    lines = jsonl(ok("export", shop))
    assert [d["position"] for d in lines] == list(range(1, 9))
    assert lines == jsonl(ok("log", shop, "--json", "--raw"))
    assert [d["position"] for d in jsonl(ok("export", shop, "--category", "order"))] == [7, 8]
    assert [d["position"] for d in jsonl(ok("export", shop, "--from", "5", "--limit", "2"))] \
        == [5, 6]


def test_export_progress_only_on_a_terminal(tmp_path):
    path = tmp_path / "s"
    with cairn.open(path, durability="none") as s:
        s.append("a-1", [cairn.Event("E", {"i": i}) for i in range(3000)])
    r = ok("export", path)
    assert r.stderr == "" and len(r.stdout.splitlines()) == 3000
    rc, out, shown = on_terminal("export", path)
    assert rc == 0
    assert len(out.splitlines()) == 3000 and b"\x1b" not in out  # stdout stays clean
    assert b"export:" in shown and b"3000/3000 events" in shown


# -- load -------------------------------------------------------------------------------------
def test_load(shop):
    (d,) = jsonl(ok("load", shop, "account-2", "--json"))
    assert d == {"stream": "account-2", "version": 1,
                 "state": {"balance": 200, "open": True, "owner": "o2"}}
    (d,) = jsonl(ok("load", shop, "account-2", "--json", "--version", "0"))
    assert d["version"] == 0 and d["state"]["balance"] == 0
    (d,) = jsonl(ok("load", shop, "account-2", "--json", "--at", "2000-01-01T00:00:00Z"))
    assert d["version"] == -1
    r = ok("load", shop, "account-2")
    assert "account-2 at version 1" in r.stdout and '"balance": 200' in r.stdout


def test_load_mistakes(shop):
    assert "no aggregate script named 'order'" in mistake("load", shop, "order-1")
    assert "no aggregate script named 'nope'" in mistake("load", shop, "account-1",
                                                         "--aggregate", "nope")
    assert "not both" in mistake("load", shop, "account-1", "--version", "0", "--at",
                                 "2030-01-01")


def test_the_console_script_entry_point_is_the_cli():
    """`pip install .` installs `cairn` as setup.py's console_scripts entry: it must name the
    function `python -m cairn` runs."""
    import importlib
    import re

    setup = open(os.path.join(os.path.dirname(PACKAGE_ROOT), "setup.py"), encoding="utf-8").read()
    (target,) = re.findall(r'"cairn = ([\w.]+:\w+)"', setup)
    module, fn = target.split(":")
    assert getattr(importlib.import_module(module), fn) is cairn.cli.entry
    assert '"rich==' in setup  # the runtime dependency, pinned
