"""Opening and closing a store: creation, reopening, read-only handles, options, foreign
files, closed handles, several handles on one directory, map growth and fork()."""

import hashlib
import os
import pathlib

import pytest

import cairn
from conftest import check_usable, make_events, nothing_written


def sha256(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------
# Creating and reopening
# ---------------------------------------------------------------------------------------

def test_open_creates_directory_and_empty_store(store_path):
    assert not store_path.exists()
    with cairn.open(store_path, durability="none") as s:
        assert store_path.is_dir()
        assert (store_path / "data.mdb").is_file()
        assert s.head() == 0
        assert list(s.read_all()) == []
        assert list(s.streams()) == []
        assert s.stream_version("anything") == -1


def test_open_accepts_str_and_pathlike(store_path):
    with cairn.open(str(store_path), durability="none") as s:
        s.append("a-1", make_events(1))
    with cairn.open(store_path, durability="none") as s:
        assert s.head() == 1


def test_reopen_sees_committed_data(store_path):
    with cairn.open(store_path, durability="none") as s:
        evs = make_events(3)
        s.append("acc-1", evs)
        s.append("acc-2", make_events(2), expected_version=cairn.NO_STREAM)
        s.sync()
    with cairn.open(store_path, durability="none") as s:
        assert s.head() == 5
        assert s.stream_version("acc-1") == 2
        assert s.stream_version("acc-2") == 1
        assert [e.id for e in s.read_stream("acc-1")] == [e.id for e in evs]
        assert list(s.streams()) == ["acc-1", "acc-2"]
        r = s.append("acc-1", make_events(1), expected_version=2)
        assert (r.version, r.position) == (3, 6)


@pytest.mark.parametrize("durability", ["full", "relaxed", "none"])
def test_every_durability_opens_writes_and_reopens(store_path, durability):
    with cairn.open(store_path, durability=durability) as s:
        r = s.append("d-1", make_events(2), expected_version=cairn.NO_STREAM)
        assert (r.version, r.position, r.first_position) == (1, 2, 1)
        s.sync()
        assert [e.data for e in s.read_stream("d-1")] == [{"i": 0}, {"i": 1}]
    with cairn.open(store_path, durability=durability) as s:
        assert s.head() == 2
        assert s.verify().events == 2


def test_default_durability_is_usable(store_path):
    with cairn.open(store_path) as s:
        s.append("x", make_events(1))
        assert s.head() == 1


# ---------------------------------------------------------------------------------------
# Read-only handles
# ---------------------------------------------------------------------------------------

def test_readonly_open_of_missing_path_raises_file_not_found(store_path):
    with pytest.raises(FileNotFoundError):
        cairn.open(store_path, readonly=True)
    assert not store_path.exists()


def test_readonly_open_of_empty_directory_raises_file_not_found(store_path):
    store_path.mkdir()
    with pytest.raises(FileNotFoundError):
        cairn.open(store_path, readonly=True)
    assert os.listdir(store_path) == []


@pytest.fixture
def readonly_store(store_path):
    with cairn.open(store_path, durability="none") as s:
        s.append("ro-1", make_events(2))
        s.sync()
    s = cairn.open(store_path, readonly=True)
    yield s
    s.close()


def test_readonly_store_reads(readonly_store):
    s = readonly_store
    assert s.head() == 2
    assert s.stream_version("ro-1") == 1
    assert [e.data for e in s.read_all()] == [{"i": 0}, {"i": 1}]
    assert [e.version for e in s.read_stream("ro-1", backwards=True)] == [1, 0]
    assert s.get(1).stream == "ro-1"
    assert list(s.streams()) == ["ro-1"]
    assert s.verify().events == 2


def test_readonly_append_raises_permission_error(readonly_store):
    with nothing_written(readonly_store, writable=False):
        with pytest.raises(PermissionError):
            readonly_store.append("ro-1", make_events(1))
        with pytest.raises(PermissionError):
            readonly_store.append("new-1", make_events(1), expected_version=cairn.NO_STREAM)


def test_readonly_transaction_raises_permission_error(readonly_store):
    with nothing_written(readonly_store, writable=False):
        with pytest.raises(PermissionError):
            with readonly_store.transaction() as tx:
                tx.append("ro-1", make_events(1))
                tx.append("ro-2", make_events(1))


def test_readonly_sync_is_allowed(readonly_store):
    readonly_store.sync()
    assert readonly_store.head() == 2


def test_readonly_open_does_not_modify_data_file(store_path):
    with cairn.open(store_path, durability="full") as s:
        s.append("ro-1", make_events(3))
    before = sha256(store_path / "data.mdb")
    with cairn.open(store_path, readonly=True) as s:
        assert len(list(s.read_all())) == 3
        s.verify()
    assert sha256(store_path / "data.mdb") == before


def test_readonly_handle_sees_commits_of_a_writer_handle(store_path):
    w = cairn.open(store_path, durability="none")
    w.append("a", make_events(1))
    r = cairn.open(store_path, readonly=True)
    try:
        assert r.head() == 1
        w.append("a", make_events(2))
        assert r.head() == 3
        assert [e.version for e in r.read_stream("a")] == [0, 1, 2]
        with pytest.raises(PermissionError):
            r.append("a", make_events(1))
        check_usable(w)
    finally:
        r.close()
        w.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_directory_opens_only_readonly(store_path):
    with cairn.open(store_path, durability="none") as s:
        s.append("a", make_events(1))
    os.chmod(store_path, 0o555)
    os.chmod(store_path / "data.mdb", 0o444)
    try:
        with pytest.raises(PermissionError):
            cairn.open(store_path)
        with cairn.open(store_path, readonly=True) as s:
            assert s.head() == 1
    finally:
        os.chmod(store_path, 0o755)
        os.chmod(store_path / "data.mdb", 0o644)


# ---------------------------------------------------------------------------------------
# A data.mdb that is not a cairn store
# ---------------------------------------------------------------------------------------

GARBAGE = {
    "random": os.urandom(3 * 4096 + 17),
    "text": b"this is not an LMDB file, just some text\n" * 300,
    "zeros": bytes(7 * 4096),  # more than a creation leaves: 8192 zeros is one (below)
    "short": b"garbage",
}


@pytest.mark.parametrize("kind", sorted(GARBAGE))
@pytest.mark.parametrize("readonly", [False, True])
def test_garbage_data_file_raises_corruption_and_is_left_untouched(store_path, kind, readonly):
    store_path.mkdir()
    data = store_path / "data.mdb"
    data.write_bytes(GARBAGE[kind])
    before = sha256(data)
    with pytest.raises(cairn.CorruptionError):
        cairn.open(store_path, readonly=readonly)
    assert sha256(data) == before
    # A second attempt fails the same way (no half-initialised state was left behind).
    with pytest.raises(cairn.CorruptionError):
        cairn.open(store_path, durability="none")
    assert sha256(data) == before


@pytest.mark.parametrize("size", [512, 8192, 6 * 4096])
def test_a_small_data_file_of_zeros_without_notify_is_a_creation_the_power_cut(store_path, size):
    """A power cut can leave a new store's data.mdb at its size with none of its meta pages
    (nothing was flushed): zeros, and no notify file (made after the first commit).  Nothing
    was stored: a read-only open finds no store and writes nothing, a read-write one makes the
    store.  With notify there, it is a store's file damaged: refused, untouched."""
    store_path.mkdir()
    data = store_path / "data.mdb"
    data.write_bytes(bytes(size))
    (store_path / "notify").write_bytes(b"")
    for readonly in (False, True):
        with pytest.raises(cairn.CorruptionError, match="holds no meta page of a commit"):
            cairn.open(store_path, readonly=readonly)
        assert data.read_bytes() == bytes(size)
    os.unlink(store_path / "notify")
    with pytest.raises(FileNotFoundError, match="no store here"):
        cairn.open(store_path, readonly=True)
    assert data.read_bytes() == bytes(size) and sorted(os.listdir(store_path)) == ["data.mdb"]
    with cairn.open(store_path) as s:
        assert s.head() == 0
        s.append("a-1", [cairn.Event("T")])
    with cairn.open(store_path, readonly=True) as s:
        assert s.head() == 1 and s.verify().events == 1


def test_foreign_lmdb_environment_raises_corruption_and_is_left_untouched(store_path):
    lmdb = pytest.importorskip("lmdb")
    env = lmdb.open(str(store_path), map_size=1 << 20, max_dbs=4)
    with env.begin(write=True) as txn:
        txn.put(b"somebody", b"else's data")
    named = env.open_db(b"events")
    with env.begin(write=True, db=named) as txn:
        txn.put(b"k", b"v")
    env.close()
    data = store_path / "data.mdb"
    before = sha256(data)
    with pytest.raises(cairn.CorruptionError):
        cairn.open(store_path, durability="none")
    with pytest.raises(cairn.CorruptionError):
        cairn.open(store_path, readonly=True)
    assert sha256(data) == before


def test_corruption_error_is_a_cairn_error():
    assert issubclass(cairn.CorruptionError, cairn.Error)
    assert issubclass(cairn.StoreClosed, cairn.Error)


def test_open_a_regular_file_raises(tmp_path):
    f = tmp_path / "file"
    f.write_bytes(b"x")
    with pytest.raises((ValueError, OSError, cairn.Error)):
        cairn.open(f, durability="none")
    assert f.read_bytes() == b"x"


# ---------------------------------------------------------------------------------------
# Bad options: a clear exception naming the argument, and nothing created
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs, exc, name",
    [
        ({"durability": "fast"}, ValueError, "durability"),
        ({"durability": ""}, ValueError, "durability"),
        ({"durability": "FULL "}, ValueError, "durability"),
        ({"durability": 1}, TypeError, "durability"),
        ({"map_size": -1}, ValueError, "map_size"),
        ({"map_size": 2**64}, ValueError, "map_size"),
        ({"map_size": "big"}, TypeError, "map_size"),
        ({"map_size": 1.5}, TypeError, "map_size"),
        ({"script_instruction_limit": 0}, ValueError, "script_instruction_limit"),
        ({"script_instruction_limit": -5}, ValueError, "script_instruction_limit"),
        ({"script_instruction_limit": "many"}, TypeError, "script_instruction_limit"),
        ({"script_memory_limit": 0}, ValueError, "script_memory_limit"),
        ({"script_memory_limit": -1}, ValueError, "script_memory_limit"),
        ({"script_memory_limit": 1.0}, TypeError, "script_memory_limit"),
    ],
    ids=lambda v: repr(v) if not isinstance(v, dict) else "-".join(f"{k}={v[k]!r}" for k in v),
)
def test_bad_option_raises_naming_it_and_creates_nothing(store_path, kwargs, exc, name):
    with pytest.raises(exc, match=name):
        cairn.open(store_path, **kwargs)
    assert not store_path.exists()


def test_bad_option_on_existing_store_leaves_it_working(store_path):
    with cairn.open(store_path, durability="none") as s:
        s.append("a", make_events(1))
    with pytest.raises(ValueError, match="durability"):
        cairn.open(store_path, durability="fast")
    with cairn.open(store_path, durability="none") as s:
        assert s.head() == 1
        check_usable(s)


def test_options_are_keyword_only(store_path):
    with pytest.raises(TypeError):
        cairn.open(store_path, "none")
    assert not store_path.exists()


def test_unknown_option_raises_type_error(store_path):
    with pytest.raises(TypeError):
        cairn.open(store_path, durabilty="none")
    assert not store_path.exists()


def test_bad_path_type_raises_type_error():
    with pytest.raises(TypeError):
        cairn.open(42)
    with pytest.raises(TypeError):
        cairn.open(None)


def test_empty_path_raises_value_error():
    with pytest.raises((ValueError, FileNotFoundError)):
        cairn.open("")


# ---------------------------------------------------------------------------------------
# Closing
# ---------------------------------------------------------------------------------------

def test_context_manager_returns_store_and_closes_it(store_path):
    with cairn.open(store_path, durability="none") as s:
        s.append("a", make_events(1))
    with pytest.raises(cairn.StoreClosed):
        s.head()


def test_context_manager_closes_on_exception_and_propagates(store_path):
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with cairn.open(store_path, durability="none") as s:
            s.append("a", make_events(1))
            raise Boom()
    with pytest.raises(cairn.StoreClosed):
        s.head()
    with cairn.open(store_path, durability="none") as s2:
        assert s2.head() == 1


CLOSED_CALLS = {
    "append": lambda s: s.append("a", make_events(1)),
    "append-new-stream": lambda s: s.append("b", make_events(1), expected_version=cairn.NO_STREAM),
    "transaction": lambda s: s.transaction().__enter__(),
    "transaction-block": lambda s: _tx_block(s),
    "read_stream": lambda s: list(s.read_stream("a")),
    "read_all": lambda s: list(s.read_all()),
    "read_all-filtered": lambda s: list(s.read_all(types="Tested")),
    "stream_version": lambda s: s.stream_version("a"),
    "head": lambda s: s.head(),
    "streams": lambda s: list(s.streams()),
    "get": lambda s: s.get(1),
    "verify": lambda s: s.verify(),
    "sync": lambda s: s.sync(),
}


def _tx_block(s):
    with s.transaction() as tx:
        tx.append("a", make_events(1))


@pytest.mark.parametrize("call", sorted(CLOSED_CALLS))
def test_any_call_on_a_closed_store_raises_store_closed(store_path, call):
    s = cairn.open(store_path, durability="none")
    s.append("a", make_events(1))
    s.close()
    with pytest.raises(cairn.StoreClosed):
        CLOSED_CALLS[call](s)
    with cairn.open(store_path, durability="none") as s2:
        assert s2.head() == 1


def test_iterator_of_a_closed_store_raises_store_closed(store_path):
    s = cairn.open(store_path, durability="none")
    for _ in range(3):
        s.append("a", make_events(300))
    it = s.read_all()
    first = next(it)
    assert first.position == 1
    s.close()
    with pytest.raises(cairn.StoreClosed):
        for _ in it:
            pass
    with cairn.open(store_path, durability="none") as s2:
        assert s2.head() == 900


def test_close_twice_is_fine(store_path):
    s = cairn.open(store_path, durability="none")
    s.close()
    s.close()
    with pytest.raises(cairn.StoreClosed):
        s.head()


def test_exit_after_close_is_fine(store_path):
    with cairn.open(store_path, durability="none") as s:
        s.close()
    with pytest.raises(cairn.StoreClosed):
        s.head()


# ---------------------------------------------------------------------------------------
# Several handles on one directory in one process
# ---------------------------------------------------------------------------------------

def test_two_handles_share_data_and_survive_each_others_close(store_path):
    a = cairn.open(store_path, durability="none")
    b = cairn.open(store_path, durability="none")
    try:
        a.append("s-1", make_events(1), expected_version=cairn.NO_STREAM)
        assert b.stream_version("s-1") == 0
        b.append("s-1", make_events(1), expected_version=0)
        assert a.head() == 2
        a.close()
        with pytest.raises(cairn.StoreClosed):
            a.head()
        # b keeps working: reads, writes, iterators, verify.
        b.append("s-1", make_events(2), expected_version=1)
        assert [e.version for e in b.read_stream("s-1")] == [0, 1, 2, 3]
        assert b.verify().events == 4
        check_usable(b)
        # A third handle opened after the first closed sees everything.
        with cairn.open(store_path, durability="none") as c:
            assert c.head() == b.head()
        check_usable(b)
    finally:
        a.close()
        b.close()


def test_handles_with_different_durability_coexist(store_path):
    handles = [cairn.open(store_path, durability=d) for d in ("none", "full", "relaxed")]
    try:
        for k, h in enumerate(handles):
            h.append("d", make_events(1), expected_version=k - 1 if k else cairn.NO_STREAM)
        handles[0].sync()
        for h in handles:
            assert h.stream_version("d") == 2
        handles[1].close()
        check_usable(handles[0])
        check_usable(handles[2])
    finally:
        for h in handles:
            h.close()


def test_handle_opened_via_another_spelling_of_the_path(store_path):
    a = cairn.open(store_path, durability="none")
    try:
        a.append("x", make_events(1))
        other = str(store_path) + "/./"
        with cairn.open(other, durability="none") as b:
            assert b.head() == 1
            b.append("x", make_events(1))
        assert a.head() == 2
        check_usable(a)
    finally:
        a.close()


def test_iterators_of_one_handle_survive_close_of_another(store_path):
    a = cairn.open(store_path, durability="none")
    b = cairn.open(store_path, durability="none")
    try:
        a.append("s", make_events(10))
        it = b.read_all()
        assert next(it).position == 1
        a.close()
        assert [e.position for e in it] == list(range(2, 11))
    finally:
        b.close()


# ---------------------------------------------------------------------------------------
# Map growth
# ---------------------------------------------------------------------------------------

def test_small_map_grows_by_itself(store_path):
    payload = "x" * 10_000
    with cairn.open(store_path, durability="none", map_size=1 << 16) as s:
        for i in range(40):
            s.append("big-1", [cairn.Event("Blob", {"i": i, "p": payload}) for _ in range(5)])
        r = s.append("big-2", [cairn.Event("Huge", "y" * (2 << 20))])
        assert r.position == 201
        assert s.head() == 201
        assert s.verify().events == 201
        assert s.get(201).data == "y" * (2 << 20)
    # Reopening with the same small map_size works on the now larger file.
    with cairn.open(store_path, durability="none", map_size=1 << 16) as s:
        assert s.head() == 201
        assert sum(1 for _ in s.read_stream("big-1")) == 200
        s.append("big-3", [cairn.Event("Huge", b"z" * (1 << 20))])
        assert s.get(202).data == b"z" * (1 << 20)


def test_map_grows_while_another_handle_reads(store_path):
    a = cairn.open(store_path, durability="none", map_size=1 << 16)
    b = cairn.open(store_path, durability="none")
    try:
        a.append("s", make_events(5))
        it = b.read_all()
        assert next(it).position == 1
        a.append("t", [cairn.Event("Huge", "q" * (4 << 20))])
        rest = [e.position for e in it]
        assert rest[:4] == [2, 3, 4, 5]
        assert b.get(6).data == "q" * (4 << 20)
        check_usable(b)
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------------------------------
# fork()
# ---------------------------------------------------------------------------------------

def _in_child(fn):
    """Runs fn() in a forked child; returns its exit code (fn returns the code)."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = fn()
        except BaseException:  # noqa: BLE001 - any escape is a failure code
            code = 98
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status), f"child died: status {status}"
    return os.WEXITSTATUS(status)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_store_used_in_forked_child_raises_store_closed(store_path):
    s = cairn.open(store_path, durability="none")
    try:
        s.append("f-1", make_events(2))
        s.append("f-2", make_events(600))
        it = s.read_all()
        assert next(it).position == 1

        def child():
            codes = 0
            for i, call in enumerate([
                lambda: s.head(),
                lambda: s.append("f-1", make_events(1)),
                lambda: list(s.read_all()),
                lambda: s.stream_version("f-1"),
            ]):
                try:
                    call()
                    codes |= 1 << i  # worked: should have raised StoreClosed
                except cairn.StoreClosed:
                    pass
                except BaseException:  # noqa: BLE001
                    return 50 + i
            s.close()  # closing in the child must not disturb the parent
            return codes

        assert _in_child(child) == 0
        assert [e.position for e in it] == list(range(2, 603))
        s.append("f-1", make_events(1), expected_version=1)
        assert [e.version for e in s.read_stream("f-1")] == [0, 1, 2]
        assert s.verify().events == 603
        check_usable(s)
    finally:
        s.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_iterator_used_in_forked_child_raises_store_closed(store_path):
    # docs/API.md section 2: a handle *or iterator* used in the child raises StoreClosed,
    # also when the iterator still holds events it read before the fork.
    s = cairn.open(store_path, durability="none")
    try:
        s.append("f-1", make_events(600))
        it = s.read_all()
        assert next(it).position == 1

        def child():
            try:
                next(it)
                return 1
            except cairn.StoreClosed:
                return 0

        assert _in_child(child) == 0
        assert [e.position for e in it] == list(range(2, 601))
        check_usable(s)
    finally:
        s.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_child_can_open_the_store_afresh(store_path):
    s = cairn.open(store_path, durability="none")
    try:
        s.append("f-1", make_events(1))

        def child():
            with cairn.open(store_path, durability="none") as c:
                if c.head() != 1:
                    return 2
                c.append("f-1", make_events(1), expected_version=0)
                c.sync()
            return 0

        assert _in_child(child) == 0
        assert s.head() == 2
        assert s.stream_version("f-1") == 1
        s.append("f-1", make_events(1), expected_version=1)
        assert s.verify().events == 3
    finally:
        s.close()


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_store_files_follow_the_umask_and_are_never_world_writable(tmp_path, umask):
    """The directory (0775), data.mdb, lock.mdb, notify and wal (0644) and keys (0600: it holds the
    subjects' keys, spec 6) are created through the process umask; even with umask 0 nothing
    is writable by others, and keys is readable by its owner only."""
    path = tmp_path / "s"
    old = os.umask(umask)
    try:
        with cairn.open(path, durability="none") as s:
            s.append("a", make_events(1))
    finally:
        os.umask(old)
    made = [path] + sorted(path.iterdir())
    assert {p.name for p in made[1:]} == {"data.mdb", "lock.mdb", "notify", "keys", "wal"}
    for p in made:
        mode = p.stat().st_mode & 0o777
        assert not mode & 0o002, (p, oct(mode))
        want = (0o775 if p.is_dir() else 0o600 if p.name == "keys" else 0o644) & ~umask
        assert mode == want, (p, oct(mode), oct(want))


@pytest.mark.parametrize("map_size", [1, 4096, 8192, 16384])
def test_a_map_size_too_small_for_a_store_is_rounded_up(tmp_path, map_size):
    # a full map is never an error a user sees: not at open either
    s = cairn.open(tmp_path / "s", map_size=map_size)
    s.append("a-1", [cairn.Event("T", {"x": "y" * 1000}) for _ in range(2000)])
    assert s.head() == 2000
    s.verify()
    s.close()
    assert cairn.open(tmp_path / "s", map_size=map_size, readonly=True).head() == 2000
