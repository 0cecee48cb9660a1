"""Fast crash test (docs/reliability.md, "Crash tests"): a writer killed with SIGKILL at random
moments, fixed seeds, both durabilities that promise to survive a process crash.

The harness is tests/reliability/crash.py; this runs a few short rounds of it in `make test`
(the command line runs as many as asked).
"""

import importlib.util
import os
import uuid

import pytest

import cairn

_HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location(
    "cairn_crash_harness", os.path.join(_HERE, "..", "reliability", "crash.py"))
crash = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(crash)


@pytest.mark.parametrize("seed,durability", [(11, "full"), (12, "relaxed")])
def test_sigkill_rounds(tmp_path, seed, durability):
    f = crash.run(5, seed, str(tmp_path), durabilities=(durability,), max_delay=0.4,
                  quiet=True)
    assert not f["failures"], f["failures"]
    assert f["rounds"] == 5 and f["kills"] == 5
    assert f["events_verified"] > 0 and f["head"] > 0


def test_rounds_alternating_durability(tmp_path):
    f = crash.run(4, 13, str(tmp_path), durabilities=("full", "relaxed"), min_delay=0.0,
                  max_delay=0.15, quiet=True)
    assert not f["failures"], f["failures"]
    assert f["rounds"] == 4


def test_rounds_durability_none(tmp_path):
    """"none" also promises to survive a process crash (only an OS crash may lose commits)."""
    f = crash.run(3, 14, str(tmp_path), durabilities=("none",), max_delay=0.3, quiet=True)
    assert not f["failures"], f["failures"]
    assert f["rounds"] == 3


def _store_with_history(tmp_path):
    path = str(tmp_path / "store")
    crash.setup_store(path)
    return path


def test_checker_catches_a_lost_event(tmp_path):
    """The checks are not vacuous: an acknowledged event that is missing is reported."""
    path = _store_with_history(tmp_path)
    model = crash.Model()
    model.events[str(uuid.uuid4())] = {"stream": "plain-0", "id": "x", "type": "Added",
                                       "data": {}, "metadata": None, "tags": [],
                                       "position": 1, "version": 0}
    with cairn.open(path) as store, pytest.raises(crash.Violation, match="lost"):
        crash.verify_store(store, model, None)


def test_checker_catches_a_phantom_and_a_torn_transaction(tmp_path):
    path = _store_with_history(tmp_path)
    with cairn.open(path) as store:
        store.append("plain-0", [cairn.Event("Added", {"v": 1})])
        with pytest.raises(crash.Violation, match="unacknowledged"):
            crash.verify_store(store, crash.Model(), None)
    model = crash.Model()
    with cairn.open(path) as store:
        e = store.read_all().__next__()
        model.events[str(e.id)] = crash._desc(e.stream, e) | {"position": 1, "version": 0}
        model.txs["t"] = {str(e.id), str(uuid.uuid4())}
        with pytest.raises(crash.Violation, match="transaction t: 1 of 2"):
            crash.verify_store(store, model, None)
