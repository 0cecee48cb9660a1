"""projections list | run | state | reset."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

import cairn

from .common import UserError, open_store
from .output import Out, Progress, pretty


def _names(store: cairn.Store, name: str | None, path: str) -> list[str]:
    names = store.scripts()["projection"]
    if name is not None:
        if name not in names:
            raise UserError(f"no projection named {name!r} in {path} "
                            f"(cairn projections list {path} lists them)")
        return [name]
    return names


def _report(out: Out, store: cairn.Store, names: list[str], processed: int | None) -> None:
    head = store.head()
    rows = []
    for n in names:
        p = store.projection(n)
        rows.append({"name": n, "position": p.position, "status": p.status, "error": p.error,
                     "lag": max(head - p.position, 0)})
    if out.json:
        for r in rows:
            out.obj(r)
        if processed is not None:
            out.obj({"processed": processed, "head": head})
        return
    if rows:
        # columns as `projections list` always printed them: name, status, position (then
        # lag and error), tab-separated in a pipe
        out.table(("NAME", "STATUS", "POSITION", "LAG", "ERROR"),
                  [(r["name"], r["status"], r["position"], r["lag"], r["error"] or "")
                   for r in rows], styles=("cyan", None, None, None, "red"), right=(2, 3))
    if processed is not None:
        out.line(f"processed {processed} events; head {head}")


def _faults(store: cairn.Store, names: list[str]) -> int:
    """One line on stderr per faulted projection (even with --quiet: they are errors, and
    cron or CI must see them); returns how many there are."""
    n = 0
    for name in names:
        p = store.projection(name)
        if p.status == "faulted":
            sys.stderr.write(f"cairn: error: projection {name} is faulted at position "
                             f"{p.position}: {p.error}\n")
            n += 1
    return n


def _catch_up(store: cairn.Store, name: str | None, names: list[str], quiet: bool) -> int:
    """run_projections in a worker thread (the GIL is released while it works), the main
    thread drawing progress (position of the slowest projection / head) on a terminal."""
    result: dict[str, object] = {}

    def work() -> None:
        try:
            result["n"] = store.run_projections(name)
        except BaseException as e:  # handed to the main thread
            result["error"] = e

    t = threading.Thread(target=work, daemon=True)
    with Progress("projections", store.head(), quiet=quiet) as bar:
        t.start()
        while t.is_alive():
            t.join(0.125)
            if bar.on:
                try:
                    head = store.head()
                    pos = min((store.projection(n).position for n in names), default=head)
                    bar.update(min(pos, head), head)
                except (cairn.Error, KeyError):
                    pass
        if "error" not in result:
            bar.update(store.head(), store.head())
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return int(result["n"])  # type: ignore[call-overload]


def cmd_run(args: argparse.Namespace) -> int:
    out = Out(args.json)
    with open_store(args.path, write=True) as store:
        names = _names(store, args.name, args.path)
        processed = _catch_up(store, args.name, names, args.quiet)
        if not args.quiet:
            _report(out, store, names, processed)
            sys.stdout.flush()
        if not args.follow:
            return 1 if _faults(store, names) else 0
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        store.start_projections()
        try:
            while not stop.wait(0.5):
                pass
        finally:
            store.stop_projections()
        return 1 if _faults(store, names) else 0


def cmd_list(args: argparse.Namespace) -> int:
    out = Out(args.json)
    with open_store(args.path) as store:
        names = store.scripts()["projection"]
        if not names and not out.json:
            out.line(f"no projections in {args.path}")
        _report(out, store, names, None)
    return 0


def cmd_state(args: argparse.Namespace) -> int:
    out = Out(args.json)
    with open_store(args.path) as store:
        _names(store, args.name, args.path)
        p = store.projection(args.name)
        state = p.state(args.key)
        parts = list(p.partitions()) if args.key is None and state is None else []
    if out.json:
        out.obj(state)
    elif state is not None:
        out.line(pretty(state))
    elif parts:
        out.line(f"{args.name} is partitioned: give a KEY ({len(parts)} partitions)", "dim")
        for k in parts:
            out.line(k)
    elif args.key is not None:
        out.line(f"{args.name} has no state for {args.key!r}", "dim")
    else:
        out.line(f"{args.name} has no state yet (cairn projections run {args.path})", "dim")
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    out = Out(args.json)
    with open_store(args.path, write=True) as store:
        _names(store, args.name, args.path)
        store.projection(args.name).reset()
        p = store.projection(args.name)
        row = {"name": args.name, "position": p.position, "status": p.status, "error": p.error}
    if out.json:
        out.obj(row)
    else:
        out.line(f"reset {args.name}: it rebuilds from position 1 on its next run "
                 f"(cairn projections run {args.path})")
    return 0
