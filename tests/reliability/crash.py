#!/usr/bin/env python3
"""Crash harness for cairn: a writer process is killed with SIGKILL at random moments.

    python tests/reliability/crash.py --rounds N --seed S DIR

Each round starts a writer subprocess (this file with --child) on the store in DIR/store.
The writer performs a seeded random mix of operations -- single appends, multi-event
appends, multi-stream transactions, `execute` and `rollback` on the bank aggregate of
examples/account.lua, `run_projections`, and reset + rerun of a projection -- with durability "full" or "relaxed"
(alternating with the seed).  Before each operation it writes an *intent* line (the event
ids it is about to write), and after the call returns an *ack* line (what the store
answered) to an append-only log, with os.write + fsync, so nothing it wrote is lost when it is
killed.  The parent kills it with SIGKILL after a random delay, reopens the store and checks:

  * store.verify() passes and its report agrees with head() and the log;
  * positions 1..head are gapless, every stream's versions are 0..n gapless, and
    stream_version(), read_stream(), get(), streams() and the category / type / tag /
    stream filters of read_all() agree with the log;
  * every acknowledged event is present by id, at the acknowledged stream, version and
    position, with intact type, data, metadata and tags (cumulatively, over all rounds);
  * no phantom: every event in the log is acknowledged, emitted by a projection, or belongs
    to the single operation that was in flight when the writer was killed;
  * a multi-stream transaction is all or nothing (its events carry the transaction id);
  * every compensation written by a rollback compensates exactly one event, once;
  * the aggregates' states (load(), with snapshots) equal a fold of their stream in Python;
  * projections (also killed in the middle of a rebuild after reset(), which commits in
    batches of 1,000 events) equal a fresh rebuild: a twin with identical source under another name is
    defined, run and compared partition by partition; the emitting projection is reset and
    rerun, which must write nothing and reach the same state; every large withdrawal was
    emitted exactly once.

A summary line is printed at the end; the exit status is 1 on any violation.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "python"))

import cairn  # noqa: E402

with open(os.path.join(ROOT, "examples", "account.lua")) as _f:
    ACCOUNT_LUA = _f.read()

BALANCES_LUA = """
return {
  source = { categories = { "account" } },
  partition = function(e) return e.stream end,
  init = function() return { balance = 0, events = 0, last = 0 } end,
  apply = {
    Deposited = function(s, e) s.balance = s.balance + e.data.amount end,
    Withdrawn = function(s, e) s.balance = s.balance - e.data.amount end,
    ["*"] = function(s, e) s.events = s.events + 1; s.last = e.position end,
  },
}
"""

TOTALS_LUA = """
return {
  source = { types = { "Added" } },
  init = function() return { n = 0, sum = 0 } end,
  apply = {
    Added = function(s, e) s.n = s.n + 1; s.sum = s.sum + e.data.v end,
  },
}
"""

ALERT_MIN = 40
ALERTS_LUA = """
return {
  source = { types = { "Withdrawn" } },
  init = function() return { n = 0 } end,
  apply = {
    Withdrawn = function(s, e)
      if e.data.amount >= %d then
        s.n = s.n + 1
        emit("alerts-bank", "LargeWithdrawal", { account = e.stream, amount = e.data.amount },
             { causation_id = tostring(e.id) })
      end
    end,
  },
}
""" % ALERT_MIN

PROJECTIONS = {"balances": BALANCES_LUA, "totals": TOTALS_LUA, "alerts": ALERTS_LUA}
N_ACCOUNTS = 4
N_PLAIN = 5


# --------------------------------------------------------------------------------------------
# the writer (child process)

class AckLog:
    """Append-only JSON lines, each written with one os.write and fsynced."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, **rec):
        os.write(self.fd, (json.dumps(rec, separators=(",", ":")) + "\n").encode())
        os.fsync(self.fd)


def child_main(args):
    rng = random.Random(args.child_seed)
    log = AckLog(args.log)
    store = cairn.open(args.store, durability=args.durability)
    versions = {}

    def version(stream):
        if stream not in versions:
            versions[stream] = store.stream_version(stream)
        return versions[stream]

    accounts = [f"account-{k}" for k in range(N_ACCOUNTS)]
    for a in accounts:
        if version(a) == -1:
            log.write(kind="intent", op="execute", n=1)
            r = store.execute(a, "Open", {"owner": a}, expected_version=cairn.NO_STREAM)
            versions[a] = r.version
            log.write(kind="ack", op="execute", stream=a, command="Open", version=r.version,
                      position=r.position, first=r.first_position, corr=None)
    log.write(kind="ready")
    correlations = []
    seq = 0
    while True:
        seq += 1
        op = rng.choices(["append", "multi", "tx", "execute", "rollback", "project", "rebuild"],
                         weights=[25, 15, 15, 30, 7, 8, 3])[0]
        tag = f"r{args.round}-{seq}"
        if op in ("append", "multi"):
            stream = f"plain-{rng.randrange(N_PLAIN)}"
            n = 1 if op == "append" else rng.randint(2, 6)
            evs = [cairn.Event("Added", {"v": rng.randint(-1000, 1000), "tag": tag, "k": i,
                                         "pad": "x" * rng.randint(0, 300)},
                               metadata={"op": tag}, tags=[f"t{rng.randrange(3)}"])
                   for i in range(n)]
            recs = [_desc(stream, e) for e in evs]
            log.write(kind="intent", op=op, ids=[r["id"] for r in recs])
            r = store.append(stream, evs, expected_version=version(stream))
            versions[stream] = r.version
            log.write(kind="ack", op=op, events=recs, version=r.version, position=r.position,
                      first=r.first_position)
        elif op == "tx":
            txid = str(uuid.uuid4())
            k = rng.randint(2, 3)
            streams = rng.sample([f"order-{i}" for i in range(3)] + [f"stock-{i}" for i in range(3)],
                                 k)
            plan = []
            for s in streams:
                n = rng.randint(1, 3)
                evs = [cairn.Event("Moved", {"tx": txid, "i": i, "q": rng.randint(1, 99)},
                                   metadata={"tx": txid}, tags=["tx"]) for i in range(n)]
                plan.append((s, evs))
            allrecs = [[_desc(s, e) for e in evs] for s, evs in plan]
            log.write(kind="intent", op="tx", tx=txid, ids=[r["id"] for rs in allrecs for r in rs])
            with store.transaction() as tx:
                for s, evs in plan:
                    tx.append(s, evs, expected_version=version(s))
            for (s, _), r in zip(plan, tx.results):
                versions[s] = r.version
            log.write(kind="ack", op="tx", tx=txid,
                      parts=[{"events": recs, "version": r.version, "position": r.position,
                              "first": r.first_position}
                             for recs, r in zip(allrecs, tx.results)])
        elif op == "execute":
            a = rng.choice(accounts)
            command = rng.choice(["Deposit", "Deposit", "Withdraw"])
            amount = rng.randint(1, 80)
            corr = None
            if rng.random() < 0.5:
                corr = (rng.choice(correlations) if correlations and rng.random() < 0.4
                        else f"c-{tag}")
                if corr not in correlations:
                    correlations.append(corr)
            log.write(kind="intent", op="execute", n=1)
            try:
                r = store.execute(a, command, {"amount": amount},
                                  metadata={"correlation_id": corr} if corr else None)
            except cairn.CommandRejected:
                log.write(kind="ack", op="rejected")
                continue
            versions.pop(a, None)
            log.write(kind="ack", op="execute", stream=a, command=command, amount=amount,
                      version=r.version, position=r.position, first=r.first_position, corr=corr)
        elif op == "rollback":
            if not correlations:
                continue
            corr = correlations.pop(rng.randrange(len(correlations)))
            log.write(kind="intent", op="rollback", corr=corr)
            rs = store.rollback(corr)
            for a in accounts:
                versions.pop(a, None)
            log.write(kind="ack", op="rollback", corr=corr,
                      results=[[r.version, r.position] for r in rs])
        elif op == "rebuild":   # a reset projection catches up in many batches: kill in there
            name = rng.choice(sorted(PROJECTIONS))
            log.write(kind="intent", op="rebuild", name=name)
            store.projection(name).reset()
            n = store.run_projections(name)
            log.write(kind="ack", op="rebuild", n=n)
        else:
            log.write(kind="intent", op="project")
            n = store.run_projections()
            log.write(kind="ack", op="project", n=n)


def _desc(stream, e):
    return {"stream": stream, "id": str(e.id), "type": e.type, "data": e.data,
            "metadata": e.metadata, "tags": list(e.tags)}


# --------------------------------------------------------------------------------------------
# the parent: rounds and checks

class Violation(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Violation(msg)


class Model:
    """What the parent knows must be in the store, accumulated over rounds."""

    def __init__(self):
        self.events = {}     # id -> desc + expected position/version
        self.positions = {}  # position -> ("execute", stream, version, command, amount, corr)
        self.rollbacks = {}  # position -> corr
        self.txs = {}        # txid -> set of ids (acked or intended)
        self.acked_txs = set()
        self.verified = 0

    def read_log(self, path):
        """Applies the acks of one round; returns the last intent without an ack (or None)."""
        pending = None
        with open(path) as f:
            lines = f.read().split("\n")
        for i, line in enumerate(lines):
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                # SIGKILL can cut one write() short when the line crosses a page of the page
                # cache (a killable write stops between pages): only the file's last line,
                # without its newline, may be torn.  A torn intent is an operation that had
                # not started; a torn ack one that was not acknowledged: the intent before
                # it stays pending, as when the ack was never written.
                if i == len(lines) - 1:
                    break
                raise Violation(f"torn ack log line: {line[:80]!r}")
            if rec["kind"] == "intent":
                pending = rec
                if rec["op"] == "tx":
                    self.txs[rec["tx"]] = set(rec["ids"])
            elif rec["kind"] == "ack":
                pending = None
                self.apply_ack(rec)
        return pending

    def apply_ack(self, rec):
        op = rec["op"]
        if op in ("append", "multi"):
            self._acked_events(rec["events"], rec["first"], rec["version"])
        elif op == "tx":
            self.acked_txs.add(rec["tx"])
            for part in rec["parts"]:
                self._acked_events(part["events"], part["first"], part["version"])
        elif op == "execute":
            if rec["position"] is not None:
                self.positions[rec["position"]] = rec
        elif op == "rollback":
            for version, position in rec["results"]:
                self.rollbacks[position] = (rec["corr"], version)

    def _acked_events(self, recs, first, last_version):
        n = len(recs)
        for i, d in enumerate(recs):
            self.events[d["id"]] = dict(d, position=first + i, version=last_version - n + 1 + i)


def verify_store(store, model, pending):
    """Every check of one round; raises Violation."""
    report = store.verify()
    head = store.head()
    log = list(store.read_all())
    check(report.head == head, f"verify head {report.head} != head() {head}")
    check(report.events == len(log), f"verify events {report.events} != log {len(log)}")
    check([e.position for e in log] == list(range(1, head + 1)),
          f"positions not gapless 1..{head}")
    by_stream = {}
    by_id = {}
    for e in log:
        by_stream.setdefault(e.stream, []).append(e)
        check(str(e.id) not in by_id, f"duplicate id {e.id}")
        by_id[str(e.id)] = e
    check(report.streams == len(by_stream), f"verify streams {report.streams} != {len(by_stream)}")
    check(list(store.streams()) == sorted(by_stream, key=lambda s: s.encode()),
          "streams() differs from the log")
    # streams: gapless versions, index agreement
    for s, evs in by_stream.items():
        check([e.version for e in evs] == list(range(len(evs))), f"{s}: versions not gapless")
        check(store.stream_version(s) == len(evs) - 1, f"{s}: stream_version disagrees")
        check([e.position for e in store.read_stream(s)] == [e.position for e in evs],
              f"{s}: read_stream disagrees with the log")
        back = list(store.read_stream(s, backwards=True, limit=1))
        check(back and back[0].position == evs[-1].position, f"{s}: backwards read disagrees")
    # secondary indexes (posting lists) vs. a scan of the log
    for cat in ("account", "plain", "order", "stock", "alerts"):
        want = [e.position for e in log if e.stream.split("-", 1)[0] == cat]
        check([e.position for e in store.read_all(categories=cat)] == want,
              f"category index {cat} disagrees")
    for typ in ("Added", "Moved", "Deposited", "Withdrawn", "Opened", "LargeWithdrawal"):
        want = [e.position for e in log if e.type == typ]
        check([e.position for e in store.read_all(types=typ)] == want, f"type index {typ}")
    for tag in ("t0", "t1", "t2", "tx"):
        want = [e.position for e in log if tag in e.tags]
        check([e.position for e in store.read_all(tags=tag)] == want, f"tag index {tag}")
    for s in list(by_stream)[:3]:
        check([e.position for e in store.read_all(streams=s)]
              == [e.position for e in by_stream[s]], f"stream filter {s}")
    for p in random.Random(head).sample(range(1, head + 1), min(20, head)):
        g = store.get(p)
        check(g.id == log[p - 1].id and g.data == log[p - 1].data, f"get({p}) disagrees")

    # acknowledged events: present and intact
    for i, d in model.events.items():
        e = by_id.get(i)
        check(e is not None, f"acknowledged event {i} ({d['stream']}) lost")
        check((e.stream, e.position, e.version) == (d["stream"], d["position"], d["version"]),
              f"event {i}: at {(e.stream, e.position, e.version)}, acknowledged "
              f"{(d['stream'], d['position'], d['version'])}")
        check((e.type, e.data, e.metadata, list(e.tags))
              == (d["type"], d["data"], d["metadata"], d["tags"]), f"event {i}: content changed")
        model.verified += 1
    for p, rec in model.positions.items():
        check(p <= head, f"acknowledged execute at {p} lost (head {head})")
        e = log[p - 1]
        want_type = {"Open": "Opened", "Deposit": "Deposited", "Withdraw": "Withdrawn"}[rec["command"]]
        check((e.stream, e.version, e.type) == (rec["stream"], rec["version"], want_type),
              f"execute at {p}: {(e.stream, e.version, e.type)} != acknowledged {rec}")
        if rec.get("amount") is not None:
            check(e.data == {"amount": rec["amount"]}, f"execute at {p}: data {e.data}")
        check((e.metadata or {}).get("correlation_id") == rec["corr"], f"execute at {p}: metadata")
        model.verified += 1
    for p, (corr, version) in model.rollbacks.items():
        check(p <= head, f"acknowledged rollback event at {p} lost")
        e = log[p - 1]
        check(e.version == version and (e.metadata or {}).get("compensates")
              and e.metadata.get("correlation_id") == corr, f"rollback event at {p} wrong")
        model.verified += 1

    # transactions: all or nothing
    for txid, ids in model.txs.items():
        present = sum(1 for i in ids if i in by_id)
        check(present in (0, len(ids)), f"transaction {txid}: {present} of {len(ids)} events")
        if txid in model.acked_txs:
            check(present == len(ids), f"acknowledged transaction {txid} lost")
    for e in log:
        if e.type == "Moved":
            check(str(e.id) in model.txs.get((e.metadata or {}).get("tx"), ()),
                  f"transaction event {e.id} of an unknown transaction")

    # no phantoms: unacknowledged events come from projections or from the one in-flight op
    known = set(model.events) | {str(log[p - 1].id) for p in model.positions} \
        | {str(log[p - 1].id) for p in model.rollbacks}
    stray = [e for e in log if str(e.id) not in known and e.stream != "alerts-bank"]
    if stray:
        check(pending is not None, f"{len(stray)} unacknowledged events, nothing in flight")
        op = pending["op"]
        if op in ("append", "multi", "tx"):
            check({str(e.id) for e in stray} == set(pending["ids"]),
                  f"unacknowledged events differ from the in-flight {op}")
        elif op == "execute":
            check(len(stray) == 1 and stray[0].type in ("Opened", "Deposited", "Withdrawn"),
                  f"in-flight execute left {len(stray)} events")
        elif op == "rollback":
            check(all((e.metadata or {}).get("correlation_id") == pending["corr"]
                      and (e.metadata or {}).get("compensates") for e in stray),
                  "in-flight rollback left foreign events")
        else:
            raise Violation(f"in-flight {op} left {len(stray)} unacknowledged events")
        # adopt them: the op happened, later rounds must keep them
        for e in stray:
            if e.type in ("Added", "Moved"):
                model.events[str(e.id)] = {"stream": e.stream, "id": str(e.id), "type": e.type,
                                           "data": e.data, "metadata": e.metadata,
                                           "tags": list(e.tags), "position": e.position,
                                           "version": e.version}
            elif (e.metadata or {}).get("compensates"):
                model.rollbacks[e.position] = (e.metadata["correlation_id"], e.version)
            else:
                model.positions[e.position] = {
                    "stream": e.stream, "version": e.version,
                    "command": {"Opened": "Open", "Deposited": "Deposit",
                                "Withdrawn": "Withdraw"}[e.type],
                    "amount": (e.data or {}).get("amount") if e.type != "Opened" else None,
                    "corr": (e.metadata or {}).get("correlation_id")}
        if pending.get("op") == "tx" and stray:
            model.acked_txs.add(pending["tx"])

    # compensations: each compensates one existing event, exactly once
    comp = {}
    for e in log:
        c = (e.metadata or {}).get("compensates")
        if c:
            check(c not in comp, f"event {c} compensated twice (positions {comp.get(c)}, {e.position})")
            comp[c] = e.position
            orig = by_id.get(c)
            check(orig is not None and orig.position < e.position and orig.stream == e.stream,
                  f"compensation at {e.position} of unknown event {c}")
            check(e.type == {"Deposited": "Withdrawn", "Withdrawn": "Deposited"}[orig.type]
                  and e.data == orig.data, f"compensation at {e.position} is not the inverse")

    # aggregates (snapshots included) equal a fold in Python
    for k in range(N_ACCOUNTS):
        s = f"account-{k}"
        evs = by_stream.get(s, [])
        bal = sum(e.data["amount"] if e.type == "Deposited" else -e.data["amount"]
                  for e in evs if e.type in ("Deposited", "Withdrawn"))
        a = store.load(s)
        check(a.version == len(evs) - 1 and a.state["balance"] == bal
              and a.state["history"] == len(evs), f"{s}: load() state {a.state} != fold")

    # projections equal a fresh rebuild
    for _ in range(3):   # emitted events move the head past the batch: run until still
        store.run_projections()
        if all(store.projection(n).position == store.head() for n in PROJECTIONS):
            break
    for name in PROJECTIONS:
        p = store.projection(name)
        check(p.status == "ok", f"projection {name} faulted: {p.error}")
        check(p.position == store.head(), f"projection {name} not caught up")
    twin = f"balances_fresh_{head}"
    store.define_projection(twin, BALANCES_LUA)
    store.run_projections(twin)
    a, b = store.projection("balances"), store.projection(twin)
    parts = list(a.partitions())
    check(parts == list(b.partitions()), "balances partitions differ from a fresh rebuild")
    for part in parts:
        check(a.state(part) == b.state(part), f"balances[{part}] differs from a fresh rebuild")
    store.delete_projection(twin)
    twin = f"totals_fresh_{head}"
    store.define_projection(twin, TOTALS_LUA)
    store.run_projections(twin)
    check(store.projection("totals").state() == store.projection(twin).state(),
          "totals differs from a fresh rebuild")
    store.delete_projection(twin)
    # emitting projection: exactly once, and a reset + rerun writes nothing new
    head = store.head()
    alerts = store.projection("alerts")
    before = alerts.state()
    emitted = {}
    for e in store.read_all(streams="alerts-bank"):
        c = e.metadata["causation_id"]
        check(c not in emitted, f"alert for {c} emitted twice")
        emitted[c] = e
    large = [e for e in store.read_all(types="Withdrawn") if e.data["amount"] >= ALERT_MIN]
    check(set(emitted) == {str(e.id) for e in large},
          f"alerts: {len(emitted)} emitted for {len(large)} large withdrawals")
    check(before == {"n": len(large)}, f"alerts state {before} != {len(large)}")
    alerts.reset()
    store.run_projections("alerts")
    check(store.head() == head, "alerts rebuild emitted new events")
    check(alerts.state() == before, "alerts rebuild state differs")
    return head


def setup_store(path):
    with cairn.open(path, durability="full") as store:
        store.define_aggregate("account", ACCOUNT_LUA)
        for name, src in PROJECTIONS.items():
            store.define_projection(name, src)


def run(rounds, seed, workdir, durabilities=("full", "relaxed"), min_delay=0.05,
        max_delay=0.6, quiet=False, out=sys.stdout):
    """Runs the rounds; returns a dict of figures ('failures' is a list of messages)."""
    os.makedirs(workdir, exist_ok=True)
    store_path = os.path.join(workdir, "store")
    rng = random.Random(seed)
    if not os.path.exists(os.path.join(store_path, "data.mdb")):
        setup_store(store_path)
    model = Model()
    figures = {"rounds": 0, "kills": 0, "clean_exits": 0, "events_verified": 0, "head": 0,
               "acknowledged": 0,
               "failures": [], "in_flight": {}}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(ROOT, "python") + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.monotonic()
    for rnd in range(rounds):
        durability = durabilities[rnd % len(durabilities)]
        log_path = os.path.join(workdir, f"acks-{rnd}.jsonl")
        if os.path.exists(log_path):
            os.unlink(log_path)
        child = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--child", "--round", str(rnd),
             "--child-seed", str(rng.getrandbits(32)), "--durability", durability,
             "--log", log_path, store_path],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # wait until the writer is ready (or died), then let it run a random while
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and child.poll() is None:
            if os.path.exists(log_path) and b'"ready"' in open(log_path, "rb").read():
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(min_delay, max_delay))
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            figures["kills"] += 1
        child.wait()
        err = child.stderr.read().decode(errors="replace")
        child.stderr.close()
        if child.returncode != -signal.SIGKILL:
            figures["clean_exits"] += 1
            figures["failures"].append(f"round {rnd}: writer exited {child.returncode}: "
                                       f"{err.strip()[-500:]}")
            break
        try:
            pending = model.read_log(log_path)
            kind = pending["op"] if pending else "between"
            figures["in_flight"][kind] = figures["in_flight"].get(kind, 0) + 1
            with cairn.open(store_path, durability=durability) as store:
                figures["head"] = verify_store(store, model, pending)
        except Violation as v:
            figures["failures"].append(f"round {rnd} ({durability}): {v}")
            break
        except cairn.Error as e:
            figures["failures"].append(f"round {rnd} ({durability}): {type(e).__name__}: {e}")
            break
        figures["rounds"] += 1
        if not quiet:
            print(f"round {rnd:4d} {durability:8s} head {figures['head']:7d} "
                  f"killed during {kind}", file=out, flush=True)
    figures["events_verified"] = model.verified
    figures["acknowledged"] = len(model.events) + len(model.positions) + len(model.rollbacks)
    figures["seconds"] = round(time.monotonic() - t0, 1)
    return figures


def summary(f):
    inflight = ", ".join(f"{k} {v}" for k, v in sorted(f["in_flight"].items()))
    return (f"crash: rounds {f['rounds']}, kills {f['kills']}, acknowledged events "
            f"{f['acknowledged']}{'' if f['failures'] else ' all present'} (event checks {f['events_verified']}: every one "
            f"after every later kill), final head {f['head']}, failures {len(f['failures'])}, "
            f"{f['seconds']} s (killed during: {inflight})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", help="work directory (the store goes in DIR/store)")
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--durability", default="full,relaxed",
                    help="comma-separated durabilities, used in turn (default full,relaxed)")
    ap.add_argument("--max-delay", type=float, default=0.6)
    ap.add_argument("--quiet", action="store_true")
    # child mode
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--child-seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--log", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        args.store = args.dir
        args.durability = args.durability
        child_main(args)
        return 0
    f = run(args.rounds, args.seed, args.dir, tuple(args.durability.split(",")),
            max_delay=args.max_delay, quiet=args.quiet)
    for msg in f["failures"]:
        print("FAIL:", msg)
    print(summary(f))
    return 1 if f["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
