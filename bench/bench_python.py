"""Python-level benchmark: cairn against the stores a Python user would otherwise pick.

Every contender does the same work in the same run, each measurement in a forked child
(so its peak RSS is its own), rounds alternating between contenders, medians reported:

* cairn: `cairn.Event` objects with small dict data, `store.append` in batches,
  `read_all` touching `.data`.
* sqlite3: a plain event table (WAL, one transaction per batch, `json.dumps`, uuid4 ids
  under a unique index, unique (stream, version), a timestamp); reads select rows and
  `json.loads` them.
* eventsourcing (PyPI) with its SQLite application recorder: `StoredEvent`s with JSON
  state, `insert_events` per batch; reads page through `select_notifications`.
* py-lmdb: raw LMDB from Python, JSON values under big-endian position keys.
* cairn with `subject`: the same as cairn, every event's data encrypted for the stream's
  subject (spec 6, issue 13: the cost of encryption, reported as with/without).

Durability is off everywhere (cairn "none", sqlite synchronous=OFF), as for bulk loads.
Usage: python bench/bench_python.py DIR [--events N] [--rounds R]
"""

import argparse
import json
import os
import shutil
import sqlite3
import struct
import sys
import time
import uuid
from datetime import datetime, timezone

BATCH = 1000
STREAMS = 100


def payload(i):
    return {"amount": i, "note": "deposit", "ok": True}


def fresh(path):
    shutil.rmtree(path, ignore_errors=True)
    return path


# ---------------------------------------------------------------- cairn
def cairn_append(path, n, subject=False):
    import cairn

    with cairn.open(fresh(path), durability="none") as store:
        t = time.perf_counter()
        for b in range(n // BATCH):
            base = b * BATCH
            subj = f"user-{b % STREAMS}" if subject else None
            events = [cairn.Event("Deposited", payload(base + i), subject=subj)
                      for i in range(BATCH)]
            store.append(f"account-{b % STREAMS}", events)
        return n / (time.perf_counter() - t)


def cairn_read(path, n):
    import cairn

    with cairn.open(path, readonly=True) as store:
        t = time.perf_counter()
        total = 0
        for e in store.read_all():
            total += e.data["amount"]
        dt = time.perf_counter() - t
    assert total == n * (n - 1) // 2, total
    return n / dt


def cairn_subject_append(path, n):
    return cairn_append(path, n, subject=True)


# ---------------------------------------------------------------- sqlite3
SCHEMA = """
create table if not exists events (
    position integer primary key autoincrement,
    id text not null unique,
    stream text not null,
    version integer not null,
    type text not null,
    data text not null,
    ts text not null,
    unique (stream, version))
"""


def sqlite_append(path, n):
    os.makedirs(fresh(path))
    db = sqlite3.connect(os.path.join(path, "events.db"), isolation_level=None)
    db.execute("pragma journal_mode=wal")
    db.execute("pragma synchronous=off")
    db.execute(SCHEMA)
    versions = {}
    t = time.perf_counter()
    for b in range(n // BATCH):
        stream = f"account-{b % STREAMS}"
        v = versions.get(stream, -1)
        now = datetime.now(timezone.utc).isoformat()
        rows = []
        for i in range(BATCH):
            v += 1
            rows.append((str(uuid.uuid4()), stream, v, "Deposited", json.dumps(payload(b * BATCH + i)), now))
        db.execute("begin")
        db.executemany("insert into events (id, stream, version, type, data, ts) values (?,?,?,?,?,?)", rows)
        db.execute("commit")
        versions[stream] = v
    dt = time.perf_counter() - t
    db.close()
    return n / dt


def sqlite_read(path, n):
    db = sqlite3.connect(os.path.join(path, "events.db"))
    t = time.perf_counter()
    total = 0
    for row in db.execute("select position, id, stream, version, type, data, ts from events order by position"):
        total += json.loads(row[5])["amount"]
    dt = time.perf_counter() - t
    assert total == n * (n - 1) // 2
    return n / dt


# ---------------------------------------------------------------- eventsourcing
def es_recorder(path, create):
    from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

    if create:
        os.makedirs(fresh(path))
    ds = SQLiteDatastore(os.path.join(path, "es.db"))
    rec = SQLiteApplicationRecorder(ds)
    if create:
        rec.create_table()
    return rec


def es_append(path, n):
    from eventsourcing.persistence import StoredEvent

    rec = es_recorder(path, True)
    ids = [uuid.uuid5(uuid.NAMESPACE_URL, f"account-{s}") for s in range(STREAMS)]
    versions = {}
    t = time.perf_counter()
    for b in range(n // BATCH):
        oid = ids[b % STREAMS]
        v = versions.get(oid, 0)
        batch = []
        for i in range(BATCH):
            v += 1
            batch.append(StoredEvent(oid, v, "bank:Deposited", json.dumps(payload(b * BATCH + i)).encode()))
        rec.insert_events(batch)
        versions[oid] = v
    return n / (time.perf_counter() - t)


def es_read(path, n):
    rec = es_recorder(path, False)
    t = time.perf_counter()
    total = 0
    start = 1
    while True:
        page = rec.select_notifications(start, 1000)
        if not page:
            break
        for note in page:
            total += json.loads(note.state)["amount"]
        start = page[-1].id + 1
    dt = time.perf_counter() - t
    assert total == n * (n - 1) // 2
    return n / dt


# ---------------------------------------------------------------- py-lmdb
def lmdb_append(path, n):
    import lmdb

    env = lmdb.open(fresh(path), map_size=16 << 30, sync=False, metasync=False)
    pack = struct.Struct(">Q").pack
    t = time.perf_counter()
    pos = 0
    for b in range(n // BATCH):
        with env.begin(write=True) as txn:
            for i in range(BATCH):
                pos += 1
                txn.put(pack(pos), json.dumps(payload(b * BATCH + i)).encode(), append=True)
    dt = time.perf_counter() - t
    env.close()
    return n / dt


def lmdb_read(path, n):
    import lmdb

    env = lmdb.open(path, readonly=True, lock=False)
    t = time.perf_counter()
    total = 0
    with env.begin(buffers=True) as txn:
        for _, v in txn.cursor():
            total += json.loads(bytes(v))["amount"]
    dt = time.perf_counter() - t
    env.close()
    assert total == n * (n - 1) // 2
    return n / dt


# ---------------------------------------------------------------- harness
def in_child(fn, *args):
    """Runs fn in a forked child; returns (result, peak RSS in MiB)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            os.write(w, json.dumps(fn(*args)).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 4096):
        data += chunk
    os.close(r)
    _, status, usage = os.wait4(pid, 0)
    if not data:
        raise SystemExit(f"{fn.__name__} failed (status {status})")
    return json.loads(data), usage.ru_maxrss / 1024


CONTENDERS = [
    ("cairn", cairn_append, cairn_read),
    ("sqlite3 table", sqlite_append, sqlite_read),
    ("eventsourcing (SQLite)", es_append, es_read),
    ("py-lmdb (raw)", lmdb_append, lmdb_read),
    ("cairn-subject (encrypted)", cairn_subject_append, cairn_read),
]


def disk_bytes(path):
    """Bytes of the files a contender's store left (apparent sizes; lock files left out:
    LMDB's lock.mdb and SQLite's -shm hold locks, not data)."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            if f != "lock.mdb" and not f.endswith("-shm"):
                total += os.path.getsize(os.path.join(root, f))
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    n = args.events // BATCH * BATCH
    os.makedirs(args.dir, exist_ok=True)
    results = {name: {"append": [], "read": [], "rss_a": 0, "rss_r": 0} for name, _, _ in CONTENDERS}
    for _ in range(args.rounds):
        for name, app, rd in CONTENDERS:
            path = os.path.join(args.dir, name.split()[0])
            a, ra = in_child(app, path, n)
            r, rr = in_child(rd, path, n)
            res = results[name]
            res["bytes"] = disk_bytes(path) / n
            res["append"].append(a)
            res["read"].append(r)
            res["rss_a"] = max(res["rss_a"], ra)
            res["rss_r"] = max(res["rss_r"], rr)
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    c = results["cairn"]
    ca, cr = med(c["append"]), med(c["read"])
    print(f"Python API, {n} events, batches of {BATCH}, small dict data, median of {args.rounds} rounds\n")
    print("| contender | append ev/s (peak RSS) | read_all + .data ev/s (peak RSS) | cairn ratio append | cairn ratio read |")
    print("|---|---|---|---|---|")
    for name, _, _ in CONTENDERS:
        res = results[name]
        a, r = med(res["append"]), med(res["read"])
        print(f"| {name} | {a:,.0f} ({res['rss_a']:.0f} MiB) | {r:,.0f} ({res['rss_r']:.0f} MiB) "
              f"| **{ca / a:.2f}x** | **{cr / r:.2f}x** |")
    print("\ntargets: append >= 3x sqlite3 table, read >= 2x sqlite3 table")
    print("\nbytes on disk per event after the load (the files each store left, lock files "
          "excluded; same events, same JSON data):")
    for name, _, _ in CONTENDERS:
        print(f"- {name}: {results[name]['bytes']:.0f}")
    print(f"cairn / sqlite3 table (ids under a unique index, unique (stream, version)): "
          f"**{results['cairn']['bytes'] / results['sqlite3 table']['bytes']:.2f}** "
          f"(target <= 1.0)")
    s = results["cairn-subject (encrypted)"]
    print(f"encryption (issue 13): with subject / without: append "
          f"{med(s['append']) / ca:.2f}, read {med(s['read']) / cr:.2f} (target >= 0.8)")
    shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
