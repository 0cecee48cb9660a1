"""Fast power-loss test (docs/reliability.md, "Power loss"): a writer with durability "full"
loses every write no flush made durable, at random moments, and no acknowledged event may be
lost nor the store damaged; and the harness is shown to catch what it looks for.

The harness is tests/reliability/powerloss.py (`make powerloss` runs 300 rounds); this runs
20 rounds of it and its self-tests in `make test`.  It builds the LD_PRELOAD shim with gcc and
skips only when there is no gcc; a shim that does not compile fails.
"""

import importlib.util
import os
import shutil

import pytest

import cairn

_HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location(
    "cairn_powerloss_harness", os.path.join(_HERE, "..", "reliability", "powerloss.py"))
powerloss = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(powerloss)


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    if not shutil.which("gcc"):
        pytest.skip("no gcc: the power-loss shim cannot be built")
    return powerloss.build_shim(str(tmp_path_factory.mktemp("shim") / "libcairn_power.so"))


def test_no_acknowledged_event_is_lost_to_power_loss(tmp_path, shim):
    f = powerloss.run(20, 7, str(tmp_path), shim=shim, fresh_every=5, quiet=True)
    assert not f["failures"], f["failures"]
    assert f["rounds"] == 20 and f["acks"] > 0 and f["event_checks"] > f["events_acked"]
    # the power went inside commits (unflushed writes undone), the creation of a store was
    # cut (fresh rounds are killed at one of their first 40 writes), and torn or reordered
    # sectors were kept
    assert f["in_a_commit"] >= 4 and f["kills"]["write"] >= 4 and f["kept_sectors"] > 0
    # several writer threads shared flushes: group commit was exercised
    assert any(t > 1 and acks > flushes > 0 for t, (acks, flushes) in f["per_threads"].items())


@pytest.mark.parametrize("fault", [
    {"durability": "none"},         # acknowledged before anything is flushed
    {"durability": "relaxed"},      # the meta page is not flushed: the last commits go
    {"ignore_flush": True},         # a disk that ignores fdatasync: the meta page outruns the data
    {"ignore_flush": "keys"},       # new keys are not flushed before the commit using them
], ids=["none", "relaxed", "lying-disk", "keys-unflushed"])
def test_the_harness_catches_acknowledged_writes_that_were_not_durable(tmp_path, shim, fault):
    f = powerloss.run(12, 3, str(tmp_path), shim=shim, fresh_every=0, quiet=True,
                      keep_failed=False, **fault)
    assert f["failures"], f"12 rounds with {fault} and no loss reported"
    assert any(w in f["failures"][0] for w in
               ("lost", "acknowledged as", "does not open", "CorruptionError")), f["failures"][0]


def _files(path):
    """Every file of the store directory, with its bytes."""
    return {n: open(os.path.join(path, n), "rb").read() for n in sorted(os.listdir(path))}


def test_a_new_store_whose_creation_the_power_cut_opens(tmp_path, shim):
    """cairn.open made the directory and LMDB its first 8 KiB (both meta pages); the power
    went before the first commit's flush, with 1.5 KiB of them on the disk.  No notify file:
    no store was ever there, so a read-write open makes one, as it does when the file is
    empty (docs/API.md section 1)."""
    path = str(tmp_path / "store")
    powerloss.cut_creation(path, shim, kill_at=2, torn_sectors=3)
    assert os.path.getsize(os.path.join(path, "data.mdb")) == 1536
    assert not os.path.exists(os.path.join(path, "notify"))
    with cairn.open(path) as store:
        assert store.head() == 0 and store.verify().events == 0
        store.append("a-1", [cairn.Event("T", {"n": 1})])
    with cairn.open(path, readonly=True) as store:
        assert store.head() == 1 and store.verify().events == 1


@pytest.mark.parametrize("kill_at,torn_sectors", [
    (2, 1), (2, 3), (2, 8), (2, 9), (2, 16),   # parts of the meta pages, or both whole
    (3, 2), (3, 40),                           # the meta pages lost, parts of the first commit
], ids=["meta-1", "meta-3", "meta-8", "meta-9", "meta-16", "commit-2", "commit-40"])
def test_a_read_only_open_of_a_creation_the_power_cut_finds_no_store(tmp_path, shim, kill_at,
                                                                    torn_sectors):
    """The torn file of a cut creation seen read-only: no store here, and nothing is written;
    a read-write open then makes the store afresh."""
    path = str(tmp_path / "store")
    powerloss.cut_creation(path, shim, kill_at=kill_at, torn_sectors=torn_sectors)
    before = _files(path)
    assert 0 < len(before["data.mdb"]) <= 16384 and "notify" not in before
    with pytest.raises(FileNotFoundError, match="no store here .the making of data.mdb was cut"):
        cairn.open(path, readonly=True)
    assert _files(path) == before
    with cairn.open(path) as store:
        assert store.head() == 0 and store.verify().events == 0
        store.append("a-1", [cairn.Event("T")])
    with cairn.open(path, readonly=True) as store:
        assert store.head() == 1


def test_torn_meta_pages_of_a_directory_that_held_a_store_are_refused(tmp_path, shim):
    """The torn file of a cut creation beside a notify file: the directory held a store (notify
    is made only after the first setup committed), so its data.mdb was damaged, not left
    unmade: CorruptionError for both kinds of open, and nothing written."""
    path = str(tmp_path / "store")
    powerloss.cut_creation(path, shim, kill_at=2, torn_sectors=3)
    open(os.path.join(path, "notify"), "wb").close()
    before = _files(path)
    for readonly in (False, True):
        with pytest.raises(cairn.CorruptionError, match="held a store .its notify file is there"):
            cairn.open(path, readonly=readonly)
        assert _files(path) == before
