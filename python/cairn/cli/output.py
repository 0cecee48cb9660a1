"""What the command line prints (docs/API.md section 4).

stdout carries results alone: with --json one JSON object per line; otherwise, on a terminal,
aligned columns with a header, coloured unless NO_COLOR is set (or TERM is dumb), and in a
pipe or file the same columns separated by one tab, without header or colour, for cut and
awk.  Progress bars and rates go to stderr, only when stderr is a terminal.

`rich` draws the colours and the progress bars; it is imported here, on first use, and only
when a terminal will show what it draws (`import cairn` never imports it; a pipe never needs
it).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
from typing import Any, Callable, Iterable, Sequence

import cairn


def _colour_wanted(stream) -> bool:
    if "NO_COLOR" in os.environ or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _have_rich() -> bool:
    """Without rich (a checkout run with the system's python3) the output is the same, only
    without colour and progress bars."""
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def dumps(obj: Any) -> str:
    """One JSON line: compact, UTF-8 kept as is."""
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": "))


def timestamp(e: cairn.RecordedEvent) -> str:
    """RFC 3339, UTC, microseconds."""
    return e.timestamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_json(e: cairn.RecordedEvent) -> dict[str, Any]:
    """The event-line shape of section 4, which `import` reads back."""
    d: dict[str, Any] = {
        "position": e.position,
        "stream": e.stream,
        "version": e.version,
        "type": e.type,
        "data": e.data,
        "metadata": e.metadata,
        "id": str(e.id),
        "schema": e.schema,
        "tags": list(e.tags),
        "timestamp": timestamp(e),
    }
    if isinstance(e.data, bytes):
        d["data"] = None
        d["data_base64"] = base64.b64encode(e.data).decode("ascii")
    if e.subject is not None:  # spec 6: only on events that have one
        d["subject"] = e.subject
    if e.forgotten:
        d["forgotten"] = True
    return d


def event_text(e: cairn.RecordedEvent) -> str:
    """The data column of a human line; a forgotten event's data is gone (spec 6)."""
    return "<forgotten>" if e.forgotten else data_text(e.data)


def data_text(data: Any) -> str:
    if isinstance(data, bytes):
        return f"<{len(data)} bytes>"
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


class Out:
    """stdout in the form this run wants.  `json`: --json was given."""

    def __init__(self, as_json: bool, stream=None) -> None:
        self.json = as_json
        self.stream = stream if stream is not None else sys.stdout
        self.tty = _isatty(self.stream)
        self._console = None
        if not as_json and self.tty and _colour_wanted(self.stream) and _have_rich():
            from rich.console import Console  # a terminal that shows colour

            self._console = Console(file=self.stream, highlight=False, soft_wrap=True,
                                    emoji=False, markup=False)

    # -- plain lines ------------------------------------------------------------------------
    def obj(self, d: Any, flush: bool = False) -> None:
        self.stream.write(dumps(d) + "\n")
        if flush:
            self.stream.flush()

    def line(self, text: str = "", style: str | None = None, flush: bool = False) -> None:
        if self._console is not None and style:
            self._console.print(text, style=style)
        else:
            self.stream.write(text + "\n")
        if flush:
            self.stream.flush()

    def styled(self, parts: Sequence[tuple[str, str | None]], flush: bool = False) -> None:
        """One line made of (text, style) parts; styles only where colour is on."""
        if self._console is not None:
            from rich.text import Text

            t = Text()
            for text, style in parts:
                t.append(text, style=style or "")
            self._console.print(t)
        else:
            self.stream.write("".join(p for p, _ in parts) + "\n")
        if flush:
            self.stream.flush()

    # -- tables -----------------------------------------------------------------------------
    def table(self, headers: Sequence[str] | None, rows: Iterable[Sequence[Any]],
              styles: Sequence[str | None] | None = None, right: Sequence[int] = ()) -> None:
        """Aligned columns (under a header, unless None) on a terminal; tab-separated lines
        elsewhere."""
        rows = [["" if c is None else str(c) for c in r] for r in rows]
        if not self.tty:
            for r in rows:
                self.stream.write("\t".join(r) + "\n")
            return
        ncols = len(headers) if headers else max((len(r) for r in rows), default=0)
        widths = [len(h) for h in headers] if headers else [0] * ncols
        for r in rows:
            for i, c in enumerate(r[:-1]):  # the last column is not padded
                widths[i] = max(widths[i], len(c))
        styles = list(styles or [None] * ncols)

        def cells(r: Sequence[str], header: bool):
            parts = []
            for i, c in enumerate(r):
                last = i == len(r) - 1
                text = c if last else (c.rjust(widths[i]) if i in right else c.ljust(widths[i]))
                parts.append((text, "bold" if header else styles[i]))
                if not last:
                    parts.append(("  ", None))
            return parts

        if headers:
            self.styled(cells(list(headers), True))
        for r in rows:
            self.styled(cells(r, False))

    # -- events -----------------------------------------------------------------------------
    def event(self, e: cairn.RecordedEvent, width: int = 1, flush: bool = False) -> None:
        """One event: its JSON line, or a human line (position, time, stream@version, type,
        tags, data)."""
        if self.json:
            self.obj(event_json(e), flush)
            return
        if not self.tty:
            self.stream.write("\t".join((str(e.position), timestamp(e), e.stream, str(e.version),
                                         e.type, event_text(e))) + "\n")
            if flush:
                self.stream.flush()
            return
        parts = [(str(e.position).rjust(width), "dim"), ("  ", None),
                 (e.timestamp.strftime("%Y-%m-%d %H:%M:%S.%f"), "dim"), ("  ", None),
                 (f"{e.stream}@{e.version}", "cyan"), ("  ", None), (e.type, "bold green")]
        for t in e.tags:
            parts += [(" ", None), ("#" + t, "magenta")]
        parts += [("  ", None), (event_text(e), "dim" if e.forgotten else None)]
        self.styled(parts, flush)


def pretty(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=2)


# ---------------------------------------------------------------------------------------------
# Progress on stderr
# ---------------------------------------------------------------------------------------------
class Progress:
    """A progress bar with a rate on stderr, drawn only when stderr is a terminal (and not
    `quiet`); otherwise every call does nothing.  Thread-safe: update() may come from the
    thread doing the work while another one waits.

        with Progress("export", total=head, unit="events") as p:
            p.update(done)
    """

    def __init__(self, what: str, total: int | None, unit: str = "events",
                 quiet: bool = False) -> None:
        self.what, self.total, self.unit = what, total, unit
        self.on = not quiet and _isatty(sys.stderr) and _have_rich()
        self._p = None
        self._task = None
        self._lock = threading.Lock()

    def __enter__(self) -> "Progress":
        if self.on:
            from rich.console import Console
            from rich.progress import BarColumn, Progress as RichProgress, ProgressColumn
            from rich.progress import TextColumn, TimeRemainingColumn
            from rich.text import Text

            unit = self.unit

            class Rate(ProgressColumn):
                def render(self, task):  # type: ignore[override]
                    if not task.speed:
                        return Text("")
                    rate = (f"{_size(int(task.speed))}/s" if unit == "bytes"
                            else f"{task.speed:,.0f} {unit}/s")
                    return Text(rate, style="progress.data.speed")

            class Amount(ProgressColumn):
                def render(self, task):  # type: ignore[override]
                    done = int(task.completed)
                    if unit == "bytes":
                        total = f"/{_size(int(task.total))}" if task.total is not None else ""
                        return Text(f"{_size(done)}{total}")
                    total = f"/{int(task.total)}" if task.total is not None else ""
                    return Text(f"{done}{total} {unit}")

            amount = Amount()
            self._p = RichProgress(
                TextColumn("{task.description}:"), BarColumn(), amount, Rate(),
                TimeRemainingColumn(), console=Console(file=sys.stderr), transient=False,
                refresh_per_second=8)
            self._p.start()
            self._task = self._p.add_task(self.what, total=self.total)
        return self

    def update(self, completed: int, total: int | None = None) -> None:
        if self._p is None:
            return
        with self._lock:
            if total is not None:
                self.total = total
            self._p.update(self._task, completed=completed, total=self.total)

    def __exit__(self, *exc) -> None:
        if self._p is not None:
            # rich's stop() does not wait for its refresh thread: join it, so that no thread
            # is still starting when the interpreter exits (LeakSanitizer sees its state)
            t = getattr(self._p.live, "_refresh_thread", None)
            self._p.stop()
            if t is not None:
                t.join(2)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def size(n: int) -> str:
    """A byte count for people: 4.0 KiB, 12.3 MiB."""
    return _size(n)


def watch(fn: Callable[[], None], poll: Callable[[], None], every: float = 0.125) -> None:
    """Runs fn() in this thread while poll() runs every `every` seconds in another, until fn
    returns or raises."""
    done = threading.Event()

    def loop() -> None:
        while not done.wait(every):
            try:
                poll()
            except Exception:  # a progress update must never fail the work
                pass

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        fn()
    finally:
        done.set()
        t.join()
        try:
            poll()
        except Exception:
            pass
