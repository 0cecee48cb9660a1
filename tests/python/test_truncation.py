"""A truncated data.mdb (docs/reliability.md, "Truncated data.mdb").

A small store (about 250 KiB) is cut at every page boundary below its size, and opened
read-write and read-only, each in its own process so that a crash (LMDB touching a page past
the end of the map: SIGBUS) is counted as a failure, not fatal to the suite.  Every one must
raise CorruptionError, and leave the file as it was.
"""

import os
import shutil
import subprocess

import pytest

import cairn

from conftest import PYTHON, child_env

PAGE = 4096

OPEN = """
import sys, cairn
try:
    s = cairn.open(sys.argv[1], readonly=sys.argv[2] == "ro")
except cairn.CorruptionError as e:
    print("corrupt", e)
    sys.exit(0)
except Exception as e:
    print("other", type(e).__name__, e)
    sys.exit(0)
print("opened", s.head())
"""


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    path = tmp_path_factory.mktemp("trunc") / "store"
    with cairn.open(path, durability="none") as s:
        for i in range(300):
            s.append(f"a-{i % 7}", [cairn.Event("T", {"i": i, "pad": "y" * 300})])
    return path


def test_every_truncation_size_is_corruption(original, tmp_path):
    data = os.path.join(original, "data.mdb")
    full = os.path.getsize(data)
    assert full >= 50 * PAGE
    bad = []
    for size in range(PAGE, full, PAGE):
        for mode in ("rw", "ro"):
            path = tmp_path / f"cut-{size}-{mode}"
            os.makedirs(path)
            shutil.copyfile(data, path / "data.mdb")
            os.truncate(path / "data.mdb", size)
            r = subprocess.run([PYTHON, "-c", OPEN, str(path), mode], capture_output=True,
                               text=True, env=child_env(), timeout=60)
            out = r.stdout.strip()
            if r.returncode != 0 or not out.startswith("corrupt"):
                bad.append((size, mode, r.returncode, out, r.stderr[-200:]))
            elif size >= 2 * PAGE:
                assert "shorter than its meta pages say" in out, out
            assert os.path.getsize(path / "data.mdb") == size
            shutil.rmtree(path)
    assert not bad, f"{len(bad)} of {2 * (full // PAGE - 1)} opens: {bad[:4]}"


def test_full_file_still_opens(original):
    with cairn.open(original, readonly=True) as s:
        assert s.head() == 300
        s.verify()
