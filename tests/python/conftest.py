"""Fixtures and checks shared by the pytest suite of cairn (spec: docs/API.md sections 1-2).

Every test gets a fresh store in its own tmp_path.  Most use durability="none" for speed;
test_open.py opens every durability value once.
"""

import contextlib
import math
import os
import sys
import threading

import pytest

import cairn

# The directory holding the `cairn` package, for child processes (subprocess, spawn).
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(cairn.__file__)))


@pytest.fixture
def store_path(tmp_path):
    """A path where no store exists yet."""
    return tmp_path / "store"


@pytest.fixture
def store(store_path):
    """A fresh, empty, writable store (durability="none"), closed after the test."""
    s = cairn.open(store_path, durability="none")
    yield s
    s.close()


def make_events(n=1, type="Tested", **kw):
    """n fresh Events whose data is {"i": 0..n-1}."""
    return [cairn.Event(type, {"i": i}, **kw) for i in range(n)]


def dump(store):
    """Everything observable about a store's log, to compare before and after a failure."""
    events = [
        (e.position, e.stream, e.version, e.id, e.type, e.schema, e.tags, repr(e.data),
         repr(e.metadata))
        for e in store.read_all()
    ]
    streams = list(store.streams())
    versions = {s: store.stream_version(s) for s in streams}
    return store.head(), events, streams, versions


def check_usable(store, stream="usable-check"):
    """The store still accepts a write and reads it back, and its head moves by one."""
    head = store.head()
    version = store.stream_version(stream)
    e = cairn.Event("UsableCheck", {"head": head})
    r = store.append(stream, [e], expected_version=version)
    assert r.position == head + 1
    assert r.first_position == head + 1
    assert r.version == version + 1
    assert store.head() == head + 1
    got = store.get(r.position)
    assert got.id == e.id and got.stream == stream and got.data == {"head": head}
    last = list(store.read_stream(stream, backwards=True, limit=1))
    assert [x.id for x in last] == [e.id]


@contextlib.contextmanager
def nothing_written(store, writable=True):
    """Asserts that the block leaves the log exactly as it was, then that the store still
    works.  Put the pytest.raises inside it:

        with nothing_written(store), pytest.raises(ValueError):
            ...
    """
    before = dump(store)
    yield
    assert dump(store) == before, "a failed call changed the store"
    if writable:
        check_usable(store)
    else:
        assert dump(store) == before


def same(a, b):
    """Deep equality that also tells 1 from 1.0 from True, and 0.0 from -0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.copysign(1.0, a) == math.copysign(1.0, b) and a == b) or (a != a and b != b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def child_env():
    """Environment for a child Python process that must import this cairn."""
    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


PYTHON = sys.executable


def run_together(script, argvs, timeout=120):
    """Runs one `python -c script` child per argument list in `argvs`, each printing "ready"
    and then waiting for a line on stdin, which they all get at once; returns their stdouts
    (each child must exit 0).  For races between processes."""
    import subprocess
    procs = [subprocess.Popen([PYTHON, "-c", script, *map(str, argv)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(),
                              text=True)
             for argv in argvs]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready", p.stderr.read()
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = []
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            assert p.returncode == 0, err
            outs.append(out)
        return outs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def run_threads(target, n):
    """Runs target(k) for k in range(n) in n threads; re-raises the first exception."""
    errors = []

    def wrap(k):
        try:
            target(k)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]
