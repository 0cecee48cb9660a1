"""Resource limits (docs/API.md sections 1-2): events at the maximum record
size and one byte over it, stream names at 1,024 bytes (many sharing prefixes), 10,000 and
65,535 tags on one event, 1,000,000 streams, a Lua aggregate state growing into the memory
cap, a store larger than 4 GiB, thousands of open iterators.

A store past 4 GiB runs by default as a sparse file (test_store_past_4_gib_sparse: events
stored at file offsets past 4 GiB, a few MB of real disk).  CAIRN_LIMITS_FULL=1 adds the slow
runs: a store written past 4 GiB on the real disk (~4.3 GB written, ~30 s).  CAIRN_LIMITS_STREAMS=N changes the
number of streams of the many-streams test (default 1,000,000).
docs/reliability.md ("Resource limits") records what runs where and the figures.
"""

import os
import struct
import time

import pytest

import cairn
from cairn import _cairn
from conftest import check_usable, dump, nothing_written

FULL = os.environ.get("CAIRN_LIMITS_FULL") == "1"
N_STREAMS = int(os.environ.get("CAIRN_LIMITS_STREAMS", "1000000"))

MAX_RECORD = _cairn.MAX_RECORD
HEADER = 112  # docs/API.md section 1: the fixed part of a stored record (format 2)


def record_size(stream, type, data=b"", tags=(), metadata_json=b""):
    """Section 1: stream name + type + tags (2-byte length each) + metadata + data + 112 bytes."""
    return (HEADER + len(stream.encode()) + len(type.encode())
            + sum(2 + len(t.encode()) for t in tags) + len(metadata_json) + len(data))


def test_limit_constants():
    assert MAX_RECORD == 16 << 20
    assert (_cairn.MAX_TYPE, _cairn.MAX_STREAM, _cairn.MAX_TAG, _cairn.MAX_TAGS) == (
        255, 1024, 1024, 65535)


# -- record size --------------------------------------------------------------------------

def test_bytes_event_at_max_record_size_round_trips_and_one_byte_more_is_refused(store):
    stream, typ = "big-1", "Blob"
    n = MAX_RECORD - record_size(stream, typ)
    data = bytes(range(256)) * (n // 256) + b"\x07" * (n % 256)
    assert record_size(stream, typ, data) == MAX_RECORD
    e = cairn.Event(typ, data)
    r = store.append(stream, [e])
    assert (r.version, r.position, r.first_position) == (0, 1, 1)
    got = store.get(1)
    assert got.id == e.id and type(got.data) is bytes and got.data == data
    assert [x.data == data for x in store.read_stream(stream)] == [True]
    assert [x.position for x in store.read_all(types=typ)] == [1]

    over = cairn.Event(typ, data + b"!")
    with nothing_written(store), pytest.raises(ValueError, match="data"):
        store.append(stream, [over])
    # The oversized event second in a call, and in a multi-stream transaction: nothing.
    with nothing_written(store), pytest.raises(ValueError, match="data"):
        store.append("big-2", [cairn.Event("Small", {"a": 1}), over])
    with nothing_written(store), pytest.raises(ValueError, match="data"):
        with store.transaction() as tx:
            tx.append("big-3", [cairn.Event("Small", 1)])
            tx.append("big-4", [over])
    assert tx.results is None
    assert store.verify() == (4, 2, 4)  # the max-size event and three of check_usable's


def test_json_event_with_tags_and_metadata_at_max_record_size(store):
    """Every field counts toward the 16 MiB: tags, metadata and JSON text included."""
    stream, type = "é" * 100 + "-1", "Τύπος"
    tags = ["tag-%d" % i for i in range(100)]
    metadata = {"k": "v"}
    meta_json = b'{"k":"v"}'
    base = record_size(stream, type, b'""', tags, meta_json)
    n = MAX_RECORD - base  # characters of an ASCII string: its JSON text is n + 2 bytes
    text = "x" * n
    e = cairn.Event(type, text, tags=tags, metadata=metadata)
    store.append(stream, [e])
    got = store.get(1)
    assert got.data == text and got.tags == tuple(tags) and got.metadata == metadata
    with nothing_written(store), pytest.raises(ValueError, match="data"):
        store.append(stream, [cairn.Event(type, text + "y", tags=tags, metadata=metadata)])
    # one more tag byte instead of one more data byte: also over
    with nothing_written(store), pytest.raises(ValueError, match="data"):
        store.append(stream, [cairn.Event(type, text, tags=tags[:-1] + ["tag-990"],
                                          metadata=metadata)])


def test_many_events_near_the_limit_in_one_call(store):
    """Four 16 MiB records in one atomic call (64 MiB in one commit)."""
    stream, type = "big", "Blob"
    n = MAX_RECORD - record_size(stream, type)
    evs = [cairn.Event(type, bytes([i]) * n) for i in range(4)]
    r = store.append(stream, evs)
    assert (r.version, r.position, r.first_position) == (3, 4, 1)
    for i, got in enumerate(store.read_stream(stream, backwards=True)):
        assert got.version == 3 - i and len(got.data) == n and got.data[:1] == bytes([3 - i])
    check_usable(store)


# -- names, types, tags -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["s" * 1024, "é" * 512, "\U0001f600" * 256,
                                  "a" * 1023 + "-"])
def test_stream_name_of_1024_bytes(store, name):
    assert len(name.encode()) == 1024
    r = store.append(name, [cairn.Event("A", {"n": 1})], expected_version=cairn.NO_STREAM)
    assert r.version == 0
    assert store.stream_version(name) == 0
    assert [e.stream for e in store.read_stream(name)] == [name]
    assert [e.stream for e in store.read_all(streams=[name])] == [name]
    assert list(store.streams(name)) == [name]
    assert list(store.streams(name[:300])) == [name]
    assert store.get(1).stream == name


@pytest.mark.parametrize("name", ["s" * 1025, "é" * 512 + "x", "\U0001f600" * 257])
def test_stream_name_of_1025_bytes_is_refused(store, name):
    with nothing_written(store), pytest.raises(ValueError, match="stream"):
        store.append(name, [cairn.Event("A")])


def test_many_1024_byte_names_sharing_prefixes(store):
    """2,000 names of 1,024 bytes in groups sharing 479, 480, 481 and 1,000 bytes (streams() indexes
    names by their first 480 bytes plus a digest): each its own stream, listed in bytewise
    order, found by prefix."""
    names = []
    for shared in (479, 480, 481, 1000):
        base = chr(ord("a") + shared % 26) * shared
        for i in range(500):
            tail = "%06d" % (499 - i)  # written out of order
            names.append((base + tail).ljust(1024, "z"))
    assert all(len(n.encode()) == 1024 for n in names) and len(set(names)) == len(names)
    for i in range(0, len(names), 250):
        with store.transaction() as tx:
            for k in range(i, i + 250):
                tx.append(names[k], [cairn.Event("Named", {"i": k})],
                          expected_version=cairn.NO_STREAM)
    assert store.head() == len(names)
    assert list(store.streams()) == sorted(names, key=str.encode)
    for shared in (479, 480, 481, 1000):
        base = chr(ord("a") + shared % 26) * shared
        want = sorted((n for n in names if n.startswith(base)), key=str.encode)
        assert list(store.streams(base)) == want
        assert list(store.streams(base + "000499")) == [n for n in want if n.startswith(
            base + "000499")]
    for i in (0, 499, 500, 999, 1000, 1500, 1999):
        n = names[i]
        assert store.stream_version(n) == 0
        (e,) = store.read_stream(n)
        assert e.stream == n and e.data == {"i": i}
        store.append(n, [cairn.Event("Again")], expected_version=0)
        assert store.stream_version(n) == 1
    assert store.verify().streams == len(names)


def test_type_of_255_bytes_and_256_refused(store):
    store.append("t", [cairn.Event("T" * 255)])
    assert store.get(1).type == "T" * 255
    assert [e.position for e in store.read_all(types="T" * 255)] == [1]
    with nothing_written(store), pytest.raises(ValueError, match="type"):
        store.append("t", [cairn.Event("T" * 256)])


def test_event_with_10000_tags(store):
    tags = ["tag-%05d" % i for i in range(10_000)]
    e = cairn.Event("Tagged", {"n": 1}, tags=tags)
    store.append("tagged-1", [cairn.Event("Other", tags=tags[:2])])
    store.append("tagged-1", [e])
    store.append("tagged-2", [cairn.Event("Other", tags=tags[-1:])])
    got = store.get(2)
    assert got.tags == tuple(tags) and got.id == e.id
    assert [x.position for x in store.read_all(tags=["tag-05000"])] == [2]
    assert [x.position for x in store.read_all(tags=tags[:2])] == [1, 2]
    assert [x.position for x in store.read_all(tags=tags[-1])] == [2, 3]
    assert [x.position for x in store.read_all(tags=tags)] == [2]  # all 10,000 at once
    assert [x.position for x in store.read_all(tags=tags + ["absent"])] == []
    assert [x.position for x in store.read_all(tags=tags[::997], backwards=True)] == [2]
    check_usable(store)


def test_max_tags_and_one_more(store):
    tags = ["%x" % i for i in range(_cairn.MAX_TAGS)]
    store.append("tags", [cairn.Event("Max", tags=tags)])
    assert len(store.get(1).tags) == 65535
    assert [x.position for x in store.read_all(tags=tags[-3:])] == [1]
    with nothing_written(store), pytest.raises(ValueError, match="tags"):
        store.append("tags", [cairn.Event("Max", tags=tags + ["one-more"])])
    # a batch indexes the single append's tags (the index tail); verify counts 65,535 + 2
    # distinct tag postings (repeats on one event are one posting)
    r = store.append("tags", [cairn.Event("Again", tags=tags[:2] + tags[:2]), cairn.Event("None")])
    assert [x.position for x in store.read_all(tags=[tags[0], tags[1]])] == [1, r.first_position]
    events, _, head = store.verify()
    assert events == head == r.position


def test_tag_of_1024_bytes_and_1025_refused(store):
    store.append("t", [cairn.Event("A", tags=["é" * 512])])
    assert [x.position for x in store.read_all(tags="é" * 512)] == [1]
    with nothing_written(store), pytest.raises(ValueError, match="tag"):
        store.append("t", [cairn.Event("A", tags=["é" * 512 + "x"])])


# -- many streams -------------------------------------------------------------------------

def test_one_million_streams(tmp_path):
    """N_STREAMS streams of one event each, written through store.transaction() in batches
    of 10,000 (durability none), then listed, counted by prefix and read back."""
    n, batch = N_STREAMS, 10_000
    with cairn.open(tmp_path / "s", durability="none") as store:
        t0 = time.perf_counter()
        for b in range(0, n, batch):
            with store.transaction() as tx:
                for i in range(b, min(n, b + batch)):
                    tx.append("stream-%07d" % i, [cairn.Event("Created", i)],
                              expected_version=cairn.NO_STREAM)
        t1 = time.perf_counter()
        assert store.head() == n
        count = last = 0
        prev = ""
        for name in store.streams():
            assert name > prev
            prev = name
            count += 1
        assert count == n
        t2 = time.perf_counter()
        assert sum(1 for _ in store.streams("stream-00012")) == min(100, max(0, n - 1200))
        for i in (0, 1, n // 2, n - 1):
            name = "stream-%07d" % i
            assert store.stream_version(name) == 0
            (e,) = store.read_stream(name)
            assert (e.stream, e.position, e.data) == (name, i + 1, i)
        assert [e.position for e in store.read_all(categories="stream", start=n - 1)] == [
            n - 1, n]
        r = store.append("stream-%07d" % (n - 1), [cairn.Event("Again")], expected_version=0)
        assert (r.version, r.position) == (1, n + 1)
        size = os.path.getsize(tmp_path / "s" / "data.mdb")
        print(f"\n{n} streams: write {t1 - t0:.1f} s, list {t2 - t1:.2f} s, "
              f"data.mdb {size / 1e6:.0f} MB")
    # reopening a store with that many streams is quick and sees them all
    with cairn.open(tmp_path / "s", durability="none") as store:
        assert store.stream_version("stream-%07d" % (n // 3)) == 0
        assert store.head() == n + 1


# -- Lua memory cap -----------------------------------------------------------------------

GROW = """
return {
  init = function() return { chunks = {} } end,
  apply = {
    Added = function(s, e) s.chunks[#s.chunks + 1] = string.rep("x", e.data.n) .. e.position end,
  },
  decide = {
    Add = function(s, cmd) return { { type = "Added", data = { n = cmd.data.n } } } end,
  },
}
"""


def test_aggregate_state_growing_into_the_memory_cap(tmp_path):
    """script_memory_limit=4 MiB; each event adds 100 kB to the state.  Loading 20 events
    (2 MB) works, loading 80 (8 MB) stops with a ScriptError naming memory, nothing is
    written by an execute on that stream, and the store keeps working."""
    with cairn.open(tmp_path / "s", durability="none", script_memory_limit=4 << 20) as store:
        assert store.script_memory_limit == 4 << 20
        store.define_aggregate("grow", GROW)
        store.append("grow-1", [cairn.Event("Added", {"n": 100_000}) for _ in range(80)])
        a = store.load("grow-1", version=19)
        assert a.version == 19 and len(a.state["chunks"]) == 20
        with pytest.raises(cairn.ScriptError, match="memory") as info:
            store.load("grow-1")
        assert info.value.script == "grow"
        assert info.value.position is not None and 30 <= info.value.position <= 80
        # after the failure: the same Lua state still folds a state under the cap
        a = store.load("grow-1", version=19)
        assert a.version == 19 and len(a.state["chunks"]) == 20
        with nothing_written(store), pytest.raises(cairn.ScriptError, match="memory"):
            store.execute("grow-1", "Add", {"n": 10})
        # a small stream of the same aggregate still loads and executes
        r = store.execute("grow-2", "Add", {"n": 10})
        assert r.version == 0
        assert len(store.load("grow-2").state["chunks"]) == 1
        # one reducer call that alone exceeds the cap
        store.append("grow-3", [cairn.Event("Added", {"n": 8 << 20})])
        with pytest.raises(cairn.ScriptError, match="memory"):
            store.load("grow-3")
        check_usable(store)
        assert store.verify().head == store.head()


# -- past 4 GiB ---------------------------------------------------------------------------

def test_store_past_4_gib_quick_proxy(tmp_path):
    """Quick proxy (always run): a map size past 4 GiB given explicitly (not representable
    in 32 bits) and 16 MiB records written, read and verified; reopened with the default
    map size.  The real > 4 GiB file is test_store_past_4_gib_full."""
    path = tmp_path / "s"
    n = MAX_RECORD - record_size("big", "Blob")
    with cairn.open(path, durability="none", map_size=5 << 30) as store:
        for i in range(6):
            store.append("big", [cairn.Event("Blob", bytes([i]) * n)])
        assert store.verify() == (6, 1, 6)
    with cairn.open(path, durability="none") as store:
        assert [e.data[:1] for e in store.read_stream("big")] == [bytes([i]) for i in range(6)]
        check_usable(store)


# LMDB 0.9 data.mdb (liblmdb 0.9.24 here; lmdb.h, mdb.c): pages 0 and 1 are meta pages, each
# a 16-byte page header and then MDB_meta {uint32 mm_magic, mm_version; void *mm_address;
# size_t mm_mapsize; MDB_db mm_dbs[2] (uint32 md_pad, uint16 md_flags, md_depth; size_t
# md_branch_pages, md_leaf_pages, md_overflow_pages, md_entries; pgno_t md_root); pgno_t
# mm_last_pg; txnid_t mm_txnid}, little-endian, 64-bit.  mm_dbs[0].md_pad is the page size.
# The meta with the larger mm_txnid is the current one; a write transaction takes new pages
# from the free list or else from mm_last_pg + 1 on.
LMDB_META = struct.Struct("<IIQQ" + "IHHQQQQQ" * 2 + "QQ")
LMDB_MAGIC, LMDB_DATA_VERSION, PAGE_HEADER = 0xBEEFC0DE, 1, 16


def move_end_of_lmdb_file_past(data_mdb, offset):
    """With the store closed: makes LMDB's next new page start past `offset` bytes into the
    file, as if the store had grown there, without writing the bytes in between.  The
    current meta page's mm_last_pg moves to offset // page size (and mm_mapsize up to cover
    it); the file is extended to match with truncate(), so it is sparse.  The pages skipped
    over are leaked: no tree and no free list refers to them, LMDB never reads them.
    Returns (old last page, new last page, page size)."""
    with open(data_mdb, "r+b") as f:
        head = f.read(PAGE_HEADER + LMDB_META.size)
        psize = LMDB_META.unpack_from(head, PAGE_HEADER)[4]
        metas = []
        for page in (0, 1):
            f.seek(page * psize + PAGE_HEADER)
            m = list(LMDB_META.unpack(f.read(LMDB_META.size)))
            assert (m[0], m[1], m[4]) == (LMDB_MAGIC, LMDB_DATA_VERSION, psize), m[:5]
            metas.append(m)
        cur = 0 if metas[0][-1] > metas[1][-1] else 1
        m = metas[cur]
        old_last = m[-2]
        assert (old_last + 1) * psize == os.path.getsize(data_mdb)
        new_last = offset // psize
        m[-2] = new_last
        m[3] = max(m[3], (new_last + 1) * psize)
        f.seek(cur * psize + PAGE_HEADER)
        f.write(LMDB_META.pack(*m))
    os.truncate(data_mdb, (new_last + 1) * psize)
    return old_last, new_last, psize


def test_store_past_4_gib_sparse(tmp_path):
    """A store whose data.mdb is past 4 GiB and whose newest events are stored at file
    offsets past 4 GiB, in a few seconds and a few MB of real disk: a store with 12 events
    is closed, LMDB's end of file moved past 4 GiB (move_end_of_lmdb_file_past), then events
    of 64 kB and one of 16 MiB are appended -- their bytes are found past the 4 GiB offset
    in the file -- read back by every read path, verify()d, reopened (with the default map
    and with a 1 GiB map smaller than the file), appended to.  The pages below 4 GiB are
    never written: this checks offsets and sizes past 32 bits in cairn and LMDB, not the
    disk or the page cache with 4 GiB of data (test_store_past_4_gib_full does that)."""
    path = tmp_path / "s"
    data_mdb = path / "data.mdb"
    four = 4 << 30
    with cairn.open(path, durability="none") as store:
        store.append("low", [cairn.Event("Low", {"i": i}, tags=["t"]) for i in range(12)])
    old_last, new_last, psize = move_end_of_lmdb_file_past(data_mdb, four)
    assert old_last < 100 and new_last * psize >= four

    def blob(i, n=64 << 10):
        mark = b"<<cairn-past-4-GiB-%06d>>" % i
        return mark + bytes([i % 251]) * (n - len(mark)), mark

    expected = {p: ("low", "Low", {"i": p - 1}) for p in range(1, 13)}
    marks = []

    def append_high(store, i, n=64 << 10):
        data, mark = blob(i, n)
        stream = "high-%d" % (i % 3)
        r = store.append(stream, [cairn.Event("High", data, tags=["t", "high"])])
        expected[r.position] = (stream, "High", data)
        marks.append(mark)

    def check_all(store):
        head = store.head()
        assert head == len(expected)
        got = list(store.read_all())
        assert [e.position for e in got] == list(range(1, head + 1))
        for e in got:
            assert (e.stream, e.type, e.data) == expected[e.position], e.position
        for p in (1, 13, head):
            assert store.get(p).data == expected[p][2]
        highs = [p for p in sorted(expected) if expected[p][1] == "High"]
        assert [e.position for e in store.read_all(tags=["t", "high"])] == highs
        assert [e.position for e in store.read_all(types="High", backwards=True)] == highs[::-1]
        for k in range(3):
            s = "high-%d" % k
            assert [e.data for e in store.read_stream(s)] == [
                expected[p][2] for p in highs if expected[p][0] == s]
        assert store.verify() == (head, len({v[0] for v in expected.values()}), head)

    def records_past_four_gib():
        """How many of the appended events' bytes lie past the 4 GiB offset of the file."""
        with open(data_mdb, "rb") as f:
            f.seek(four)
            tail = f.read()
        return sum(1 for m in marks if tail.find(m) >= 0)

    with cairn.open(path, durability="none") as store:
        assert store.head() == 12
        for i in range(40):
            append_high(store, i)
        append_high(store, 40, MAX_RECORD - record_size("high-1", "High", tags=["t", "high"]))
        check_all(store)
    assert records_past_four_gib() == len(marks) == 41

    # reopen with a map smaller than the file: LMDB maps the whole file, the map grows on
    with cairn.open(path, durability="none", map_size=1 << 30) as store:
        check_all(store)
        for i in range(41, 61):
            append_high(store, i)
        check_all(store)
        check_usable(store)
        expected[store.head()] = ("usable-check", "UsableCheck", {"head": store.head() - 1})
    assert records_past_four_gib() == len(marks) == 61
    with cairn.open(path, durability="none") as store:
        check_all(store)
    st = os.stat(data_mdb)
    assert st.st_size > four
    assert st.st_blocks * 512 < 64 << 20, "data.mdb is not sparse: %d bytes on disk" % (
        st.st_blocks * 512)
    print(f"\nsparse store: data.mdb {st.st_size / 2**30:.3f} GiB apparent, "
          f"{st.st_blocks * 512 / 2**20:.1f} MiB on disk, {len(marks)} events past 4 GiB")


@pytest.mark.skipif(not FULL, reason="writes ~4.3 GB; CAIRN_LIMITS_FULL=1")
def test_store_past_4_gib_full(tmp_path):
    """290 events of ~15 MiB (4.25 GiB of data.mdb) with durability none, the map growing
    by itself; the last events (at file offsets past 4 GiB) read back intact, verify()
    checks every record, reopen sees them."""
    path = tmp_path / "s"
    sz = 15 << 20
    blob = os.urandom(1 << 20) * 15
    count = 290
    t0 = time.perf_counter()
    with cairn.open(path, durability="none") as store:
        for i in range(count):
            store.append("big-%d" % (i % 3), [cairn.Event("Big", blob[:sz - i])])
        store.sync()
        t1 = time.perf_counter()
        size = os.path.getsize(path / "data.mdb")
        assert size > 4 << 30
        for e in store.read_all(start=count - 10):
            assert e.data == blob[:sz - (e.position - 1)]
        assert store.verify() == (count, 3, count)
        t2 = time.perf_counter()
    with cairn.open(path, durability="none") as store:
        assert store.head() == count
        e = store.get(count)
        assert e.data == blob[:sz - (count - 1)] and e.stream == "big-%d" % ((count - 1) % 3)
        check_usable(store)
    print(f"\n{count} x 15 MiB: write+sync {t1 - t0:.1f} s, read tail + verify "
          f"{t2 - t1:.1f} s, data.mdb {size / 2**30:.2f} GiB")


# -- open iterators -----------------------------------------------------------------------

def test_thousands_of_open_iterators_interleaved_with_appends(tmp_path):
    """2,000 read_all, 500 read_stream and 500 streams() iterators open at once (far more
    than LMDB's 126 reader slots), each advanced a little between appends: every one yields
    its events in order without gaps or repeats, and the file grows no more than it does
    without them (no snapshot pinned between next() calls)."""

    def run(path, with_iterators):
        with cairn.open(path, durability="none") as store:
            for i in range(20):
                store.append("s-%d" % (i % 5), [cairn.Event("Seed", {"i": i, "pad": "p" * 200})
                                                 for _ in range(50)])
            its = []
            if with_iterators:
                its += [("all", k % 1000 + 1, store.read_all(start=k % 1000 + 1))
                        for k in range(2000)]
                its += [("stream", k % 5, store.read_stream("s-%d" % (k % 5)))
                        for k in range(500)]
                its += [("names", None, store.streams()) for _ in range(500)]
            last = {}
            size0 = os.path.getsize(path / "data.mdb")
            for round in range(200):
                store.append("s-%d" % (round % 5), [cairn.Event("More", {"r": round,
                                                                         "pad": "q" * 2000})])
                for j in range(round % 10, len(its), 10):
                    kind, arg, it = its[j]
                    e = next(it, None)
                    if e is None:
                        continue
                    if kind == "all":
                        want = last.get(j, arg - 1) + 1
                        assert e.position == want, (j, e.position, want)
                        last[j] = e.position
                    elif kind == "stream":
                        want = last.get(j, -1) + 1
                        assert (e.stream, e.version) == ("s-%d" % arg, want)
                        last[j] = e.version
                    else:
                        assert e > last.get(j, "")
                        last[j] = e
            size1 = os.path.getsize(path / "data.mdb")
            # every iterator can still be drained to the end, in order
            for j, (kind, arg, it) in enumerate(its):
                rest = list(it)
                if kind == "all":
                    # from where it stopped, without gaps, at least to the head it was
                    # created at (whether later commits show is not specified)
                    got = [e.position for e in rest]
                    first = last.get(j, arg - 1) + 1
                    assert got == list(range(first, first + len(got)))
                    assert first + len(got) - 1 >= 1000
                    assert not got or got[-1] <= store.head()
            check_usable(store)
            return size1 - size0

    t0 = time.perf_counter()
    growth_without = run(tmp_path / "a", False)
    growth_with = run(tmp_path / "b", True)
    print(f"\ngrowth over 200 commits: {growth_without} B without iterators, "
          f"{growth_with} B with 3,000 open; {time.perf_counter() - t0:.1f} s")
    assert growth_with <= 2 * growth_without + (1 << 20)
