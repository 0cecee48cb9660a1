"""Commands that write: append, import, define (these three create the store when it is
missing), execute, compensate, rollback."""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import sys
import uuid
from typing import Iterator

import cairn

from .common import UserError, json_arg, open_store, query_arg, read_text
from .output import Out, Progress


def _result(out: Out, stream: str, r: cairn.AppendResult, verb: str) -> None:
    d = {"stream": stream, "version": r.version, "position": r.position,
         "first_position": r.first_position}
    if out.json:
        out.obj(d)
    elif r.position is None:
        out.line(f"{stream}: nothing written (version {r.version})")
    elif r.first_position == r.position:
        out.styled([(f"{verb} ", None), (f"{stream}@{r.version}", "cyan"),
                    (f" at position {r.position}", None)])
    else:
        out.styled([(f"{verb} ", None), (f"{stream}@{r.version}", "cyan"),
                    (f" at positions {r.first_position}..{r.position}", None)])


# -- append -----------------------------------------------------------------------------------
def cmd_append(args: argparse.Namespace) -> int:
    out = Out(args.json)
    data = json_arg(args.data, "DATA_JSON")
    metadata = json_arg(args.metadata, "--metadata", obj=True)
    try:
        event = cairn.Event(args.type, data, metadata=metadata, tags=args.tags, id=args.id)
    except ValueError as e:
        raise UserError(str(e)) from None
    if args.after is not None and args.condition is None:
        raise UserError("--after: only with --condition")
    condition = None
    if args.condition is not None:
        condition = cairn.Condition(query_arg(args.condition, "--condition"), after=args.after)
    with open_store(args.path, create=True) as store:
        r = store.append(args.stream, [event], expected_version=args.expected_version,
                         condition=condition)
    _result(out, args.stream, r, "appended")
    return 0


# -- forget -----------------------------------------------------------------------------------
def cmd_forget(args: argparse.Namespace) -> int:
    out = Out(args.json)
    with open_store(args.path, write=True) as store:
        store.forget(args.subject)
    if out.json:
        out.obj({"forgotten": args.subject})
    else:
        out.line(f"forgotten: {args.subject}")
    return 0


# -- import -----------------------------------------------------------------------------------
class _Line:
    __slots__ = ("stream", "event", "where")

    def __init__(self, stream: str, event: cairn.Event, where: str) -> None:
        self.stream, self.event, self.where = stream, event, where


def _parse_line(text: str, where: str) -> _Line:
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(d, dict):
        raise UserError(f"{where}: a line must be a JSON object (an event)")
    for key in ("stream", "type"):
        if not isinstance(d.get(key), str):
            raise UserError(f"{where}: {key!r} is missing or not a string")
    data = d.get("data")
    if d.get("data_base64") is not None:
        if data is not None:
            raise UserError(f"{where}: 'data' and 'data_base64' both given")
        try:
            data = base64.b64decode(d["data_base64"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise UserError(f"{where}: 'data_base64' is not base64") from None
    tags = d.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise UserError(f"{where}: 'tags' must be a list of strings")
    schema = d.get("schema", 1)
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise UserError(f"{where}: 'schema' must be an integer")
    metadata = d.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise UserError(f"{where}: 'metadata' must be an object or null")
    if d.get("forgotten"):
        raise UserError(f"{where}: the event is forgotten (its subject's key was forgotten and "
                        "its data is gone): it cannot be imported")
    try:
        event = cairn.Event(d["type"], data, metadata=metadata, id=d.get("id"), schema=schema,
                            tags=tags, subject=d.get("subject"))
    except (ValueError, TypeError) as e:
        raise UserError(f"{where}: {e}") from None
    return _Line(d["stream"], event, where)


def _lines(f, name: str) -> Iterator[tuple[int, _Line | None, int]]:
    """(line number, parsed line or None for a blank one, bytes read so far)."""
    done = 0
    for no, raw in enumerate(f, 1):
        done += len(raw)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{name}:{no}: not UTF-8 text") from None
        if not text.strip():
            yield no, None, done
            continue
        yield no, _parse_line(text, f"{name}:{no}"), done


def _commit(store: cairn.Store, batch: list[_Line]) -> tuple[int, int]:
    """Appends the lines of one batch whose ids the store does not hold, in one commit, in
    file order; returns (imported, skipped).  Another importer may commit an id between the
    look-up and the commit: then the commit fails with DuplicateEvent and the batch is looked
    up again."""
    for attempt in range(3):
        seen: set[uuid.UUID] = set()
        todo: list[_Line] = []
        for ln in batch:
            eid = ln.event.id
            if eid in seen or store.position_of(eid) is not None:
                continue
            seen.add(eid)
            todo.append(ln)
        if not todo:
            return 0, len(batch)
        checked: set[str] = set()
        for ln in todo:  # a bad stream name is the line's mistake, found before the commit
            if ln.stream not in checked:
                try:
                    store.stream_version(ln.stream)
                except (ValueError, TypeError) as e:
                    raise UserError(f"{ln.where}: {e}") from None
                if ln.stream.startswith("$"):  # readable, but the store's own (spec 6)
                    raise UserError(f"{ln.where}: stream: stream names starting with '$' "
                                    "are reserved")
                checked.add(ln.stream)
        try:
            with store.transaction() as tx:
                i = 0
                while i < len(todo):  # consecutive lines of one stream: one request
                    j = i
                    while j < len(todo) and todo[j].stream == todo[i].stream:
                        j += 1
                    tx.append(todo[i].stream, [ln.event for ln in todo[i:j]])
                    i = j
            return len(todo), len(batch) - len(todo)
        except cairn.DuplicateEvent:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def cmd_import(args: argparse.Namespace) -> int:
    out = Out(args.json)
    name = args.file
    if name == "-":
        f, total = sys.stdin.buffer, None
    else:
        try:
            f = open(name, "rb")
            total = os.fstat(f.fileno()).st_size
        except OSError as e:
            raise UserError(f"{name}: cannot read: {e.strerror or e}") from None
    imported = skipped = 0
    try:
        with open_store(args.path, create=True) as store, Progress("import", total,
                                                                   unit="bytes") as p:
            batch: list[_Line] = []
            for no, ln, done in _lines(f, name):
                if ln is not None:
                    batch.append(ln)
                if len(batch) >= args.batch:
                    a, b = _commit(store, batch)
                    imported, skipped, batch = imported + a, skipped + b, []
                    p.update(done)
            if batch:
                a, b = _commit(store, batch)
                imported, skipped = imported + a, skipped + b
            p.update(total or 0)
            head = store.head()
    finally:
        if f is not sys.stdin.buffer:
            f.close()
    if out.json:
        out.obj({"imported": imported, "skipped": skipped, "head": head})
    else:
        out.line(f"imported {imported} events, skipped {skipped} already in the store; "
                 f"head {head}")
    return 0


# -- define -----------------------------------------------------------------------------------
def cmd_define(args: argparse.Namespace) -> int:
    out = Out(args.json)
    source = read_text(args.file, "the script")
    name = getattr(args, "name", None)
    with open_store(args.path, create=True) as store:
        if args.kind == "aggregate":
            store.define_aggregate(name, source)
        elif args.kind == "projection":
            store.define_projection(name, source)
        else:
            store.define_upcasters(source)
            name = "upcasters"
    if out.json:
        out.obj({"kind": args.kind, "name": name})
    else:
        out.line(f"defined {args.kind}" + ("" if args.kind == "upcasters" else f" {name}"))
    return 0


# -- execute, compensate, rollback ------------------------------------------------------------
def _no_aggregate(args: argparse.Namespace, e: KeyError) -> UserError:
    name = args.aggregate or args.stream.split("-", 1)[0]
    return UserError(f"no aggregate script named {name!r} in {args.path} (define one: "
                     f"cairn define {args.path} aggregate {name} FILE.lua)")


def cmd_execute(args: argparse.Namespace) -> int:
    out = Out(args.json)
    data = json_arg(args.data, "DATA_JSON")
    metadata = json_arg(args.metadata, "--metadata", obj=True)
    with open_store(args.path, write=True) as store:
        try:
            r = store.execute(args.stream, args.cmd, data, aggregate=args.aggregate,
                              expected_version=args.expected_version, metadata=metadata)
        except KeyError as e:
            raise _no_aggregate(args, e) from None
    _result(out, args.stream, r, f"{args.cmd}: appended")
    return 0


def cmd_decide(args: argparse.Namespace) -> int:
    out = Out(args.json)
    data = json_arg(args.data, "DATA_JSON")
    metadata = json_arg(args.metadata, "--metadata", obj=True)
    with open_store(args.path, write=True) as store:
        try:
            r = store.decide(args.aggregate, args.cmd, data, stream=args.stream,
                             metadata=metadata)
        except KeyError:
            raise UserError(f"no aggregate script named {args.aggregate!r} in {args.path} "
                            f"(define one: cairn define {args.path} aggregate "
                            f"{args.aggregate} FILE.lua)") from None
    _result(out, args.stream, r, f"{args.cmd}: appended")
    return 0


def cmd_compensate(args: argparse.Namespace) -> int:
    out = Out(args.json)
    metadata = json_arg(args.metadata, "--metadata", obj=True)
    with open_store(args.path, write=True) as store:
        try:
            r = store.compensate(args.stream, args.version, aggregate=args.aggregate,
                                 metadata=metadata)
        except KeyError as e:
            raise _no_aggregate(args, e) from None
    _result(out, args.stream, r, f"compensated {args.stream}@{args.version}: appended")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    out = Out(args.json)
    with open_store(args.path, write=True) as store:
        try:
            results = store.rollback(args.correlation_id)
        except KeyError as e:
            raise UserError(f"rollback {args.correlation_id}: no aggregate script named "
                            f"{e.args[0] if e.args else e}") from None
        # the stream of each compensation: the event at its last position
        rows: list[tuple[str, cairn.AppendResult]] = [
            (store.get(r.position, raw=True).stream, r) for r in results]
    if not rows and not out.json:
        out.line(f"nothing to roll back for {args.correlation_id}")
    for stream, r in rows:
        _result(out, stream, r, "compensated: appended")
    return 0
