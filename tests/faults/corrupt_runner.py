"""Random byte flips in a store's data.mdb, each read back in a forked process.

    python tests/faults/corrupt_runner.py [--flips N] [--seed S] [--events E] [--keep DIR]

(run with PYTHONPATH=python).  Builds a store with known events (or uses one given to run()),
then for each flip: copies data.mdb, XORs one random byte (offset and mask from a seeded
RNG) and forks a reader that opens the copy and reads everything -- read_all both ways,
read_stream of every stream, get of every position, filtered reads by type, category and
tag, stream versions, the stream listing, head -- comparing with the known events, then runs
verify().  The fork parent counts how the reader ended:

  correct      every read returned exactly the known data
  clean_error  some read raised CorruptionError (or another cairn.Error / OSError); every
               other read was exactly right
  incomplete   some read silently returned less: fewer events without an error, a stream
               that exists read as absent (version -1, missing from the listing), KeyError
               for a position that exists -- an index lost an entry; verify() must say so
  wrong        some read returned data that differs from the known events (another event,
               an extra event, a wrong version number) or raised something unexpected
  crash        the reader died on a signal (SIGSEGV, SIGBUS, abort ...)
  hang         the reader did not finish within --timeout seconds

A reader's partial result is legitimate only as a correct prefix followed by an error.  Also
counted: flips that verify() reported, flips some read caught but verify() did not, and the
LMDB page kind the flipped byte was on (from the page header in the original file).
"""

import argparse
import json
import os
import random
import shutil
import signal
import struct
import sys
import tempfile
import time

import cairn

PAGE = 4096
P_BRANCH, P_LEAF, P_OVERFLOW, P_META, P_LEAF2 = 0x01, 0x02, 0x04, 0x08, 0x20


# ---------------------------------------------------------------------------------------
# The known store
# ---------------------------------------------------------------------------------------
def build_store(path, n_events=400, seed=7):
    rng = random.Random(seed)
    with cairn.open(path, durability="none") as s:
        for i in range(n_events):
            cat = ("acct", "order", "user")[i % 3]
            stream = f"{cat}-{i % 11}"
            size = 4000 if i % 37 == 0 else rng.randrange(0, 200)  # some overflow pages
            meta = {"correlation_id": f"c-{i % 5}"} if i % 4 == 0 else None
            ev = cairn.Event(("Opened", "Moved", "Closed")[i % 3],
                             {"i": i, "pad": "z" * size, "f": rng.random()},
                             metadata=meta, tags=[f"t{i % 4}", f"g{i % 7}"] if i % 2 else [])
            s.append(stream, [ev])
        s.sync()


def canon(e):
    return [e.position, e.stream, e.version, str(e.id), e.type, list(e.tags),
            json.dumps(e.data, sort_keys=True), json.dumps(e.metadata, sort_keys=True),
            e.timestamp_ns, e.schema]


def snapshot(path):
    with cairn.open(path, durability="none") as s:
        s.verify()
        events = [canon(e) for e in s.read_all()]
        versions = {n: s.stream_version(n) for n in s.streams()}
    return {"events": events, "versions": versions}


# ---------------------------------------------------------------------------------------
# The reader (runs in a forked child)
# ---------------------------------------------------------------------------------------
class Tally:
    def __init__(self):
        self.ok = self.err = self.err_pos = 0
        self.wrong = []
        self.incomplete = []
        self.errors = []

    def run(self, name, fn):
        try:
            bad = fn()
        except cairn.CorruptionError as exc:
            self.err += 1
            if getattr(exc, "position", None):
                self.err_pos += 1
            self.errors.append(f"{name}: CorruptionError({getattr(exc, 'position', None)}): {exc}")
            return
        except KeyError as exc:  # get() said "no such position" for one that exists
            self.incomplete.append(f"{name}: missing ({exc})")
            return
        except (cairn.Error, OSError) as exc:
            self.err += 1
            self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 -- anything else is not a clean error
            self.wrong.append(f"{name}: unexpected {type(exc).__name__}: {exc}")
            return
        if bad and bad.startswith("incomplete:"):
            self.incomplete.append(f"{name}: {bad}")
        elif bad:
            self.wrong.append(f"{name}: {bad}")
        else:
            self.ok += 1


def compare_seq(name, it, want):
    """Events from `it` must be a prefix of `want`; a short result must end in an error
    (raised from the iterator, so it propagates to Tally.run)."""
    n = 0
    for e in it:
        if n >= len(want):
            return f"extra event at {e.position}"
        if canon(e) != want[n]:
            return f"event {n} differs: got position {e.position}, want {want[n][0]}"
        n += 1
    if n != len(want):
        return f"incomplete: {n} of {len(want)} events and no error"
    return None


def version_check(got, want):
    if got == want:
        return None
    return "incomplete: stream reads as absent" if got == -1 else f"version {got}, want {want}"


def read_everything(path, known):
    t = Tally()
    events = known["events"]
    by_pos = {e[0]: e for e in events}
    try:
        s = cairn.open(path, durability="none")
    except (cairn.Error, OSError) as exc:
        t.err += 1
        t.errors.append(f"open: {type(exc).__name__}: {exc}")
        return t, None
    t.run("head", lambda: None if s.head() == len(events) else f"head {s.head()}")
    t.run("read_all", lambda: compare_seq("read_all", s.read_all(), events))
    t.run("read_all backwards",
          lambda: compare_seq("back", s.read_all(backwards=True), events[::-1]))
    for name in sorted(known["versions"]):
        want = [e for e in events if e[1] == name]
        t.run(f"read_stream {name}", lambda n=name, w=want: compare_seq(n, s.read_stream(n), w))
        t.run(f"stream_version {name}",
              lambda n=name, w=want: version_check(s.stream_version(n), len(w) - 1))

    def listing():
        got, want = set(s.streams()), set(known["versions"])
        return None if got == want else "incomplete: streams missing from the listing" \
            if got < want else "stream listing has names that do not exist"

    t.run("streams", listing)
    for kw, pick in (({"types": ["Moved"]}, lambda e: e[4] == "Moved"),
                     ({"categories": ["order"]}, lambda e: e[1].startswith("order-")),
                     ({"tags": ["t1"]}, lambda e: "t1" in e[5]),
                     ({"tags": ["g3"], "types": ["Closed"]},
                      lambda e: "g3" in e[5] and e[4] == "Closed")):
        want = [e for e in events if pick(e)]
        t.run(f"read_all {kw}", lambda k=kw, w=want: compare_seq(str(k), s.read_all(**k), w))

    def get(p):
        return None if canon(s.get(p)) == by_pos[p] else "differs"

    for p in range(1, len(events) + 1):
        t.run(f"get {p}", lambda p=p: get(p))
    verify = None
    try:
        s.verify()
        verify = "passed"
    except cairn.CorruptionError as exc:
        verify = f"CorruptionError({getattr(exc, 'position', None)}): {exc}"
    except (cairn.Error, OSError) as exc:
        verify = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001
        verify = f"unexpected {type(exc).__name__}: {exc}"
    s.close()
    return t, verify


# ---------------------------------------------------------------------------------------
# Flips
# ---------------------------------------------------------------------------------------
def page_kind(data, off):
    pg = off // PAGE
    if pg < 2:
        return "meta"
    flags = struct.unpack_from("<H", data, pg * PAGE + 10)[0]
    pgno = struct.unpack_from("<Q", data, pg * PAGE)[0]
    if pgno != pg:
        return "overflow-data/free"  # an overflow page's tail, or a page never written
    if flags & P_OVERFLOW:
        return "overflow"
    if flags & P_LEAF2:
        return "leaf2"
    if flags & P_BRANCH:
        return "branch"
    if flags & P_LEAF:
        return "leaf"
    return "other"


def one_flip(src_data, known, work, rng, timeout):
    off = rng.randrange(len(src_data))
    mask = rng.randrange(1, 256)
    kind = page_kind(src_data, off)
    d = os.path.join(work, "trial")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    buf = bytearray(src_data)
    buf[off] ^= mask
    with open(os.path.join(d, "data.mdb"), "wb") as f:
        f.write(buf)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the reader
        os.close(r)
        code = 0
        try:
            signal.alarm(timeout)
            t, verify = read_everything(d, known)
            out = {"ok": t.ok, "err": t.err, "err_pos": t.err_pos, "wrong": t.wrong[:5],
                   "nwrong": len(t.wrong), "incomplete": t.incomplete[:5],
                   "nincomplete": len(t.incomplete), "errors": t.errors[:3], "verify": verify}
            os.write(w, json.dumps(out).encode())
        except BaseException as exc:  # noqa: BLE001
            os.write(w, json.dumps({"fatal": repr(exc)}).encode())
            code = 3
        os._exit(code)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 1 << 16)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    res = {"offset": off, "mask": mask, "page": off // PAGE, "kind": kind}
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        res["outcome"] = "hang" if sig == signal.SIGALRM else "crash"
        res["signal"] = signal.Signals(sig).name
        return res
    body = json.loads(b"".join(chunks) or b"{}")
    res.update(body)
    if "fatal" in body or os.WEXITSTATUS(status) != 0:
        res["outcome"] = "wrong"
    elif body["nwrong"]:
        res["outcome"] = "wrong"
    elif body["nincomplete"]:
        res["outcome"] = "incomplete"
    elif body["err"]:
        res["outcome"] = "clean_error"
    else:
        res["outcome"] = "correct"
    res["verify_flagged"] = body.get("verify") != "passed"
    res["verify_missed"] = (body.get("err", 0) > 0 or body.get("nwrong", 0) > 0 or
                            body.get("nincomplete", 0) > 0) and body.get("verify") == "passed"
    return res


def run(store, known, flips, seed, work, timeout=20):
    with open(os.path.join(store, "data.mdb"), "rb") as f:
        src = f.read()
    rng = random.Random(seed)
    results = [one_flip(src, known, work, rng, timeout) for _ in range(flips)]
    summary = {"flips": flips, "seed": seed, "file_bytes": len(src), "pages": len(src) // PAGE}
    for k in ("correct", "clean_error", "incomplete", "wrong", "crash", "hang"):
        summary[k] = sum(r["outcome"] == k for r in results)
    summary["verify_flagged"] = sum(bool(r.get("verify_flagged")) for r in results)
    summary["verify_missed"] = sum(bool(r.get("verify_missed")) for r in results)
    by_kind = {}
    for r in results:
        d = by_kind.setdefault(r["kind"], {"flips": 0})
        d["flips"] += 1
        d[r["outcome"]] = d.get(r["outcome"], 0) + 1
    summary["by_page_kind"] = by_kind
    summary["errors_with_position"] = sum(r.get("err_pos", 0) for r in results)
    summary["errors_total"] = sum(r.get("err", 0) for r in results)
    summary["bad"] = [r for r in results
                      if r["outcome"] in ("wrong", "incomplete", "crash", "hang")][:20]
    summary["missed"] = [r for r in results if r.get("verify_missed")][:10]
    return summary


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flips", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--events", type=int, default=400)
    ap.add_argument("--timeout", type=int, default=20)
    ap.add_argument("--details", action="store_true", help="print the bad flips")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cairn-corrupt-") as work:
        store = os.path.join(work, "store")
        build_store(store, a.events)
        known = snapshot(store)
        t0 = time.time()
        summary = run(store, known, a.flips, a.seed, work, a.timeout)
        summary["seconds"] = round(time.time() - t0, 1)
    if not a.details:
        summary.pop("bad")
        summary.pop("missed")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    sys.exit(main())
