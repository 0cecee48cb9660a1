"""Course subscriptions with dynamic consistency boundaries (the kata of dcb.events): `make demo`.

Students subscribe to courses, and three rules span more than one stream:

- a course takes at most its capacity of students (and the capacity may change),
- a student takes at most MAX_COURSES courses,
- a username belongs to one student.

No single stream holds every event one of these rules needs, so an expected version cannot
protect it. Instead each decision reads the events of its rule with `store.query` (by tags
such as "course:c1" and "student:s1", and by types), decides, and appends on the condition
that nothing matching the same query was appended since that read:
`condition=cairn.Condition(q, after=res.head)`, checked inside the write transaction. When
another writer got in between, `append` raises `ConditionFailed` and the decision runs again
on the new facts.

    python examples/courses.py --store demo-courses

Run it again on the same store and it adds a second term beside the first (its ids get a
suffix).
"""

import argparse
import json
import os
import shlex
import shutil
import sys
import threading
import uuid

import cairn

MAX_COURSES = 3


class Rejected(Exception):
    """A decision's answer "no": nothing is written."""


def say(text=""):
    print(text, flush=True)


def course_tag(course):
    return f"course:{course}"


def student_tag(student):
    return f"student:{student}"


# ------------------------------------------------------------------ commands
def define_course(store, course, capacity):
    # A course is defined once: that rule lives in one stream, so an expected version holds it.
    store.append(f"course-{course}", [cairn.Event("CourseDefined", {"course": course, "capacity": capacity},
                                                  tags=[course_tag(course)])],
                 expected_version=cairn.NO_STREAM)


def change_capacity(store, course, capacity):
    store.append(f"course-{course}", [cairn.Event("CourseCapacityChanged", {"course": course, "capacity": capacity},
                                                  tags=[course_tag(course)])],
                 expected_version=cairn.STREAM_EXISTS)


def register(store, student, username):
    # Unique username: no StudentRegistered carrying this username's tag anywhere in the log.
    # Nothing needs to be read first: the condition without `after` covers the whole log.
    taken = cairn.Query(cairn.QueryItem(types=["StudentRegistered"], tags=[f"username:{username}"]))
    try:
        store.append(f"student-{student}",
                     [cairn.Event("StudentRegistered", {"student": student, "username": username},
                                  tags=[student_tag(student), f"username:{username}"])],
                     condition=cairn.Condition(taken))
    except cairn.ConditionFailed as err:
        raise Rejected(f"username {username!r} is taken (by the event at position {err.positions[0]})") from None


def subscription_boundary(student, course):
    """The events the rules of one subscription depend on, and nothing else."""
    return cairn.Query(
        cairn.QueryItem(types=["CourseDefined", "CourseCapacityChanged", "StudentSubscribed"],
                        tags=[course_tag(course)]),
        cairn.QueryItem(types=["StudentRegistered", "StudentSubscribed"], tags=[student_tag(student)]),
    )


def decide_subscription(events, student, course):
    capacity, taken, registered, courses = None, 0, False, set()
    for e in events:
        if e.type in ("CourseDefined", "CourseCapacityChanged"):
            capacity = e.data["capacity"]
        elif e.type == "StudentRegistered":
            registered = True
        elif e.type == "StudentSubscribed":
            if e.data["course"] == course:
                taken += 1
            if e.data["student"] == student:
                courses.add(e.data["course"])
    if capacity is None:
        raise Rejected(f"course {course} does not exist")
    if not registered:
        raise Rejected(f"student {student} is not registered")
    if course in courses:
        raise Rejected(f"{student} already takes {course}")
    if taken >= capacity:
        raise Rejected(f"course {course} is full ({taken} of {capacity} seats taken)")
    if len(courses) >= MAX_COURSES:
        raise Rejected(f"{student} already takes {MAX_COURSES} courses, the most a student may")
    return [cairn.Event("StudentSubscribed", {"student": student, "course": course},
                        tags=[course_tag(course), student_tag(student)])]


def subscribe(store, student, course):
    """Subscribes a student to a course; returns the number of retries it took."""
    boundary = subscription_boundary(student, course)
    retries = 0
    while True:
        res = store.query(boundary)
        events = decide_subscription(res, student, course)    # raises Rejected
        try:
            store.append(f"course-{course}", events, condition=cairn.Condition(boundary, after=res.head))
            return retries
        except cairn.ConditionFailed:
            retries += 1                                       # someone got in between: decide again


def attempt(store, student, course):
    try:
        retries = subscribe(store, student, course)
        say(f"  {student} -> {course}: subscribed" + (f" (after {retries} retries)" if retries else ""))
    except Rejected as why:
        say(f"  {student} -> {course}: rejected, {why}")


# ------------------------------------------------------------------ the story
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="demo-courses", help="store directory (created when missing)")
    args = ap.parse_args(argv)

    with cairn.open(args.store) as store:
        before = store.head()
        run = "" if before == 0 else "-" + uuid.uuid4().hex[:6]   # a second run: fresh ids
        c1, c2, c3, c4, c5 = (f"c{i}{run}" for i in range(1, 6))
        say(f"store {args.store!r}: {before} events recorded before this run")

        say("\n=== Courses and students ===")
        for course, capacity in ((c1, 2), (c2, 10), (c3, 10), (c4, 10), (c5, 5)):
            define_course(store, course, capacity)
        say(f"courses {c1} (2 seats), {c2}, {c3}, {c4} (10 seats each), {c5} (5 seats)")
        try:
            define_course(store, c1, 50)
        except cairn.WrongExpectedVersion as err:
            say(f"{c1} defined again: refused by its stream's version (expected {err.expected}, actual {err.actual})")
        for student, username in (("s1", "ada"), ("s2", "brian"), ("s3", "chloe"), ("s4", "ada")):
            try:
                register(store, student + run, username + run)
                say(f"registered {student + run} as {username + run!r}")
            except Rejected as why:
                say(f"{student + run} not registered: {why}")
        s1, s2, s3, s4 = (f"s{i}{run}" for i in range(1, 5))

        say("\n=== Subscriptions (each a query, a decision and a conditional append) ===")
        for student, course in ((s1, c1), (s2, c1), (s3, c1), (s1, c1), (s4, c1)):
            attempt(store, student, course)
        change_capacity(store, c1, 3)
        say(f"  ({c1}'s capacity raised to 3)")
        attempt(store, s3, c1)
        for course in (c2, c3, c4):
            attempt(store, s1, course)

        say("\n=== Two clerks and the last seat ===")
        # Two clerks subscribe two students at once while one seat is left.
        change_capacity(store, c1, 4)
        s5, s6 = f"s5{run}", f"s6{run}"
        register(store, s5, f"dora{run}")
        register(store, s6, f"emil{run}")
        q5, q6 = subscription_boundary(s5, c1), subscription_boundary(s6, c1)
        r5, r6 = store.query(q5), store.query(q6)
        e5, e6 = decide_subscription(r5, s5, c1), decide_subscription(r6, s6, c1)
        say(f"clerk A read {c1} for {s5} at head {r5.head}, clerk B for {s6} at head {r6.head}: "
            f"both see 1 seat left")
        store.append(f"course-{c1}", e5, condition=cairn.Condition(q5, after=r5.head))
        say(f"clerk A appended: {s5} takes the last seat")
        try:
            store.append(f"course-{c1}", e6, condition=cairn.Condition(q6, after=r6.head))
        except cairn.ConditionFailed as err:
            say(f"clerk B's append failed its condition: ConditionFailed, positions {list(err.positions)}")
        attempt(store, s6, c1)    # B decides again on the new facts

        say(f"\n=== A race: 12 students, {c5}'s 5 seats, 12 threads ===")
        racers = [f"r{i}{run}" for i in range(1, 13)]
        for i, student in enumerate(racers, 1):
            register(store, student, f"racer{i}{run}")
        outcome = {}

        def race(student):
            try:
                outcome[student] = subscribe(store, student, c5)
            except Rejected:
                outcome[student] = None

        threads = [threading.Thread(target=race, args=(s,)) for s in racers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        won = [s for s in racers if outcome[s] is not None]
        say(f"{len(won)} subscribed, {len(racers) - len(won)} rejected (course full); "
            f"{sum(outcome[s] for s in won)} appends were retried after ConditionFailed")

        say("\n=== What the log says ===")
        for course in (c1, c2, c3, c4, c5):
            res = store.query(cairn.Query(cairn.QueryItem(types=["StudentSubscribed"], tags=[course_tag(course)])))
            students = [e.data["student"] for e in res]
            say(f"  {course}: {len(students)} student{'s' if len(students) != 1 else ''} {students}")
        for student in (s1, s2, s3, s4):
            res = store.query(cairn.Query(cairn.QueryItem(types=["StudentSubscribed"], tags=[student_tag(student)])))
            say(f"  {student}: {[e.data['course'] for e in res]}")
        say(f"head {store.head()}; this run wrote positions {before + 1}..{store.head()}")
    explore(args.store, c1, run)
    return 0


def explore(path, course, run):
    say("\n=== Explore the store ===")
    p = shlex.quote(path)
    if shutil.which("cairn") is None:
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        say("`pip install .` installs the `cairn` command; until then, define it in your shell:")
        say(f"  alias cairn='PYTHONPATH={shlex.quote(os.path.join(here, 'python'))} {sys.executable} -m cairn'")
    taken = json.dumps([{"types": ["StudentRegistered"], "tags": [f"username:ada{run}"]}])
    commands = [
        (f"cairn query {p} --type StudentSubscribed --tag {course_tag(course)}",
         f"{course}'s students, then the head the read is complete up to"),
        (f"cairn append {p} student-s7{run} StudentRegistered "
         f"'{{\"student\": \"s7{run}\", \"username\": \"ada{run}\"}}' "
         f"--tag student:s7{run} --tag username:ada{run} --condition {shlex.quote(taken)}",
         "refused: the username is taken"),
    ]
    for command, what in commands:
        say(f"  {command}   # {what}")


if __name__ == "__main__":
    sys.exit(main())
