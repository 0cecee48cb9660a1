"""A subscriber in a process of its own: prints events of the bank as they are committed.

    python examples/watch.py --store demo-store --count 5 [--start POSITION]

Started by examples/bank.py (`make demo`) before it writes, to show live delivery across
processes; it stops after --count events or --timeout seconds without one.
"""

import argparse
import sys
import time

import cairn


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--start", type=int, default=None, help="first position (default: after the head)")
    ap.add_argument("--timeout", type=float, default=10.0)
    args = ap.parse_args(argv)
    with cairn.open(args.store, readonly=True) as store:
        start = args.start if args.start is not None else store.head() + 1
        print(f"[watcher] subscribed from position {start}", flush=True)
        got = 0
        with store.subscribe(start, timeout=args.timeout, categories=["account", "alerts"]) as sub:
            for e in sub:
                lag_ms = (time.time_ns() - e.timestamp_ns) / 1e6
                print(f"[watcher] live @{e.position} {e.stream} {e.type} {e.data} "
                      f"({lag_ms:.1f} ms after its commit)", flush=True)
                got += 1
                if got >= args.count:
                    break
    return 0


if __name__ == "__main__":
    sys.exit(main())
