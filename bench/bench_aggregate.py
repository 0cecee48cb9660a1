"""Aggregate load from Python: the reducer in Lua (store.load) against the same reducer
written as a Python loop over read_stream, on one 100,000-event stream, in one run.

Usage: python bench/bench_aggregate.py DIR [--events N] [--rounds R]
"""

import argparse
import os
import resource
import shutil
import time

import cairn

REDUCER = """
return {
  init = function() return { balance = 0, count = 0 } end,
  apply = {
    Deposited = function(s, e) s.balance = s.balance + e.data.amount; s.count = s.count + 1 end,
    Withdrawn = function(s, e) s.balance = s.balance - e.data.amount; s.count = s.count + 1 end,
  },
}
"""


def python_fold(store, stream):
    s = {"balance": 0, "count": 0}
    for e in store.read_stream(stream):
        if e.type == "Deposited":
            s["balance"] += e.data["amount"]
            s["count"] += 1
        elif e.type == "Withdrawn":
            s["balance"] -= e.data["amount"]
            s["count"] += 1
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    path = os.path.join(args.dir, "agg")
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(args.dir, exist_ok=True)
    n = args.events
    with cairn.open(path, durability="none") as store:
        store.define_aggregate("account", REDUCER)
        for b in range(0, n, 1000):
            store.append("account-1", [cairn.Event("Withdrawn" if i % 3 == 2 else "Deposited",
                                                   {"amount": i % 100, "note": "hello"})
                                       for i in range(b, min(n, b + 1000))])
        lua, py = [], []
        for _ in range(args.rounds):
            t = time.perf_counter()
            a = store.load("account-1")
            lua.append(n / (time.perf_counter() - t))
            t = time.perf_counter()
            s = python_fold(store, "account-1")
            py.append(n / (time.perf_counter() - t))
            assert a.state == s, (a.state, s)
    shutil.rmtree(path, ignore_errors=True)
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    print(f"Aggregate load of a {n}-event stream from Python, median of {args.rounds} rounds\n")
    print("| reducer | ev/s | ratio |\n|---|---|---|")
    print(f"| Lua reducer, store.load (no snapshots) | {med(lua):,.0f} | **{med(lua) / med(py):.2f}x** |")
    print(f"| Python loop over read_stream | {med(py):,.0f} | 1.00x |")
    print(f"\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
