"""Crypto-shredding (spec section 6, issue 13): cairn.Event(..., subject=) encrypts `data` with
a per-subject key kept in the store's `keys` file; store.forget(subject) makes that key
unrecoverable from every file of the store directory and appends a $SubjectForgotten event
to $lifecycle in the same commit; forgotten events read as data=None, forgotten=True on every
read path (Python, Lua aggregates, projections, subscriptions, the CLI), without upcasters."""

import os
import pickle
import random
import signal
import subprocess
import sys
import time

import pytest

import cairn
from conftest import PYTHON, check_usable, child_env, nothing_written

SECRET = "s3cr3t-plaintext-7f1e9c"  # never to reach any file


def files_holding(path, needle):
    """The names of the files of directory `path` whose bytes contain `needle`."""
    if isinstance(needle, str):
        needle = needle.encode()
    found = []
    for name in sorted(os.listdir(path)):
        p = os.path.join(path, name)
        if os.path.isfile(p):
            with open(p, "rb") as f:
                if needle in f.read():
                    found.append(name)
    return found


def lifecycle(store):
    return [(e.type, e.data) for e in store.read_stream("$lifecycle")]


# ---------------------------------------------------------------------------------------
# Writing and reading encrypted events
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("data", [{"email": SECRET}, SECRET.encode(), [1, SECRET], SECRET, 7, None])
def test_data_with_a_subject_reads_back_and_never_reaches_a_file(store, store_path, data):
    r = store.append("user-42", [cairn.Event("Registered", data, subject="user-42",
                                             metadata={"m": 1}, tags=["t"])])
    for e in [store.get(r.position), *store.read_stream("user-42"), *store.read_all(),
              *store.read_stream("user-42", raw=True)]:
        assert e.data == data and type(e.data) is type(data)
        assert e.subject == "user-42" and e.forgotten is False
        assert e.metadata == {"m": 1} and e.tags == ("t",)
    store.sync()
    assert files_holding(store_path, SECRET) == []
    assert files_holding(store_path, store._subject_key("user-42")) == ["keys"]


def test_events_without_a_subject_are_unchanged(store):
    store.append("s", [cairn.Event("A", {"x": SECRET})])
    (e,) = store.read_all()
    assert e.subject is None and e.forgotten is False and e.data == {"x": SECRET}
    assert store._subject_key("anyone") is None


def test_each_subject_has_its_own_key_and_keeps_it(store):
    store.append("a", [cairn.Event("A", 1, subject="alice"), cairn.Event("A", 2, subject="bob")])
    ka, kb = store._subject_key("alice"), store._subject_key("bob")
    assert isinstance(ka, bytes) and len(ka) == 32 and ka != kb
    store.append("a", [cairn.Event("A", 3, subject="alice")])
    assert store._subject_key("alice") == ka
    assert [e.data for e in store.read_stream("a")] == [1, 2, 3]


def test_a_transaction_and_a_durable_store_encrypt_too(store_path):
    with cairn.open(store_path, durability="full") as s:
        with s.transaction() as tx:
            tx.append("x", [cairn.Event("A", {"v": SECRET}, subject="u")])
            tx.append("y", [cairn.Event("B", {"v": 2})])
        assert [e.data for e in s.read_all()] == [{"v": SECRET}, {"v": 2}]
    assert files_holding(store_path, SECRET) == []
    with cairn.open(store_path, readonly=True) as s:  # the key survived the close
        assert [e.data for e in s.read_all()] == [{"v": SECRET}, {"v": 2}]


def test_events_with_a_subject_compare_pickle_and_copy(store):
    e = cairn.Event("A", {"x": 1}, subject="u-1")
    assert e.subject == "u-1"
    assert e == pickle.loads(pickle.dumps(e))
    assert pickle.loads(pickle.dumps(e)).subject == "u-1"
    assert e != cairn.Event("A", {"x": 1}, id=e.id, subject="u-2")
    assert e != cairn.Event("A", {"x": 1}, id=e.id)
    store.append("s", [e])
    (r,) = store.read_all()
    assert pickle.loads(pickle.dumps(r)) == r and pickle.loads(pickle.dumps(r)).subject == "u-1"
    assert cairn.Event.from_recorded(r) == e


# ---------------------------------------------------------------------------------------
# forget
# ---------------------------------------------------------------------------------------
def test_forget_leaves_the_key_and_the_plaintext_in_no_file(store_path):
    s = cairn.open(store_path, durability="none")
    s.append("user-1", [cairn.Event("Registered", {"email": SECRET}, subject="user-1")])
    s.append("user-1", [cairn.Event("Renamed", SECRET.encode(), subject="user-1")])
    s.append("other", [cairn.Event("Kept", {"x": 1}, subject="user-2")])
    key = s._subject_key("user-1")
    assert files_holding(store_path, key) == ["keys"]
    s.forget("user-1")
    assert s._subject_key("user-1") is None
    s.close()
    assert set(os.listdir(store_path)) >= {"data.mdb", "lock.mdb", "notify", "keys"}
    assert files_holding(store_path, key) == []
    assert files_holding(store_path, SECRET) == []
    with cairn.open(store_path) as s:
        assert [(e.data, e.forgotten) for e in s.read_stream("user-1")] == [(None, True)] * 2
        assert [e.data for e in s.read_stream("other")] == [{"x": 1}]


def test_forget_appends_one_lifecycle_event_per_call(store):
    store.append("u", [cairn.Event("A", 1, subject="user-1")])
    head = store.head()
    store.forget("user-1")
    store.forget("user-1")  # already forgotten
    store.forget("nobody")  # unknown
    assert lifecycle(store) == [("$SubjectForgotten", {"subject": "user-1"}),
                                ("$SubjectForgotten", {"subject": "user-1"}),
                                ("$SubjectForgotten", {"subject": "nobody"})]
    assert store.head() == head + 3
    assert [e.type for e in store.read_all()] == ["A"]  # $ streams are skipped


def test_forgotten_events_on_every_read_path(store):
    store.define_upcasters("return { A = { [1] = function(e) e.data = { up = true }; return e end } }")
    store.append("u-1", [cairn.Event("A", {"v": 1}, subject="s1", tags=["g"]),
                         cairn.Event("A", {"v": 2}),
                         cairn.Event("A", {"v": 3}, subject="s1")])
    assert [e.data for e in store.read_stream("u-1")] == [{"up": True}] * 3
    sub = store.subscribe(1, timeout=0)
    store.forget("s1")

    def check(events):
        got = [(e.version, e.data, e.forgotten, e.subject, e.schema) for e in events]
        assert got == [(0, None, True, "s1", 1), (1, {"up": True}, False, None, 2),
                       (2, None, True, "s1", 1)], got

    check(store.read_stream("u-1"))
    check(list(store.read_stream("u-1", backwards=True))[::-1])
    check(store.read_all())
    check(store.read_all(types="A"))
    check(store.read_all(categories="u", streams="u-1"))
    check(store.get(p) for p in (1, 2, 3))
    check(sub)
    raw = list(store.read_stream("u-1", raw=True))
    assert [(e.data, e.forgotten) for e in raw] == [(None, True), ({"v": 2}, False), (None, True)]
    assert [e.data for e in store.read_all(tags="g")] == [None]
    with pytest.raises(ValueError, match="forgotten"):
        cairn.Event.from_recorded(raw[0])
    with pytest.raises(ValueError, match="forgotten"):
        store.append("copy", [raw[0]])


def test_a_fresh_key_after_forget_and_earlier_events_stay_forgotten(store):
    store.append("u", [cairn.Event("A", 1, subject="s")])
    old = store._subject_key("s")
    store.forget("s")
    store.append("u", [cairn.Event("A", 2, subject="s")])
    new = store._subject_key("s")
    assert new is not None and new != old
    assert [(e.data, e.forgotten) for e in store.read_stream("u")] == [(None, True), (2, False)]
    store.forget("s")
    assert [(e.data, e.forgotten) for e in store.read_stream("u")] == [(None, True), (None, True)]


def test_aggregates_fold_forgotten_events_and_snapshots_are_dropped(store):
    store.define_aggregate("user", """
return {
  init = function() return { n = 0, names = {}, forgotten = 0, subjects = {} } end,
  apply = { ['*'] = function(s, e)
      s.n = s.n + 1
      if e.forgotten then s.forgotten = s.forgotten + 1 end
      if e.data ~= nil then s.names[#s.names + 1] = e.data.name end
      s.subjects[#s.subjects + 1] = e.subject or "-"
  end },
  snapshot_every = 2,
}""")
    for i in range(5):
        store.append("user-1", [cairn.Event("Named", {"name": f"{SECRET}-{i}"},
                                            subject="p" if i % 2 == 0 else None)])
    loaded = store.load("user-1")
    assert loaded.applied < 5  # from a snapshot
    before = loaded.state
    assert before["n"] == 5 and before["forgotten"] == 0 and len(before["names"]) == 5
    store.forget("p")
    dropped = store.load("user-1")
    assert dropped.applied == 5  # the snapshots are gone: folded from the events
    assert dropped.state["forgotten"] == 3 and dropped.state["names"] == [f"{SECRET}-1",
                                                                          f"{SECRET}-3"]
    # an upcaster that would fail on a forgotten event (no data) is not run on one
    store.define_upcasters(
        "return { Named = { [1] = function(e) e.data.name = e.data.name .. '!'; return e end } }")
    after = store.load("user-1")
    assert after.state == {"n": 5, "forgotten": 3, "names": [f"{SECRET}-1!", f"{SECRET}-3!"],
                           "subjects": ["p", "-", "p", "-", "p"]}
    assert store.load("user-1", version=1).state["forgotten"] == 1


def test_projections_rebuild_without_the_forgotten_data(store):
    src = """
return {
  %s
  init = function() return { names = {}, forgotten = 0 } end,
  apply = { ['*'] = function(s, e)
    if e.forgotten then s.forgotten = s.forgotten + 1 else s.names[#s.names + 1] = e.data.name end
  end },
}"""
    store.define_projection("async", src % "")
    store.define_projection("inline", src % "mode = 'inline',")
    store.append("u", [cairn.Event("N", {"name": "alice"}, subject="a"),
                       cairn.Event("N", {"name": "bob"}, subject="b")])
    store.run_projections()
    for name in ("async", "inline"):
        assert store.projection(name).state() == {"names": ["alice", "bob"], "forgotten": 0}
    store.forget("a")
    for name in ("async", "inline"):
        p = store.projection(name)
        assert p.state() == {"names": ["alice", "bob"], "forgotten": 0}  # until rebuilt
        p.reset()
    store.run_projections()
    for name in ("async", "inline"):
        assert store.projection(name).state() == {"names": ["bob"], "forgotten": 1}


# ---------------------------------------------------------------------------------------
# Bad input: a clear exception, nothing written, the store usable
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("subject,exc,match", [
    ("", ValueError, "subject must be 1..1024 bytes"),
    ("x" * 1025, ValueError, "subject must be 1..1024 bytes"),
    ("é" * 513, ValueError, "subject must be 1..1024 bytes"),
    ("a\0b", ValueError, "subject.*NUL"),
    ("\ud800", ValueError, "subject is not valid UTF-8"),
    (b"user", TypeError, "subject must be a str"),
    (42, TypeError, "subject must be a str"),
])
def test_a_bad_subject_is_refused(store, subject, exc, match):
    with nothing_written(store):
        with pytest.raises(exc, match=match):
            cairn.Event("A", {"x": 1}, subject=subject)
        with pytest.raises(exc, match=match):
            store.forget(subject)
        with pytest.raises(exc, match=match):
            store._subject_key(subject)
    assert lifecycle(store) == []


def test_a_subject_of_1024_bytes_works(store):
    s = "é" * 512
    store.append("u", [cairn.Event("A", 1, subject=s)])
    assert [(e.subject, e.data) for e in store.read_all()] == [(s, 1)]
    store.forget(s)
    assert [e.forgotten for e in store.read_all()] == [True]


def test_forget_on_a_read_only_store_is_refused(store_path):
    with cairn.open(store_path) as s:
        s.append("u", [cairn.Event("A", 1, subject="p")])
    with cairn.open(store_path, readonly=True) as r:
        with pytest.raises(PermissionError):
            r.forget("p")
        assert r._subject_key("p") is not None
        assert [e.data for e in r.read_all()] == [1]


def test_a_failed_append_writes_no_key_anywhere(store, store_path):
    store.append("u", [cairn.Event("A", 1)])
    e = cairn.Event("A", {"x": SECRET}, subject="late")
    with pytest.raises(cairn.WrongExpectedVersion):
        store.append("u", [e], expected_version=5)
    assert store._subject_key("late") is None
    check_usable(store)
    store.sync()
    assert files_holding(store_path, SECRET) == []


# ---------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------
READER = r"""
import sys, time, cairn
s = cairn.open(sys.argv[1], readonly=True)
print("ready", flush=True)
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    evs = list(s.read_stream("u"))
    if evs and all(e.forgotten for e in evs):
        print("forgotten", [e.data for e in evs], flush=True)
        break
    assert all(e.data == {"v": i} for i, e in enumerate(evs)), [e.data for e in evs]
    time.sleep(0.005)
"""


def test_another_process_sees_the_forget_once_it_commits(store_path):
    with cairn.open(store_path) as s:
        s.append("u", [cairn.Event("A", {"v": i}, subject="p") for i in range(3)])
        p = subprocess.Popen([PYTHON, "-c", READER, str(store_path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=child_env(), text=True)
        try:
            assert p.stdout.readline().strip() == "ready"
            time.sleep(0.1)
            s.forget("p")
            out, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
        assert p.returncode == 0, err
        assert out.strip() == "forgotten [None, None, None]"


FORGETTER = r"""
import sys, cairn
s = cairn.open(sys.argv[1])
print("ready", flush=True)
s.forget("victim")
print("done", flush=True)
"""


def test_kill_9_during_forget_leaves_the_before_or_the_after_state(tmp_path):
    """~50 rounds: a child forgets and is killed at a random moment.  Either its key is still
    there and no $SubjectForgotten event, or the event is there and, after the next open,
    the key is in no file -- never the event with the key surviving an open."""
    rng = random.Random(1313)
    befores = afters = 0
    for rnd in range(50):
        path = tmp_path / f"s{rnd}"
        with cairn.open(path, durability="none") as s:
            s.append("u", [cairn.Event("A", {"v": SECRET}, subject="victim"),
                           cairn.Event("B", {"v": 1}, subject="bystander")])
            key = s._subject_key("victim")
        p = subprocess.Popen([PYTHON, "-c", FORGETTER, str(path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=child_env())
        assert p.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0, 0.004))
        p.send_signal(signal.SIGKILL)
        p.communicate()
        with cairn.open(path) as s:  # the open finishes an interrupted forget
            events = lifecycle(s)
            forgotten = [e.forgotten for e in s.read_stream("u")]
            if events:
                assert events == [("$SubjectForgotten", {"subject": "victim"})]
                assert forgotten == [True, False]
                assert s._subject_key("victim") is None
                afters += 1
            else:
                assert forgotten == [False, False]
                assert s._subject_key("victim") == key
                befores += 1
        if events:
            assert files_holding(path, key) == []
        assert files_holding(path, SECRET) == []
    print(f"kill -9 rounds: {befores} before, {afters} after")
    assert befores + afters == 50


# ---------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------
def cli(*args):
    return subprocess.run([PYTHON, "-m", "cairn", *map(str, args)], capture_output=True,
                          text=True, env=child_env(), timeout=60)


def test_cli_forget_and_read_show_forgotten_events(store_path):
    with cairn.open(store_path) as s:
        s.append("u", [cairn.Event("A", {"v": 1}, subject="p"), cairn.Event("B", {"v": 2})])
    r = cli("forget", store_path, "p")
    assert r.returncode == 0, r.stderr
    r = cli("read", store_path, "u", "--json")
    assert r.returncode == 0, r.stderr
    import json
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [(x["data"], x.get("forgotten"), x.get("subject")) for x in lines] == [
        (None, True, "p"), ({"v": 2}, None, None)]
    r = cli("read", store_path, "u")  # tab-separated in a pipe
    assert [ln.split("\t")[-1] for ln in r.stdout.splitlines()] == ["<forgotten>", '{"v":2}']
    r = cli("read", store_path, "$lifecycle", "--json")
    assert [json.loads(x)["type"] for x in r.stdout.splitlines()] == ["$SubjectForgotten"]
    r = cli("forget", store_path, "")
    assert r.returncode != 0 and "subject" in r.stderr


def test_the_hash_chain_and_verify_hold_across_encryption_and_forget(store):
    """The chain is over the stored bytes, ciphertext included (spec 6): forgetting changes
    no record, so verify() still passes and the head's hash only moves by the new event."""
    store.append("u", [cairn.Event("A", {"v": SECRET}, subject="p"), cairn.Event("B", 2)])
    pos, _ = store.chain_head()
    assert store.verify().events == 2
    store.forget("p")
    assert store.verify().events == 3
    assert store.chain_head()[0] == pos + 1
    chained = [e for e in store.read_all()]
    assert [e.forgotten for e in chained] == [True, False]


def _slot_of(store_path, key):
    """The byte offset of a key's 32-byte slot in the keys file."""
    data = (store_path / "keys").read_bytes()
    at = data.index(key)
    assert at % 32 == 0 and at > 0
    return at


def _subjects_store(store_path):
    """alice and bob live (3 and 1 events), carol forgotten; alice's slot offset."""
    with cairn.open(store_path) as s:
        s.append("u-1", [cairn.Event("A", {"v": 1}, subject="alice"),
                         cairn.Event("B", {"v": 2}, subject="bob"),
                         cairn.Event("C", {"v": 3}, subject="carol"),
                         cairn.Event("P", {"v": 4})])
        s.append("u-2", [cairn.Event("A", {"v": 5}, subject="alice"),
                         cairn.Event("A", {"v": 6}, subject="alice")])
        s.forget("carol")
        return _slot_of(store_path, s._subject_key("alice"))


def test_verify_passes_with_forgotten_subjects_and_their_zeroed_slots(store_path):
    _subjects_store(store_path)
    data = (store_path / "keys").read_bytes()
    assert data.count(bytes(32)) >= 1  # carol's slot, zeroed
    for readonly in (False, True):
        with cairn.open(store_path, readonly=readonly) as s:
            damage = []
            assert s.verify(damage=lambda p, m: damage.append((p, m))).events == 7
            assert damage == []
    r = cli("verify", store_path)
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stdout + r.stderr


@pytest.mark.parametrize("readonly", [False, True], ids=["read-write", "read-only"])
def test_verify_finds_a_live_subjects_zeroed_key(store_path, readonly):
    """A zeroed slot of a subject that was not forgotten reads as forgotten (no error on
    read): verify names the subject, its key id and the file."""
    slot = _subjects_store(store_path)
    with open(store_path / "keys", "r+b") as f:
        f.seek(slot)
        f.write(bytes(32))
    msg = (rf'subject "alice": its key {slot // 32} in {store_path}/keys is zeroed, but the '
           r"subject was not forgotten")
    with cairn.open(store_path, readonly=readonly) as s:
        assert [e.forgotten for e in s.read_stream("u-2")] == [True, True]  # what it breaks
        with pytest.raises(cairn.CorruptionError, match=msg) as ei:
            s.verify()
        assert ei.value.position in (None, 0)
        damage = []
        with pytest.raises(cairn.CorruptionError, match=msg):
            s.verify(damage=lambda p, m: damage.append((p, m)))
        assert len(damage) == 1 and damage[0][0] == 0 and "alice" in damage[0][1]
    r = cli("verify", store_path)
    assert r.returncode == 1
    assert 'subject "alice": its key' in r.stdout and "zeroed" in r.stdout, r.stdout
    assert "is damaged (1 damage:" in r.stderr, r.stderr


def test_verify_finds_a_keys_file_cut_after_its_header(store_path):
    """keys cut to its 32-byte header: reads of every encrypted event raise, and verify names
    the first such event (without damage=) or each event and each live subject (with it)."""
    _subjects_store(store_path)
    os.truncate(store_path / "keys", 32)
    with cairn.open(store_path, readonly=True) as s:
        with pytest.raises(cairn.CorruptionError, match="past the end of"):
            list(s.read_stream("u-1"))
        with pytest.raises(cairn.CorruptionError,
                           match=rf"position 1: key \d+ is past the end of {store_path}/keys "
                                 r"\(the file holds 32 bytes: it was cut short\)") as ei:
            s.verify()
        assert ei.value.position == 1
        damage = []
        with pytest.raises(cairn.CorruptionError, match="position 1: key"):
            s.verify(damage=lambda p, m: damage.append((p, m)))
    # every encrypted event (carol's too: her zeroed slot went with the cut, and a read of
    # her event raises like the others), then each live subject
    assert [p for p, _ in damage] == [1, 2, 3, 5, 6, 0, 0], damage
    assert [m.split('"')[1] for p, m in damage if not p] == ["alice", "bob"], damage
    assert all("past the end of" in m for _, m in damage)
    r = cli("verify", store_path)
    assert r.returncode == 1
    assert "position 1: key" in r.stdout and 'subject "bob": key' in r.stdout, r.stdout
    assert "(5 damaged events, 2 other damages:" in r.stderr, r.stderr


def test_verify_while_subjects_are_forgotten_finds_no_damage(store_path):
    """A forget commits (the subject gone), then zeroes the slot: a verify whose snapshot still
    holds the subject may find its slot zeroed, and must look again before calling it damage.
    The subjects forgotten are the last ones in key order, ahead of verify's walk."""
    import threading
    n, gone = 5000, 150
    with cairn.open(store_path, durability="none") as s:
        s.append("u", [cairn.Event("A", {"v": i}, subject=f"s{i:05d}") for i in range(n)])
        done = threading.Event()

        def forget_all():
            try:
                for i in range(n - 1, n - 1 - gone, -1):
                    s.forget(f"s{i:05d}")
            finally:
                done.set()

        t = threading.Thread(target=forget_all)
        t.start()
        runs = 0
        try:
            while not done.is_set():
                s.verify()
                runs += 1
        finally:
            t.join()
        assert runs > 0 and s.verify().events == n + gone


def test_export_and_import_carry_the_subject(store_path, tmp_path):
    with cairn.open(store_path) as s:
        s.append("u", [cairn.Event("A", {"v": 1}, subject="p"), cairn.Event("B", {"v": 2})])
    r = cli("export", store_path)
    assert r.returncode == 0, r.stderr
    dump_file = tmp_path / "events.jsonl"
    dump_file.write_text(r.stdout)
    r = cli("import", tmp_path / "copy", dump_file)
    assert r.returncode == 0, r.stderr
    with cairn.open(tmp_path / "copy") as c:
        assert [(e.data, e.subject) for e in c.read_all()] == [({"v": 1}, "p"), ({"v": 2}, None)]
        assert c._subject_key("p") is not None
    cli("forget", store_path, "p")
    r = cli("export", store_path)
    dump_file.write_text(r.stdout)
    r = cli("import", tmp_path / "copy2", dump_file)
    assert r.returncode != 0 and "forgotten" in r.stderr
