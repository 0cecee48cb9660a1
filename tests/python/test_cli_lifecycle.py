"""The command line's stream lifecycle (docs/API.md sections 4 and 6): cairn delete,
cairn retention (maintenance, and a stream's limits), and the audit trail through
cairn read PATH '$lifecycle'."""

import pytest

import cairn

from cli_support import jsonl, mistake, ok, on_terminal
from conftest import make_events


@pytest.fixture
def shop(tmp_path):
    path = tmp_path / "shop"
    with cairn.open(path) as s:
        s.append("cart-1", make_events(3))
        s.append("log-1", make_events(5))
    return path


def test_delete_soft_and_hard_and_the_audit_trail(shop):
    (d,) = jsonl(ok("delete", shop, "cart-1", "--expected-version", "2", "--json"))
    assert d == {"stream": "cart-1", "hard": False, "version": 2, "position": 9}
    r = ok("delete", shop, "log-1", "--hard")
    assert "log-1 hard-deleted" in r.stdout and "position 10" in r.stdout
    rows = jsonl(ok("read", shop, "$lifecycle", "--json"))
    assert [(e["type"], e["data"]) for e in rows] == [
        ("$StreamDeleted", {"stream": "cart-1", "hard": False, "version": 2}),
        ("$StreamDeleted", {"stream": "log-1", "hard": True, "version": 4})]
    plain = ok("read", shop, "$lifecycle").stdout.splitlines()
    assert plain[0].split("\t")[2:5] == ["$lifecycle", "0", "$StreamDeleted"]
    line = mistake("read", shop, "log-1")
    assert "was deleted (hard delete)" in line and "$lifecycle" in line
    line = mistake("append", shop, "log-1", "T")
    assert "was deleted" in line
    line = mistake("delete", shop, "cart-1", "--expected-version", "0")
    assert line.startswith("cairn: error: wrong expected version")
    assert "reserved" in mistake("delete", shop, "$lifecycle")
    mistake("delete", shop, code=2)
    mistake("delete", shop, "x", "--expected-version", "soon", code=2)
    with cairn.open(shop, readonly=True) as s:
        assert len(list(s.read_stream("$lifecycle"))) == 2
        s.verify()


def test_retention_sets_and_shows_a_streams_limits(shop):
    (d,) = jsonl(ok("retention", shop, "log-1", "--max-count", "2", "--max-age", "3600",
                    "--json"))
    assert d == {"stream": "log-1", "max_count": 2, "max_age": 3600, "truncate_before": None,
                 "position": 9}
    assert jsonl(ok("retention", shop, "log-1", "--json")) == [
        {"stream": "log-1", "max_count": 2, "max_age": 3600, "truncate_before": None}]
    assert "max_count=2" in ok("retention", shop, "log-1").stdout
    assert [e["version"] for e in jsonl(ok("read", shop, "log-1", "--json"))] == [3, 4]
    mistake("retention", shop, "log-1", "--max-count", "0", code=2)
    mistake("retention", shop, "log-1", "--max-age", "-1", code=2)
    assert "need a STREAM" in mistake("retention", shop, "--max-count", "3")


def test_retention_reclaims_and_reports(shop):
    with cairn.open(shop) as s:
        s.append("old-1", make_events(5000))
        s.set_stream_metadata("old-1", max_age=0)   # hidden now, reclaimed 4,096 at once
    (d,) = jsonl(ok("retention", shop, "--json"))
    assert (d["streams"], d["removed"]) == (1, 5000 - 4096)
    assert d["free_bytes"] > 0 and d["file_bytes"] > 0
    r = ok("retention", shop)
    assert r.stdout.startswith("0 removed events reclaimed in 1 streams")
    with cairn.open(shop, readonly=True) as s:
        s.verify()


def test_retention_shows_progress_on_a_terminal(shop):
    with cairn.open(shop) as s:
        for k in range(3):
            s.append(f"t-{k}", make_events(10))
            s.delete_stream(f"t-{k}")
    rc, out, shown = on_terminal("retention", shop)
    assert rc == 0, shown
    assert b"retention" in shown and b"reclaimed" in out
