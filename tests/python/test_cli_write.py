"""The command line, writing (docs/API.md section 4): append, import, define, execute,
compensate, rollback, projections run/state/reset -- their output, --json shapes and
mistakes."""

import json

import pytest

import cairn

from cli_support import ACCOUNT, BALANCES, bank, cli, jsonl, mistake, ok


@pytest.fixture
def shop(tmp_path):
    path = tmp_path / "shop"
    bank(path)
    return path


# -- append -----------------------------------------------------------------------------------
def test_append_creates_the_store_and_prints_the_result(tmp_path):
    path = tmp_path / "new"
    (d,) = jsonl(ok("append", path, "order-1", "OrderPlaced", '{"item": "lamp"}', "--json",
                    "--expected-version", "no_stream", "--tag", "customer:ann", "--tag", "x",
                    "--metadata", '{"correlation_id": "c-1"}'))
    assert d == {"stream": "order-1", "version": 0, "position": 1, "first_position": 1}
    r = ok("append", path, "order-1", "OrderPaid", "--expected-version", "0")
    assert r.stdout == "appended order-1@1 at position 2\n"
    with cairn.open(path, readonly=True) as s:
        e0, e1 = s.read_stream("order-1")
    assert (e0.data, e0.tags, e0.metadata) == ({"item": "lamp"}, ("customer:ann", "x"),
                                               {"correlation_id": "c-1"})
    assert e1.data is None


def test_append_reads_data_from_stdin_and_takes_an_id(tmp_path):
    path = tmp_path / "s"
    eid = "01890000-0000-7000-8000-000000000001"
    ok("append", path, "a-1", "T", "-", "--id", eid, input='{"from": "stdin"}')
    with cairn.open(path, readonly=True) as s:
        e = s.get(1)
    assert e.data == {"from": "stdin"} and str(e.id) == eid


@pytest.mark.parametrize("ev", ["any", "no_stream", "stream_exists", "-1", "3", "ANY",
                                "no-stream"])
def test_expected_version_values(tmp_path, ev):
    r = cli("append", tmp_path / "s", "a-1", "T", "--expected-version", ev)
    assert "Traceback" not in r.stderr
    assert r.returncode in (0, 1) and len(r.stderr.splitlines()) <= 1


def test_append_mistakes(shop, tmp_path):
    line = mistake("append", shop, "order-1", "X", "--expected-version", "0")
    assert line == ("cairn: error: wrong expected version: stream order-1: expected version 0, "
                    "actual 1 (read the stream and retry, or give --expected-version any)")
    assert "DATA_JSON: not valid JSON" in mistake("append", shop, "a-1", "T", "{oops")
    assert "--metadata: must be a JSON object" in mistake("append", shop, "a-1", "T",
                                                          "--metadata", "[1]")
    assert "$" in mistake("append", shop, "$sys", "T")  # reserved stream name
    assert "not a UUID" in mistake("append", shop, "a-1", "T", "--id", "nope")
    eid = str(next(iter(cairn.open(shop, readonly=True).read_all())).id)
    assert eid in mistake("append", shop, "a-9", "T", "--id", eid)  # DuplicateEvent
    f = tmp_path / "file"
    f.write_text("x")
    assert "not a directory" in mistake("append", f, "a-1", "T")


# -- import -----------------------------------------------------------------------------------
def test_export_then_import_twice_adds_nothing_the_second_time(shop, tmp_path):
    dump = tmp_path / "all.jsonl"
    dump.write_text(ok("export", shop).stdout)
    copy = tmp_path / "copy"
    (d,) = jsonl(ok("import", copy, dump, "--json", "--batch", "3"))
    assert d == {"imported": 8, "skipped": 0, "head": 8}
    assert ok("import", copy, dump, "--batch", "5").stdout == (
        "imported 0 events, skipped 8 already in the store; head 8\n")
    src, dst = jsonl(ok("export", shop)), jsonl(ok("export", copy))
    strip = lambda d: {k: v for k, v in d.items() if k != "timestamp"}  # noqa: E731
    assert [strip(x) for x in src] == [strip(x) for x in dst]  # ids, bytes, tags, metadata
    assert dst[7]["data_base64"] == "AP9yYXc="


def test_import_of_an_overlapping_newer_export_adds_only_the_new_events(shop, tmp_path):
    first = tmp_path / "first.jsonl"
    first.write_text(ok("export", shop, "--limit", "5").stdout)
    copy = tmp_path / "copy"
    assert jsonl(ok("import", copy, first, "--json"))[0]["imported"] == 5
    with cairn.open(shop) as s:
        s.append("order-2", [cairn.Event("OrderPlaced", {"item": "desk"})])
    later = tmp_path / "later.jsonl"
    later.write_text(ok("export", shop, "--from", "3").stdout)  # positions 3..9
    for batch in ("1", "2", "500"):
        (d,) = jsonl(ok("import", copy, later, "--json", "--batch", batch))
        assert d["head"] == 9
    with cairn.open(copy, readonly=True) as c, cairn.open(shop, readonly=True) as s:
        assert [e.id for e in c.read_all()] == [e.id for e in s.read_all()]


def test_import_from_stdin(shop, tmp_path):
    (d,) = jsonl(ok("import", tmp_path / "c", "-", "--json", input=ok("export", shop).stdout))
    assert d["imported"] == 8


def test_a_bad_line_names_file_and_line_and_keeps_earlier_batches(tmp_path):
    good = [json.dumps({"stream": "a-1", "type": "T", "data": {"i": i},
                        "id": f"01890000-0000-7000-8000-{i:012d}"}) for i in range(4)]
    f = tmp_path / "in.jsonl"
    for bad, what in [("{nope", "not valid JSON"), ("[1]", "must be a JSON object"),
                      ('{"stream": "a-1"}', "'type' is missing"),
                      ('{"stream": "a-1", "type": "T", "tags": "x"}', "'tags' must be a list"),
                      ('{"stream": "a-1", "type": "T", "data_base64": "***"}', "not base64"),
                      ('{"stream": "a-1", "type": "T", "id": "zz"}', "not a UUID"),
                      ('{"stream": "$x", "type": "T"}', "$")]:
        path = tmp_path / f"s{len(what)}{bad[:3]}"
        f.write_text("\n".join(good[:2] + [bad] + good[2:]) + "\n")
        line = mistake("import", path, f, "--batch", "2")
        assert line.startswith(f"cairn: error: {f}:3: ") and what in line, line
        with cairn.open(path, readonly=True) as s:
            assert s.head() == 2  # the batch before the bad line stays
    assert "cannot read" in mistake("import", tmp_path / "s", tmp_path / "missing.jsonl")


def test_import_skips_blank_lines_and_ids_repeated_in_the_file(tmp_path):
    line = json.dumps({"stream": "a-1", "type": "T", "id": "01890000-0000-7000-8000-000000000009"})
    f = tmp_path / "in.jsonl"
    f.write_text(f"{line}\n\n{line}\n")
    (d,) = jsonl(ok("import", tmp_path / "s", f, "--json"))
    assert d == {"imported": 1, "skipped": 1, "head": 1}


# -- define -----------------------------------------------------------------------------------
def test_define_each_kind(tmp_path):
    path = tmp_path / "s"
    agg, proj, up = tmp_path / "a.lua", tmp_path / "p.lua", tmp_path / "u.lua"
    agg.write_text(ACCOUNT)
    proj.write_text(BALANCES)
    up.write_text("return { Opened = { [1] = function(e) return e end } }")
    assert ok("define", path, "aggregate", "account", agg).stdout == "defined aggregate account\n"
    (d,) = jsonl(ok("define", path, "projection", "balances", proj, "--json"))
    assert d == {"kind": "projection", "name": "balances"}
    assert ok("define", path, "upcasters", up).stdout == "defined upcasters\n"
    ok("define", path, "aggregate", "other", "-", input=ACCOUNT)
    with cairn.open(path, readonly=True) as s:
        assert s.scripts() == {"aggregate": ["account", "other"], "projection": ["balances"],
                               "upcasters": ["upcasters"]}


def test_define_mistakes(tmp_path):
    bad = tmp_path / "bad.lua"
    bad.write_text("return {\n  apply = {\n")
    line = mistake("define", tmp_path / "s", "aggregate", "acc", bad)
    assert line.startswith("cairn: error: script error: acc:") and "expected" in line
    bad.write_text("return { aply = {} }")
    assert "unknown field aply" in mistake("define", tmp_path / "s", "aggregate", "acc", bad)
    assert "cannot read the script" in mistake("define", tmp_path / "s", "projection", "p",
                                               tmp_path / "none.lua")
    bad.write_bytes(b"\xff\xfe")
    assert "not UTF-8" in mistake("define", tmp_path / "s", "upcasters", bad)


# -- execute, compensate, rollback ------------------------------------------------------------
def test_execute(shop):
    (d,) = jsonl(ok("execute", shop, "account-1", "Withdraw", '{"amount": 30}', "--json"))
    assert d == {"stream": "account-1", "version": 2, "position": 9, "first_position": 9}
    r = ok("execute", shop, "account-4", "Open", '{"owner": "x"}', "--expected-version",
           "no_stream", "--metadata", '{"correlation_id": "t-2"}')
    assert r.stdout == "Open: appended account-4@0 at position 10\n"


def test_execute_mistakes(shop):
    assert mistake("execute", shop, "account-1", "Withdraw", '{"amount": 1000}') == (
        'cairn: error: command rejected: insufficient funds {"balance": 100}')
    assert "no decide handler for Fly" in mistake("execute", shop, "account-1", "Fly")
    assert "no aggregate script named 'order'" in mistake("execute", shop, "order-1", "Go")
    assert "wrong expected version" in mistake("execute", shop, "account-1", "Deposit",
                                               '{"amount": 1}', "--expected-version", "0")
    # a runtime error in the script: one line with the script's name and line
    assert "script error: account:" in mistake("execute", shop, "account-1", "Withdraw")


def test_compensate_and_its_mistakes(shop):
    (d,) = jsonl(ok("compensate", shop, "account-1", "1", "--json"))
    assert d == {"stream": "account-1", "version": 2, "position": 9, "first_position": 9}
    assert "already compensated" in mistake("compensate", shop, "account-1", "1")
    assert "no compensate handler for Opened" in mistake("compensate", shop, "account-1", "0")
    assert "has no version 7" in mistake("compensate", shop, "account-1", "7")


def test_rollback(shop):
    rows = jsonl(ok("rollback", shop, "t-1", "--json"))
    assert [(r["stream"], r["position"]) for r in rows] == [
        ("account-3", 9), ("account-2", 10), ("account-1", 11)]  # newest first
    assert ok("rollback", shop, "t-1").stdout == "nothing to roll back for t-1\n"
    assert ok("rollback", shop, "t-1", "--json").stdout == ""
    with cairn.open(shop, readonly=True) as s:
        assert s.load("account-2").state["balance"] == 0


# -- projections ------------------------------------------------------------------------------
def test_projections_state_and_reset(shop):
    assert jsonl(ok("projections", "state", shop, "balances", "account-2", "--json")) == [
        {"balance": 200}]
    assert jsonl(ok("projections", "state", shop, "balances", "--json")) == [None]
    r = ok("projections", "state", shop, "balances")
    assert "partitioned" in r.stdout and "account-3" in r.stdout
    assert jsonl(ok("projections", "state", shop, "balances", "nobody", "--json")) == [None]
    assert '"balance": 300' in ok("projections", "state", shop, "balances", "account-3").stdout
    (d,) = jsonl(ok("projections", "reset", shop, "balances", "--json"))
    assert d == {"name": "balances", "position": 0, "status": "ok", "error": None}
    assert jsonl(ok("projections", "list", shop, "--json"))[0]["lag"] == 8
    ok("projections", "run", shop, "--quiet")
    assert jsonl(ok("projections", "state", shop, "balances", "account-3", "--json")) == [
        {"balance": 300}]
    for action in ("state", "reset"):
        assert "no projection named 'nope'" in mistake("projections", action, shop, "nope")
