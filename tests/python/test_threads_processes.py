"""Concurrency: several threads sharing one store object and several processes sharing one
directory, writing with expected versions (optimistic concurrency) -- no lost update, no
duplicate version, no gap -- plus readers racing writers and a close racing readers."""

import subprocess
import textwrap
import threading
import time

import pytest

import cairn
from conftest import PYTHON, child_env, make_events, run_threads, run_together

THREADS = 4
PER_THREAD = 40


def increment(store, stream, who, i):
    """Read-modify-write with an exact expected version, retried until it wins.
    Returns the number of lost races."""
    conflicts = 0
    while True:
        last = list(store.read_stream(stream, backwards=True, limit=1))
        version = last[0].version if last else cairn.NO_STREAM
        n = last[0].data["n"] if last else 0
        if last:
            assert store.stream_version(stream) >= version
        try:
            store.append(stream, [cairn.Event("Incremented", {"n": n + 1, "by": who, "i": i})],
                         expected_version=version)
            return conflicts
        except cairn.WrongExpectedVersion as e:
            assert e.stream == stream and e.expected == version and e.actual > version
            conflicts += 1


def check_counter(store, stream, total, writers):
    got = list(store.read_stream(stream))
    assert [e.version for e in got] == list(range(total)), "versions must be gapless"
    assert [e.data["n"] for e in got] == list(range(1, total + 1)), "an update was lost"
    done = sorted((e.data["by"], e.data["i"]) for e in got)
    assert done == sorted((w, i) for w in writers for i in range(PER_THREAD))
    assert store.stream_version(stream) == total - 1
    ps = [e.position for e in store.read_all()]
    assert ps == list(range(1, len(ps) + 1))
    assert store.verify().events == len(ps)


def test_threads_with_expected_versions_lose_no_update(store):
    conflicts = [0] * THREADS

    def worker(k):
        for i in range(PER_THREAD):
            conflicts[k] += increment(store, "counter", f"t{k}", i)

    run_threads(worker, THREADS)
    check_counter(store, "counter", THREADS * PER_THREAD, [f"t{k}" for k in range(THREADS)])


def test_threads_appending_to_their_own_streams_get_gapless_positions(store):
    per = 60

    def worker(k):
        for i in range(per):
            r = store.append(f"own-{k}", [cairn.Event("E", {"k": k, "i": i})],
                             expected_version=i - 1 if i else cairn.NO_STREAM)
            assert r.version == i

    run_threads(worker, THREADS)
    assert store.head() == THREADS * per
    assert [e.position for e in store.read_all()] == list(range(1, THREADS * per + 1))
    for k in range(THREADS):
        assert [e.data["i"] for e in store.read_stream(f"own-{k}")] == list(range(per))


def test_threads_in_transactions_lose_no_update(store):
    per = 20

    def worker(k):
        for i in range(per):
            while True:
                v = store.stream_version("shared")
                try:
                    with store.transaction() as tx:
                        tx.append("shared", [cairn.Event("E", {"k": k, "i": i})],
                                  expected_version=v)
                        tx.append(f"log-{k}", [cairn.Event("L", {"i": i})],
                                  expected_version=i - 1 if i else cairn.NO_STREAM)
                    assert [r.version for r in tx.results] == [v + 1, i]
                    break
                except cairn.WrongExpectedVersion:
                    assert tx.results is None

    run_threads(worker, THREADS)
    total = THREADS * per
    assert [e.version for e in store.read_stream("shared")] == list(range(total))
    assert store.head() == 2 * total
    # Each shared event was committed together with its log event: adjacent positions.
    for e in store.read_stream("shared"):
        partner = store.get(e.position + 1)
        assert partner.stream == f"log-{e.data['k']}" and partner.data == {"i": e.data["i"]}


def test_readers_and_writers_share_one_store_object(store):
    store.append("r", make_events(100))
    stop = threading.Event()
    problems = []

    def writer(k):
        for i in range(80):
            store.append(f"w-{k}", make_events(3))
        stop.set()

    def reader():
        while not stop.is_set():
            ps = [e.position for e in store.read_all()]
            if ps != list(range(1, len(ps) + 1)) or len(ps) < 100:
                problems.append(("read_all", ps[:5], len(ps)))
            back = [e.position for e in store.read_all(backwards=True, limit=50)]
            if back != list(range(back[0], back[0] - len(back), -1)):
                problems.append(("backwards", back[:5]))
            if [e.version for e in store.read_stream("r")] != list(range(100)):
                problems.append("stream")

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers:
        t.start()
    run_threads(writer, 2)
    stop.set()
    for t in readers:
        t.join(60)
    assert problems == []
    assert store.head() == 100 + 2 * 80 * 3


def test_iterator_made_in_one_thread_is_consumed_in_another(store):
    store.append("s", make_events(1500))
    it = store.read_stream("s")
    first = next(it)
    out = []
    run_threads(lambda k: out.extend(e.version for e in it), 1)
    assert [first.version] + out == list(range(1500))


def test_close_while_other_threads_read_and_write(store_path):
    # In a child process, so that a crash is reported as a failure of this test only.
    code = textwrap.dedent(f"""
        import threading, time, cairn
        s = cairn.open({str(store_path)!r}, durability="none")
        s.append("a", [cairn.Event("E", i) for i in range(2000)])
        outcome = []
        def reader():
            try:
                while True:
                    for _ in s.read_all():
                        pass
            except cairn.StoreClosed:
                outcome.append("closed")
            except BaseException as e:
                outcome.append(repr(e))
        def writer():
            try:
                while True:
                    s.append("b", [cairn.Event("E", 1)])
            except cairn.StoreClosed:
                outcome.append("closed")
            except BaseException as e:
                outcome.append(repr(e))
        ts = [threading.Thread(target=f) for f in (reader, reader, writer)]
        for t in ts: t.start()
        time.sleep(0.3)
        s.close()
        for t in ts: t.join(30)
        assert not any(t.is_alive() for t in ts), "thread hung"
        assert outcome == ["closed"] * 3, outcome
        with cairn.open({str(store_path)!r}, durability="none") as s2:
            r = s2.verify()
            assert r.events == s2.head() and r.events >= 2000, r
        print("ok")
    """)
    p = subprocess.run([PYTHON, "-c", code], env=child_env(), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "ok", (p.returncode, p.stdout, p.stderr)


# ---------------------------------------------------------------------------------------
# Several processes on one directory
# ---------------------------------------------------------------------------------------

PROCESSES = 3
PER_PROCESS = 200

CHILD = textwrap.dedent("""
    import sys, cairn
    path, who, n, durability = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    ok = conflicts = 0
    with cairn.open(path, durability=durability) as s:
        print("ready", flush=True)
        sys.stdin.readline()          # start together
        for i in range(n):
            while True:
                last = list(s.read_stream("counter", backwards=True, limit=1))
                v = last[0].version if last else cairn.NO_STREAM
                value = last[0].data["n"] if last else 0
                try:
                    s.append("counter", [cairn.Event("Incremented",
                             {"n": value + 1, "by": who, "i": i})], expected_version=v)
                    ok += 1
                    break
                except cairn.WrongExpectedVersion:
                    conflicts += 1
            s.append("own-" + who, [cairn.Event("Mine", i)],
                     expected_version=i - 1 if i else cairn.NO_STREAM)
    print(ok, conflicts)
""")


def run_processes(store_path, durability, n=PROCESSES, per=PER_PROCESS):
    outs = run_together(CHILD, [(store_path, f"p{k}", per, durability) for k in range(n)])
    return [int(out.split()[0]) for out in outs]  # each prints: ok conflicts


@pytest.mark.parametrize("durability", ["none", "relaxed"])
def test_processes_with_expected_versions_lose_no_update(store_path, durability):
    cairn.open(store_path, durability="none").close()  # created once, before the race
    successes = run_processes(store_path, durability)
    total = PROCESSES * PER_PROCESS
    assert sum(successes) == total
    with cairn.open(store_path, durability="none") as s:
        got = list(s.read_stream("counter"))
        assert [e.version for e in got] == list(range(total))
        assert [e.data["n"] for e in got] == list(range(1, total + 1))
        assert len({e.id for e in got}) == total
        assert sorted((e.data["by"], e.data["i"]) for e in got) == sorted(
            (f"p{k}", i) for k in range(PROCESSES) for i in range(PER_PROCESS))
        for k in range(PROCESSES):
            assert [e.data for e in s.read_stream(f"own-p{k}")] == list(range(PER_PROCESS))
        assert s.head() == 2 * total
        assert [e.position for e in s.read_all()] == list(range(1, 2 * total + 1))
        assert s.verify().events == 2 * total


def test_processes_racing_to_create_the_store(store_path):
    # Nobody created the store first: every process opens a missing directory at once.
    successes = run_processes(store_path, "none", n=3, per=5)
    assert sum(successes) == 15
    with cairn.open(store_path, durability="none") as s:
        assert [e.version for e in s.read_stream("counter")] == list(range(15))
        assert s.verify().events == 30


def test_commit_in_another_process_is_visible_to_an_open_handle(store, store_path):
    store.append("x", make_events(1))
    it = store.read_all()
    assert next(it).position == 1
    child = ("import sys, cairn\n"
             "with cairn.open(sys.argv[1], durability='none') as s:\n"
             "    s.append('x', [cairn.Event('FromChild', 1)], expected_version=0)\n")
    p = subprocess.run([PYTHON, "-c", child, str(store_path)], env=child_env(),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert store.head() == 2
    assert store.stream_version("x") == 1
    # An iterator opened before the commit may end where it began or include it.
    assert [e.type for e in it] in ([], ["FromChild"])
    assert [e.type for e in store.read_all(2)] == ["FromChild"]
    with pytest.raises(cairn.WrongExpectedVersion):
        store.append("x", make_events(1), expected_version=0)


def test_map_grown_by_another_process_is_followed(store_path):
    s = cairn.open(store_path, durability="none", map_size=1 << 16)
    try:
        s.append("small", make_events(3))
        it = s.read_all()
        assert next(it).position == 1
        child = ("import sys, cairn\n"
                 "with cairn.open(sys.argv[1], durability='none', map_size=1 << 16) as c:\n"
                 "    for i in range(8):\n"
                 "        c.append('big', [cairn.Event('Blob', bytes([i]) * (1 << 20))])\n")
        p = subprocess.run([PYTHON, "-c", child, str(store_path)], env=child_env(),
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert [e.position for e in it][:2] == [2, 3]
        assert s.head() == 11
        assert s.get(11).data == bytes([7]) * (1 << 20)
        assert [len(e.data) for e in s.read_stream("big")] == [1 << 20] * 8
        s.append("big", [cairn.Event("Blob", b"\xff" * (2 << 20))], expected_version=7)
        assert s.verify().events == 12
    finally:
        s.close()


def test_gil_is_released_while_waiting_for_the_writer_lock(store, store_path):
    # Another process holds LMDB's writer lock (through py-lmdb); an append in one thread
    # must wait for it without holding the GIL, so that other threads keep running.
    pytest.importorskip("lmdb")
    store.append("a", make_events(1))
    holder = subprocess.Popen(
        [PYTHON, "-c", textwrap.dedent(f"""
            import sys, lmdb
            env = lmdb.open({str(store_path)!r}, max_dbs=64, map_size=1 << 30)
            txn = env.begin(write=True)     # takes the writer lock
            print("locked", flush=True)
            sys.stdin.readline()
            txn.abort()
            env.close()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=child_env())
    result = []
    try:
        assert holder.stdout.readline().strip() == "locked", holder.stderr.read()
        t = threading.Thread(target=lambda: result.append(store.append("a", make_events(1))))
        t.start()
        start = last = time.monotonic()
        worst = 0.0
        while time.monotonic() - start < 0.5:
            now = time.monotonic()
            worst = max(worst, now - last)
            last = now
        assert t.is_alive(), "the append did not wait for the writer lock"
        assert worst < 0.2, f"this thread was stalled for {worst:.3f}s: GIL held while waiting"
    finally:
        holder.stdin.write("go\n")
        holder.stdin.flush()
        holder.wait(30)
    t.join(30)
    assert not t.is_alive()
    assert [r.position for r in result] == [2]
    assert store.head() == 2
