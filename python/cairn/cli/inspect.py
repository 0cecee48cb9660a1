"""Commands that look inside a store: info, streams, read, log, tail, export, load.  They
open the store read-only (tail read-write: a live wake-up needs the writable `notify`
mapping) and never create one."""

from __future__ import annotations

import argparse
from typing import Any

import cairn

from .common import UserError, open_store, query_arg, stop_on_sigterm
from .output import Out, Progress, event_json, pretty, size


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in ("types", "categories", "streams", "tags")
            if getattr(args, k, None)}


# -- info -------------------------------------------------------------------------------------
def info(store: cairn.Store) -> dict[str, Any]:
    head = store.head()
    st = store.stat()
    scripts = store.scripts()
    projections = []
    for name in scripts["projection"]:
        p = store.projection(name)
        pos = p.position
        projections.append({"name": name, "position": pos, "lag": max(head - pos, 0),
                            "status": p.status, "error": p.error})
    subs = [{"name": n, "checkpoint": cp, "lag": max(head - cp, 0)}
            for n, cp in store.subscriptions().items()]
    return {
        "path": store.path,
        "head": head,
        # positions have no holes until a lifecycle call (spec 6) removes events; counting
        # them then is a walk of the log (cairn verify does it)
        "events": head if store.stream_version("$lifecycle") < 0 else None,
        "streams": sum(1 for _ in store.streams()),
        "file_bytes": st["file_bytes"],
        "pages_used": st["pages_used"],
        "pages_free": st["pages_free"],
        "page_size": st["page_size"],
        "map_bytes": st["map_bytes"],
        "scripts": {"aggregates": scripts["aggregate"], "projections": scripts["projection"],
                    "upcasters": bool(scripts["upcasters"])},
        "projections": projections,
        "subscriptions": subs,
    }


def cmd_info(args: argparse.Namespace) -> int:
    out = Out(args.json)
    with open_store(args.path) as store:
        d = info(store)
    if out.json:
        out.obj(d)
        return 0
    free = d["pages_free"] * d["page_size"]
    rows = [
        ("path", d["path"]),
        ("head", d["head"]),
        ("events", d["events"] if d["events"] is not None
         else f"at most {d['head']} (deletes and retention removed some: cairn verify counts "
              f"them)"),
        ("streams", d["streams"]),
        ("file", f"{size(d['file_bytes'])} ({d['pages_used']} pages of "
                 f"{size(d['page_size'])} up to the last in use)"),
        ("free pages", f"{d['pages_free']} ({size(free)}, reused by later commits)"),
        ("aggregates", ", ".join(d["scripts"]["aggregates"]) or "-"),
        ("upcasters", "defined" if d["scripts"]["upcasters"] else "-"),
    ]
    out.table(None, rows, styles=("bold", None))
    out.line()
    if d["projections"]:
        out.table(("PROJECTION", "STATUS", "POSITION", "LAG", "ERROR"),
                  [(p["name"], p["status"], p["position"], p["lag"], p["error"] or "")
                   for p in d["projections"]],
                  styles=("cyan", None, None, None, "red"), right=(2, 3))
    else:
        out.line("no projections")
    out.line()
    if d["subscriptions"]:
        out.table(("SUBSCRIPTION", "CHECKPOINT", "LAG"),
                  [(s["name"], s["checkpoint"], s["lag"]) for s in d["subscriptions"]],
                  styles=("cyan", None, None), right=(1, 2))
    else:
        out.line("no subscriptions with a checkpoint")
    return 0


# -- streams ----------------------------------------------------------------------------------
def cmd_streams(args: argparse.Namespace) -> int:
    out = Out(args.json)
    with open_store(args.path) as store:
        rows = [(name, store.stream_version(name)) for name in store.streams(args.prefix)]
    if out.json:
        for name, v in rows:
            out.obj({"stream": name, "version": v})
    elif rows:
        out.table(("STREAM", "VERSION"), rows, styles=("cyan", None), right=(1,))
    elif out.tty:
        out.line(f"no streams{' starting with ' + repr(args.prefix) if args.prefix else ''}")
    return 0


# -- read, log, tail, export ------------------------------------------------------------------
def _events(out: Out, it, head: int) -> int:
    width = len(str(head))
    n = 0
    for e in it:
        out.event(e, width)
        n += 1
    return n


def cmd_read(args: argparse.Namespace) -> int:
    out = Out(args.json)
    with open_store(args.path) as store:
        if store.stream_version(args.stream) < 0:
            raise UserError(f"no stream named {args.stream!r} in {args.path} "
                            f"(cairn streams {args.path} lists them)")
        _events(out, store.read_stream(args.stream, args.start, backwards=args.backwards,
                                       limit=args.limit, raw=args.raw), store.head())
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    out = Out(args.json)
    with open_store(args.path) as store:
        _events(out, store.read_all(args.start, backwards=args.backwards, limit=args.limit,
                                    raw=args.raw, **_filters(args)), store.head())
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    """A DCB read: the events the query matches up to the head at the call, then that head
    (the `--after` of a conditional append made on what was read)."""
    out = Out(args.json)
    one = ()
    if args.types or args.tags:
        try:
            one = (cairn.QueryItem(types=args.types, tags=args.tags),)
        except (TypeError, ValueError) as e:
            raise UserError(str(e)) from None
    query = query_arg(args.query, "--query", one)
    with open_store(args.path) as store:
        res = store.query(query, args.start, backwards=args.backwards, limit=args.limit)
        _events(out, res, res.head)
    if out.json:
        out.obj({"head": res.head})
    else:
        out.line(f"head {res.head}")
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    """Follows the log through a subscription: the store's commit notification wakes it, in
    this process or any other; nothing polls the log."""
    out = Out(args.json)
    stop_on_sigterm()
    with open_store(args.path, write=True) as store:
        start = args.start if args.start is not None else store.head() + 1
        width = max(len(str(start)), 6)
        with store.subscribe(start, **_filters(args)) as sub:
            for e in sub:
                out.event(e, width, flush=True)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """JSON lines on stdout, always (the shape import reads); events as stored."""
    out = Out(True)
    with open_store(args.path) as store:
        head = store.head()
        start = args.start or 1
        total = max(head - start + 1, 0)
        if args.limit is not None:
            total = min(total, args.limit)
        filtered = bool(_filters(args))
        with Progress("export", total) as p:
            n = 0
            for e in store.read_all(args.start, limit=args.limit, raw=True, **_filters(args)):
                out.obj(event_json(e))
                n += 1
                if n % 512 == 0:
                    # a filtered read skips positions: progress is the position reached
                    p.update(min(e.position - start + 1, total) if filtered else n)
            p.update(total)
    return 0


# -- load -------------------------------------------------------------------------------------
def cmd_load(args: argparse.Namespace) -> int:
    out = Out(args.json)
    if args.version is not None and args.at is not None:
        raise UserError("give --version or --at, not both")
    with open_store(args.path) as store:
        try:
            a = store.load(args.stream, aggregate=args.aggregate, version=args.version,
                           at=args.at)
        except KeyError as e:
            name = args.aggregate or cairn_category(args.stream)
            raise UserError(f"no aggregate script named {name!r} in {args.path} (define one: "
                            f"cairn define {args.path} aggregate {name} FILE.lua)") from e
    if out.json:
        out.obj({"stream": a.stream, "version": a.version, "state": a.state})
        return 0
    if a.version < 0:
        out.line(f"{a.stream}: no events (aggregate {a.aggregate}); initial state:", "dim")
    else:
        out.styled([(a.stream, "cyan"), (f" at version {a.version}", None),
                    (f" (aggregate {a.aggregate}, {a.applied} events folded)", "dim")])
    out.line(pretty(a.state))
    return 0


def cairn_category(stream: str) -> str:
    return stream.split("-", 1)[0]
