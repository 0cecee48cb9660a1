#!/usr/bin/env python3
"""Before/after: the same benchmarks against the library of an earlier commit and of this tree,
interleaved in one run.

    python3 bench/compare.py REV [--rounds N] [--events N]      (make bench-compare REV=...)

The earlier commit's sources are exported (git archive) to build/compare/REV/, this tree's
bench_core.c copied over theirs (it may have modes theirs lacks), and its library and
benchmarks built there (Release, as `make build`); so both sides run the same measuring code
and differ only in the library.  bench_lua.c stays each tree's own: it calls API that changes
(cairn_execute's arguments), and its load measurement is compared only when the two agree
(check with `git diff REV -- bench/c/bench_lua.c`).  Then, for N rounds in ABBA order (before, after, after, before, ...), each side runs:
  batched   bench_core DIR EVENTS batched   batched appends, 1000/commit, durability none
  single    bench_core DIR 0 single         single-event appends, durability none (the CPU
                                            cost of a commit, which a durable append hides)
  durable   bench_core DIR 0 durable        single-event appends, durability full
  load      bench_lua DIR 20000             aggregate load through a Lua reducer
Each invocation already measures cairn against its raw baseline in alternating rounds; this
script takes cairn's own figure from each, pairs the rounds (after / before of the same
round), and prints the median of the paired ratios with their range.  A ratio below 1 is the
after side being slower.  Needs a quiet machine: run nothing else meanwhile.
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CMAKE = shutil.which("/usr/bin/cmake") or shutil.which("cmake")

FIGURES = [
    ("batched", "bench_core", ["{events}", "batched"], r"\| batched append[^|]*\| (\d+) ev/s"),
    ("single", "bench_core", ["0", "single"], r"\| single-event appends, durability none \| (\d+)"),
    ("durable", "bench_core", ["0", "durable"], r"\| single-event durable appends[^|]*\| (\d+)"),
    ("load", "bench_lua", ["20000"], r"\| aggregate load, no snapshots \| (\d+) ev/s"),
]


def build_before(rev):
    sha = subprocess.check_output(["git", "-C", ROOT, "rev-parse", "--short", rev], text=True).strip()
    src = os.path.join(ROOT, "build", "compare", sha)
    out = os.path.join(src, "build")
    if not os.path.exists(os.path.join(out, "bench_core")):
        shutil.rmtree(src, ignore_errors=True)
        os.makedirs(src)
        archive = subprocess.Popen(["git", "-C", ROOT, "archive", sha], stdout=subprocess.PIPE)
        subprocess.check_call(["tar", "-x", "-C", src], stdin=archive.stdout)
        archive.wait()
        for f in ("bench_core.c", "bench_util.h"):
            shutil.copy(os.path.join(ROOT, "bench", "c", f), os.path.join(src, "bench", "c", f))
        subprocess.check_call([CMAKE, "-S", src, "-B", out, "-DCMAKE_BUILD_TYPE=Release",
                               "-DCAIRN_PYTHON=OFF", "-DCAIRN_TESTS=OFF", "--log-level=WARNING"],
                              stdout=subprocess.DEVNULL)
        subprocess.check_call([CMAKE, "--build", out, "-j2", "--target", "bench_core", "bench_lua"],
                              stdout=subprocess.DEVNULL)
    return sha, out


def run_one(build, prog, args, pattern, workdir):
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    r = subprocess.run([os.path.join(build, prog), workdir] + args, capture_output=True, text=True)
    m = re.search(pattern, r.stdout)
    if r.returncode != 0 or not m:
        sys.exit(f"{prog} {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    shutil.rmtree(workdir, ignore_errors=True)
    return float(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("rev")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--events", type=int, default=300000)
    ap.add_argument("--only", help="comma-separated subset of " + ",".join(f[0] for f in FIGURES))
    a = ap.parse_args()
    sha, before = build_before(a.rev)
    after = os.path.join(ROOT, "build")
    here = subprocess.check_output(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], text=True).strip()
    dirty = subprocess.run(["git", "-C", ROOT, "diff", "--quiet", "HEAD"]).returncode != 0
    workdir = os.path.join(ROOT, "build", "compare-data")
    figs = [f for f in FIGURES if not a.only or f[0] in a.only.split(",")]
    results = {f[0]: ([], []) for f in figs}
    for r in range(a.rounds):
        order = [(0, before), (1, after)] if r % 2 == 0 else [(1, after), (0, before)]
        for name, prog, args, pattern in figs:
            args = [x.format(events=a.events) for x in args]
            for side, build in order:
                results[name][side].append(run_one(build, prog, args, pattern, workdir))
        if sys.stderr.isatty():
            print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
    print(f"before: {sha}   after: {here}{' + working tree' if dirty else ''}   "
          f"rounds: {a.rounds} (ABBA)   batched events: {a.events}\n")
    print("| figure | before (median) | after (median) | after/before, median of paired rounds | range |")
    print("|---|---|---|---|---|")
    for name, _, _, _ in figs:
        b, m = results[name]
        pairs = [y / x for x, y in zip(b, m)]
        print(f"| {name} | {statistics.median(b):.0f} | {statistics.median(m):.0f} | "
              f"**{statistics.median(pairs):.3f}** | {min(pairs):.3f}..{max(pairs):.3f} |")


if __name__ == "__main__":
    main()
