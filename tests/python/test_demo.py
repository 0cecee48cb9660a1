"""`make demo` (examples/bank.py, examples/courses.py): the story each tells is true of the
store it leaves behind.

The demo runs in a subprocess on a fresh directory (about 2 s: its watcher process waits
half a second to subscribe); every number it prints is checked against the others and
against the store, and every `cairn` command it prints to explore the store is run on it.
The course-subscription kata (spec section 5) is checked against the invariants it claims
to keep: no course over its capacity, no student over the limit, one student per username.
"""

import os
import re
import select
import shlex
import signal
import subprocess
import time

import pytest

import cairn
from conftest import PACKAGE_ROOT, PYTHON, child_env

BANK = os.path.join(os.path.dirname(PACKAGE_ROOT), "examples", "bank.py")
COURSES = os.path.join(os.path.dirname(PACKAGE_ROOT), "examples", "courses.py")


def run_demo(cwd, store="demo-store"):
    p = subprocess.run([PYTHON, BANK, "--store", store], cwd=cwd, env=child_env(),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stderr == ""
    return p.stdout


def ints(pattern, text):
    m = re.search(pattern, text, re.M)
    assert m, f"{pattern!r} not in the demo's output:\n{text}"
    return [int(g) for g in m.groups()]


def parts(out):
    """[(count, first, last, emitted)] of the "What this run wrote" lines."""
    rows = re.findall(r"^  Part \d: +(\d+) events? at positions (\d+)\.\.(\d+)"
                      r"(?: \((\d+) emitted by the alerts projection\))?$", out, re.M)
    return [(int(n), int(a), int(b), int(e or 0)) for n, a, b, e in rows]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("demo")
    return cwd, run_demo(cwd)


def test_the_demo_tells_each_part_of_the_story(demo):
    _, out = demo
    for line in [
        "store 'demo-store': 0 events recorded before this run",
        "opened account-alice for Alice with 100: version 1, positions 1..2",
        "concurrency conflict caught on account-bob: expected version 1, actual 2",
        "retried append returned the same result: True",
        "overdraft rejected by the script: insufficient funds",
        "saga transfer-1: step 2 rejected (account closed) -> rolling back",
        "rollback appended 1 compensating event(s)",
        "a second rollback finds 0 left to undo",
        "account-alice v0 as stored (raw=True): schema 1 {'owner': 'Alice'}",
        "account-alice v0 as read:              schema 2 {'currency': 'EUR', 'owner': 'Alice'}",
    ]:
        assert line in out, f"{line!r} not in the demo's output:\n{out}"
    live = re.findall(r"^\[watcher\] live @(\d+) (\S+) (\w+)", out, re.M)
    assert [(s, t) for _, s, t in live] == [
        ("account-erin", "Opened"), ("account-erin", "Deposited"), ("account-erin", "Withdrawn"),
        ("alerts-bank", "LargeWithdrawal")]
    assert "did not see" not in out


def test_the_demos_counts_agree_with_each_other_and_with_the_store(demo):
    cwd, out = demo
    rows = parts(out)
    assert len(rows) == 4
    # the parts tile the log: each starts where the one before ended
    assert rows[0][1] == 1
    for (n, a, b, _), nxt in zip(rows, rows[1:] + [None]):
        assert n == b - a + 1
        if nxt:
            assert nxt[1] == b + 1
    head = rows[-1][2]
    total, first, last = ints(r"^  in all: (\d+) events, positions (\d+)\.\.(\d+)$", out)
    assert (total, first, last) == (sum(r[0] for r in rows), 1, head)
    events, streams, vhead, held, earlier = ints(
        r"^verify\(\): (\d+) events in (\d+) streams, head (\d+): the store holds (\d+) "
        r"events, (\d+) of them from earlier runs$", out)
    assert events == vhead == held == head and earlier == 0

    with cairn.open(cwd / "demo-store", readonly=True) as store:
        assert store.head() == head
        assert store.verify() == (events, streams, head)
        assert sum(1 for _ in store.streams()) == streams
        # what Part 3 says the projections applied is what their sources select in the log
        # they caught up with: alerts ran first (emitting one event), then the other two
        (log_holds,) = ints(r"^the log holds (\d+) events;", out)
        assert log_holds == rows[1][2]
        applied = dict((name, int(n)) for name, n in re.findall(r"^  (\w+) +applied +(\d+) events", out, re.M))
        upto = log_holds + 1
        selected = {
            "alerts": store.read_all(types=["Withdrawn"]),
            "balances": store.read_all(categories=["account"]),
            "daily_totals": store.read_all(types=["Deposited", "Withdrawn"]),
        }
        assert applied == {k: sum(1 for e in v if e.position <= upto) for k, v in selected.items()}
        assert sum(r[3] for r in rows) == len(list(store.read_stream("alerts-bank"))) == 2
        (now,) = ints(r"the head is now (\d+)\)", out)
        assert now == log_holds + 1
        for p in store.scripts()["projection"]:
            assert store.projection(p).status == "ok"
            assert store.projection(p).position == rows[2][2]
        # the balances it prints are the projection's
        assert "balances: account-erin -> {'balance': 180, 'events': 3}; 5 accounts known" in out
        assert store.projection("balances").state("account-erin") == {"balance": 180, "events": 3}


def test_a_second_run_on_the_same_store_adds_a_second_story(demo, tmp_path):
    # its own directory: the module's demo store stays as the first run left it
    first = run_demo(tmp_path)
    head = parts(first)[-1][2]
    out = run_demo(tmp_path)
    assert f"store 'demo-store': {head} events recorded before this run" in out
    rows = parts(out)
    assert rows[0][1] == head + 1
    total, first_pos, last = ints(r"^  in all: (\d+) events, positions (\d+)\.\.(\d+)$", out)
    assert (first_pos, last) == (head + 1, rows[-1][2]) and total == last - head
    assert f"the store holds {last} events, {head} of them from earlier runs" in out


def explore_commands(out):
    """The `cairn ...` lines the demo prints at the end, as argument lists."""
    tail = out[out.index("=== Explore the store ==="):]
    return [shlex.split(line.split("   # ")[0].strip())
            for line in tail.splitlines() if line.startswith("  cairn ")]


def test_the_demo_prints_the_cairn_commands_to_explore_its_store(demo):
    _, out = demo
    cmds = explore_commands(out)
    assert [c[1] for c in cmds] == ["info", "streams", "read", "read", "log", "load", "projections",
                                    "projections", "execute", "verify", "export", "backup", "tail"]
    assert all("demo-store" in c for c in cmds)


def test_the_cairn_commands_the_demo_prints_work_on_its_store(demo):
    cwd, out = demo
    env = child_env()
    # the alias line it prints (when `cairn` is not installed) defines the command as printed
    aliases = [line.strip() for line in out.splitlines() if line.strip().startswith("alias cairn=")]
    prelude = "shopt -s expand_aliases\n" + (aliases[0] if aliases else "") + "\n"
    lines = [line.split("   # ")[0].strip() for line in out.splitlines() if line.startswith("  cairn ")]
    assert len(lines) == 13
    for line in lines:
        if line.startswith("cairn tail "):
            p = subprocess.Popen(["bash", "-c", prelude + line], cwd=cwd, env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
            # it prints an event committed after it started (appended until one shows up, as
            # it may still be starting), then ends quietly on Ctrl-C (the shell and the command)
            with cairn.open(cwd / "demo-store") as store:
                deadline = time.monotonic() + 60
                while not select.select([p.stdout], [], [], 0.5)[0]:
                    assert time.monotonic() < deadline and p.poll() is None, p.stderr.read()
                    store.append("tail-check", [cairn.Event("Pinged")])
                assert "tail-check" in p.stdout.readline()
            os.killpg(p.pid, signal.SIGINT)
            stdout, stderr = p.communicate(timeout=30)
            assert p.returncode in (0, 130), stderr
            assert "Traceback" not in stderr
            continue
        p = subprocess.run(["bash", "-c", prelude + line], cwd=cwd, env=env, capture_output=True,
                           text=True, timeout=120)
        if " execute " in line:   # the overdraft: refused, one line on stderr, nothing written
            assert p.returncode != 0 and p.stdout == ""
            assert len(p.stderr.splitlines()) == 1 and "insufficient funds" in p.stderr, p.stderr
            continue
        assert p.returncode == 0, f"{line}: exit {p.returncode}\n{p.stderr}"
        assert "Traceback" not in p.stderr
        if " > " not in line:
            assert p.stdout.strip(), f"{line} printed nothing"
    assert (cwd / "demo.jsonl").read_text().count("\n") == parts(out)[-1][2]
    with cairn.open(cwd / "demo-backup", readonly=True) as copy:
        assert copy.verify().head == parts(out)[-1][2]


# ------------------------------------------------------------------ examples/courses.py
def run_courses(cwd, store="demo-courses"):
    p = subprocess.run([PYTHON, COURSES, "--store", store], cwd=cwd, env=child_env(),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stderr == ""
    return p.stdout


@pytest.fixture(scope="module")
def courses(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("courses")
    return cwd, run_courses(cwd)


def subscriptions(store):
    """{course: [student, ...]} as the log holds them, in position order."""
    held = {}
    for e in store.read_all(types=["StudentSubscribed"]):
        held.setdefault(e.data["course"], []).append(e.data["student"])
    return held


def test_the_course_kata_tells_each_rule_at_work(courses):
    _, out = courses
    for line in [
        "store 'demo-courses': 0 events recorded before this run",
        "c1 defined again: refused by its stream's version (expected -1, actual 0)",
        "s4 not registered: username 'ada' is taken (by the event at position 6)",
        "  s1 -> c1: subscribed",
        "  s3 -> c1: rejected, course c1 is full (2 of 2 seats taken)",
        "  s1 -> c1: rejected, s1 already takes c1",
        "  s4 -> c1: rejected, student s4 is not registered",
        "  s3 -> c1: subscribed",
        "  s1 -> c4: rejected, s1 already takes 3 courses, the most a student may",
        "clerk A appended: s5 takes the last seat",
        "  s6 -> c1: rejected, course c1 is full (4 of 4 seats taken)",
    ]:
        assert line in out, f"{line!r} not in the example's output:\n{out}"
    (won, lost) = ints(r"^(\d+) subscribed, (\d+) rejected \(course full\); \d+ appends were retried", out)
    assert (won, lost) == (5, 7)


def test_the_course_kata_keeps_its_invariants_in_the_store(courses):
    cwd, out = courses
    with cairn.open(cwd / "demo-courses", readonly=True) as store:
        held = subscriptions(store)
        capacity = {}
        for e in store.read_all(types=["CourseDefined", "CourseCapacityChanged"]):
            capacity[e.data["course"]] = e.data["capacity"]
        assert {c: len(s) for c, s in held.items()} == {"c1": 4, "c2": 1, "c3": 1, "c5": 5}
        assert all(len(held[c]) <= capacity[c] for c in held)
        per_student = {}
        for c, students in held.items():
            assert len(set(students)) == len(students)
            for s in students:
                per_student[s] = per_student.get(s, 0) + 1
        assert max(per_student.values()) == per_student["s1"] == 3
        usernames = [e.data["username"] for e in store.read_all(types=["StudentRegistered"])]
        assert len(usernames) == len(set(usernames)) == 17        # s1-s3, s5, s6, 12 racers
        # what it prints as the log's answer is the log's
        for course, students in held.items():
            assert f"  {course}: {len(students)} student{'s' if len(students) != 1 else ''} {students}" in out
        assert f"head {store.head()}; this run wrote positions 1..{store.head()}" in out
        # clerk B's conflict names clerk A's event
        (pos,) = ints(r"^clerk B's append failed its condition: ConditionFailed, positions \[(\d+)\]$", out)
        a = store.get(pos)
        assert (a.type, a.data) == ("StudentSubscribed", {"student": "s5", "course": "c1"})


def test_a_second_run_of_the_course_kata_adds_a_second_term(tmp_path):
    head = ints(r"^head (\d+);", run_courses(tmp_path))[0]
    out = run_courses(tmp_path)
    assert f"store 'demo-courses': {head} events recorded before this run" in out
    (first, last) = ints(r"this run wrote positions (\d+)\.\.(\d+)$", out)
    assert (first, last) == (head + 1, 2 * head)
    with cairn.open(tmp_path / "demo-courses", readonly=True) as store:
        held = subscriptions(store)
        assert sorted(len(s) for s in held.values()) == [1, 1, 1, 1, 4, 4, 5, 5]


def test_the_cairn_commands_the_course_kata_prints_work_on_its_store(courses):
    cwd, out = courses
    aliases = [line.strip() for line in out.splitlines() if line.strip().startswith("alias cairn=")]
    prelude = "shopt -s expand_aliases\n" + (aliases[0] if aliases else "") + "\n"
    tail = out[out.index("=== Explore the store ==="):]
    lines = [line.split("   # ")[0].strip() for line in tail.splitlines() if line.startswith("  cairn ")]
    assert [shlex.split(line)[1] for line in lines] == ["query", "append"]
    run = lambda line: subprocess.run(["bash", "-c", prelude + line], cwd=cwd, env=child_env(),  # noqa: E731
                                      capture_output=True, text=True, timeout=120)
    with cairn.open(cwd / "demo-courses", readonly=True) as store:
        head = store.head()
        c1 = [e.position for e in store.read_all(types=["StudentSubscribed"], tags=["course:c1"])]
    q = run(lines[0])
    assert q.returncode == 0, q.stderr
    assert [int(row.split("\t")[0]) for row in q.stdout.splitlines()[:-1]] == c1
    assert q.stdout.splitlines()[-1] == f"head {head}"
    # the second registration of a username: refused by its condition, one line, nothing written
    a = run(lines[1])
    assert a.returncode == 1 and a.stdout == "" and len(a.stderr.splitlines()) == 1, a.stderr
    assert "condition failed" in a.stderr and "at position 6" in a.stderr
    with cairn.open(cwd / "demo-courses", readonly=True) as store:
        assert store.head() == head
