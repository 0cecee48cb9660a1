"""Operations: verify, backup, bench."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time

import cairn

from .common import UserError, open_store
from .output import Out, Progress, size, watch


# -- verify -----------------------------------------------------------------------------------
def cmd_verify(args: argparse.Namespace) -> int:
    """Exit 0 and one summary line, or exit 1 and the damage: `position P: what` (on stdout:
    it is the report asked for), and one line on stderr saying what to do."""
    out = Out(args.json)
    found: list[tuple[int, str]] = []
    with open_store(args.path) as store:
        with Progress("verify", store.head()) as bar:
            try:
                rep = store.verify(progress=lambda done, total: bar.update(done, total),
                                   damage=lambda pos, msg: found.append((pos, msg)))
                damage = None
            except cairn.CorruptionError as e:
                damage = e
    if damage is None:
        if out.json:
            out.obj({"ok": True, "events": rep.events, "streams": rep.streams, "head": rep.head,
                     "chain": rep.chain})
        else:
            out.styled([("ok", "bold green"), (f": {rep.events} events, {rep.streams} streams, "
                                               f"head {rep.head}, chain {rep.chain}; every "
                                               f"checksum, chain link and index agrees with the "
                                               f"log", None)])
        return 0
    if not found:  # found by a pass that compares totals: one damage, maybe no position
        found.append((damage.position or 0, str(damage)))
    rows = [(pos, _damage_text(msg, pos)) for pos, msg in found]
    if out.json:
        out.obj({"ok": False, "damage": [{"position": pos or None, "error": text}
                                         for pos, text in rows]})
    else:
        for pos, text in rows:
            out.line(f"position {pos}: {text}" if pos else text, "bold red")
    out.stream.flush()
    n = sum(1 for pos, _ in rows if pos)
    other = len(rows) - n  # no position: a live subject's key (keys file), or an index total
    parts = []
    if n:
        parts.append(f"{n} damaged {'event' if n == 1 else 'events'}")
    if other:
        parts.append(f"{other} {'other ' if n else ''}{'damage' if other == 1 else 'damages'}")
    what = ", ".join(parts)
    sys.stderr.write(f"cairn: error: {args.path} is damaged ({what}: restore it from a backup, "
                     f"or export what still reads: cairn export {args.path})\n")
    return 1


def _damage_text(msg: str, pos: int) -> str:
    """What is wrong at `pos`, without the position the core's message already names."""
    for prefix in (f"position {pos}: ",):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    m = re.fullmatch(r"corrupt record at position (\d+)(?:: (.*))?", msg, re.S)
    if m and int(m.group(1)) == pos:
        return "corrupt record: " + (m.group(2) or "its checksum or layout is wrong")
    return msg


# -- backup -----------------------------------------------------------------------------------
def cmd_backup(args: argparse.Namespace) -> int:
    out = Out(args.json)
    dest = args.dest
    if os.path.exists(dest):
        if not os.path.isdir(dest):
            raise UserError(f"DEST {dest} exists and is not a directory")
        if os.listdir(dest):
            raise UserError(f"DEST {dest} is not empty (give a new or empty directory)")
    with open_store(args.path) as store:
        st = store.stat()
        # the copy holds the pages in use: those up to the last, less the free list
        estimate = max(st["pages_used"] - st["pages_free"], 1) * st["page_size"]
        copy = os.path.join(dest, "data.mdb")
        with Progress("backup", estimate, unit="bytes") as bar:

            def poll() -> None:
                n = os.path.getsize(copy) if os.path.exists(copy) else 0
                bar.update(min(n, estimate))

            watch(lambda: store.backup(dest), poll if bar.on else (lambda: None))
            bar.update(estimate)
    with cairn.open(dest, readonly=True) as b:
        head = b.head()
    nbytes = os.path.getsize(copy)
    if out.json:
        out.obj({"dest": dest, "head": head, "bytes": nbytes})
    else:
        out.line(f"backed up {args.path} to {dest}: head {head}, {size(nbytes)} "
                 f"(the store's file: {size(st['file_bytes'])})")
    return 0


# -- bench ------------------------------------------------------------------------------------
BATCH = 100


def cmd_bench(args: argparse.Namespace) -> int:
    """Three phases of a third of --seconds each: single-event appends with full durability
    (each one fsync'd), batches of 100 events per append (full durability), and reads of
    the whole log."""
    out = Out(args.json)
    path = args.path
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise UserError(f"{path} is not a new or empty directory (bench writes there; give "
                        f"one that holds nothing)")
    phase = args.seconds / 3
    results: dict[str, float] = {}
    with cairn.open(path, durability="full") as store, \
            Progress("bench", int(args.seconds), unit="seconds") as bar:
        t_start = time.monotonic()

        def tick() -> None:
            bar.update(min(int(time.monotonic() - t_start), int(args.seconds)))

        payload = {"amount": 100, "note": "cairn bench"}
        n, t0 = 0, time.monotonic()
        while True:
            store.append(f"single-{n % 64}", [cairn.Event("Tested", payload)])
            n += 1
            if n % 16 == 0:
                tick()
                if time.monotonic() - t0 >= phase:
                    break
        results["single_appends_per_s"] = n / (time.monotonic() - t0)
        n, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < phase:
            store.append(f"batch-{n % 64}", [cairn.Event("Tested", payload)
                                              for _ in range(BATCH)])
            n += BATCH
            tick()
        results["batched_events_per_s"] = n / (time.monotonic() - t0)
        n, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < phase:
            for _ in store.read_all():
                n += 1
                if n % 65536 == 0 and time.monotonic() - t0 >= phase:
                    break
            tick()
        results["reads_per_s"] = n / (time.monotonic() - t0)
        head = store.head()
        bar.update(int(args.seconds))
    d = {"seconds": args.seconds, "single_appends_per_s": round(results["single_appends_per_s"]),
         "batch": BATCH, "batched_events_per_s": round(results["batched_events_per_s"]),
         "reads_per_s": round(results["reads_per_s"]), "events": head}
    if out.json:
        out.obj(d)
        return 0
    out.table(("WHAT", "RATE"), [
        ("appends, one event each, durable (fsync per commit)",
         f"{d['single_appends_per_s']:,} appends/s"),
        (f"appends, batches of {BATCH}, durable", f"{d['batched_events_per_s']:,} events/s"),
        ("reads of the whole log (read_all)", f"{d['reads_per_s']:,} events/s"),
    ], styles=(None, "bold"))
    out.line(f"{head} events left in {path}; {args.seconds:g} s in all", "dim")
    return 0
