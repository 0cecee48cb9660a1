"""The hash chain from Python (docs/API.md section 6, docs/FORMAT.md "The hash chain"):
store.chain_head(), VerifyReport.chain, and what a user relies on -- a head recorded outside
the store matches the stored chain at that position later, a write that fails leaves the head
as it was, and the pair (position, hash) comes from one snapshot while another process writes.
The C side (removals, every flipped byte) is tests/c/test_chain.c.
"""

import hashlib
import threading
import time

import lmdb
import pytest

import cairn

GENESIS = hashlib.blake2b(b"cairn-chain-v1\0\0", digest_size=32).hexdigest()


def stored_hash(path, pos):
    env = lmdb.open(str(path), max_dbs=32, readonly=True, lock=False, subdir=True)
    with env.begin() as t:
        rec = t.get(pos.to_bytes(8, "big"), db=env.open_db(b"log", txn=t, create=False))
    env.close()
    if rec[8] == 3:  # format 3: at 34, in the records that keep it (flag 8)
        assert rec[9] & 8, pos
        return bytes(rec[34:66]).hex()
    return bytes(rec[72:104]).hex()


def test_an_empty_store_has_the_genesis_head(tmp_path):
    with cairn.open(tmp_path / "s", durability="none") as s:
        assert s.chain_head() == (0, GENESIS)
        rep = s.verify()
        assert (rep.head, rep.chain) == (0, GENESIS)


def test_each_commit_moves_the_head_and_a_recorded_head_stays_provable(tmp_path):
    path = tmp_path / "s"
    with cairn.open(path, durability="none") as s:
        s.append("a-1", [cairn.Event("A", {"i": i}) for i in range(3)])
        recorded = s.chain_head()
        assert recorded[0] == 3 and len(recorded[1]) == 64 and recorded[1] != GENESIS
        assert stored_hash(path, 3) == recorded[1]
        s.append("b-1", [cairn.Event("B", b"\x00\x01")])
        with s.transaction() as t:
            t.append("a-1", [cairn.Event("A")])
            t.append("c-1", [cairn.Event("C", metadata={"correlation_id": "x"})])
        head = s.chain_head()
        assert head[0] == 6 and head[1] not in (recorded[1], GENESIS)
        # later: the position recorded still carries the hash recorded, and verify reaches
        # the current head through it
        assert stored_hash(path, recorded[0]) == recorded[1]
        assert s.verify().chain == head[1]
    with cairn.open(path, readonly=True) as ro:
        assert ro.chain_head() == head and ro.verify().chain == head[1]


def test_a_failed_write_leaves_the_head_as_it_was(tmp_path):
    with cairn.open(tmp_path / "s", durability="none") as s:
        s.append("a-1", [cairn.Event("A")])
        before = s.chain_head()
        with pytest.raises(cairn.WrongExpectedVersion):
            s.append("a-1", [cairn.Event("A")], expected_version=5)
        with pytest.raises(ValueError):
            s.append("a-1", [cairn.Event("A"), cairn.Event("B", b"x" * (16 << 20))])
        assert s.chain_head() == before
        s.verify()


def test_chain_head_on_a_closed_store_raises(tmp_path):
    s = cairn.open(tmp_path / "s", durability="none")
    s.close()
    with pytest.raises(cairn.StoreClosed):
        s.chain_head()


def test_chain_head_is_one_snapshot_while_another_thread_appends(tmp_path):
    path = tmp_path / "s"
    stop = threading.Event()
    with cairn.open(path, durability="none") as s:
        s.append("w-0", [cairn.Event("W")])

        def writer():
            i = 0
            while not stop.is_set():
                s.append(f"w-{i % 7}", [cairn.Event("W", {"i": i})])
                i += 1

        t = threading.Thread(target=writer)
        t.start()
        seen = []
        deadline = time.monotonic() + 30
        try:
            while (not seen or seen[-1][0] < 300) and time.monotonic() < deadline:
                seen.append(s.chain_head())
        finally:
            stop.set()
            t.join()
        assert [p for p, _ in seen] == sorted(p for p, _ in seen) and seen[-1][0] >= 300
        for pos, h in seen[:: max(1, len(seen) // 20)]:
            assert stored_hash(path, pos) == h
        s.verify()


def test_forgetting_a_subject_keeps_the_chain(tmp_path):
    """The chain covers the stored ciphertext, so crypto-shredding leaves every link valid."""
    path = tmp_path / "s"
    with cairn.open(path, durability="none") as s:
        s.append("user-1", [cairn.Event("Registered", {"email": "ann@example.com"},
                                        subject="user-42")])
        s.append("user-1", [cairn.Event("Renamed", {"name": "Ann"}, subject="user-42")])
        recorded = s.chain_head()
        s.forget("user-42")
        assert s.get(1).forgotten and s.get(1).data is None
        rep = s.verify()
        assert rep.head == s.head() > recorded[0] and rep.chain == s.chain_head()[1]
        assert stored_hash(path, recorded[0]) == recorded[1]


def _raw_log(path, edit=None):
    """{position: record} of the closed store; edit(txn, log db, holes db) first, if given."""
    env = lmdb.open(str(path), max_dbs=32, subdir=True)
    with env.begin(write=edit is not None) as t:
        log = env.open_db(b"log", txn=t, create=False)
        if edit:
            edit(t, log, env.open_db(b"holes", txn=t, create=False))
        out = {int.from_bytes(k, "big"): bytes(v) for k, v in t.cursor(log)}
    env.close()
    return out


def test_a_call_keeps_its_hash_in_its_last_record_and_every_64th(tmp_path):
    """Record format 3 (FORMAT.md): the chain hash is stored where a later read needs it; the
    others are computed, and a change to one shows at the next stored hash."""
    from test_format1 import reseal
    path = tmp_path / "s"
    with cairn.open(path, durability="none") as s:
        s.append("a-1", [cairn.Event("A", {"i": i}) for i in range(70)])
        s.append("b-1", [cairn.Event("B", {"i": i}) for i in range(5)])
        head = s.chain_head()
    log = _raw_log(path)
    assert [p for p, r in log.items() if r[9] & 8] == [64, 70, 75]
    assert all(r[8] == 3 for r in log.values())
    rec = bytearray(log[66])
    rec[-2] ^= 1

    def edit(t, db, _):
        t.put((66).to_bytes(8, "big"), reseal(rec, 66), db=db)
    _raw_log(path, edit)
    with cairn.open(path, readonly=True) as s:
        assert s.chain_head() == head  # stored at 75
        with pytest.raises(cairn.CorruptionError) as ei:
            s.verify()
    assert ei.value.position == 70 and "from position 65 to this one" in str(ei.value)


def test_removed_events_keep_the_chain_of_records_without_a_stored_hash(tmp_path):
    path = tmp_path / "s"
    with cairn.open(path, durability="none") as s:
        s.append("a-1", [cairn.Event("A", {"i": i}) for i in range(70)])
        s.append("b-1", [cairn.Event("B", {"i": i}) for i in range(10)])
        head = s.chain_head()
        s.set_stream_metadata("a-1", max_count=3)  # removes positions 1..67: hashless
        s.maintain()
        s.delete_stream("b-1", hard=True)  # 71..80, after 70 which keeps its hash
        s.maintain()
        assert s.get(68).data == {"i": 67}
        rep = s.verify()
        assert rep.head == s.head() == head[0] + 2  # + the $lifecycle events
        assert rep.events == 3 + 2 and rep.chain == s.chain_head()[1]
    with cairn.open(path, readonly=True) as s:
        assert s.verify().chain == s.chain_head()[1]


def test_a_removed_run_after_a_record_without_a_stored_hash_is_damage(tmp_path):
    """No write makes one (a stream loses its oldest events first, a call's last record keeps
    its hash): a record deleted from the middle of a call, its hole entry forged, is found."""
    path = tmp_path / "s"
    with cairn.open(path, durability="none") as s:
        s.append("a-1", [cairn.Event("A", {"i": i}) for i in range(10)])
    log = _raw_log(path)

    def edit(t, db, holes):
        k = (6).to_bytes(8, "big")
        t.delete(k, db=db)
        t.put(k, (6).to_bytes(8, "big") + b"\x00" * 32, db=holes)
    _raw_log(path, edit)
    with cairn.open(path, readonly=True) as s:
        with pytest.raises(cairn.CorruptionError) as ei:
            s.verify()
    assert ei.value.position == 5 and "keeps no chain hash" in str(ei.value)
    assert log[5][9] & 8 == 0
