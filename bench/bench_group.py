"""Durable single appends from many writers: group commit (issue 15).

Every writer appends one event per call with durability full (cairn "full": the events
survive power loss when append returns; SQLite WAL with synchronous=FULL, one row per
transaction: the same promise), in 1, 4 and 16 threads of one process and in 4 processes.
Each row runs in a fresh child process on a fresh store; rows alternate over ROUNDS rounds and
each figure is the median of its rounds.  Reported: total appends/s, the p50 and p99 latency
of one append, and the ratios the issue asks for, measured in the same run:

* cairn, 16 threads / cairn, 1 thread            (target >= 8: group commit)
* cairn, 4 processes / cairn, 1 process          (reported; processes do not group)
* cairn, 1 thread / SQLite WAL FULL, 1 thread    (target >= 1.0: one flush per commit, the
                                                  journal)
* cairn, 1 thread / the one-flush floor          (goal >= 0.9: pwrite + fdatasync of the bytes
                                                  of one journal record, preallocated file)

The event is 111 bytes of JSON as in bench_python.py; the SQLite table holds the same fields
(id, stream, version, type, data, timestamp) with a unique index on id as cairn indexes ids,
and once more without it.

    python bench/bench_group.py DIR [--appends N] [--rounds R]
"""

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sqlite3
import statistics
import sys
import threading
import time
import uuid

import cairn


def payload(i):
    return {"order": f"order-{i:08d}", "amount": i % 997, "currency": "EUR", "note": "x" * 40}


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def threaded(n_threads, total, one):
    """Runs `total` appends split over n_threads calling one(thread, i); returns (rate, lats)."""
    per = total // n_threads
    lats = [[] for _ in range(n_threads)]
    start = threading.Barrier(n_threads + 1)

    def work(t):
        start.wait()
        for i in range(per):
            t0 = time.perf_counter()
            one(t, i)
            lats[t].append(time.perf_counter() - t0)

    ts = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for t in ts:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    dt = time.perf_counter() - t0
    return per * n_threads / dt, [x for l in lats for x in l]


def cairn_threads(path, n_threads, total):
    store = cairn.open(path)  # durability full

    def one(t, i):
        store.append(f"order-{t}-{i}", [cairn.Event("OrderPlaced", payload(i))])

    r = threaded(n_threads, total, one)
    store.close()
    return r


def sqlite_threads(path, n_threads, total, index=True):
    db_path = os.path.join(path, "events.db")
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE events (pos INTEGER PRIMARY KEY, id TEXT, stream TEXT, version "
               "INTEGER, type TEXT, data TEXT, ts REAL)")
    if index:
        db.execute("CREATE UNIQUE INDEX events_id ON events(id)")
    db.close()
    local = threading.local()

    def one(t, i):
        c = getattr(local, "c", None)
        if c is None:
            c = local.c = sqlite3.connect(db_path, isolation_level=None, timeout=60,
                                          check_same_thread=False)
            c.execute("PRAGMA synchronous=FULL")
        c.execute("BEGIN IMMEDIATE")
        c.execute("INSERT INTO events (id, stream, version, type, data, ts) VALUES (?,?,?,?,?,?)",
                  (str(uuid.uuid4()), f"order-{t}-{i}", 0, "OrderPlaced",
                   json.dumps(payload(i), separators=(",", ":")), time.time()))
        c.execute("COMMIT")

    return threaded(n_threads, total, one)


def record_size(path):
    """The bytes of one journal record of a single append of this benchmark's event."""
    probe = os.path.join(path, "probe")
    with cairn.open(probe) as store:
        store.append("order-0-0", [cairn.Event("OrderPlaced", payload(0))])
    with open(os.path.join(probe, "wal"), "rb") as f:
        f.seek(8192 + 4)
        n = int.from_bytes(f.read(4), "little")
    shutil.rmtree(probe)
    return n


def floor_threads(path, n_threads, total):
    """The one-flush floor: pwrite of one record's bytes + fdatasync, into a preallocated file
    (what a journaled commit must do at least), one writer."""
    n = record_size(path)
    fd = os.open(os.path.join(path, "floor"), os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, b"\0" * (n * (total + 1)))
    os.fsync(fd)
    buf = b"r" * n

    def one(t, i):
        os.pwrite(fd, buf, i * n)
        os.fdatasync(fd)

    try:
        return threaded(n_threads, total, one)
    finally:
        os.close(fd)


def cairn_process(path, per, q, go):
    store = cairn.open(path)
    lats = []
    pid = os.getpid()
    go.wait()
    t0 = time.perf_counter()
    for i in range(per):
        a = time.perf_counter()
        store.append(f"order-{pid}-{i}", [cairn.Event("OrderPlaced", payload(i))])
        lats.append(time.perf_counter() - a)
    q.put((t0, time.perf_counter(), lats))
    store.close()


def cairn_processes(path, n, total):
    cairn.open(path).close()
    ctx = mp.get_context("fork")
    q, go = ctx.Queue(), ctx.Event()
    ps = [ctx.Process(target=cairn_process, args=(path, total // n, q, go)) for _ in range(n)]
    for p in ps:
        p.start()
    time.sleep(0.2)  # every child has opened the store
    go.set()
    got = [q.get() for _ in ps]
    for p in ps:
        p.join()
    t0, t1 = min(g[0] for g in got), max(g[1] for g in got)
    return (total // n) * n / (t1 - t0), [x for g in got for x in g[2]]


def in_child(fn, *args):
    """One row in a fresh process (no state shared between rows), on a fresh directory."""
    ctx = mp.get_context("fork")
    q = ctx.Queue()

    def run():
        q.put(fn(*args))

    p = ctx.Process(target=run)
    p.start()
    r = q.get()
    p.join()
    return r


ROWS = [
    ("cairn, 1 thread", cairn_threads, 1),
    ("cairn, 4 threads", cairn_threads, 4),
    ("cairn, 16 threads", cairn_threads, 16),
    ("cairn, 4 processes", cairn_processes, 4),
    ("SQLite WAL FULL + id index, 1 thread", sqlite_threads, 1),
    ("SQLite WAL FULL, no id index, 1 thread", lambda p, n, t: sqlite_threads(p, n, t, False), 1),
    ("SQLite WAL FULL + id index, 4 threads", sqlite_threads, 4),
    ("SQLite WAL FULL + id index, 16 threads", sqlite_threads, 16),
    ("one-flush floor (pwrite + fdatasync of one record), 1 thread", floor_threads, 1),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--appends", type=int, default=2000, help="appends per row and round")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    rates = {name: [] for name, _, _ in ROWS}
    lats = {name: [] for name, _, _ in ROWS}
    for r in range(a.rounds):
        for name, fn, n in ROWS:
            path = os.path.join(a.dir, "g")
            shutil.rmtree(path, ignore_errors=True)
            os.makedirs(path)
            rate, ls = in_child(fn, path, n, a.appends)
            rates[name].append(rate)
            lats[name].append((percentile(ls, 0.5), percentile(ls, 0.99)))
    shutil.rmtree(os.path.join(a.dir, "g"), ignore_errors=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"Durable single appends (one event per call, {a.appends} per row), median of "
          f"{a.rounds} alternating rounds; latency medians of the rounds' p50/p99\n")
    print("| writers | appends/s | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    for name, _, _ in ROWS:
        p50 = statistics.median(x[0] for x in lats[name]) * 1e3
        p99 = statistics.median(x[1] for x in lats[name]) * 1e3
        print(f"| {name} | {med[name]:,.0f} | {p50:.2f} | {p99:.2f} |")
    one = med["cairn, 1 thread"]
    print()
    print(f"cairn 16 threads / 1 thread: **{med['cairn, 16 threads'] / one:.2f}** (target >= 8)")
    print(f"cairn 4 threads / 1 thread: {med['cairn, 4 threads'] / one:.2f}")
    print(f"cairn 4 processes / 1 process: **{med['cairn, 4 processes'] / one:.2f}** "
          f"(reported; processes take turns at the writer lock)")
    print(f"cairn 1 thread / SQLite WAL FULL + id index 1 thread: "
          f"**{one / med['SQLite WAL FULL + id index, 1 thread']:.2f}** (target >= 1.0; "
          f"without the index {one / med['SQLite WAL FULL, no id index, 1 thread']:.2f})")
    print(f"cairn 1 thread / one-flush floor: "
          f"**{one / med['one-flush floor (pwrite + fdatasync of one record), 1 thread']:.2f}** "
          f"(goal >= 0.9)")
    print(f"cairn 16 threads / SQLite WAL FULL + id index 16 threads: "
          f"{med['cairn, 16 threads'] / med['SQLite WAL FULL + id index, 16 threads']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
