"""Stream lifecycle: delete, retention (docs/API.md section 6).  The audit trail is
`cairn read PATH '$lifecycle'`."""

from __future__ import annotations

import argparse

from .common import UserError, open_store
from .output import Out, Progress, size


def cmd_delete(args: argparse.Namespace) -> int:
    out = Out(args.json)
    with open_store(args.path, write=True) as store:
        pos = store.delete_stream(args.stream, expected_version=args.expected_version,
                                  hard=args.hard)
        version = store.stream_version(args.stream)
    if out.json:
        out.obj({"stream": args.stream, "hard": args.hard, "version": version,
                 "position": pos})
    else:
        how = "hard-deleted (a tombstone: it can never be written again)" if args.hard \
            else "deleted (its events are gone; an append continues numbering)"
        out.styled([(args.stream, "cyan"), (f" {how}; last version {version}, "
                                            f"$lifecycle event at position {pos}", None)])
    return 0


def _limits_text(m: dict) -> str:
    parts = [f"{k}={'none' if v is None else v}" for k, v in m.items()]
    return ", ".join(parts)


def cmd_retention(args: argparse.Namespace) -> int:
    out = Out(args.json)
    setting = any(v is not None for v in (args.max_count, args.max_age, args.truncate_before))
    if args.stream is None:
        if setting:
            raise UserError("--max-count, --max-age and --truncate-before need a STREAM")
        with open_store(args.path, write=True) as store:
            before = store.stat()
            with Progress("retention", None, unit="streams", quiet=args.json) as bar:
                rep = store.maintain(progress=lambda done, total: bar.update(done, total))
            after = store.stat()
        freed = max(after["pages_free"] - before["pages_free"], 0) * after["page_size"]
        if out.json:
            out.obj({"streams": rep["streams"], "removed": rep["removed"],
                     "file_bytes": after["file_bytes"], "free_bytes":
                     after["pages_free"] * after["page_size"]})
        else:
            out.line(f"{rep['removed']} removed events reclaimed in {rep['streams']} streams "
                     f"with limits or deletes; {size(freed)} more free pages for new events "
                     f"(data.mdb {size(after['file_bytes'])})")
        return 0
    with open_store(args.path, write=setting) as store:
        pos = None
        if setting:
            pos = store.set_stream_metadata(args.stream, max_count=args.max_count,
                                            max_age=args.max_age,
                                            truncate_before=args.truncate_before)
        m = store.stream_metadata(args.stream)
    if out.json:
        out.obj({"stream": args.stream, **m, **({"position": pos} if setting else {})})
    else:
        out.styled([(args.stream, "cyan"), (f": {_limits_text(m)}"
                                            + (f" (set; $lifecycle event at position {pos})"
                                               if setting else ""), None)])
    return 0
