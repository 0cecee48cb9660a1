"""A store written by the format-2 code (tests/fixtures/format2-store.tar.gz, made by
tests/fixtures/make_format2.py at da78fd9) opens and reads as written, read-only and writable:
its encrypted events open with their key in `keys`, its hole run (a reclaimed stream) keeps its
chain hash, verify checks every stored hash, and new events chain on from it.  It is the store a
later record format must keep reading (or convert): the upgrade path's test.

The chain is recomputed here from the stored bytes (py-lmdb, hashlib.blake2b), independently
of the C code.
"""

import json
import os
import tarfile

import pytest
from test_format1 import FIXTURES, as_json, file_digest, raw
from test_format1 import chain as chain_of

import cairn


def manifest():
    with open(os.path.join(FIXTURES, "format2-store.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture
def store_copy(tmp_path):
    with tarfile.open(os.path.join(FIXTURES, "format2-store.tar.gz")) as tar:
        tar.extractall(tmp_path)
    return str(tmp_path / "format2-store")


def chain(db):
    """{position: chain hash}, recomputed from the stored bytes (test_format1.chain)."""
    return chain_of(db["log"], db.get("holes"))


def test_a_format2_store_reads_as_written_read_only_and_nothing_is_written(store_copy):
    want = manifest()
    before = file_digest(store_copy)
    db = raw(store_copy)
    expect = chain(db)
    head = max(expect)
    assert not any(146 <= p <= 155 for p in expect)  # order-3, reclaimed
    assert int.from_bytes(next(iter(db["holes"])), "big") == 155
    with cairn.open(store_copy, readonly=True) as s:
        assert [as_json(e) for e in s.read_all()] == want
        assert [as_json(s.get(d["position"])) for d in want[::13]] == want[::13]
        secret = [d for d in want if d["stream"] == "secret-1"]
        assert [d["data"]["n"] for d in secret] == list(range(6))
        assert [e.data for e in s.read_stream("secret-1")] == [d["data"] for d in secret]
        rep = s.verify()
        assert (rep.events, rep.head) == (len(want) + 1, head)  # $lifecycle's event, too
        assert s.chain_head() == (head, expect[head].hex()) and rep.chain == expect[head].hex()
        assert s.projection("balances").position == head
        assert s.load("account-1").state["owner"] == "owner 1"
        with pytest.raises(cairn.StreamDeleted):
            next(iter(s.read_stream("order-3")))
        with pytest.raises(PermissionError):
            s.append("x", [cairn.Event("X")])
    assert file_digest(store_copy) == before


def test_a_format2_store_takes_new_events_that_chain_on_from_its_records(store_copy):
    want = manifest()
    db = raw(store_copy)
    expect = chain(db)
    head = max(expect)
    with cairn.open(store_copy, durability="none") as s:
        assert [as_json(e) for e in s.read_all()] == want
        r = s.append("account-1", [cairn.Event("Deposited", {"amount": 5}, tags=["vip"])])
        assert r.position == head + 1
        s.append("secret-1", [cairn.Event("Noted", {"n": 6}, subject="user-1")])
        s.execute("account-1", "Withdraw", {"amount": 1})
        assert s.run_projections() == 2
        s.forget("user-1")
        assert all(e.data is None for e in s.read_stream("secret-1"))
        after = s.chain_head()
    db = raw(store_copy)
    assert db["meta"][b"magic"][-1] == 3  # the store format moved; the old records did not
    assert [db["log"][p.to_bytes(8, "big")][8] for p in (head, head + 1)] == [2, 3]
    again = chain(db)  # checks every stored hash, old and new
    assert again[head] == expect[head] and after == (max(again), again[max(again)].hex())
    for ro in (True, False):
        with cairn.open(store_copy, readonly=ro) as s:
            assert [as_json(e) for e in s.read_all(limit=150)] == want[:150]
            assert s.chain_head() == after
            assert s.verify().chain == after[1]
