"""Operations on a store (spec: docs/API.md section 2, "Operations"): backup(dest), stat(),
subscriptions(), position_of(id) and verify(progress=...)."""

import os
import subprocess
import textwrap
import uuid

import pytest

import cairn

from conftest import PYTHON, child_env, make_events

PROJ = """
return {
  source = { categories = { "acct" } },
  init = function() return { n = 0 } end,
  apply = { Moved = function(s, e) s.n = s.n + 1 end },
}"""


def test_backup_holds_events_scripts_projection_state_and_checkpoints(store, tmp_path):
    store.append("acct-1", make_events(30, "Moved"))
    store.define_projection("count", PROJ)
    store.run_projections()
    with store.subscribe(1, name="mailer", timeout=0) as sub:
        for _, _ in zip(range(4), sub):
            pass
    dest = tmp_path / "copy"
    store.backup(dest)
    assert sorted(os.listdir(dest)) == ["data.mdb", "keys"]
    with cairn.open(dest, readonly=True) as b:
        assert b.verify() == store.verify()
        assert [e.id for e in b.read_all()] == [e.id for e in store.read_all()]
        assert b.scripts() == store.scripts()
        assert b.projection("count").state() == {"n": 30}
        assert b.projection("count").position == 30
        assert b.checkpoint("mailer") == 4
        assert b.subscriptions() == {"mailer": 4}


def test_backup_is_compacted(store, tmp_path):
    for i in range(40):
        store.append(f"acct-{i}", make_events(20))
    assert store.stat()["pages_free"] > 0
    store.backup(tmp_path / "copy")
    with cairn.open(tmp_path / "copy", readonly=True) as b:
        st = b.stat()
        assert st["pages_free"] == 0
        assert st["pages_used"] < store.stat()["pages_used"]


def test_backup_into_an_empty_directory(store, tmp_path):
    store.append("a-1", make_events(3))
    (tmp_path / "empty").mkdir()
    store.backup(str(tmp_path / "empty"))
    with cairn.open(tmp_path / "empty", readonly=True) as b:
        assert b.head() == 3


def test_backup_refuses_a_directory_that_is_not_empty(store, tmp_path):
    d = tmp_path / "used"
    d.mkdir()
    (d / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        store.backup(d)
    assert sorted(os.listdir(d)) == ["notes.txt"]
    with pytest.raises(ValueError, match="not a directory"):
        store.backup(d / "notes.txt")
    with pytest.raises(FileNotFoundError):
        store.backup(tmp_path / "no" / "such")
    with pytest.raises(TypeError):
        store.backup(42)
    store.close()
    with pytest.raises(cairn.StoreClosed):
        store.backup(tmp_path / "later")


def test_backup_while_another_process_appends_is_a_prefix(store_path, tmp_path):
    """The copy is one snapshot: whole commits (of 10 events) and exactly the source's first
    events, while a writer in another process keeps committing."""
    with cairn.open(store_path) as s:
        s.append("w-1", make_events(10))
    writer = subprocess.Popen([PYTHON, "-c", textwrap.dedent(f"""
        import cairn, sys
        with cairn.open({str(store_path)!r}, durability="none") as s:
            print("go", flush=True)
            for i in range(400):
                s.append("w-1", [cairn.Event("W", {{"i": i, "k": k}}) for k in range(10)])
        """)], env=child_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "go\n"
        with cairn.open(store_path) as s:
            copies = []
            for n in range(3):
                s.backup(tmp_path / f"b{n}")
                copies.append(tmp_path / f"b{n}")
    finally:
        assert writer.wait(60) == 0
    with cairn.open(store_path, readonly=True) as s:
        src = [(e.id, e.data, e.timestamp_ns) for e in s.read_all()]
    for c in copies:
        with cairn.open(c, readonly=True) as b:
            rep = b.verify()
            assert rep.head % 10 == 0
            assert [(e.id, e.data, e.timestamp_ns) for e in b.read_all()] == src[: rep.head]


def test_stat_reports_the_file(store):
    store.append("a-1", make_events(100))
    st = store.stat()
    assert set(st) == {"file_bytes", "map_bytes", "page_size", "pages_used", "pages_free",
                       "txn_id"}
    assert st["file_bytes"] == os.path.getsize(os.path.join(store.path, "data.mdb"))
    assert st["page_size"] == os.sysconf("SC_PAGESIZE")
    assert 0 < st["pages_used"] * st["page_size"] <= st["map_bytes"]


def test_subscriptions_lists_named_checkpoints(store):
    assert store.subscriptions() == {}
    store.append("a-1", make_events(5))
    for name, n in (("zeta", 3), ("alpha", 1)):
        with store.subscribe(1, name=name, timeout=0) as sub:
            for _, _ in zip(range(n), sub):
                pass
    assert store.subscriptions() == {"alpha": 1, "zeta": 3}
    assert list(store.subscriptions()) == ["alpha", "zeta"]


def test_position_of_finds_ids_in_batches_and_in_the_tail(store):
    batch = make_events(3)
    store.append("a-1", batch)
    one = cairn.Event("One")
    store.append("a-1", [one])  # a single-event append: its id waits in the index tail
    assert store.position_of(batch[2].id) == 3
    assert store.position_of(str(one.id)) == 4
    assert store.position_of(uuid.uuid4()) is None
    with pytest.raises(ValueError, match="not a UUID"):
        store.position_of("nope")
    with pytest.raises(TypeError):
        store.position_of(3)


def test_verify_reports_progress(store):
    store.append("a-1", make_events(5000))
    seen = []
    assert store.verify(progress=lambda done, total: seen.append((done, total))).events == 5000
    assert seen and seen[-1] == (5000, 5000)
    assert all(t == 5000 for _, t in seen)
    with pytest.raises(ZeroDivisionError):
        store.verify(progress=lambda d, t: 1 / 0)
    with pytest.raises(TypeError):
        store.verify(progress=3)


def test_verify_with_damage_reports_every_damaged_event(store_path):
    with cairn.open(store_path, durability="none") as s:
        s.append("acct-1", [cairn.Event("Moved", {"marker": f"MARK{i:04d}X"}) for i in range(50)])
        s.sync()
    with open(os.path.join(store_path, "data.mdb"), "r+b") as f:
        data = bytearray(f.read())
        for i in (9, 30):
            at = data.find(f"MARK{i:04d}X".encode())
            while at >= 0:
                data[at + 2] ^= 0x20
                at = data.find(f"MARK{i:04d}X".encode(), at + 1)
        f.seek(0)
        f.write(data)
    with cairn.open(store_path, readonly=True) as s:
        with pytest.raises(cairn.CorruptionError) as first:
            s.verify()
        assert first.value.position == 10
        found = []
        with pytest.raises(cairn.CorruptionError) as ei:
            s.verify(damage=lambda pos, msg: found.append((pos, msg)))
        assert ei.value.position == 10  # the first damage is the error
        assert [p for p, _ in found] == [10, 31]
        assert all("corrupt record" in m for _, m in found)
        with pytest.raises(TypeError):
            s.verify(damage=1)
