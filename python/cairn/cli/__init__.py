"""The command line of cairn: ``cairn`` / ``python -m cairn`` (docs/API.md section 4).

    cairn info PATH                     what a store holds, and how its file is doing
    cairn log PATH --category account   events of the global log
    cairn tail PATH --json | jq .       follow new events as they commit

main() parses the arguments (argparse), runs one command and maps every user mistake --
argparse's own errors, a store that is not there, a domain error such as
WrongExpectedVersion or CommandRejected -- to exactly one line on stderr and a non-zero exit
status, without a traceback.  The commands live in inspect.py (reading), write.py
(writing), lifecycle.py (delete, retention), projections.py and ops.py (verify, backup,
bench); output.py prints.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from typing import Callable, NoReturn, Sequence

import cairn

from . import inspect, lifecycle, ops, projections, write
from . import common
from .common import Stop, UserError

__all__ = ["main", "build_parser", "UserError"]

EXIT_ERROR = 1  # a failed command: a user mistake, a domain error, a damaged store
EXIT_USAGE = 2  # the command line itself is wrong (as argparse)


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line: `cairn read: error: ... (see cairn read --help)`."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


FILTERS_HELP = ("values of one flag are OR-ed (--tag: all must be present); different flags "
                "are AND-ed")


def _add_filters(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("filters", FILTERS_HELP)
    g.add_argument("--type", dest="types", action="append", metavar="T", help="event type")
    g.add_argument("--category", dest="categories", action="append", metavar="C",
                   help="stream category (the name before its first '-')")
    g.add_argument("--stream", dest="streams", action="append", metavar="S", help="stream name")
    g.add_argument("--tag", dest="tags", action="append", metavar="T", help="tag")


def _add_write_opts(p: argparse.ArgumentParser, expected: bool = True) -> None:
    if expected:
        p.add_argument("--expected-version", metavar="V", type=common.expected_version,
                       default=cairn.ANY,
                       help="an integer >= -1, or any (default), no_stream, stream_exists")
    p.add_argument("--metadata", metavar="JSON", help="a JSON object, copied onto the events")


def build_parser() -> argparse.ArgumentParser:
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--json", action="store_true", help="one JSON object per line on stdout")

    parser = Parser(prog="cairn", formatter_class=Formatter,
                    description="Inspect and operate a cairn event store (a directory).",
                    epilog="examples:\n  cairn info ./shop-store\n"
                    "  cairn log ./shop-store --category order --limit 20\n"
                    "  cairn export ./shop-store > events.jsonl\n\n"
                    "cairn COMMAND --help shows each command's options.")
    parser.add_argument("--version", action="version", version=f"cairn {cairn.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    def command(name: str, fn: Callable, help: str, example: str, description: str = "",
                into=sub) -> argparse.ArgumentParser:
        p = into.add_parser(name, help=help, parents=[shared], formatter_class=Formatter,
                            description=description or help[0].upper() + help[1:] + ".",
                            epilog="example:\n  " + example)
        p.set_defaults(fn=fn)
        return p

    def path(p: argparse.ArgumentParser) -> None:
        p.add_argument("path", metavar="PATH", help="the store directory")

    # -- looking inside -------------------------------------------------------------------
    p = command("info", inspect.cmd_info,
                "head, events, streams, file size, free pages, scripts, projections, "
                "subscriptions", "cairn info ./shop-store")
    path(p)

    p = command("streams", inspect.cmd_streams, "list streams with their versions",
                "cairn streams ./shop-store --prefix order-")
    path(p)
    p.add_argument("--prefix", default="", metavar="P", help="only names starting with P")

    p = command("read", inspect.cmd_read, "read one stream's events",
                "cairn read ./shop-store order-1 --from 2 --limit 10")
    path(p)
    p.add_argument("stream", metavar="STREAM")
    p.add_argument("--from", dest="start", type=common.int_at_least(-1), metavar="V",
                   help="first version (inclusive; default: the first, or the last backwards)")
    p.add_argument("--backwards", action="store_true", help="newest first")
    p.add_argument("--limit", type=common.int_at_least(0), metavar="N", help="at most N events")
    p.add_argument("--raw", action="store_true", help="as stored: no upcasters")

    p = command("log", inspect.cmd_log, "read the global log, filtered",
                "cairn log ./shop-store --type OrderPlaced --backwards --limit 5")
    path(p)
    p.add_argument("--from", dest="start", type=common.int_at_least(0), metavar="POS",
                   help="first position (inclusive; default: the first, or the last backwards)")
    p.add_argument("--backwards", action="store_true", help="newest first")
    p.add_argument("--limit", type=common.int_at_least(0), metavar="N", help="at most N events")
    p.add_argument("--raw", action="store_true", help="as stored: no upcasters")
    _add_filters(p)

    p = command("query", inspect.cmd_query, "a DCB read: events a query matches, then the head",
                "cairn query ./course-store --type StudentSubscribed --tag course:c1",
                "Reads the events a query matches (docs/API.md section 5) up to the head at the "
                "call, then prints that head (`head N`; --json: {\"head\": N} last): the "
                "--after of `cairn append ... --condition` made on what was read.  --type and "
                "--tag make one item (any of the types, all of the tags); --query adds items "
                "as JSON, a list of {\"types\": [...], \"tags\": [...]}; no item matches "
                "every event.")
    path(p)
    p.add_argument("--type", dest="types", action="append", metavar="T",
                   help="an event type of the item (repeat: any of them)")
    p.add_argument("--tag", dest="tags", action="append", metavar="T",
                   help="a tag of the item (repeat: all of them)")
    p.add_argument("--query", metavar="JSON", help="more items, as JSON (- reads stdin)")
    p.add_argument("--from", dest="start", type=common.int_at_least(0), metavar="POS",
                   help="first position (inclusive; default: the first, or the head backwards)")
    p.add_argument("--backwards", action="store_true", help="newest first")
    p.add_argument("--limit", type=common.int_at_least(0), metavar="N",
                   help="at most N events (the head is then the last one's position)")

    p = command("tail", inspect.cmd_tail, "follow the log live, one line per event as it commits",
                "cairn tail ./shop-store --category order --json | jq .data",
                "Follows the log live: each event that commits (in any process) is printed and "
                "flushed at once, so tail works in a pipe.  Starts after the current head "
                "unless --from.  Ctrl-C or SIGTERM ends it quietly.")
    path(p)
    p.add_argument("--from", dest="start", type=common.int_at_least(0), metavar="POS",
                   help="first position (inclusive; default: the next event to commit)")
    _add_filters(p)

    p = command("export", inspect.cmd_export, "write events as JSON lines on stdout",
                "cairn export ./shop-store --category order > orders.jsonl",
                "Writes events as JSON lines on stdout, in the shape `cairn import` reads: "
                "events as stored (no upcasters), bytes payloads as data_base64.  Progress goes "
                "to stderr when it is a terminal.")
    path(p)
    p.add_argument("--from", dest="start", type=common.int_at_least(0), metavar="POS",
                   help="first position (inclusive)")
    p.add_argument("--limit", type=common.int_at_least(0), metavar="N", help="at most N events")
    _add_filters(p)

    p = command("load", inspect.cmd_load, "an aggregate's state (now, at a version or a moment)",
                "cairn load ./bank-store account-1 --version 3")
    path(p)
    p.add_argument("stream", metavar="STREAM")
    p.add_argument("--version", type=common.int_at_least(0), metavar="V",
                   help="the state as of this version")
    p.add_argument("--at", type=common.moment, metavar="ISO8601",
                   help="the state as of this moment (UTC unless it says otherwise)")
    p.add_argument("--aggregate", metavar="NAME", help="the script (default: the category)")

    # -- writing --------------------------------------------------------------------------
    p = command("append", write.cmd_append, "append one event (creates the store if missing)",
                "cairn append ./shop-store order-1 OrderPlaced '{\"item\": \"lamp\"}' "
                "--expected-version no_stream")
    path(p)
    p.add_argument("stream", metavar="STREAM")
    p.add_argument("type", metavar="TYPE")
    p.add_argument("data", metavar="DATA_JSON", nargs="?",
                   help="the event's data as JSON (default: none; - reads stdin)")
    _add_write_opts(p)
    p.add_argument("--tag", dest="tags", action="append", default=[], metavar="T",
                   help="a tag (repeat for more)")
    p.add_argument("--id", metavar="UUID", help="the event id (default: a new one)")
    p.add_argument("--condition", metavar="QUERY_JSON",
                   help="append only if no event this query matches (JSON, as cairn query's "
                        "--query) comes after --after (docs/API.md section 5)")
    p.add_argument("--after", type=common.int_at_least(0), metavar="POS",
                   help="with --condition: the head the decision read (default: the whole log)")

    p = command("forget", write.cmd_forget, "forget a data subject (crypto-shredding)",
                "cairn forget ./shop-store user-42",
                "Makes the key of SUBJECT unrecoverable from every file of the store and appends "
                "a $SubjectForgotten event to $lifecycle: its events then read with no data, "
                "marked forgotten (docs/API.md section 6).  Rebuild projections that held its "
                "data (cairn projections reset).")
    path(p)
    p.add_argument("subject", metavar="SUBJECT")

    p = command("import", write.cmd_import, "append the events of a JSON-lines file",
                "cairn import ./copy-store events.jsonl --batch 1000",
                "Appends each line of FILE (JSON lines, the shape `cairn export` writes; - "
                "reads stdin) to its stream.  A line whose id is already in the store is "
                "skipped, so importing a file again, or an overlapping one, adds nothing twice.  "
                "Each batch is one commit; a bad line stops the import (FILE:LINE: what is "
                "wrong) and the batches before it stay.  Creates the store if missing.")
    path(p)
    p.add_argument("file", metavar="FILE.jsonl")
    p.add_argument("--batch", type=common.int_at_least(1), default=500, metavar="N",
                   help="lines per commit (default 500)")

    p = command("define", write.cmd_define, "store an aggregate, projection or upcasters script",
                "cairn define ./bank-store aggregate account examples/account.lua",
                "Stores a Lua script in the store (creating the store if missing):\n"
                "  cairn define PATH aggregate NAME FILE.lua\n"
                "  cairn define PATH projection NAME FILE.lua\n"
                "  cairn define PATH upcasters FILE.lua")
    path(p)
    kinds = p.add_subparsers(dest="kind", metavar="KIND", parser_class=Parser)
    kinds.required = True
    for kind in ("aggregate", "projection"):
        k = kinds.add_parser(kind, help=f"define the {kind} NAME from FILE.lua",
                             parents=[shared])
        k.add_argument("name", metavar="NAME")
        k.add_argument("file", metavar="FILE.lua", help="the script (- reads stdin)")
    k = kinds.add_parser("upcasters", help="define the upcasters from FILE.lua", parents=[shared])
    k.add_argument("file", metavar="FILE.lua", help="the script (- reads stdin)")

    p = command("execute", write.cmd_execute, "run an aggregate's command",
                "cairn execute ./bank-store account-1 Deposit '{\"amount\": 100}'")
    path(p)
    p.add_argument("stream", metavar="STREAM")
    p.add_argument("cmd", metavar="COMMAND")
    p.add_argument("data", metavar="DATA_JSON", nargs="?", help="the command's data as JSON")
    _add_write_opts(p)
    p.add_argument("--aggregate", metavar="NAME", help="the script (default: the category)")

    p = command("decide", write.cmd_decide, "run a command of a decision model over its boundary",
                "cairn decide ./course-store course Subscribe '{\"course\": \"c1\", "
                "\"student\": \"s1\"}' --stream student-s1",
                "Runs COMMAND of the aggregate script AGGREGATE, whose boundary(cmd) names the "
                "events its decision reads (docs/API.md section 5): they are folded, the "
                "command decided and its events appended to --stream, in one write "
                "transaction.")
    path(p)
    p.add_argument("aggregate", metavar="AGGREGATE")
    p.add_argument("cmd", metavar="COMMAND")
    p.add_argument("data", metavar="DATA_JSON", nargs="?", help="the command's data as JSON")
    p.add_argument("--stream", required=True, metavar="S", help="where the new events go")
    p.add_argument("--metadata", metavar="JSON", help="a JSON object, copied onto the events")

    p = command("compensate", write.cmd_compensate, "append the events that undo one event",
                "cairn compensate ./bank-store account-1 3")
    path(p)
    p.add_argument("stream", metavar="STREAM")
    p.add_argument("version", metavar="VERSION", type=common.int_at_least(0))
    _add_write_opts(p, expected=False)
    p.add_argument("--aggregate", metavar="NAME", help="the script (default: the category)")

    p = command("rollback", write.cmd_rollback,
                "compensate every event of a correlation id, newest first",
                "cairn rollback ./bank-store transfer-7")
    path(p)
    p.add_argument("correlation_id", metavar="CORRELATION_ID")

    # -- stream lifecycle (spec 6) ---------------------------------------------------------
    p = command("delete", lifecycle.cmd_delete, "delete a stream (soft, or --hard: a tombstone)",
                "cairn delete ./shop-store cart-7 --expected-version 3",
                "Deletes STREAM.  Soft (the default): its events are removed from every read "
                "and their space reclaimed; stream_version keeps the last version and a later "
                "append continues after it.  --hard: a tombstone; reading or writing the stream "
                "fails from then on, forever.  Either way a $StreamDeleted event is written to "
                "$lifecycle in the same commit (cairn read PATH '$lifecycle' shows them).")
    path(p)
    p.add_argument("stream", metavar="STREAM")
    p.add_argument("--hard", action="store_true", help="a tombstone: the name is never usable again")
    p.add_argument("--expected-version", metavar="V", type=common.expected_version,
                   default=cairn.ANY,
                   help="an integer >= -1, or any (default), no_stream, stream_exists")

    p = command("retention", lifecycle.cmd_retention,
                "reclaim removed events, or show / set a stream's retention limits",
                "cairn retention ./shop-store",
                "Without STREAM: reclaims the space of every event that deletes and retention "
                "limits removed (records and index entries leave data.mdb; LMDB reuses the "
                "pages), with progress on stderr when it is a terminal.  With STREAM: shows "
                "its limits; with any of --max-count, --max-age, --truncate-before, sets all "
                "three (an omitted one: no limit) and writes a $StreamMetadataSet event.\n"
                "  cairn retention ./shop-store log-1 --max-count 100 --max-age 86400")
    path(p)
    p.add_argument("stream", metavar="STREAM", nargs="?")
    p.add_argument("--max-count", type=common.int_at_least(1), metavar="N",
                   help="keep the newest N events")
    p.add_argument("--max-age", type=common.int_at_least(0), metavar="S",
                   help="remove events S seconds old or older")
    p.add_argument("--truncate-before", type=common.int_at_least(0), metavar="V",
                   help="remove the versions below V")

    # -- projections ----------------------------------------------------------------------
    proj = sub.add_parser("projections", help="list, run, inspect and reset projections",
                          formatter_class=Formatter,
                          description="List, run, inspect and reset projections.",
                          epilog="examples:\n  cairn projections list ./bank-store\n"
                          "  cairn projections run --follow ./bank-store")
    psub = proj.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    psub.required = True

    p = command("list", projections.cmd_list, "status, position and lag of every projection",
                "cairn projections list ./bank-store", into=psub)
    path(p)
    p = command("run", projections.cmd_run, "catch up the async projections",
                "cairn projections run ./bank-store --follow",
                "Catches up every async projection (or --name), with progress on stderr when "
                "it is a terminal; with --follow keeps them current until SIGINT/SIGTERM.  "
                "Exits 1 when any projection is faulted after the run.", into=psub)
    path(p)
    p.add_argument("--name", help="run only this projection")
    p.add_argument("--follow", action="store_true", help="keep running as events commit")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p = command("state", projections.cmd_state, "a projection's state (or one partition's)",
                "cairn projections state ./bank-store balances account-1", into=psub)
    path(p)
    p.add_argument("name", metavar="NAME")
    p.add_argument("key", metavar="KEY", nargs="?", help="a partition key")
    p = command("reset", projections.cmd_reset,
                "clear a projection: it rebuilds from position 1 on its next run",
                "cairn projections reset ./bank-store balances", into=psub)
    path(p)
    p.add_argument("name", metavar="NAME")

    # -- operations -----------------------------------------------------------------------
    p = command("verify", ops.cmd_verify, "check every record's checksum and every index",
                "cairn verify ./shop-store",
                "Checks every record's checksum and every index against the log.  Exit 0 and "
                "one summary line on a sound store; otherwise exit 1 and a line naming each "
                "damaged position found (position 7: checksum mismatch).")
    path(p)
    p = command("backup", ops.cmd_backup, "a consistent hot copy of the store",
                "cairn backup ./shop-store /backups/shop-$(date +%F)",
                "Copies the store into DEST (missing, or an empty directory): one read "
                "snapshot, so whole commits only, compacted, with scripts, projection state and "
                "checkpoints, while writers keep writing.")
    path(p)
    p.add_argument("dest", metavar="DEST")
    p = command("bench", ops.cmd_bench, "a short self-benchmark in a new or empty directory",
                "cairn bench /tmp/cairn-bench --seconds 10",
                "Measures appends/s (single durable events, and batches of 100) and reads/s in "
                "PATH, which must be new or empty (it is left holding what was written).")
    path(p)
    p.add_argument("--seconds", type=common.positive_seconds, default=60.0, metavar="S",
                   help="how long to run, in all (default 60)")
    return parser


def _fail(message: str, code: int = EXIT_ERROR) -> int:
    sys.stderr.write(f"cairn: error: {message}\n")
    return code


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _domain_error(e: BaseException) -> str:
    if isinstance(e, cairn.WrongExpectedVersion):
        return (f"wrong expected version: {e} (read the stream and retry, or give "
                f"--expected-version any)")
    if isinstance(e, cairn.ConditionFailed):
        at = ", ".join(str(p) for p in e.positions)
        return (f"{e} (matching events at {at}; read again with cairn query and decide again)")
    if isinstance(e, cairn.CommandRejected):
        detail = "" if e.details is None else " " + json.dumps(e.details, ensure_ascii=False)
        return f"command rejected: {e.reason}{detail}"
    if isinstance(e, cairn.CorruptionError):
        return f"the store is damaged: {e} (cairn verify PATH names each damage)"
    if isinstance(e, cairn.ScriptError):
        return f"script error: {e}"
    if isinstance(e, cairn.StreamDeleted):
        return f"{e} (cairn read PATH '$lifecycle' shows when)"
    if isinstance(e, (cairn.AlreadyCompensated, cairn.NotCompensable, cairn.DuplicateEvent)):
        return str(e)
    if isinstance(e, PermissionError):
        return f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}"
    if isinstance(e, FileNotFoundError):
        return f"{e.filename}: no such file or directory" if e.filename else str(e)
    if isinstance(e, OSError):
        return f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}"
    return str(e)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except UserError as e:
        return _fail(_one_line(e))
    except KeyError as e:  # the API's "no such name": the commands give a better one where known
        return _fail(_one_line(f"not found: {e.args[0] if e.args else e}"))
    except (cairn.Error, OSError, ValueError, TypeError) as e:
        if isinstance(e, BrokenPipeError) or getattr(e, "errno", None) == errno.EPIPE:
            return _broken_pipe()
        return _fail(_one_line(_domain_error(e)))
    except Stop as e:  # SIGTERM: asked to stop
        return e.code
    except KeyboardInterrupt:
        return 130


def _broken_pipe() -> int:
    """The reader of stdout went away (`cairn log PATH | head`): that is the reader's choice,
    not an error; stdout is pointed at /dev/null so that the interpreter's final flush is
    quiet too."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except OSError:
        pass
    return 0


def entry() -> None:
    """The `cairn` console script and `python -m cairn`."""
    code = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = _broken_pipe()
    sys.exit(code)
