#!/usr/bin/env python3
"""Hostile scripts and damaged files at realistic limits: the long versions of issue 10's checks.

    python tests/reliability/hostile.py [--only NAME,...] [--json FILE] DIR    (make hostile, soak)

The cheap versions run in `make test` with small limits (tests/python/test_truncation.py,
test_time_limit.py, test_script_bounds.py, test_lockfile.py); these use the default limits
(script_time_limit 1 s, 10,000,000 instructions, 64 MiB) and more of everything.  Each check
works in a directory of its own under DIR and prints one summary line; a last line sums up;
the exit status is 1 on any violation.  Progress goes to stderr, and only on a terminal.

  truncation  a store of several thousand pages (big and small events, tags, a projection, an
              aggregate with snapshots, named subscriptions) is copied once and the copy cut
              down in place (os.truncate) to every smaller page boundary; at each size a child
              process opens it read-write and read-only.  Every open must raise CorruptionError
              and leave the file's size alone, or give the whole store (verify() passes, the
              head is the original's).  A child that dies is a failure (restarted, counted).
  bombs       time bombs inside `execute` (the writer lock held): string.rep of nothing
              2^63 and 2^50 times (in a loop: one call returns at once now), == and < on
              16 MiB strings, plain find and utf8.len over 30 MiB, table.insert(t, 1, x) on a
              million elements, table.sort of 1 MiB strings, and a decider returning the
              shared-subtree table below as event data (encoded after the handler returned).
              Each runs twice: at the default limits (whichever limit stops it) and with the
              instruction limit out of the way (10^15: the 1 s time limit must stop it).  Each
              must end in ScriptError naming that limit within --bomb-bound s, write nothing,
              and a second process's plain append issued while it runs must return within
              --wait-bound s (the wait is measured and reported).
  memory      JSON of a shared subtree (2^40 values from 41 tables) through json.encode,
              event data, reject details, aggregate state, projection state and emit, and an
              emit flood (8 MiB emitted 200 times): each in a fresh child process at the
              default limits must end in ScriptError (a faulted projection) naming a limit,
              within --bomb-bound s, write nothing, and grow the child's peak RSS (VmHWM)
              by less than the 64 MiB cap plus --rss-margin MiB.
  reader      a child looping verify() is SIGKILLed --kills times while this process keeps
              the store open and commits; after each kill (and 200 commits), data.mdb grows
              by less than 2 MiB over the next 1,000 single-event commits.
  lockfile    lock.mdb is deleted --deletions times while writers run: one long-lived writer
              (durability full) and a new writer after each deletion, each reopening the store
              when a write is refused with OSError naming lock.mdb, each printing every
              acknowledged append; afterwards every acknowledged append is in the store, the
              head is exactly their number + 1, and verify() passes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import select
import shutil
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "python"))

import cairn  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
from redteam import DAG, LIBRARY_BOMBS  # noqa: E402

ME = os.path.abspath(__file__)
PAGE = resource.getpagesize()   # LMDB's page size: the OS page size
MiB = 1 << 20
MEMORY_CAP = 64 * MiB           # cairn.open's default script_memory_limit


class Violation(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Violation(msg)


def progress(msg):
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K" + msg)
        sys.stderr.flush()


def progress_done():
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()


def child_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(ROOT, "python") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def spawn(role, *args, stdin=None, stdout=subprocess.PIPE):
    """This file in a child process, as `role` (its stdout a text pipe of JSON lines)."""
    return subprocess.Popen([sys.executable, ME, "--role", role, *map(str, args), "-"],
                            stdin=stdin, stdout=stdout, text=True, env=child_env())


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def readline(proc, timeout):
    """One line of a child's stdout, or None at EOF or after timeout s."""
    r, _, _ = select.select([proc.stdout], [], [], timeout)
    if not r:
        return None
    line = proc.stdout.readline()
    return line or None


def ended(proc):
    if proc.poll() is None:
        proc.kill()
    return proc.wait()


def peak_rss_kib(reset=False):
    """This process's peak RSS (VmHWM), KiB; reset=True first sets it to the current RSS.
    Not getrusage's ru_maxrss: a child starts with its parent's peak at fork (the kernel keeps
    it across exec), which would hide the child's own growth behind the parent's size."""
    if reset:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# --------------------------------------------------------------------------------------------
# 1. truncation at scale

AGG_LUA = """
return {
  init = function() return { n = 0, sum = 0, pad = '' } end,
  apply = { Added = function(s, e) s.n = s.n + 1; s.sum = s.sum + e.data.v
                                   s.pad = string.rep('s', e.data.v % 300) end },
  decide = { Add = function(s, c) return { { type = 'Added', data = { v = c.data.v },
                                             tags = { 'agg' } } } end },
  snapshot_every = 10,
}
"""
PROJ_LUA = """
return {
  partition = function(e) return e.stream end,
  init = function() return { n = 0, bytes = 0 } end,
  apply = { ["*"] = function(s, e) s.n = s.n + 1; s.bytes = s.bytes + #e.type end },
}
"""


def build_store(path, rng, target_bytes):
    """A store of about target_bytes: small tagged events in transactions, big ones (overflow
    pages), aggregate commands with snapshots, a partitioned projection, named subscriptions."""
    with cairn.open(path, durability="none") as store:
        store.define_aggregate("acct", AGG_LUA)
        store.define_projection("byStream", PROJ_LUA)
        size = lambda: os.path.getsize(os.path.join(path, "data.mdb"))  # noqa: E731
        round_ = 0
        while size() < target_bytes:
            round_ += 1
            with store.transaction() as tx:
                for k in range(20):
                    evs = [cairn.Event("Small", {"k": k, "r": round_,
                                                 "pad": "p" * rng.randrange(400)},
                                       metadata={"round": round_},
                                       tags=[f"t{rng.randrange(10)}", f"r{round_ % 7}"])
                           for _ in range(rng.randint(1, 5))]
                    tx.append(f"small-{rng.randrange(200)}", evs)
            store.append(f"big-{rng.randrange(20)}",
                         [cairn.Event("Big", rng.randbytes(rng.randint(8 << 10, 200 << 10)),
                                      tags=["big"])])
            for _ in range(10):
                store.execute(f"acct-{rng.randrange(30)}", "Add", {"v": rng.randrange(1000)})
            if round_ % 10 == 0:
                store.run_projections()
                for n in range(3):
                    sub = store.subscribe(name=f"sub{n}", timeout=0, categories=["small", "acct"])
                    for i, _e in enumerate(sub):
                        if i >= 200:
                            break
                    sub.close()
        store.run_projections()
        head = store.head()
        store.verify()
        return head, round_


def role_opener(a):
    """Reads "rw" / "ro" lines; opens the store so, verifies it when the open succeeds."""
    for line in sys.stdin:
        mode = line.strip()
        t0 = time.monotonic()
        try:
            with cairn.open(a.path, readonly=(mode == "ro"), durability="none") as s:
                rep = s.verify()
                reply({"ok": True, "head": s.head(), "events": rep.events,
                       "s": time.monotonic() - t0})
        except Exception as e:  # every kind is reported; the parent judges
            reply({"ok": False, "err": type(e).__name__, "msg": str(e)[:200],
                   "s": time.monotonic() - t0})


def check_truncation(a, work):
    rng = random.Random(a.seed)
    orig = os.path.join(work, "orig")
    t0 = time.monotonic()
    progress("truncation: building the store")
    head, rounds = build_store(orig, rng, a.truncation_mb * MiB)
    built_s = time.monotonic() - t0
    cut = os.path.join(work, "cut")
    os.makedirs(cut)
    shutil.copyfile(os.path.join(orig, "data.mdb"), os.path.join(cut, "data.mdb"))
    data = os.path.join(cut, "data.mdb")
    full = os.path.getsize(data)
    check(full % PAGE == 0, f"data.mdb is {full} bytes, not whole pages of {PAGE}")
    pages = full // PAGE
    fig = {"pages": pages, "mb": round(full / MiB, 1), "events": head, "crashes": 0,
           "corrupt": 0, "whole": 0, "opens": 0, "bad": [], "slowest": 0.0,
           "build_s": round(built_s, 1)}
    child = [None]

    def opener():
        if child[0] is None or child[0].poll() is not None:
            child[0] = spawn("opener", "--path", cut, stdin=subprocess.PIPE)
        return child[0]

    def open_at(size, mode):
        p = opener()
        p.stdin.write(mode + "\n")
        p.stdin.flush()
        line = readline(p, 120)
        fig["opens"] += 1
        if line is None:
            hung = p.poll() is None
            rc = ended(p)
            fig["crashes"] += 1
            fig["bad"].append(f"{size} B {mode}: no answer in 120 s (killed)" if hung
                              else f"{size} B {mode}: the child died ({rc})")
            return
        r = json.loads(line)
        fig["slowest"] = max(fig["slowest"], r["s"])
        now = os.path.getsize(data)
        if now != size and (mode == "ro" or not r["ok"]):
            fig["bad"].append(f"{size} B {mode}: the open changed the file's size to {now}")
        if r["ok"]:
            if r["head"] == head and r["events"] == head:
                fig["whole"] += 1
            else:
                fig["bad"].append(f"{size} B {mode}: opened with head {r['head']} "
                                  f"({r['events']} verified), the store has {head}")
        elif r["err"] == "CorruptionError":
            fig["corrupt"] += 1
        else:
            fig["bad"].append(f"{size} B {mode}: {r['err']}: {r['msg']}")

    try:
        # the whole file first: it must open (and an open that writes may not change it)
        for mode in ("ro", "rw"):
            open_at(full, mode)
        full = os.path.getsize(data)
        for n in range(full // PAGE - 1, -1, -1):
            size = n * PAGE
            os.truncate(data, size)
            for mode in ("ro", "rw"):   # rw last: a whole store may be written at open
                open_at(size, mode)
            if n % 50 == 0:
                progress(f"truncation: {n} of {pages} pages left, {fig['corrupt']} "
                         f"CorruptionError, {len(fig['bad'])} bad")
    finally:
        if child[0] is not None and child[0].poll() is None:
            child[0].stdin.close()
            child[0].wait(30)
    progress_done()
    with cairn.open(orig, readonly=True) as s:   # the original was never touched
        check(s.verify().events == head, "the original store no longer verifies")
    fig["seconds"] = round(time.monotonic() - t0, 1)
    fig["slowest"] = round(fig["slowest"], 3)
    failures = fig["bad"]
    line = (f"truncation: {fig['mb']} MiB store ({pages} pages of {PAGE} B, {head} events in "
            f"{rounds} rounds, built in {fig['build_s']} s) cut to each of {full // PAGE} page "
            f"boundaries below its size: {fig['opens']} opens (ro, rw; the uncut file's 2 "
            f"included), {fig['corrupt']} CorruptionError, {fig['whole'] - 2} whole after a "
            f"cut, {fig['crashes']} child crashes, {len(failures)} bad; slowest open "
            f"{fig['slowest']} s; {fig['seconds']} s")
    return line, failures


# --------------------------------------------------------------------------------------------
# 2. time bombs inside execute

# the library bombs of tests/python/redteam.py but upper, and two of its own
BOMBS = {
    "rep_nothing_2^63": "while true do local _ = string.rep('', math.maxinteger) end",
    "rep_nothing_sep_2^50": "while true do local _ = string.rep('', 1 << 50, '') end",
    **{name: src for name, src in LIBRARY_BOMBS.items() if name != "upper_30mib"},
    # the decider's event data is encoded after the handler has returned
    "dag_event_data": DAG + "; return t",
}


def bomb_source(body):
    return ("return { decide = { Run = function(s, cmd)\n  local v = (function()\n" + body +
            "\n  end)()\n  return { { type = 'Result', data = { v = v } } }\nend } }\n")


def role_appender(a):
    """Reads "go DELAY" lines: sleeps DELAY, then one plain append (default options), timed."""
    with cairn.open(a.path, durability="none") as s:
        reply({"ready": True})
        for line in sys.stdin:
            delay = float(line.split()[1])
            time.sleep(delay)
            t0 = time.monotonic()
            r = s.append("other-1", [cairn.Event("Other", {"t": t0})])
            t1 = time.monotonic()
            reply({"start": t0, "end": t1, "position": r.position})


def check_bombs(a, work):
    path = os.path.join(work, "store")
    rows, failures = [], []
    t_all = time.monotonic()
    # the appender opens first: its start-up (importing cairn) is not part of any wait
    with cairn.open(path, durability="none") as s:
        s.append("seed-1", [cairn.Event("Seed")])
    app = spawn("appender", "--path", path, stdin=subprocess.PIPE)
    try:
        line = readline(app, 60)
        check(line is not None and json.loads(line).get("ready"), "the appender did not start")
        runs = [(name, "default", {}) for name in BOMBS]
        runs += [(name, "time", {"script_instruction_limit": 10**15}) for name in BOMBS]
        for i, (name, kind, opts) in enumerate(runs):
            progress(f"bombs: {i + 1}/{len(runs)} {name} ({kind})")
            with cairn.open(path, durability="none", **opts) as s:
                s.define_aggregate("bomb", bomb_source(BOMBS[name]))
                head = s.head()
                app.stdin.write(f"go {a.bomb_delay}\n")
                app.stdin.flush()
                t0 = time.monotonic()
                err = None
                try:
                    s.execute("bomb-1", "Run")
                except cairn.ScriptError as e:
                    err = str(e)
                t1 = time.monotonic()
                line = readline(app, 60)
                check(line is not None, f"{name}: the appender gave no answer")
                w = json.loads(line)
                wait = w["end"] - w["start"]
                row = {"bomb": name, "kind": kind, "seconds": round(t1 - t0, 2),
                       "wait": round(wait, 2), "overlap": w["start"] < t1,
                       "limit": ("time" if err and "time limit exceeded" in err else
                                 "instructions" if err and "instruction limit exceeded" in err
                                 else "memory" if err and "memory limit exceeded" in err
                                 else None)}
                rows.append(row)
                what = name + (" at the default limits" if kind == "default"
                               else " with the instruction limit off")
                if err is None:
                    failures.append(f"{what}: execute returned, no ScriptError")
                elif row["limit"] is None:
                    failures.append(f"{what}: ScriptError names no limit: {err[:120]}")
                elif kind == "time" and row["limit"] != "time":
                    failures.append(f"{what}: stopped by the {row['limit']} limit, not time")
                if row["seconds"] >= a.bomb_bound:
                    failures.append(f"{what}: ran {row['seconds']} s (bound {a.bomb_bound})")
                if wait >= a.wait_bound:
                    failures.append(f"{what}: the other process's append waited {wait:.2f} s")
                if s.stream_version("bomb-1") != -1 or s.head() != head + 1:
                    failures.append(f"{what}: wrote something (head {head} -> {s.head()}, "
                                    f"bomb-1 at version {s.stream_version('bomb-1')})")
                last = s.get(s.head())
                if last.stream != "other-1" or last.position != w["position"]:
                    failures.append(f"{what}: the last event is not the other process's")
        with cairn.open(path) as s:
            s.verify()
    finally:
        if app.poll() is None:
            app.stdin.close()
            app.wait(30)
    progress_done()
    by = {}
    for r in rows:
        by.setdefault(r["kind"], []).append(r)
    parts = []
    for kind in ("default", "time"):
        rs = by.get(kind, [])
        if not rs:
            continue
        slow = max(rs, key=lambda r: r["seconds"])
        waits = max(rs, key=lambda r: r["wait"])
        limits = {}
        for r in rs:
            limits[r["limit"]] = limits.get(r["limit"], 0) + 1
        parts.append(("at the default limits" if kind == "default" else
                      "with the instruction limit off") + ": stopped by " + ", ".join(f"{k} {v}" for k, v in sorted(
            limits.items(), key=lambda kv: str(kv[0]))) +
            f"; longest {slow['seconds']} s ({slow['bomb']}); the other process's append "
            f"issued while {sum(r['overlap'] for r in rs)} of {len(rs)} ran, longest wait "
            f"{waits['wait']} s ({waits['bomb']})")
    line = (f"bombs: {len(rows)} runs of {len(BOMBS)} bombs inside execute, "
            + "; ".join(parts) + f"; nothing written; {len(failures)} bad; "
            f"{time.monotonic() - t_all:.1f} s")
    return line, failures, rows


# --------------------------------------------------------------------------------------------
# 3. memory: the shared-subtree DAG and the emit flood, each in a child of its own



def _decider(body):
    return "return { decide = { Run = function(s, c)\n" + DAG + "\n" + body + "\nend } }"


MEMORY_CASES = {
    "json.encode": ("execute", _decider(
        "return { { type = 'X', data = { v = json.encode(t) } } }")),
    "pcall(json.encode)": ("execute", _decider(
        "local ok = pcall(json.encode, t); return { { type = 'X', data = { ok = ok } } }")),
    "event data": ("execute", _decider("return { { type = 'X', data = { t = t } } }")),
    "reject details": ("execute", _decider("reject('no', { t = t })")),
    "aggregate state": ("load", "return { init = function() return {} end, apply = { X ="
                                " function(s, e) " + DAG + " return { t = t } end } }"),
    "projection state": ("project", "return { init = function() return {} end, apply = {"
                                    " X = function(s, e) " + DAG + " s.t = t end } }"),
    "emit": ("project", "return { init = function() return {} end, apply = { X ="
                        " function(s, e) " + DAG + " emit('out-1', 'Y', { t = t }) end } }"),
    "emit flood": ("project", """return { apply = { X = function(s, e)
  local big = string.rep('x', 8 << 20)
  for i = 1, 200 do emit('out-1', 'Big', { i = i, s = big }) end
end } }"""),
}


def role_memcase(a):
    how, src = MEMORY_CASES[a.case]
    with cairn.open(a.path, durability="none") as s:   # the default limits
        s.append("in-1", [cairn.Event("X")])
        if how == "execute":
            s.define_aggregate("dag", src)
        elif how == "load":
            s.define_aggregate("dag", src)
            s.append("dag-1", [cairn.Event("X")])
        else:
            s.define_projection("p", src)
        head = s.head()
        rss0 = peak_rss_kib(reset=True)
        t0 = time.monotonic()
        err = None
        try:
            if how == "execute":
                s.execute("dag-1", "Run")
            elif how == "load":
                s.load("dag-1")
            else:
                s.run_projections()
                p = s.projection("p")
                if p.status == "faulted":
                    err = p.error
        except cairn.ScriptError as e:
            err = str(e)
        secs = time.monotonic() - t0
        rss1 = peak_rss_kib()
        written = s.head() - head + len(list(s.read_stream("out-1")))
        s.verify()
    reply({"err": err, "s": secs, "rss0": rss0, "rss1": rss1, "written": written})


def check_memory(a, work):
    rows, failures = [], []
    t_all = time.monotonic()
    for i, case in enumerate(MEMORY_CASES):
        progress(f"memory: {i + 1}/{len(MEMORY_CASES)} {case}")
        path = os.path.join(work, f"store{i}")
        p = spawn("memcase", "--path", path, "--case", case)
        line = readline(p, 300)
        rc = ended(p)
        if line is None:
            failures.append(f"{case}: the child died ({rc})")
            continue
        r = json.loads(line)
        growth = (r["rss1"] - r["rss0"]) * 1024
        limit = ("time" if r["err"] and "time limit exceeded" in r["err"] else
                 "instructions" if r["err"] and "instruction limit exceeded" in r["err"] else
                 "memory" if r["err"] and "memory limit exceeded" in r["err"] else None)
        rows.append({"case": case, "limit": limit, "seconds": round(r["s"], 2),
                     "growth_mb": round(growth / MiB, 1), "peak_mb": round(r["rss1"] / 1024, 1)})
        if r["err"] is None:
            failures.append(f"{case}: no ScriptError")
        elif limit is None:
            failures.append(f"{case}: the error names no limit: {r['err'][:120]}")
        if r["written"]:
            failures.append(f"{case}: {r['written']} events written")
        if growth >= MEMORY_CAP + a.rss_margin * MiB:
            failures.append(f"{case}: peak RSS grew {growth / MiB:.0f} MiB "
                            f"(cap {MEMORY_CAP // MiB} MiB + margin {a.rss_margin} MiB)")
        if r["s"] >= a.bomb_bound:
            failures.append(f"{case}: took {r['s']:.2f} s")
    progress_done()
    worst = max(rows, key=lambda r: r["growth_mb"]) if rows else None
    slow = max(rows, key=lambda r: r["seconds"]) if rows else None
    limits = {}
    for r in rows:
        limits[r["limit"]] = limits.get(r["limit"], 0) + 1
    line = (f"memory: {len(MEMORY_CASES)} cases at the default limits, stopped by "
            + ", ".join(f"{k} {v}" for k, v in sorted(limits.items(), key=lambda kv: str(kv[0])))
            + (f"; largest peak-RSS growth {worst['growth_mb']} MiB ({worst['case']}, bound "
               f"{MEMORY_CAP // MiB} + {a.rss_margin} MiB); longest {slow['seconds']} s "
               f"({slow['case']})" if rows else "")
            + f"; nothing written; {len(failures)} bad; {time.monotonic() - t_all:.1f} s")
    return line, failures, rows


# --------------------------------------------------------------------------------------------
# 4. killed readers

def role_verifier(a):
    with cairn.open(a.path, readonly=True) as s:
        s.verify()
        reply({"verifying": True})
        while True:
            s.verify()


def check_reader(a, work):
    rng = random.Random(a.seed)
    path = os.path.join(work, "store")
    data = os.path.join(path, "data.mdb")
    t_all = time.monotonic()
    failures = []
    after, settle = [], []
    pad = "x" * 200
    with cairn.open(path, durability="none") as s:
        for i in range(50):
            s.append(f"s-{i}", [cairn.Event("T", {"pad": pad}) for _ in range(100)])
        n = [0]

        def commits(k):
            for _ in range(k):
                s.append(f"s-{n[0] % 50}", [cairn.Event("T", {"pad": pad})])
                n[0] += 1

        commits(200)
        before = os.path.getsize(data)
        commits(1000)
        baseline = os.path.getsize(data) - before
        for k in range(a.kills):
            progress(f"reader: kill {k + 1}/{a.kills}")
            child = spawn("verifier", "--path", path)
            line = readline(child, 60)
            if line is None:
                failures.append(f"kill {k + 1}: the verifier did not start ({ended(child)})")
                continue
            time.sleep(rng.uniform(0.05, 0.5))
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            x = os.path.getsize(data)
            commits(200)
            settle.append(os.path.getsize(data) - x)
            x = os.path.getsize(data)
            commits(1000)
            grown = os.path.getsize(data) - x
            after.append(grown)
            if grown >= 2 * MiB:
                failures.append(f"kill {k + 1}: data.mdb grew {grown} B over 1,000 commits")
        s.verify()
        events = s.head()
    progress_done()
    # a kill that left a slot behind shows as growth in the commits before the next reader
    # check (every 64th commit): more than twice what 200 commits cost without one
    pinned = sum(1 for g in settle if g > 2 * baseline / 5)
    line = (f"reader: {a.kills} verify() children SIGKILLed while this process kept the store "
            f"open; data.mdb growth over 1,000 single-event commits after each kill: max "
            f"{max(after, default=0) / 1024:.0f} KiB, median "
            f"{sorted(after)[len(after) // 2] / 1024 if after else 0:.0f} KiB (bound 2048 KiB; "
            f"{baseline / 1024:.0f} KiB before any kill); the 200 commits right after a kill "
            f"grew it up to {max(settle, default=0) / 1024:.0f} KiB ({pinned} of "
            f"{len(settle)} kills left a pinned snapshot until the reader check); "
            f"{events} events, verify ok; "
            f"{len(failures)} bad; {time.monotonic() - t_all:.1f} s")
    return line, failures


# --------------------------------------------------------------------------------------------
# 5. lock.mdb deleted under running writers

def role_ackwriter(a):
    """Appends to its own stream until `stop` exists (or --count appends); prints "ack ID"
    after each acknowledged append, "reopen MSG" when a write is refused because lock.mdb was
    replaced (then closes and opens the store again, as the message says), "err ..." else."""
    durability = a.durability
    s = cairn.open(a.path, durability=durability)
    print("open", flush=True)
    i = 0
    while i < a.count and not os.path.exists(os.path.join(a.dir, "stop")):
        e = cairn.Event("Acked", {"i": i, "who": a.stream})
        try:
            s.append(a.stream, [e])
        except OSError as ex:
            if "lock.mdb" not in str(ex):
                print("err", type(ex).__name__, str(ex).replace("\n", " "), flush=True)
                break
            print("reopen", str(ex).replace("\n", " ")[:80], flush=True)
            s.close()
            s = cairn.open(a.path, durability=durability)
            continue
        except Exception as ex:
            print("err", type(ex).__name__, str(ex).replace("\n", " "), flush=True)
            break
        print("ack", e.id, flush=True)
        i += 1
        time.sleep(a.delay)
    s.close()


class Lines:
    """A child's stdout lines, collected by a thread."""

    def __init__(self, proc):
        self.proc, self.lines = proc, []
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def count(self, kind):
        return sum(1 for x in list(self.lines) if x.startswith(kind + " "))

    def acks(self):
        return [x.split()[1] for x in list(self.lines) if x.startswith("ack ")]


def check_lockfile(a, work):
    path = os.path.join(work, "store")
    lock = os.path.join(path, "lock.mdb")
    t_all = time.monotonic()
    failures = []
    with cairn.open(path) as s:
        s.append("seed", [cairn.Event("Seed")])

    def writer(stream, count, durability, delay):
        p = subprocess.Popen([sys.executable, ME, "--role", "ackwriter", "--path", path,
                              "--stream", stream, "--count", str(count),
                              "--durability", durability, "--delay", str(delay), work],
                             stdout=subprocess.PIPE, text=True, env=child_env())
        return Lines(p)

    def wait_for(w, kind, n, timeout=60):
        end = time.monotonic() + timeout
        while w.count(kind) < n and w.proc.poll() is None and time.monotonic() < end:
            time.sleep(0.01)

    writers = {"a": writer("a", 10**9, "full", 0.002)}
    try:
        wait_for(writers["a"], "ack", 50)
        for r in range(a.deletions):
            progress(f"lockfile: deletion {r + 1}/{a.deletions}")
            os.remove(lock)
            name = f"b{r}"
            writers[name] = writer(name, a.appends, ("relaxed", "none")[r % 2], 0.002)
            wait_for(writers[name], "ack", a.appends // 3)
            wait_for(writers["a"], "reopen", r + 1, timeout=10)
        for name, w in writers.items():
            if name != "a":
                w.proc.wait(120)
        open(os.path.join(work, "stop"), "w").close()
        writers["a"].proc.wait(60)
    finally:
        for w in writers.values():
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
            w.t.join(10)
    progress_done()
    acked = {}
    for name, w in writers.items():
        errs = [x for x in w.lines if x.startswith("err ")]
        if errs or w.proc.returncode != 0:
            failures.append(f"writer {name}: exit {w.proc.returncode}, {errs[:1]}")
        acked[name] = w.acks()
        if name != "a" and len(acked[name]) != a.appends:
            failures.append(f"writer {name}: {len(acked[name])} of {a.appends} appends "
                            "acknowledged")
    total = sum(len(v) for v in acked.values())
    reopens = {name: w.count("reopen") for name, w in writers.items()}
    with cairn.open(path) as s:
        rep = s.verify()
        ids = {str(e.id) for e in s.read_all()}
        missing = sum(1 for v in acked.values() for i in v if i not in ids)
        if missing:
            failures.append(f"{missing} of {total} acknowledged appends are missing")
        if s.head() != 1 + total:
            failures.append(f"head {s.head()}, {1 + total} expected (acknowledged + seed)")
        for name in writers:
            vs = [e.version for e in s.read_stream(name)]
            if vs != list(range(len(vs))):
                failures.append(f"stream {name}: versions not 0..n")
        head = s.head()
    if reopens["a"] < a.deletions:
        failures.append(f"writer a noticed {reopens['a']} of {a.deletions} deletions")
    line = (f"lockfile: lock.mdb deleted {a.deletions} times under running writers (1 long-lived, "
            f"durability full; {a.deletions} more of {a.appends} appends each); {total} "
            f"acknowledged appends, {missing} missing, head {head} = acknowledged + 1 seed, "
            f"verify ok ({rep.events} events); writes refused and the store reopened: "
            f"{sum(reopens.values())} times (long-lived writer {reopens['a']}); "
            f"{len(failures)} bad; {time.monotonic() - t_all:.1f} s")
    return line, failures


# --------------------------------------------------------------------------------------------

CHECKS = {"truncation": check_truncation, "bombs": check_bombs, "memory": check_memory,
          "reader": check_reader, "lockfile": check_lockfile}


def run(a, out=sys.stdout):
    if os.path.exists(a.dir):
        shutil.rmtree(a.dir)
    os.makedirs(a.dir)
    names = a.only.split(",") if a.only else list(CHECKS)
    t0 = time.monotonic()
    bad, figures = {}, {}
    for name in names:
        work = os.path.join(a.dir, name)
        os.makedirs(work)
        try:
            res = CHECKS[name](a, work)
            line, failures = res[0], res[1]
            figures[name] = {"summary": line, "failures": failures,
                             "rows": res[2] if len(res) > 2 else []}
        except (Violation, cairn.Error, OSError, subprocess.TimeoutExpired) as e:
            progress_done()
            line, failures = f"{name}: FAILED: {type(e).__name__}: {e}", [str(e)]
        for f in failures[:10]:
            print(f"FAIL {name}: {f}", file=out, flush=True)
        if len(failures) > 10:
            print(f"FAIL {name}: ... and {len(failures) - 10} more", file=out, flush=True)
        print(("hostile: " if not failures else "hostile: FAILED ") + line, file=out, flush=True)
        if failures:
            bad[name] = len(failures)
    print(f"hostile: {len(names)} checks, {len(names) - len(bad)} passed"
          + (f", failed: {', '.join(f'{k} ({v})' for k, v in bad.items())}" if bad else
             ", violations 0")
          + f", {time.monotonic() - t0:.0f} s", file=out, flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(figures, f, indent=1)
    return 1 if bad else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", help="work directory (made afresh; one subdirectory per check)")
    ap.add_argument("--only", help=f"comma-separated checks of {','.join(CHECKS)}")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--truncation-mb", type=float, default=32,
                    help="size of the truncated store (default 32 MiB)")
    ap.add_argument("--bomb-bound", type=float, default=3.0,
                    help="longest a bomb or memory case may run, s (default 3)")
    ap.add_argument("--bomb-delay", type=float, default=0.05,
                    help="when the other process appends, s into a bomb (default 0.05)")
    ap.add_argument("--wait-bound", type=float, default=5.0,
                    help="longest the other process's append may wait, s (default 5)")
    ap.add_argument("--rss-margin", type=int, default=64,
                    help="peak RSS growth allowed beyond the 64 MiB cap, MiB (default 64)")
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--deletions", type=int, default=8)
    ap.add_argument("--appends", type=int, default=500,
                    help="appends of each writer started after a deletion (default 500)")
    ap.add_argument("--json", help="also write every check's figures to this file")
    # child roles
    ap.add_argument("--role", help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--stream", help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--durability", default="none", help=argparse.SUPPRESS)
    ap.add_argument("--delay", type=float, default=0.0, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.role:
        {"opener": role_opener, "appender": role_appender, "memcase": role_memcase,
         "verifier": role_verifier, "ackwriter": role_ackwriter}[a.role](a)
        return 0
    return run(a)


if __name__ == "__main__":
    sys.exit(main())
