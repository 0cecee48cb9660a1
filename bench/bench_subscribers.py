"""Does a commit cost more when 100 subscribers wait?  The writer's own CPU time per
single-event append with no subscriber, with 1 and with 100 subscribers (threads of another
process, asleep between events), in one run.  One thread per process sleeps on the
store's futex and wakes the others of its process, so the writer's share should not grow
with the number of subscribers.

Usage: python bench/bench_subscribers.py DIR [--events N]
"""

import argparse
import os
import shutil
import subprocess
import sys
import time

import cairn

CHILD = r"""
import sys, threading, cairn
path, n, start, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
store = cairn.open(path, readonly=True)
ready = threading.Barrier(k + 1)
def run():
    got = 0
    with store.subscribe(start, timeout=30) as sub:
        ready.wait()
        for e in sub:
            got += 1
            if got == n:
                break
    assert got == n
threads = [threading.Thread(target=run) for _ in range(k)]
for t in threads: t.start()
ready.wait()
print("ready", flush=True)
for t in threads: t.join()
"""


def writer_cpu(store, n):
    ev = [cairn.Event("Tick", {"i": 1})]
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(n):
        store.append("tick-1", [cairn.Event("Tick", {"i": i})])
    return (time.process_time() - c0) / n * 1e6, (time.perf_counter() - t0) / n * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--events", type=int, default=3000)
    args = ap.parse_args()
    path = os.path.join(args.dir, "subs")
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(args.dir, exist_ok=True)
    n = args.events
    with cairn.open(path, durability="none") as store:
        store.append("tick-1", [cairn.Event("Tick")])
        alone = [writer_cpu(store, n) for _ in range(3)]
        watched = {}
        for k in (1, 100):
            child = subprocess.Popen([sys.executable, "-c", CHILD, path, str(n), str(store.head() + 1), str(k)],
                                     stdout=subprocess.PIPE, text=True)
            assert child.stdout.readline().strip() == "ready"
            time.sleep(0.2)
            watched[k] = writer_cpu(store, n)
            child.wait(timeout=60)
            assert child.returncode == 0
    shutil.rmtree(path, ignore_errors=True)
    a_cpu = sorted(a[0] for a in alone)[1]
    print(f"Writer cost per single-event append (durability none), {n} appends\n")
    print("| subscribers waiting | writer CPU per append | wall per append |\n|---|---|---|")
    print(f"| none | {a_cpu:.1f} us | {sorted(a[1] for a in alone)[1]:.1f} us |")
    for k in (1, 100):
        print(f"| {k} (in another process) | {watched[k][0]:.1f} us | {watched[k][1]:.1f} us |")
    print(f"\nwriter CPU, 100 subscribers / 1 subscriber: {watched[100][0] / watched[1][0]:.2f}x "
          f"(target: no growth with the number of subscribers); 100 / none: {watched[100][0] / a_cpu:.2f}x")


if __name__ == "__main__":
    main()
