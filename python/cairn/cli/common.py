"""What the commands share: opening a store (never creating one by mistake), the argument
types, JSON arguments, reading input files, and quiet ends on SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import sys
from typing import Any

import cairn


class UserError(Exception):
    """A mistake of the caller: printed as one line on stderr, exit status 1."""


class Stop(BaseException):
    """Raised in the main thread by SIGTERM: the command ends quietly with `code`."""

    def __init__(self, code: int = 0) -> None:
        super().__init__(code)
        self.code = code


def is_store(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "data.mdb"))


def open_store(path: str, *, write: bool = False, create: bool = False,
               durability: str = "full") -> cairn.Store:
    """Opens the store at `path`.  Without `create` a path holding no store is a UserError:
    only append, import and define make a store.  Reading commands open it read-only
    (`write` False), so they never write to it (and work on a store they cannot write)."""
    if not create and not is_store(path):
        if not os.path.exists(path):
            raise UserError(f"no cairn store at {path} (no such directory)")
        raise UserError(f"no cairn store at {path}")
    if create and os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{path} is not a directory")
    if write or create:
        return cairn.open(path, durability=durability)
    return cairn.open(path, readonly=True)


# -- argument types (argparse prints "argument --limit: ..." for ArgumentTypeError) ---------
def int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"{v} is below {low}")
        return v

    parse.__name__ = "integer"
    return parse


MARKERS = {"any": cairn.ANY, "no_stream": cairn.NO_STREAM, "stream_exists": cairn.STREAM_EXISTS}


def expected_version(text: str) -> int:
    key = text.strip().lower().replace("-", "_")
    if key in MARKERS:
        return MARKERS[key]
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give an integer >= -1, or any, no_stream, stream_exists") from None
    if v < -1:
        raise argparse.ArgumentTypeError(
            f"{v}: give an integer >= -1, or any, no_stream, stream_exists")
    return v


def moment(text: str) -> datetime.datetime:
    try:
        t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time (e.g. 2026-01-31T12:00:00Z)") from None
    return t if t.tzinfo else t.replace(tzinfo=datetime.timezone.utc)


def positive_seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not v > 0 or v > 86400:
        raise argparse.ArgumentTypeError(f"{text}: give a number of seconds in (0, 86400]")
    return v


def json_arg(text: str | None, what: str, *, obj: bool = False) -> Any:
    """A JSON argument (`-` reads stdin); `obj`: it must be an object."""
    if text is None:
        return None
    if text == "-":
        text = sys.stdin.read()
    try:
        v = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{what}: not valid JSON ({e.msg} at column {e.colno})") from None
    if obj and not isinstance(v, dict):
        raise UserError(f"{what}: must be a JSON object")
    return v


def query_arg(text: str | None, what: str, items: tuple = ()) -> cairn.Query:
    """A DCB query as JSON (docs/API.md section 4): a list of items, or one item, each an
    object with optional "types" and "tags" (lists of str, or one str); `items` come first."""
    v = json_arg(text, what) if text is not None else []
    if isinstance(v, dict):
        v = [v]
    if not isinstance(v, list):
        raise UserError(f"{what}: must be a JSON list of items (objects with \"types\" and "
                        f"\"tags\"), or one item")
    out = list(items)
    for i, it in enumerate(v):
        if not isinstance(it, dict) or set(it) - {"types", "tags"}:
            raise UserError(f"{what}: item {i}: must be an object with only \"types\" and "
                            f"\"tags\"")
        try:
            out.append(cairn.QueryItem(types=it.get("types"), tags=it.get("tags")))
        except (TypeError, ValueError) as e:
            raise UserError(f"{what}: item {i}: {e}") from None
    return cairn.Query(*out)


def read_text(path: str, what: str) -> str:
    """A whole input file as text (`-`: stdin); an unreadable one is a UserError."""
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError:
        raise UserError(f"{path}: {what} is not UTF-8 text") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read {what}: {e.strerror or e}") from None


def stop_on_sigterm() -> None:
    """SIGTERM raises Stop(0) in the main thread (SIGINT raises KeyboardInterrupt: 130)."""

    def handler(signum, frame):
        raise Stop(0)

    signal.signal(signal.SIGTERM, handler)
