"""What the command-line tests share (tests/python/test_cli*.py): running `python -m cairn`
as a subprocess, on a real store, with stdout a pipe (or a pty where a test says so)."""

import json
import os
import pty
import subprocess
import sys
import tempfile

from conftest import PACKAGE_ROOT

import cairn


def env(**extra):
    e = {**os.environ, "PYTHONPATH": PACKAGE_ROOT}
    e.pop("NO_COLOR", None)
    e.update(extra)
    return e


def cli(*args, input=None, timeout=60, **extra_env):
    """Runs `python -m cairn ARGS`; returns the CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", "cairn", *map(str, args)], capture_output=True,
                          text=True, input=input, env=env(**extra_env), timeout=timeout)


def ok(*args, **kw):
    r = cli(*args, **kw)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    return r


def jsonl(r):
    return [json.loads(line) for line in r.stdout.splitlines()]


def mistake(*args, code=None, **kw):
    """A user mistake: exactly one line on stderr, a non-zero exit, no traceback, nothing on
    stdout.  Returns that line."""
    r = cli(*args, **kw)
    assert r.returncode != 0, (args, r.stdout)
    if code is not None:
        assert r.returncode == code, (args, r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, (args, r.stderr)
    assert r.stdout == "", (args, r.stdout)
    return lines[0]


def on_terminal(*args, stdout_tty=False, **extra_env):
    """Runs the CLI with stderr (and stdout when stdout_tty) on a pty; returns
    (returncode, stdout bytes, what the terminal showed)."""
    main, child = pty.openpty()
    sink = tempfile.TemporaryFile()  # not a pipe: a large stdout must not block the child
    try:
        p = subprocess.Popen([sys.executable, "-m", "cairn", *map(str, args)],
                             stdout=child if stdout_tty else sink, stderr=child,
                             env=env(TERM="xterm", COLUMNS="100", **extra_env))
        os.close(child)
        child = -1
        shown = b""
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: every writer closed its end
                break
            if not chunk:
                break
            shown += chunk
        rc = p.wait(60)
        sink.seek(0)
        out = sink.read()
    finally:
        sink.close()
        os.close(main)
        if child >= 0:
            os.close(child)
    return rc, out, shown


def bank(path, n=3):
    """A store with an aggregate, n accounts with money moved, one projection."""
    with cairn.open(path, durability="none") as s:
        s.define_aggregate("account", ACCOUNT)
        s.define_projection("balances", BALANCES)
        for i in range(1, n + 1):
            s.execute(f"account-{i}", "Open", {"owner": f"o{i}"})
            s.execute(f"account-{i}", "Deposit", {"amount": 100 * i},
                      metadata={"correlation_id": "t-1"})
        s.append("order-1", [cairn.Event("OrderPlaced", {"item": "lamp"}, tags=["customer:ann"]),
                             cairn.Event("Blob", b"\x00\xffraw")])
        s.run_projections()
        s.sync()


ACCOUNT = """
return {
  init = function() return { balance = 0, open = false } end,
  apply = {
    Opened = function(s, e) s.open = true; s.owner = e.data.owner end,
    Deposited = function(s, e) s.balance = s.balance + e.data.amount end,
    Withdrawn = function(s, e) s.balance = s.balance - e.data.amount end,
  },
  decide = {
    Open = function(s, c) return { { type = "Opened", data = { owner = c.data.owner } } } end,
    Deposit = function(s, c) return { { type = "Deposited", data = { amount = c.data.amount } } } end,
    Withdraw = function(s, c)
      if s.balance < c.data.amount then reject("insufficient funds", { balance = s.balance }) end
      return { { type = "Withdrawn", data = { amount = c.data.amount } } }
    end,
  },
  compensate = {
    Deposited = function(s, e) return { { type = "Withdrawn", data = { amount = e.data.amount } } } end,
  },
}
"""

BALANCES = """
return {
  source = { categories = { "account" } },
  partition = function(e) return e.stream end,
  init = function() return { balance = 0 } end,
  apply = {
    Deposited = function(s, e) s.balance = s.balance + e.data.amount end,
    Withdrawn = function(s, e) s.balance = s.balance - e.data.amount end,
  },
}
"""
