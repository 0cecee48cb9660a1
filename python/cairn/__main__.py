"""The command line of cairn: ``python -m cairn`` (spec: docs/API.md section 4).

Commands so far: ``projections run [--follow] [--name NAME] PATH`` and
``projections list PATH``.  A user mistake prints one line and exits non-zero, without a
traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time

import cairn


class UserError(Exception):
    """A mistake of the caller: printed as one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like argparse but shorter
        self.exit(2, f"{self.prog}: error: {message}\n")


def _open(path: str) -> cairn.Store:
    if not os.path.isdir(path) or not os.path.exists(os.path.join(path, "data.mdb")):
        raise UserError(f"no cairn store at {path}")
    return cairn.open(path)


def _async_names(store: cairn.Store, name: str | None) -> list[str]:
    names = store.scripts()["projection"]
    if name is not None:
        if name not in names:
            raise UserError(f"no projection named {name!r}")
        return [name]
    return names


def _progress(store: cairn.Store, names: list[str], done: threading.Event, out) -> None:
    """Prints processed/head to `out` until `done` is set."""
    tty = out.isatty()
    last = ""
    while not done.wait(0.2):
        try:
            head = store.head()
            pos = min((store.projection(n).position for n in names), default=head)
        except (cairn.Error, KeyError):
            continue
        line = f"projections: {pos}/{head} events ({100.0 * pos / head if head else 100:.1f}%)"
        if line != last:
            out.write(("\r" + line) if tty else line + "\n")
            out.flush()
            last = line
    if tty and last:
        out.write("\n")


def _catch_up(store: cairn.Store, name: str | None, quiet: bool) -> int:
    names = _async_names(store, name)
    result: dict[str, object] = {}

    def work() -> None:
        try:
            result["n"] = store.run_projections(name)
        except BaseException as e:  # handed to the main thread
            result["error"] = e

    done = threading.Event()
    t = threading.Thread(target=work, daemon=True)
    t.start()
    p = None
    # Progress is for a person watching: on a terminal only, so logs and pipes get the
    # report alone.
    if not quiet and sys.stderr.isatty():
        p = threading.Thread(target=_progress, args=(store, names, done, sys.stderr), daemon=True)
        p.start()
    t.join()
    done.set()
    if p is not None:
        p.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return int(result["n"])  # type: ignore[arg-type]


def _report(store: cairn.Store, names: list[str], processed: int | None, as_json: bool) -> None:
    for n in names:
        p = store.projection(n)
        row = {"name": n, "position": p.position, "status": p.status, "error": p.error}
        if as_json:
            print(json.dumps(row))
        else:
            extra = f"  {p.error}" if p.error else ""
            print(f"{n}\t{p.status}\t{p.position}{extra}")
    if processed is not None:
        if as_json:
            print(json.dumps({"processed": processed, "head": store.head()}))
        else:
            print(f"processed {processed} events; head {store.head()}")


def _faults(store: cairn.Store, names: list[str]) -> int:
    """Prints one line on stderr per faulted projection (even with --quiet: they are errors,
    and cron or CI must see them); returns how many there are."""
    n = 0
    for name in names:
        p = store.projection(name)
        if p.status == "faulted":
            print(f"cairn: error: projection {name} is faulted at position {p.position}: {p.error}",
                  file=sys.stderr)
            n += 1
    return n


def cmd_projections_run(args: argparse.Namespace) -> int:
    with _open(args.path) as store:
        names = _async_names(store, args.name)
        processed = _catch_up(store, args.name, args.quiet)
        if not args.quiet:
            _report(store, names, processed, args.json)
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


def cmd_projections_list(args: argparse.Namespace) -> int:
    with _open(args.path) as store:
        names = store.scripts()["projection"]
        if not names and not args.json:
            print(f"no projections in {args.path}")
        _report(store, names, None, args.json)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cairn", description="Inspect and operate a cairn event store.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    proj = sub.add_parser("projections", help="run and inspect projections")
    psub = proj.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    psub.required = True

    run = psub.add_parser(
        "run",
        help="catch up the async projections (progress on a terminal)",
        description="Catches up every async projection (or --name), printing progress "
        "(position/head) to stderr when it is a terminal; with --follow keeps them current until "
        "interrupted.  Exits 1 when any projection is faulted after the run.",
    )
    run.add_argument("path", metavar="PATH", help="the store directory")
    run.add_argument("--name", help="run only this projection")
    run.add_argument("--follow", action="store_true", help="keep running as events commit")
    run.add_argument("--quiet", action="store_true", help="print nothing but errors")
    run.add_argument("--json", action="store_true", help="one JSON object per line")
    run.set_defaults(fn=cmd_projections_run)

    ls = psub.add_parser("list", help="status and position of every projection")
    ls.add_argument("path", metavar="PATH", help="the store directory")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(fn=cmd_projections_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except UserError as e:
        print(f"cairn: error: {e}", file=sys.stderr)
        return 1
    except KeyError as e:
        print(f"cairn: error: not found: {e.args[0] if e.args else e}", file=sys.stderr)
        return 1
    except (cairn.Error, OSError, ValueError, TypeError) as e:
        print(f"cairn: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
