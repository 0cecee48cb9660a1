"""Dynamic consistency boundaries (spec section 5, issue 14), every figure a ratio against a
baseline measured beside it in the same run: rounds alternate between the contenders (the
order reversed every other round) and medians of the per-round ratios are reported.

(a) cairn, durability "full": one event per append, each conditioned on a one-tag query
    (`Condition(Query(QueryItem(tags=[tag])), after=store.head())`, the head read just
    before), beside unconditional appends of the same events to the same store.
    Target: conditional >= 0.9 of unconditional. The same with durability "none" (5x the
    appends per round) shows what the condition itself costs once no sync hides it.
(b) UmaDB (the `umadb` wheel's gRPC server on 127.0.0.1, started here on a port of its own
    and stopped by its PID; it syncs every append) doing the same: `client.head()`, then
    `client.append([event], AppendCondition(Query([QueryItem(tags=[tag])]), after=head))`,
    beside its own unconditional appends.
    Both stores: the same 64-byte payload (bytes) and tag per event, each append on the same
    disk (DIR), tags cycling over 1,000 that already hold events. cairn runs in the process,
    UmaDB behind a loopback gRPC call (two for a conditional append: head, append), which
    is what using each looks like.
(c) `store.query` of one tag among 100,000 tags with 10 events each (1,000,000 events,
    each tag's events spread over the whole log): events/s over many queries (each a fresh
    Query, 10 RecordedEvents) beside a full `read_all` of the same store (1,000,000
    RecordedEvents), and beside `read_all(tags=[tag])` for the same tags (the filtered read
    through the same tag index). All materialize every event they yield as a RecordedEvent
    and touch `.position`. A query that scanned the log would score about 1e-5 of the full
    read.

Usage: python bench/bench_dcb.py DIR [--appends N] [--rounds R] [--tags T] [--queries Q]
"""

import argparse
import os
import random
import shutil
import socket
import subprocess
import sys
import time

import cairn

PAYLOAD = b'{"student": "s-000042", "course": "c-0007", "note": "subscribed"}'[:64].ljust(64)
TAGS_A = 1000
NOSYNC = 5   # appends without a sync per durable one, so that each round lasts about as long


def med(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


# ------------------------------------------------------------------ (a) cairn appends
def cairn_appends(store, n, base, conditional):
    tags = [f"k:{(base + i) % TAGS_A}" for i in range(n)]
    events = [cairn.Event("Subscribed", PAYLOAD, tags=[t]) for t in tags]
    queries = [cairn.Query(cairn.QueryItem(tags=[t])) for t in tags]
    t0 = time.perf_counter()
    if conditional:
        for tag, e, q in zip(tags, events, queries):
            store.append(f"s-{tag}", [e], condition=cairn.Condition(q, after=store.head()))
    else:
        for tag, e in zip(tags, events):
            store.append(f"s-{tag}", [e])
    return n / (time.perf_counter() - t0)


# ------------------------------------------------------------------ (b) UmaDB appends
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_umadb(path):
    exe = os.path.join(os.path.dirname(sys.executable), "umadb")
    port = free_port()
    log = open(os.path.join(path, "umadb.log"), "wb")
    proc = subprocess.Popen([exe, "--listen", f"127.0.0.1:{port}", "--db-path", os.path.join(path, "uma.db")],
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    import umadb

    deadline = time.monotonic() + 30
    while True:
        try:
            client = umadb.Client(f"http://127.0.0.1:{port}")
            client.head()
            return proc, client
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"umadb server did not start (see {path}/umadb.log)")
            time.sleep(0.1)


def stop_umadb(proc):
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def uma_appends(client, n, base, conditional):
    import umadb

    tags = [f"k:{(base + i) % TAGS_A}" for i in range(n)]
    events = [umadb.Event("Subscribed", PAYLOAD, tags=[t]) for t in tags]
    queries = [umadb.Query([umadb.QueryItem(tags=[t])]) for t in tags]
    t0 = time.perf_counter()
    if conditional:
        for e, q in zip(events, queries):
            client.append([e], umadb.AppendCondition(q, after=client.head()))
    else:
        for e in events:
            client.append([e])
    return n / (time.perf_counter() - t0)


def bench_appends(dirpath, n, rounds):
    import umadb

    cpath = os.path.join(dirpath, "cairn-appends")
    npath = os.path.join(dirpath, "cairn-nosync")
    upath = os.path.join(dirpath, "umadb")
    os.makedirs(upath)
    # the same 10 events per tag in both before the first round, unsynced bulk (not timed)
    prefill = [f"k:{i % TAGS_A}" for i in range(10 * TAGS_A)]
    for path in (cpath, npath):
        with cairn.open(path, durability="none") as store:
            for b in range(0, len(prefill), 1000):
                store.append("prefill", [cairn.Event("Subscribed", PAYLOAD, tags=[t]) for t in prefill[b:b + 1000]])
            store.sync()
    proc, client = start_umadb(upath)
    try:
        for b in range(0, len(prefill), 1000):
            client.append([umadb.Event("Subscribed", PAYLOAD, tags=[t]) for t in prefill[b:b + 1000]])
        runs = {k: [] for k in ("cairn-cond", "cairn-plain", "uma-cond", "uma-plain",
                                "nosync-cond", "nosync-plain")}
        with cairn.open(cpath, durability="full") as store, \
                cairn.open(npath, durability="none") as nosync:
            order = [("nosync-plain", lambda b: cairn_appends(nosync, NOSYNC * n, b, False)),
                     ("nosync-cond", lambda b: cairn_appends(nosync, NOSYNC * n, b, True)),
                     ("cairn-plain", lambda b: cairn_appends(store, n, b, False)),
                     ("cairn-cond", lambda b: cairn_appends(store, n, b, True)),
                     ("uma-plain", lambda b: uma_appends(client, n, b, False)),
                     ("uma-cond", lambda b: uma_appends(client, n, b, True))]
            for r in range(rounds):
                for i, (name, fn) in enumerate(order if r % 2 == 0 else order[::-1]):
                    runs[name].append(fn((r * len(order) + i) * n))
            assert store.head() == len(prefill) + 2 * rounds * n
            assert nosync.head() == len(prefill) + 2 * rounds * NOSYNC * n
        assert client.head() == len(prefill) + 2 * rounds * n
    finally:
        client.close()
        stop_umadb(proc)
    return runs


# ------------------------------------------------------------------ (c) query vs full read
def bench_query(dirpath, tags, per_tag, queries, rounds):
    path = os.path.join(dirpath, "cairn-query")
    n = tags * per_tag
    payload = PAYLOAD[:32]
    with cairn.open(path, durability="none") as store:
        for b in range(0, n, 1000):
            store.append(f"s-{b // 1000 % 100}",
                         [cairn.Event("Subscribed", payload, tags=[f"t:{i % tags}"]) for i in range(b, min(n, b + 1000))])
        store.sync()
    rng = random.Random(14)
    full, query, per_query_us, tagged, per_filter_us = [], [], [], [], []
    with cairn.open(path, readonly=True) as store:
        def read_all():
            t0 = time.perf_counter()
            got = 0
            for e in store.read_all():
                got += e.position > 0
            dt = time.perf_counter() - t0
            assert got == n
            return n / dt

        def by_tag(read, times):
            t0 = time.perf_counter()
            got = 0
            for t in picks:
                for e in read(t):
                    got += e.position > 0
            dt = time.perf_counter() - t0
            assert got == queries * per_tag, got
            times.append(dt / queries * 1e6)
            return got / dt

        def by_query():
            return by_tag(lambda t: store.query(cairn.Query(cairn.QueryItem(tags=[t]))), per_query_us)

        def by_filter():
            return by_tag(lambda t: store.read_all(tags=[t]), per_filter_us)

        for r in range(rounds):
            picks = [f"t:{rng.randrange(tags)}" for _ in range(queries)]   # the same for both
            order = [(full, read_all), (query, by_query), (tagged, by_filter)]
            for out, fn in (order if r % 2 == 0 else order[::-1]):
                out.append(fn())
    return n, full, query, per_query_us, tagged, per_filter_us


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--appends", type=int, default=1000, help="appends per contender per round")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--tags", type=int, default=100_000)
    ap.add_argument("--per-tag", type=int, default=10)
    ap.add_argument("--queries", type=int, default=5000, help="one-tag queries per round")
    args = ap.parse_args()
    dirpath = os.path.join(args.dir, "dcb")
    shutil.rmtree(dirpath, ignore_errors=True)
    os.makedirs(dirpath)

    runs = bench_appends(dirpath, args.appends, args.rounds)
    ratio = lambda a, b: med([x / y for x, y in zip(runs[a], runs[b])])  # noqa: E731
    print(f"(a, b) one event per append, durable, one-tag condition with after = the head read just "
          f"before; {args.appends} appends per contender per round, median of {args.rounds} rounds\n")
    print("| contender | ev/s | ratio | like for like |\n|---|---|---|---|")
    print(f"| cairn conditional append | {med(runs['cairn-cond']):,.0f} | **{ratio('cairn-cond', 'cairn-plain'):.2f}** "
          f"of unconditional (target >= 0.9) | same events, same store, `store.head()` + append |")
    print(f"| cairn unconditional append | {med(runs['cairn-plain']):,.0f} | 1.00 | the baseline |")
    print(f"| cairn conditional append, durability none | {med(runs['nosync-cond']):,.0f} | "
          f"{ratio('nosync-cond', 'nosync-plain'):.2f} of unconditional | the same, without the sync: "
          f"what the condition itself costs ({1e6 / med(runs['nosync-cond']) - 1e6 / med(runs['nosync-plain']):.1f} "
          f"us per append) |")
    print(f"| cairn unconditional append, durability none | {med(runs['nosync-plain']):,.0f} | 1.00 | its baseline |")
    print(f"| UmaDB conditional append (gRPC) | {med(runs['uma-cond']):,.0f} | {ratio('uma-cond', 'uma-plain'):.2f} "
          f"of its unconditional | same events; `client.head()` + append: two round trips |")
    print(f"| UmaDB unconditional append (gRPC) | {med(runs['uma-plain']):,.0f} | 1.00 | its baseline |")
    print(f"\ncairn conditional / UmaDB conditional: **{ratio('cairn-cond', 'uma-cond'):.2f}x** "
          f"(unconditional: {ratio('cairn-plain', 'uma-plain'):.2f}x); cairn in-process, UmaDB a "
          f"server on loopback, both syncing every append to the same disk")
    shutil.rmtree(dirpath, ignore_errors=True)
    os.makedirs(dirpath)

    n, full, query, per_query, tagged, per_filter = bench_query(dirpath, args.tags, args.per_tag,
                                                                args.queries, args.rounds)
    q_ratio = med([q / f for q, f in zip(query, full)])
    t_ratio = med([t / f for t, f in zip(tagged, full)])
    print(f"\n(c) store.query of one tag among {args.tags:,} ({args.per_tag} events each, {n:,} events), "
          f"{args.queries} random tags per round, median of {args.rounds} rounds\n")
    print("| read | ev/s | ratio | like for like |\n|---|---|---|---|")
    print(f"| store.query, one tag | {med(query):,.0f} ({med(per_query):.1f} us per query) | "
          f"**{q_ratio:.2f}** of a full read | a fresh Query per call, 10 RecordedEvents each |")
    print(f"| read_all(tags=[tag]), the same tags | {med(tagged):,.0f} ({med(per_filter):.1f} us per read) | "
          f"{t_ratio:.2f} of a full read | the filtered read's tag index, 10 RecordedEvents each |")
    print(f"| read_all, whole log | {med(full):,.0f} ({n / med(full):.2f} s) | 1.00 | {n:,} RecordedEvents |")
    print(f"\n(a query that scanned the log would score about {args.per_tag / n:.0e} of the full read)")
    shutil.rmtree(dirpath, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
