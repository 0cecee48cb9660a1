"""The Python paths of bench/ as one short script, to count their instructions with callgrind
(which this shared VM's load cannot move), for before/after comparisons of a change:

    valgrind --tool=callgrind python3 bench/callgrind_python.py ROOT DIR MODE

ROOT is the checkout whose python/ and bench/ are used; the store in DIR gets 20,000 events
with bench_aggregate.py's reducer defined, then MODE runs three times: `lua` (store.load), `py`
(bench_aggregate.python_fold), `read` (read_all + .data), `append` (5,000 events in one call),
`base` (nothing: subtract its count from the others).  bench/RESULTS.md has figures.
"""

import os
import shutil
import sys

sys.path.insert(0, os.path.join(sys.argv[1], "bench"))
sys.path.insert(0, os.path.join(sys.argv[1], "python"))

import cairn  # noqa: E402
from bench_aggregate import REDUCER, python_fold  # noqa: E402

d, mode = sys.argv[2], sys.argv[3]
shutil.rmtree(d, ignore_errors=True)
s = cairn.open(d, durability="none")
s.define_aggregate("Account", REDUCER)
for i in range(0, 20000, 1000):
    s.append("Account-1", [cairn.Event("Deposited" if j % 3 else "Withdrawn", {"amount": j}) for j in range(1000)])
for r in range(3):
    if mode == "lua":
        s.load("Account-1")
    elif mode == "py":
        python_fold(s, "Account-1")
    elif mode == "read":
        for e in s.read_all():
            e.data
    elif mode == "append":
        s.append("x-%d" % r, [cairn.Event("T", {"i": i, "name": "abc"}) for i in range(5000)])
