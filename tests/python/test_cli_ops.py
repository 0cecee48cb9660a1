"""The command line, operating a store (docs/API.md section 4): verify (also on stores
damaged on purpose), backup (while another process appends), bench, tail (live, in a pipe,
ended by SIGTERM/SIGINT), and progress on stderr only when it is a terminal."""

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import cairn

from cli_support import bank, env, jsonl, mistake, ok, on_terminal
from conftest import PYTHON, child_env


def build(path, n=60):
    with cairn.open(path, durability="none") as s:
        s.append("acct-1", [cairn.Event("Moved", {"i": i, "marker": f"MARK{i:04d}X"})
                            for i in range(n)])
        s.sync()


# -- verify -----------------------------------------------------------------------------------
def test_verify_a_sound_store(tmp_path):
    path = tmp_path / "s"
    bank(path)
    with cairn.open(path, readonly=True) as s:
        chain = s.chain_head()[1]
    r = ok("verify", path)
    assert r.stdout.startswith(f"ok: 8 events, 4 streams, head 8, chain {chain}; ")
    assert r.stdout.count("\n") == 1
    assert r.stderr == ""
    assert jsonl(ok("verify", path, "--json")) == [
        {"ok": True, "events": 8, "streams": 4, "head": 8, "chain": chain}]


def test_verify_names_a_record_with_a_flipped_byte(tmp_path):
    path = tmp_path / "s"
    build(path)
    with open(path / "data.mdb", "r+b") as f:
        data = bytearray(f.read())
        at = data.find(b"MARK0017X")
        while at >= 0:  # every copy: freed pages may hold an older one
            data[at + 3] ^= 0x20
            at = data.find(b"MARK0017X", at + 1)
        f.seek(0)
        f.write(data)
    r = subprocess.run([sys.executable, "-m", "cairn", "verify", str(path)], capture_output=True,
                       text=True, env=env())
    assert r.returncode == 1
    assert r.stdout == "position 18: corrupt record: its checksum or layout is wrong\n"
    assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) == 1
    assert "is damaged" in r.stderr
    r = subprocess.run([sys.executable, "-m", "cairn", "verify", str(path), "--json"],
                       capture_output=True, text=True, env=env())
    (d,) = jsonl(r)
    assert r.returncode == 1 and d["ok"] is False and d["damage"][0]["position"] == 18


def test_verify_names_a_record_changed_with_its_checksum_recomputed(tmp_path):
    """The checksum cannot tell: the hash chain does, naming where (issues 13, 15)."""
    import lmdb
    from test_format1 import reseal
    path = tmp_path / "s"
    build(path)
    lenv = lmdb.open(str(path), max_dbs=32, subdir=True)
    with lenv.begin(write=True) as t:
        db = lenv.open_db(b"log", txn=t, create=False)
        key = (18).to_bytes(8, "big")
        rec = bytearray(t.get(key, db=db))
        at = rec.find(b"MARK0017X")
        rec[at + 4] = ord("9")
        t.put(key, reseal(rec, 18), db=db)
    lenv.close()
    with cairn.open(path, readonly=True) as s:
        assert s.get(18).data["marker"] == "MARK9017X"  # reads fine: only the chain tells
    r = subprocess.run([sys.executable, "-m", "cairn", "verify", str(path)], capture_output=True,
                       text=True, env=env())
    assert r.returncode == 1
    # format 3 stores the hash in the call's last record (60) and every 64th: the change
    # shows there, naming the records it may be in
    assert r.stdout.startswith("position 60: chain hash does not match the records from "
                               "position 1 to this one")
    assert "is damaged" in r.stderr and len(r.stderr.splitlines()) == 1


def test_verify_names_each_damaged_event(tmp_path):
    path = tmp_path / "s"
    build(path)
    with open(path / "data.mdb", "r+b") as f:
        data = bytearray(f.read())
        for i in (4, 17, 41):
            at = data.find(f"MARK{i:04d}X".encode())
            while at >= 0:
                data[at + 5] ^= 0x01
                at = data.find(f"MARK{i:04d}X".encode(), at + 1)
        f.seek(0)
        f.write(data)
    r = subprocess.run([sys.executable, "-m", "cairn", "verify", str(path), "--json"],
                       capture_output=True, text=True, env=env())
    (d,) = jsonl(r)
    assert r.returncode == 1 and [x["position"] for x in d["damage"]] == [5, 18, 42]
    assert "3 damaged events" in r.stderr and len(r.stderr.splitlines()) == 1


def test_verify_names_an_event_whose_index_entry_was_deleted(tmp_path):
    path = tmp_path / "s"
    build(path)
    with cairn.open(path, readonly=True) as s:
        eid = s.get(25).id
    # py-lmdb in a child: the id index entry of position 25 removed behind cairn's back
    subprocess.run([PYTHON, "-c", textwrap.dedent(f"""
        import lmdb, uuid
        env = lmdb.open({str(path)!r}, max_dbs=64, map_size=1 << 30)
        ids = env.open_db(b"ids", create=False)
        with env.begin(write=True) as txn:
            assert txn.delete(uuid.UUID({str(eid)!r}).bytes, db=ids)
        env.close()
        """)], check=True, env=child_env())
    r = subprocess.run([sys.executable, "-m", "cairn", "verify", str(path)], capture_output=True,
                       text=True, env=env())
    assert r.returncode == 1, r.stdout
    assert r.stdout.startswith("position 25: ") and "id index" in r.stdout
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr


def test_verify_progress_only_on_a_terminal(tmp_path):
    path = tmp_path / "s"
    with cairn.open(path, durability="none") as s:
        for _ in range(3):
            s.append("a-1", [cairn.Event("E", {"i": i}) for i in range(5000)])
    rc, out, shown = on_terminal("verify", path)
    assert rc == 0 and out.startswith(b"ok: 15000 events") and out.count(b"\n") == 1
    assert b"verify:" in shown and b"15000/15000 events" in shown


# -- backup -----------------------------------------------------------------------------------
def test_backup_while_another_process_appends(tmp_path):
    path = tmp_path / "s"
    with cairn.open(path) as s:
        s.define_projection("n", "return { init = function() return { n = 0 } end, "
                                 "apply = { ['*'] = function(s, e) s.n = s.n + 1 end } }")
        s.append("w-1", [cairn.Event("W", {"k": k}) for k in range(10)])
        s.run_projections()
    writer = subprocess.Popen([PYTHON, "-c", textwrap.dedent(f"""
        import cairn
        with cairn.open({str(path)!r}, durability="none") as s:
            print("go", flush=True)
            for i in range(300):
                s.append("w-1", [cairn.Event("W", {{"i": i, "k": k}}) for k in range(10)])
        """)], env=child_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "go\n"
        (d,) = jsonl(ok("backup", path, tmp_path / "b", "--json"))
    finally:
        assert writer.wait(60) == 0
    assert d["dest"] == str(tmp_path / "b") and d["bytes"] == os.path.getsize(
        tmp_path / "b" / "data.mdb")
    assert jsonl(ok("verify", tmp_path / "b", "--json"))[0]["ok"] is True
    with cairn.open(path, readonly=True) as s, cairn.open(tmp_path / "b", readonly=True) as b:
        assert b.head() == d["head"] and d["head"] % 10 == 0
        assert [(e.id, e.data) for e in b.read_all()] == [
            (e.id, e.data) for e in s.read_all(limit=b.head())]
        assert b.projection("n").state() == {"n": 10}  # projection state came along


def test_backup_mistakes_and_human_output(tmp_path):
    path = tmp_path / "s"
    build(path, 5)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert "is not empty" in mistake("backup", path, tmp_path / "full")
    assert "not a directory" in mistake("backup", path, tmp_path / "full" / "x")
    assert os.listdir(tmp_path / "full") == ["x"]
    r = ok("backup", path, tmp_path / "b")
    assert r.stdout.startswith(f"backed up {path} to {tmp_path / 'b'}: head 5")
    rc, out, shown = on_terminal("backup", path, tmp_path / "c")
    assert rc == 0 and out.startswith(b"backed up") and b"backup:" in shown


# -- bench ------------------------------------------------------------------------------------
def test_bench_json_and_mistakes(tmp_path):
    (d,) = jsonl(ok("bench", tmp_path / "b", "--seconds", "0.6", "--json"))
    assert set(d) == {"seconds", "single_appends_per_s", "batch", "batched_events_per_s",
                      "reads_per_s", "events"}
    assert d["single_appends_per_s"] > 0 and d["batched_events_per_s"] > 0
    assert d["reads_per_s"] > 0 and d["batch"] == 100
    assert "not a new or empty directory" in mistake("bench", tmp_path / "b", "--seconds", "1")
    r = ok("bench", tmp_path / "c", "--seconds", "0.3")
    assert "appends/s" in r.stdout and "events/s" in r.stdout


# -- tail -------------------------------------------------------------------------------------
def _start_tail(path, *args):
    p = subprocess.Popen([sys.executable, "-m", "cairn", "tail", str(path), "--json", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(), bufsize=0)
    return p


def _line(p, timeout=20.0):
    """The tail's next line, or a failure after `timeout` seconds (never a hang); stdout is
    unbuffered here (bufsize=0), so select() sees every line not read yet."""
    if not select.select([p.stdout], [], [], timeout)[0]:
        raise AssertionError("tail printed nothing")
    return p.stdout.readline()


@pytest.mark.parametrize("sig,codes", [(signal.SIGTERM, (0,)), (signal.SIGINT, (0, 130))])
def test_tail_in_a_pipe_follows_appends_of_another_process(tmp_path, sig, codes):
    path = tmp_path / "s"
    build(path, 3)
    p = _start_tail(path, "--from", "3")
    try:
        first = json.loads(_line(p))  # caught up: position 3
        assert first["position"] == 3
        writer = subprocess.run([PYTHON, "-c", textwrap.dedent(f"""
            import cairn
            with cairn.open({str(path)!r}) as s:
                for i in range(5):
                    s.append("live-1", [cairn.Event("Live", {{"i": i}})])
                s.append("other-1", [cairn.Event("Other")])
            """)], env=child_env(), timeout=60)
        assert writer.returncode == 0
        got = [json.loads(_line(p)) for _ in range(6)]  # flushed line by line
        assert [g["position"] for g in got] == [4, 5, 6, 7, 8, 9]
        assert [g["data"] for g in got[:5]] == [{"i": i} for i in range(5)]
    finally:
        p.send_signal(sig)
        out, err = p.communicate(timeout=10)
    assert p.returncode in codes, err
    assert err == b""  # quiet: no traceback, no message


def test_tail_starts_after_the_head_and_filters(tmp_path):
    path = tmp_path / "s"
    build(path, 3)
    p = _start_tail(path, "--type", "Wanted")
    try:
        # the tail subscribes at the head + 1 as it starts; until it shows something, keep
        # writing pairs of events: one it skips, one it shows
        with cairn.open(path) as s:
            deadline = time.monotonic() + 20
            while not select.select([p.stdout], [], [], 0.2)[0]:
                assert time.monotonic() < deadline, "tail printed nothing"
                s.append("x-1", [cairn.Event("Unwanted"), cairn.Event("Wanted", {"ok": 1})])
        line = json.loads(_line(p))
        assert line["type"] == "Wanted" and line["position"] >= 5 and line["position"] % 2 == 1
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=10)
    assert p.returncode == 0


def test_tail_human_lines_in_a_pipe(tmp_path):
    path = tmp_path / "s"
    build(path, 2)
    p = subprocess.Popen([sys.executable, "-m", "cairn", "tail", str(path), "--from", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(), bufsize=0)
    try:
        cols = _line(p).decode().rstrip("\n").split("\t")
        assert cols[0] == "1" and cols[2:5] == ["acct-1", "0", "Moved"]
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=10)
    assert p.returncode == 0
