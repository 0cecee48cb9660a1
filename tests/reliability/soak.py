#!/usr/bin/env python3
"""Concurrency soak for cairn: several processes on one store for a fixed time.

    python tests/reliability/soak.py [--seconds N] [--seed S] DIR     (make soak; SOAK_SECONDS)

Processes, all on DIR/store:
  * writers (--writers, default 3): optimistic increments of shared counter streams
    (read stream_version, append with that expected version, retry on WrongExpectedVersion),
    plain appends to a stream of their own, and now and then a transaction touching a counter
    and their own stream; durability alternates full / relaxed / none between writers;
  * readers (--readers, default 2): incremental read_all checking positions are gapless and
    every stream's versions go up by one, read_stream of the counters checking versions
    0..n gapless and never shrinking, head() never going back;
  * subscribers: "all" (no filter: every position in order, once), "counters" (category
    filter), "durable" (named; closed and reopened gracefully every few seconds, and once
    killed with SIGKILL and restarted);
  * a victim writer, appending to a stream of its own with durability full, killed with
    SIGKILL three times and restarted (the others keep writing meanwhile);
  * a projection runner: `python -m cairn projections run --follow` (stopped with SIGTERM);
  * the parent: every --check-every seconds a read-only handle runs verify() and checks
    gapless positions, counter versions and projection status.

At the end: no lost update (each counter's final version + 1 == the increments its writers
saw succeed, and exactly their event ids are in the stream), no duplicate version, every
subscriber saw every matching event once in order (the durable one at least once, duplicates
only at the kill), projections equal a fresh rebuild, verify() passes.  Prints one summary
line; exit status 1 on any violation.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "python"))

import cairn  # noqa: E402

N_COUNTERS = 4
COUNTS_LUA = """
return {
  source = { categories = { "counter" } },
  partition = function(e) return e.stream end,
  init = function() return { n = 0, last = -1, writers = {} } end,
  apply = {
    Incremented = function(s, e)
      s.n = s.n + 1; s.last = e.version
      local w = tostring(e.data.w)
      s.writers[w] = (s.writers[w] or 0) + 1
    end,
  },
}
"""
TOTAL_LUA = """
return {
  init = function() return { events = 0, bytypes = {} } end,
  apply = {
    ["*"] = function(s, e)
      s.events = s.events + 1
      s.bytypes[e.type] = (s.bytypes[e.type] or 0) + 1
    end,
  },
}
"""
PROJECTIONS = {"counts": COUNTS_LUA, "total": TOTAL_LUA}


def _write_result(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def _stopped(d, what="stop"):
    return os.path.exists(os.path.join(d, what))


# --------------------------------------------------------------------------------------------
# roles (child processes)

def role_writer(a):
    rng = random.Random(a.seed)
    durability = ("full", "relaxed", "none")[a.id % 3]
    store = cairn.open(a.store, durability=durability)
    incs = {str(k): [] for k in range(N_COUNTERS)}   # counter -> [[id, version], ...]
    own = f"plain-w{a.id}"
    own_ids = []
    retries = txs = 0
    seq = 0
    while not _stopped(a.dir):
        seq += 1
        r = rng.random()
        if r < 0.6:
            k = str(rng.randrange(N_COUNTERS))
            s = f"counter-{k}"
            while True:
                v = store.stream_version(s)
                e = cairn.Event("Incremented", {"w": a.id, "n": seq, "prev": v})
                try:
                    res = store.append(s, [e], expected_version=v)
                except cairn.WrongExpectedVersion:
                    retries += 1
                    continue
                incs[k].append([str(e.id), res.version])
                break
        elif r < 0.9:
            evs = [cairn.Event("Noted", {"w": a.id, "n": seq, "i": i})
                   for i in range(rng.randint(1, 4))]
            store.append(own, evs, expected_version=len(own_ids) - 1)
            own_ids += [str(e.id) for e in evs]
        else:   # a transaction: one increment and one own event, atomically
            k = str(rng.randrange(N_COUNTERS))
            s = f"counter-{k}"
            while True:
                v = store.stream_version(s)
                e = cairn.Event("Incremented", {"w": a.id, "n": seq, "prev": v, "tx": True})
                n = cairn.Event("Noted", {"w": a.id, "n": seq, "tx": True})
                try:
                    with store.transaction() as tx:
                        tx.append(s, [e], expected_version=v)
                        tx.append(own, [n], expected_version=len(own_ids) - 1)
                except cairn.WrongExpectedVersion:
                    retries += 1
                    continue
                incs[k].append([str(e.id), tx.results[0].version])
                own_ids.append(str(n.id))
                txs += 1
                break
        time.sleep(rng.uniform(0, 0.006))
    store.close()
    _write_result(a.result, {"incs": incs, "own": own, "own_ids": own_ids, "retries": retries,
                             "txs": txs, "durability": durability})


def role_victim(a):
    """A writer that the parent kills with SIGKILL a few times (often while it holds the
    write lock: durability full syncs inside it); others must go on, nothing it was told
    is written may be lost.  Intent before the call, ack after, each one os.write."""
    rng = random.Random(a.seed)
    store = cairn.open(a.store, durability="full")
    fd = os.open(a.result + ".log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    v = store.stream_version("victim")
    while not _stopped(a.dir):
        evs = [cairn.Event("Noted", {"i": i}) for i in range(rng.randint(1, 3))]
        ids = [str(e.id) for e in evs]
        os.write(fd, ("I " + " ".join(ids) + "\n").encode())
        v = store.append("victim", evs, expected_version=v).version
        os.write(fd, ("A " + " ".join(ids) + "\n").encode())
        time.sleep(rng.uniform(0, 0.01))
    store.close()
    _write_result(a.result, {})


def role_reader(a):
    rng = random.Random(a.seed)
    store = cairn.open(a.store, readonly=True)
    errors, checks = [], 0
    last_pos, last_head = 0, 0
    stream_ver = {}
    counter_len = {}
    while not _stopped(a.dir):
        h = store.head()
        if h < last_head:
            errors.append(f"head went back {last_head} -> {h}")
        last_head = h
        for e in store.read_all(start=last_pos + 1, limit=2000):
            if e.position != last_pos + 1:
                errors.append(f"read_all: position {e.position} after {last_pos}")
            last_pos = e.position
            want = stream_ver.get(e.stream, -1) + 1
            if e.version != want:
                errors.append(f"{e.stream}: version {e.version} where {want} expected")
            stream_ver[e.stream] = e.version
            checks += 1
        s = f"counter-{rng.randrange(N_COUNTERS)}"
        vs = [e.version for e in store.read_stream(s)]
        if vs != list(range(len(vs))):
            errors.append(f"{s}: versions not gapless")
        if len(vs) < counter_len.get(s, 0):
            errors.append(f"{s}: shrank")
        counter_len[s] = len(vs)
        checks += 1
        if len(errors) > 20:
            break
        time.sleep(0.05)
    store.close()
    _write_result(a.result, {"errors": errors, "checks": checks, "last": last_pos})


def role_subscriber(a):
    store = cairn.open(a.store, durability="relaxed")
    kind = a.kind
    log_fd = os.open(a.result + ".log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    errors = []
    seen = 0
    last = 0
    restarts = 0

    def open_sub():
        if kind == "all":
            return store.subscribe(start=1, timeout=0.5)
        if kind == "counters":
            return store.subscribe(start=1, timeout=0.5, categories="counter")
        return store.subscribe(name="soak-durable", timeout=0.5,
                               categories=["counter", "plain"])

    sub = open_sub()
    t_reopen = time.monotonic() + 3
    while True:
        got = False
        for e in sub:
            got = True
            if kind == "all" and e.position != last + 1:
                errors.append(f"all: {e.position} after {last}")
            elif kind != "all" and e.position <= last and kind != "durable":
                errors.append(f"{kind}: {e.position} after {last}")
            last = e.position
            seen += 1
            if kind != "all":
                os.write(log_fd, b"%d\n" % e.position)
            if kind == "durable" and time.monotonic() > t_reopen:
                sub.close()        # graceful: the checkpoint covers this event
                os.write(log_fd, b"R\n")
                restarts += 1
                sub = open_sub()
                t_reopen = time.monotonic() + 3
                break
            if len(errors) > 20:
                break
        if not got and _stopped(a.dir, "final"):
            break
        if len(errors) > 20:
            break
    sub.close()
    store.close()
    _write_result(a.result, {"errors": errors, "seen": seen, "last": last,
                             "graceful_restarts": restarts})


# --------------------------------------------------------------------------------------------
# the parent

class Violation(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Violation(msg)


def periodic_check(path, state):
    with cairn.open(path, readonly=True) as store:
        report = store.verify()
        pos = state.get("pos", 0)
        for e in store.read_all(start=pos + 1):
            check(e.position == pos + 1, f"periodic: position {e.position} after {pos}")
            pos = e.position
        state["pos"] = pos
        check(report.head <= store.head(), "periodic: verify head ahead of head()")
        for k in range(N_COUNTERS):
            s = f"counter-{k}"
            vs = [e.version for e in store.read_stream(s)]
            check(vs == list(range(len(vs))), f"periodic: {s} versions not gapless")
        for n in PROJECTIONS:
            p = store.projection(n)
            check(p.status == "ok", f"periodic: projection {n} faulted: {p.error}")
            check(p.position <= store.head(), f"periodic: projection {n} ahead of head")
        state["checks"] = state.get("checks", 0) + 1
        state["verified_events"] = report.events


def durable_check(log_path, expected):
    """The named subscription's deliveries: in order, every expected position, duplicates only
    right after the kill (at most the one event in hand)."""
    segments = [[]]
    with open(log_path) as f:
        for line in f:
            line = line.strip()
            if line == "R":
                segments.append([])
            elif line == "K":
                segments.append(["K"])
            elif line:
                segments[-1].append(int(line))
    merged, dups = [], 0
    for seg in segments:
        killed = bool(seg) and seg[0] == "K"
        seg = [p for p in seg if p != "K"]
        check(all(x < y for x, y in zip(seg, seg[1:])), "durable: out of order in a segment")
        if merged and seg:
            overlap = sum(1 for p in seg if p <= merged[-1])
            check(overlap == 0 or (killed and overlap <= 1),
                  f"durable: {overlap} duplicates after a {'kill' if killed else 'close'}")
            dups += overlap
            seg = seg[overlap:]
        merged += seg
    check(merged == expected, f"durable: delivered {len(merged)} distinct positions, "
          f"expected {len(expected)} (first difference at "
          f"{next((i for i, (x, y) in enumerate(zip(merged, expected)) if x != y), None)})")
    return dups


def run(seconds, seed, workdir, writers=3, readers=2, check_every=10.0, out=sys.stdout):
    if os.path.exists(workdir):   # always a fresh store: the final counts assume it
        shutil.rmtree(workdir)
    os.makedirs(workdir)
    path = os.path.join(workdir, "store")
    with cairn.open(path) as store:
        for n, src in PROJECTIONS.items():
            store.define_projection(n, src)
    rng = random.Random(seed)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(ROOT, "python") + os.pathsep + env.get("PYTHONPATH", "")
    me = os.path.abspath(__file__)
    procs = {}

    def spawn(name, role, **kw):
        args = [sys.executable, me, "--role", role, "--dir", workdir, "--result",
                os.path.join(workdir, name + ".json"), "--seed", str(rng.getrandbits(32)), path]
        for k, v in kw.items():
            args[-1:-1] = [f"--{k}", str(v)]
        procs[name] = subprocess.Popen(args, env=env)

    for i in range(writers):
        spawn(f"writer{i}", "writer", id=i)
    for i in range(readers):
        spawn(f"reader{i}", "reader", id=i)
    for kind in ("all", "counters", "durable"):
        spawn(f"sub-{kind}", "subscriber", kind=kind)
    spawn("victim", "victim")
    runner = subprocess.Popen([sys.executable, "-m", "cairn", "projections", "run", "--follow",
                               "--quiet", path], env=env, stdout=subprocess.DEVNULL)
    t0 = time.monotonic()
    end = t0 + seconds
    kill_at = t0 + seconds * rng.uniform(0.3, 0.6)
    killed = False
    victim_kills = [t0 + seconds * f for f in sorted(rng.uniform(0.1, 0.9) for _ in range(3))]
    state = {}
    failures = []
    next_check = t0 + min(check_every, seconds / 3)
    try:
        while time.monotonic() < end:
            time.sleep(0.2)
            for name, p in procs.items():
                if p.poll() is not None:
                    raise Violation(f"{name} exited early ({p.returncode})")
            if runner.poll() is not None:
                raise Violation(f"projection runner exited early ({runner.returncode})")
            if not killed and time.monotonic() > kill_at:
                procs["sub-durable"].send_signal(signal.SIGKILL)
                procs["sub-durable"].wait()
                with open(os.path.join(workdir, "sub-durable.json.log"), "a") as f:
                    f.write("K\n")
                spawn("sub-durable", "subscriber", kind="durable")
                killed = True
            if victim_kills and time.monotonic() > victim_kills[0]:
                victim_kills.pop(0)
                procs["victim"].send_signal(signal.SIGKILL)
                procs["victim"].wait()
                spawn("victim", "victim")
                state["victim_kills"] = state.get("victim_kills", 0) + 1
            if time.monotonic() > next_check:
                periodic_check(path, state)
                next_check = time.monotonic() + check_every
                print(f"soak: {time.monotonic() - t0:5.0f} s, head {state['pos']}, "
                      f"checks {state['checks']}", file=out, flush=True)
        open(os.path.join(workdir, "stop"), "w").close()
        for name, p in procs.items():
            if name.startswith(("writer", "reader")):
                check(p.wait(60) == 0, f"{name} failed ({p.returncode})")
        runner.send_signal(signal.SIGTERM)
        check(runner.wait(60) == 0, f"projection runner failed ({runner.returncode})")
        open(os.path.join(workdir, "final"), "w").close()
        for name, p in procs.items():
            check(p.wait(60) == 0, f"{name} failed ({p.returncode})")
        figures = final_checks(path, workdir, writers, readers)
        figures["periodic_checks"] = state.get("checks", 0)
        figures["killed_durable"] = killed
        figures["victim_kills"] = state.get("victim_kills", 0)
    except (Violation, cairn.Error, subprocess.TimeoutExpired) as e:
        failures.append(f"{type(e).__name__}: {e}")
        figures = {}
    finally:
        for p in list(procs.values()) + [runner]:
            if p.poll() is None:
                p.kill()
                p.wait()
    figures["failures"] = failures
    figures["seconds"] = round(time.monotonic() - t0, 1)
    return figures


def final_checks(path, workdir, writers, readers):
    res = lambda name: json.load(open(os.path.join(workdir, name + ".json")))  # noqa: E731
    fig = {}
    with cairn.open(path) as store:
        report = store.verify()
        head = store.head()
        log = list(store.read_all())
        check([e.position for e in log] == list(range(1, head + 1)), "positions not gapless")
        check(report.events == head, "verify count differs from the log")
        by_id = {str(e.id): e for e in log}
        check(len(by_id) == len(log), "duplicate event ids")
        # counters: no lost update, no duplicate version
        incs = {k: [] for k in range(N_COUNTERS)}
        retries = txs = 0
        for i in range(writers):
            w = res(f"writer{i}")
            retries += w["retries"]
            txs += w["txs"]
            for k, lst in w["incs"].items():
                incs[int(k)] += lst
            evs = list(store.read_stream(w["own"]))
            check([str(e.id) for e in evs] == w["own_ids"], f"{w['own']}: lost or extra events")
        total_incs = 0
        for k in range(N_COUNTERS):
            s = f"counter-{k}"
            evs = list(store.read_stream(s))
            check([e.version for e in evs] == list(range(len(evs))), f"{s}: versions")
            check(all(e.data["prev"] == e.version - 1 for e in evs),
                  f"{s}: an increment was written on a stale version")
            check(store.stream_version(s) + 1 == len(incs[k]),
                  f"{s}: lost update: version {store.stream_version(s)}, "
                  f"{len(incs[k])} successful increments")
            check(sorted((e[1], e[0]) for e in incs[k])
                  == [(e.version, str(e.id)) for e in evs],
                  f"{s}: acknowledged increments differ from the stream")
            total_incs += len(incs[k])
        fig.update(head=head, increments=total_incs, retries=retries, transactions=txs)
        # the killed writer: acknowledged appends present, others only whole in-flight calls
        intents, acked = [], set()
        with open(os.path.join(workdir, "victim.json.log")) as f:
            for line in f:
                kind, *ids = line.split()
                if kind == "I":
                    intents.append(ids)
                elif kind == "A":
                    acked.add(tuple(ids))
        evs = list(store.read_stream("victim"))
        check([e.version for e in evs] == list(range(len(evs))), "victim: versions")
        present = [str(e.id) for e in evs]
        present_set = set(present)
        calls = [ids for ids in intents if ids[0] in present_set]
        check([i for ids in calls for i in ids] == present,
              "victim: the stream is not a sequence of whole calls")
        lost = [ids for ids in intents if tuple(ids) in acked and ids[0] not in present_set]
        check(not lost, f"victim: {len(lost)} acknowledged appends lost")
        fig["victim_events"] = len(present)
        fig["victim_unacked_written"] = sum(1 for ids in calls if tuple(ids) not in acked)
        # readers
        rchecks = 0
        for i in range(readers):
            r = res(f"reader{i}")
            check(not r["errors"], f"reader{i}: {r['errors'][:3]}")
            rchecks += r["checks"]
        fig["reader_checks"] = rchecks
        # subscribers
        a = res("sub-all")
        check(not a["errors"], f"sub-all: {a['errors'][:3]}")
        check(a["seen"] == head and a["last"] == head, f"sub-all saw {a['seen']} of {head}")
        c = res("sub-counters")
        check(not c["errors"], f"sub-counters: {c['errors'][:3]}")
        want = [e.position for e in log if e.stream.startswith("counter-")]
        got = [int(x) for x in open(os.path.join(workdir, "sub-counters.json.log")).read().split()]
        check(got == want, f"sub-counters: {len(got)} deliveries, {len(want)} expected")
        want = [e.position for e in log if e.stream.startswith(("counter-", "plain-"))]
        dups = durable_check(os.path.join(workdir, "sub-durable.json.log"), want)
        check(store.checkpoint("soak-durable") == want[-1], "durable checkpoint not at the end")
        d = res("sub-durable")
        fig.update(subscriber_events=a["seen"] + len(got) + len(want), durable_dups=dups,
                   durable_graceful_restarts=d["graceful_restarts"])
        # projections equal a fresh rebuild
        for _ in range(3):
            store.run_projections()
        counts = store.projection("counts")
        for k in range(N_COUNTERS):
            st = counts.state(f"counter-{k}")
            check(st["n"] == len(incs[k]),
                  f"counts[counter-{k}] = {st['n']}, {len(incs[k])} increments")
            check(st["last"] == store.stream_version(f"counter-{k}"), "counts: last version")
        for n, src in PROJECTIONS.items():
            twin = f"{n}_fresh"
            store.define_projection(twin, src)
            store.run_projections(twin)
            p, q = store.projection(n), store.projection(twin)
            check(p.status == q.status == "ok", f"{n}: {p.error or q.error}")
            check(list(p.partitions()) == list(q.partitions()), f"{n}: partitions differ")
            check(p.state() == q.state(), f"{n}: state differs from a fresh rebuild")
            for part in p.partitions():
                check(p.state(part) == q.state(part), f"{n}[{part}] differs from a fresh rebuild")
            store.delete_projection(twin)
        check(store.projection("total").state()["events"] == head, "total: events != head")
    return fig


def summary(f):
    if f["failures"]:
        return f"soak: FAILED after {f['seconds']} s: {f['failures'][0]}"
    return (f"soak: {f['seconds']} s, head {f['head']}, increments {f['increments']} "
            f"(retries {f['retries']}, in transactions {f['transactions']}), lost updates 0, "
            f"duplicate versions 0, reader checks {f['reader_checks']}, subscriber deliveries "
            f"{f['subscriber_events']} (durable: killed once, {f['durable_dups']} redelivered, "
            f"{f['durable_graceful_restarts']} graceful reopenings), writer killed "
            f"{f['victim_kills']} times ({f['victim_events']} events, none lost, "
            f"{f['victim_unacked_written']} written but unacknowledged), periodic checks "
            f"{f['periodic_checks']}, projections = fresh rebuild, verify ok, failures 0")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("store_or_dir")
    ap.add_argument("--seconds", type=float,
                    default=float(os.environ.get("SOAK_SECONDS", "150")))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--writers", type=int, default=3)
    ap.add_argument("--readers", type=int, default=2)
    ap.add_argument("--check-every", type=float, default=10.0)
    ap.add_argument("--role", help=argparse.SUPPRESS)
    ap.add_argument("--id", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--kind", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.role:
        a.store = a.store_or_dir
        {"writer": role_writer, "reader": role_reader, "subscriber": role_subscriber,
     "victim": role_victim}[a.role](a)
        return 0
    f = run(a.seconds, a.seed, a.store_or_dir, a.writers, a.readers, a.check_every)
    print(summary(f))
    return 1 if f["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
