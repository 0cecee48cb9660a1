"""A store written by the format-1 code (tests/fixtures/format1-store.tar.gz, made by
tests/fixtures/make_format1.py at 4a50d50) opens and is upgraded (docs/FORMAT.md, "Upgrading
from format 1"): read-only it reads as written and computes its chain head; the first
read-write open writes meta chain1 and the store format 2 and nothing else; new events chain
from the format-1 records; verify recomputes and checks the whole chain; reopening keeps it.

The chain is recomputed here from the stored bytes (py-lmdb, hashlib.blake2b), independently
of the C code.
"""

import base64
import ctypes
import ctypes.util
import hashlib
import json
import os
import shutil
import tarfile

import lmdb
import pytest

import cairn

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
GENESIS = hashlib.blake2b(b"cairn-chain-v1\0\0", digest_size=32).digest()

_xxh = ctypes.CDLL(ctypes.util.find_library("xxhash") or "libxxhash.so.0")
_xxh.XXH3_64bits.restype = ctypes.c_uint64
_xxh.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_xxh.XXH3_64bits_withSeed.restype = ctypes.c_uint64
_xxh.XXH3_64bits_withSeed.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64]


def reseal(rec, pos=None):
    """The record with its checksum recomputed (XXH3-64 of bytes 8..end, little-endian;
    format 3 seeds it with the record's position)."""
    body = bytes(rec[8:])
    if rec[8] == 3:
        return _xxh.XXH3_64bits_withSeed(body, len(body), pos).to_bytes(8, "little") + body
    return _xxh.XXH3_64bits(body, len(body)).to_bytes(8, "little") + body


def manifest():
    with open(os.path.join(FIXTURES, "format1-store.jsonl")) as f:
        return [json.loads(line) for line in f]


def as_json(e):
    d = {"position": e.position, "stream": e.stream, "version": e.version, "type": e.type,
         "id": str(e.id), "schema": e.schema, "tags": list(e.tags), "metadata": e.metadata,
         "timestamp_ns": e.timestamp_ns}
    if isinstance(e.data, bytes):
        d["bytes"] = base64.b64encode(e.data).decode()
    else:
        d["data"] = e.data
    return d


@pytest.fixture
def store_copy(tmp_path):
    with tarfile.open(os.path.join(FIXTURES, "format1-store.tar.gz")) as tar:
        tar.extractall(tmp_path)
    return str(tmp_path / "format1-store")


def raw(path):
    env = lmdb.open(path, max_dbs=32, readonly=True, lock=False, subdir=True)
    out = {}
    with env.begin() as t:
        for name in (b"meta", b"log", b"holes"):
            try:
                db = env.open_db(name, txn=t, create=False)
            except lmdb.NotFoundError:
                continue
            out[name.decode()] = {bytes(k): bytes(v) for k, v in t.cursor(db)}
    env.close()
    return out


def link(h, pos, r):
    """C(pos) from C(pos-1) = h and the stored record r (docs/FORMAT.md, "The hash chain");
    a hash the record stores is checked."""
    if r[8] == 1:
        return hashlib.blake2b(h + r[8:], digest_size=32).digest()
    if r[8] == 2:
        h = hashlib.blake2b(h + r[8:72] + r[104:], digest_size=32).digest()
        assert r[72:104] == h, pos
        return h
    assert r[8] == 3, pos
    after = 66 if r[9] & 8 else 34
    h = hashlib.blake2b(h + pos.to_bytes(8, "little") + r[8:34] + r[after:],
                        digest_size=32).digest()
    assert after == 34 or r[34:66] == h, pos
    return h


def chain(log, holes=None):
    """{position: chain hash} recomputed over every record of `log` ({key: record}); a run of
    removed positions takes its hash from its `holes` entry."""
    log = {int.from_bytes(k, "big"): v for k, v in log.items()}
    holes = {int.from_bytes(k, "big"): v for k, v in (holes or {}).items()}
    h, out = GENESIS, {}
    for p in range(1, max(log) + 1):
        if p in log:
            h = out[p] = link(h, p, log[p])
        elif p in holes:
            h = holes[p][8:]
    return out


def file_digest(path):
    with open(os.path.join(path, "data.mdb"), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_a_format1_store_reads_as_written_read_only_and_nothing_is_written(store_copy):
    want = manifest()
    before = file_digest(store_copy)
    expect = chain(raw(store_copy)["log"])
    with cairn.open(store_copy, readonly=True) as s:
        assert [as_json(e) for e in s.read_all()] == want
        assert [as_json(s.get(d["position"])) for d in want[::17]] == want[::17]
        assert as_json(next(iter(s.read_stream("blob-1", backwards=True)))) == want[198]
        rep = s.verify()
        assert (rep.events, rep.head) == (200, 200)
        assert s.chain_head() == (200, expect[200].hex()) and rep.chain == expect[200].hex()
        assert s.projection("balances").position == 200
        assert s.load("account-1").state["owner"] == "owner 1"
        with pytest.raises(PermissionError):
            s.append("x", [cairn.Event("X")])
    assert file_digest(store_copy) == before
    assert raw(store_copy)["meta"][b"magic"] == b"cairn-store\0\0\0\x01"


def test_a_format1_store_is_upgraded_by_a_writable_open_and_chains_on(store_copy):
    want = manifest()
    expect = chain(raw(store_copy)["log"])
    balances = {}
    for d in want:
        if d["stream"].startswith("account-") and d["type"] in ("Deposited", "Withdrawn"):
            sign = 1 if d["type"] == "Deposited" else -1
            balances[d["stream"]] = balances.get(d["stream"], 0) + sign * d["data"]["amount"]
    with cairn.open(store_copy, durability="none") as s:
        m = raw(store_copy)["meta"]
        assert m[b"magic"] == b"cairn-store\0\0\0\x03"
        assert m[b"chain1"] == (200).to_bytes(8, "big") + expect[200]
        assert s.chain_head() == (200, expect[200].hex())
        assert [as_json(e) for e in s.read_all()] == want
        assert s.verify().chain == expect[200].hex()
        for name, bal in balances.items():
            assert s.projection("balances").state(name)["balance"] == bal
            assert s.load(name).state["balance"] == bal
        r = s.append("account-1", [cairn.Event("Deposited", {"amount": 5}, tags=["vip"])])
        assert r.position == 201
        s.append("new-1", [cairn.Event("N", {"i": i}) for i in range(3)])
        s.execute("account-1", "Withdraw", {"amount": 1})
        assert s.run_projections() == 2
        assert s.projection("balances").state("account-1")["balance"] == balances["account-1"] + 4
        head = s.chain_head()
        assert head[0] == 205
    log = raw(store_copy)["log"]
    again = chain(log)  # also checks every stored format-3 hash
    assert again[200] == expect[200] and head == (205, again[205].hex())
    assert [log[(p).to_bytes(8, "big")][8] for p in (200, 201, 205)] == [1, 3, 3]
    for ro in (True, False):
        with cairn.open(store_copy, readonly=ro) as s:
            assert [as_json(e) for e in s.read_all(limit=200)] == want
            assert s.chain_head() == head
            rep = s.verify()
            assert (rep.events, rep.head, rep.chain) == (205, 205, head[1])


def test_an_edited_format1_record_is_found_by_verify_after_the_upgrade(store_copy):
    with cairn.open(store_copy, durability="none") as s:  # the upgrade
        s.append("account-1", [cairn.Event("Deposited", {"amount": 5})])
    key = (57).to_bytes(8, "big")
    rec = bytearray(raw(store_copy)["log"][key])
    at = rec.find(b'"amount":')
    assert at > 0
    rec[at + 9] = ord("9") if rec[at + 9] != ord("9") else ord("8")
    env = lmdb.open(store_copy, max_dbs=32, subdir=True)
    with env.begin(write=True) as t:
        t.put(key, reseal(rec), db=env.open_db(b"log", txn=t, create=False))
    env.close()
    with cairn.open(store_copy, readonly=True) as s:
        s.get(57)  # the record itself checks: only the chain can tell
        with pytest.raises(cairn.CorruptionError) as ei:
            s.verify()
        assert ei.value.position == 200 and "chain1" in str(ei.value)


def test_an_edited_format1_record_changes_the_chain_head_of_a_store_not_upgraded(store_copy):
    with cairn.open(store_copy, readonly=True) as s:
        recorded = s.chain_head()
    key = (3).to_bytes(8, "big")
    rec = bytearray(raw(store_copy)["log"][key])
    rec[-3] ^= 1
    env = lmdb.open(store_copy, max_dbs=32, subdir=True)
    with env.begin(write=True) as t:
        t.put(key, reseal(rec), db=env.open_db(b"log", txn=t, create=False))
    env.close()
    with cairn.open(store_copy, readonly=True) as s:
        assert s.chain_head()[0] == 200 and s.chain_head() != recorded


def test_a_store_opened_read_only_first_is_upgraded_by_its_first_write(store_copy):
    expect = chain(raw(store_copy)["log"])
    ro = cairn.open(store_copy, readonly=True)  # the process's environment: set up read-only
    with cairn.open(store_copy, durability="none") as s:
        assert raw(store_copy)["meta"][b"magic"][-1] == 1
        s.append("z-1", [cairn.Event("Z")])
        m = raw(store_copy)["meta"]
        assert m[b"magic"][-1] == 3 and m[b"chain1"][8:] == expect[200]
        assert s.verify().events == 201
    ro.close()
    log = raw(store_copy)["log"]
    assert chain(log)[200] == expect[200]


def test_a_copy_keeps_working_after_the_fixture_is_gone(tmp_path, store_copy):
    with cairn.open(store_copy, durability="none") as s:
        s.append("a-1", [cairn.Event("A")])
        s.backup(str(tmp_path / "b"))
    shutil.rmtree(store_copy)
    with cairn.open(str(tmp_path / "b"), readonly=True) as b:
        assert b.verify().events == 201 and b.chain_head()[0] == 201
