#!/usr/bin/env python3
"""Power-loss harness for cairn: every write no flush has made durable is dropped at a random
moment, and no acknowledged event may be lost, nor the store torn.

    python tests/reliability/powerloss.py --rounds N --seed S DIR

Each round starts a writer subprocess (this file with --child) under the LD_PRELOAD shim
tests/reliability/power_shim.c, on the store DIR/store (kept across rounds, a new one every
`--generation` rounds; every `--fresh-every`-th round a new store in DIR/fresh is cut at one
of its first 40 writes or flushes, so that creation is cut too).  The shim lets every write
to the store's files through after saving the bytes it overwrites in an undo journal (on
tmpfs); fdatasync/fsync of a file marks what it flushed durable, a write through an O_DSYNC
descriptor (LMDB's meta page) is durable when it returns.  The writer opens the store with
durability "full" and appends from 1, 2, 4 or 8 threads (group commit): single events,
batches, events of 5-60 kB, new streams with NO_STREAM, multi-stream transactions, appends
that fail on a wrong expected version (alone and inside a transaction), a fifth of the
events with a subject (encrypted: the `keys` file is written, new keys included).  Before
each call it sends an *intent* (the events) over a pipe, after it returns an *ack* (versions
and positions).  The parent SIGKILLs it after a random delay, or the shim kills it before a
random write or flush (CAIRN_POWER_KILL_AT); then the power goes: the journal is played
backwards, every write since its file's last flush undone and the file cut back to its
flushed size -- in "torn" rounds a random sector-aligned prefix of the last write survives,
in "reorder" rounds every unflushed 512-byte sector independently keeps one of the versions
written to it since the flush (apply_journal).  A fresh process (--check) opens the store
and dumps it; the parent checks:

  * the store opens read-write and store.verify() passes (the hash chain included), and its
    report agrees with the log; positions are exactly 1..head, every stream's versions
    0..n, stream_version(), streams(), read_stream() and position_of() agree with the log;
  * every acknowledged event, over all rounds of the store, is there by id at its
    acknowledged stream, version and position with its type, data (a digest of its JSON;
    encrypted data decrypts), metadata, tags and subject;
  * an operation in flight at the power loss is all there (then adopted: later rounds must
    keep it) or not at all; a failed one never appears, nor does an event never appended.

A new store whose creation the power cut before its first commit (data.mdb holding parts of
its meta pages, or none and parts of the first commit, and no notify file) must open as a new
store, as any round's must; such rounds are counted ("creation cut before its first commit",
see cut_creation).  The self-tests show
the harness catches loss: `--durability none` or `relaxed` (acknowledged before the commit
is durable), `--ignore-flush` (a disk that lies about fdatasync) and `--ignore-flush keys`
(new keys not flushed before the commit using them) are reported within a round or two.
Exit status 1 on any violation; the damaged store, the journal and the failures are kept in
DIR/failed-round-N.
"""


from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SHIM_SRC = os.path.join(HERE, "power_shim.c")
# the Makefile's rule for build/libcairn_power.so uses the same command
SHIM_CMD = ["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-o", "{out}", SHIM_SRC,
            "-ldl", "-lpthread"]


def build_shim(out):
    """Compiles the shim to `out`; raises OSError (no compiler) or CalledProcessError."""
    subprocess.run([a.format(out=out) for a in SHIM_CMD], check=True, capture_output=True)
    return out


# --------------------------------------------------------------------------------------------
# the journal (power_shim.c's records) and the power loss

REC = struct.Struct("<IIQQQQQ")
R_OPEN, R_WRITE, R_TRUNC, R_DURABLE, R_SYNC, R_UNSUPPORTED, R_KILL = range(1, 8)
SECTOR, PAGE = 512, 4096
MODES = ("drop", "torn", "reorder")


def read_journal(path):
    """The records, as tuples (type, fid, seq, off, len, size, bytes); a record cut short by
    the kill (only the last can be) is left out: the write it announced never started."""
    with open(path, "rb") as f:
        buf = f.read()
    out, at = [], 0
    while at + REC.size <= len(buf):
        t, fid, seq, off, ln, size, nb = REC.unpack_from(buf, at)
        if at + REC.size + nb > len(buf):
            break
        out.append((t, fid, seq, off, ln, size, buf[at + REC.size:at + REC.size + nb]))
        at += REC.size + nb
    return out


class _File:
    def __init__(self, path, size):
        self.path, self.open_size = path, size
        self.recs = []          # WRITE and TRUNC records, in seq order
        self.durable = {}       # seq of a WRITE -> bytes its synchronous write wrote
        self.sync_upto, self.sync_size = 0, None
        self.flushes = 0


def apply_journal(path, mode, rng, keep_p=0.5, torn_sectors=None):
    """Puts the store's files back to what a disk holds after losing power at the end of
    the journal.  mode: "drop" (every unflushed write undone), "torn" (so is every one but
    the last, which keeps a random sector-aligned prefix -- torn_sectors sectors if given),
    "reorder" (each unflushed 512-byte sector keeps, independently of the others, the version
    one of the writes since the flush left in it, each with probability keep_p from the
    newest back, or the flushed one).  A file is as long as at its last flush, or longer
    where a synchronous write or a kept sector reaches further (zeros in between).  Pages
    written through O_DSYNC went to the disk whole, as they were when the write returned.
    Returns figures and the list of calls the shim could not follow."""
    files, unsupported, killed = {}, [], None
    recs = read_journal(path)
    for t, fid, seq, off, ln, size, b in recs:
        if t == R_KILL:
            killed = seq   # the shim killed the process before this write: it never started
    for t, fid, seq, off, ln, size, b in recs:
        if t in (R_WRITE, R_TRUNC) and seq == killed:
            continue
        if t == R_OPEN:
            files[fid] = _File(b.decode(), size)
        elif t in (R_WRITE, R_TRUNC):
            files[fid].recs.append((t, seq, off, ln, size, b))
        elif t == R_DURABLE:
            files[fid].durable[seq] = ln
        elif t == R_SYNC:
            f = files[fid]
            f.flushes += 1
            if seq > f.sync_upto:
                f.sync_upto, f.sync_size = seq, size
        elif t == R_UNSUPPORTED:
            unsupported.append(f"{files[fid].path}: {b.decode()}")
    stats = {"undone": 0, "kept_sectors": 0, "restored_bytes": 0, "cut_bytes": 0,
             "killed_by_shim": killed is not None,
             "flushes": {os.path.basename(f.path): f.flushes for f in files.values()}}
    last = None   # the newest unflushed, not synchronous, write: the one a "torn" round tears
    for fid, f in files.items():
        for r in f.recs:
            if r[1] >= f.sync_upto and r[0] == R_WRITE and r[1] not in f.durable:
                if last is None or r[1] > last[1]:
                    last = (fid, r[1])
    torn_keep = None
    if mode == "torn" and last is not None:
        r = next(r for r in files[last[0]].recs if r[1] == last[1])
        torn_keep = (rng.randint(0, len(_sectors(r[2], r[3]))) if torn_sectors is None
                     else torn_sectors)
    for fid, f in files.items():
        durable_size = f.sync_size if f.sync_size is not None else f.open_size
        pending = [r for r in f.recs if r[1] >= f.sync_upto]
        frozen, ops, end = set(), [], durable_size
        for t, seq, off, ln, size, old in reversed(pending):
            if t == R_WRITE and seq in f.durable:
                # written through O_DSYNC: its pages went to the disk as they were then
                n = f.durable[seq]
                frozen.update(range(off // PAGE * (PAGE // SECTOR),
                                    -(-(off + n) // PAGE) * (PAGE // SECTOR)))
                end = max(end, off + n)
                continue
            stats["undone"] += 1
            if t == R_TRUNC:   # an unflushed ftruncate: its cut-off bytes come back
                if old:
                    ops.append((off, old))
                continue
            after = max(size, off + ln)
            for k, s in enumerate(_sectors(off, ln)):
                if s in frozen:
                    continue
                keep = (mode == "reorder" and rng.random() < keep_p) or (
                    torn_keep is not None and (fid, seq) == last and k < torn_keep)
                if keep:
                    frozen.add(s)
                    end = max(end, min((s + 1) * SECTOR, after))
                    stats["kept_sectors"] += 1
                    continue
                a, e = max(off, s * SECTOR), min(off + ln, (s + 1) * SECTOR)
                have = old[a - off:max(0, min(e, size) - off)] if a < size else b""
                ops.append((a, have + bytes(e - a - len(have))))
        if not ops and os.path.getsize(f.path) == end:
            continue
        fd = os.open(f.path, os.O_WRONLY)
        try:
            for a, data in ops:   # newest first: the oldest bytes are written last
                os.pwrite(fd, data, a)
                stats["restored_bytes"] += len(data)
            cur = os.fstat(fd).st_size
            if cur != end:
                stats["cut_bytes"] += max(0, cur - end)
                os.ftruncate(fd, end)
        finally:
            os.close(fd)
    return stats, unsupported


def _sectors(off, ln):
    return range(off // SECTOR, -(-(off + ln) // SECTOR)) if ln else range(0)


# --------------------------------------------------------------------------------------------
# what the writer appends (both sides derive an event's data from its description)

def event_data(op, i, pad):
    unit = f"{op}/{i};"
    return {"op": op, "i": i, "pad": (unit * (pad // len(unit) + 1))[:pad]}


def digest(value):
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


N_SHARED = 16     # streams acct-0..15, shared by every thread (expected version ANY)
N_SUBJECTS = 30   # subjects reused across rounds; others are new (a new key each)
IMPOSSIBLE = 10 ** 12
KINDS = ["single", "batch", "big", "fresh", "tx", "wrong", "txwrong"]
WEIGHTS = [34, 16, 4, 10, 24, 8, 4]


def plan_op(rng, op):
    """(kind, parts, fails): parts is a list of (stream, expected_version, [desc]); a desc is
    [id, type, pad, tags, with_metadata, subject]."""
    kind = rng.choices(KINDS, WEIGHTS)[0]

    def descs(n, big=False):
        out = []
        for _ in range(n):
            subject = None
            if rng.random() < 0.2:
                subject = (f"user-{rng.randrange(N_SUBJECTS)}" if rng.random() < 0.7
                           else f"subject-{op}-{len(out)}")
            out.append([str(uuid.uuid4()), rng.choice(["Added", "Moved", "Noted"]),
                        rng.randint(5000, 60000) if big else rng.randint(0, 300),
                        [f"t{rng.randrange(4)}"] if rng.random() < 0.5 else [],
                        rng.random() < 0.5, subject])
        return out

    def shared():
        return f"acct-{rng.randrange(N_SHARED)}"
    if kind == "single":
        return kind, [(shared(), "any", descs(1))], False
    if kind == "batch":
        return kind, [(shared(), "any", descs(rng.randint(2, 12)))], False
    if kind == "big":
        return kind, [(shared(), "any", descs(rng.randint(1, 3), big=True))], False
    if kind == "fresh":
        return kind, [(f"new-{op}", "none", descs(rng.randint(1, 5)))], False
    if kind == "wrong":
        return kind, [(shared(), IMPOSSIBLE, descs(rng.randint(1, 3)))], True
    streams = rng.sample(range(N_SHARED), rng.randint(2, 3))
    parts = [(f"acct-{s}", "any", descs(rng.randint(1, 4))) for s in streams]
    if kind == "txwrong":
        k = rng.randrange(len(parts))
        parts[k] = (parts[k][0], IMPOSSIBLE, parts[k][2])
        return kind, parts, True
    return kind, parts, False


# --------------------------------------------------------------------------------------------
# the writer (child process, under the shim)

def child_main(args):
    sys.path.insert(0, os.path.join(ROOT, "python"))
    import cairn
    lock = threading.Lock()

    def send(**msg):
        data = (json.dumps(msg, separators=(",", ":")) + "\n").encode()
        with lock:
            while data:
                data = data[os.write(args.pipe_fd, data):]

    expected = {"any": cairn.ANY, "none": cairn.NO_STREAM}
    store = cairn.open(args.store, durability=args.durability)
    send(k="ready")

    def event(op, i, d):
        return cairn.Event(d[1], event_data(op, i, d[2]), id=d[0], tags=d[3],
                           metadata={"op": op} if d[4] else None, subject=d[5])

    def worker(t):
        rng = random.Random(f"{args.seed}/{t}")
        n = 0
        try:
            while True:
                n += 1
                op = f"{args.round}.{t}.{n}"
                kind, parts, fails = plan_op(rng, op)
                send(k="intent", op=op, kind=kind, parts=parts, fails=fails)
                evs, i = [], 0
                for stream, _, ds in parts:
                    evs.append([event(op, i + j, d) for j, d in enumerate(ds)])
                    i += len(ds)
                try:
                    if kind in ("tx", "txwrong"):
                        with store.transaction() as tx:
                            for (stream, ev, _), es in zip(parts, evs):
                                tx.append(stream, es, expected_version=expected.get(ev, ev))
                        res = tx.results
                    else:
                        (stream, ev, _), = parts
                        res = [store.append(stream, evs[0],
                                            expected_version=expected.get(ev, ev))]
                except cairn.WrongExpectedVersion as e:
                    if not fails:
                        raise
                    send(k="failed", op=op, err=f"WrongExpectedVersion {e.actual}")
                    continue
                if fails:
                    raise AssertionError(f"{kind} {op} succeeded with an impossible version")
                send(k="ack", op=op, res=[[r.version, r.position, r.first_position] for r in res])
        except BaseException:
            send(k="error", op=f"{args.round}.{t}.{n}", err=traceback.format_exc())
            # never exit: the power loss is the parent's to decide
            while True:
                time.sleep(3600)

    for t in range(args.threads):
        threading.Thread(target=worker, args=(t,), daemon=True).start()
    while True:
        time.sleep(3600)


# --------------------------------------------------------------------------------------------
# the check (a fresh process, no shim)

def check_main(args):
    sys.path.insert(0, os.path.join(ROOT, "python"))
    import cairn
    out = {"violations": []}
    bad = out["violations"].append
    try:
        store = cairn.open(args.store)
    except Exception as e:   # noqa: BLE001 -- whatever it is, the store did not open
        out["open_error"] = f"{type(e).__name__}: {e}"
        print(json.dumps(out))
        return
    with store:
        try:
            rep = store.verify()
            out["verify"] = [rep.events, rep.streams, rep.head]
        except Exception as e:   # noqa: BLE001
            bad(f"verify: {type(e).__name__}: {e}")
        try:
            log = list(store.read_all())
        except Exception as e:   # noqa: BLE001
            bad(f"read_all: {type(e).__name__}: {e}")
            print(json.dumps(out))
            return
        head = store.head()
        out["head"] = head
        if [e.position for e in log] != list(range(1, head + 1)):
            bad(f"positions are not 1..{head}: {len(log)} events")
        streams = {}
        for e in log:
            streams.setdefault(e.stream, []).append(e)
        if "verify" in out and out["verify"] != [len(log), len(streams), head]:
            bad(f"verify's report {out['verify']} disagrees with the log: {len(log)} events, "
                f"{len(streams)} streams, head {head}")
        if list(store.streams()) != sorted(streams, key=lambda s: s.encode()):
            bad("streams() differs from the log")
        rng = random.Random(head)
        for s, evs in streams.items():
            if [e.version for e in evs] != list(range(len(evs))):
                bad(f"{s}: versions are not 0..{len(evs) - 1}")
            if store.stream_version(s) != len(evs) - 1:
                bad(f"{s}: stream_version() {store.stream_version(s)}, the log {len(evs) - 1}")
        for s in rng.sample(sorted(streams), min(8, len(streams))):
            if [e.position for e in store.read_stream(s)] != [e.position for e in streams[s]]:
                bad(f"{s}: read_stream() disagrees with the log")
        for e in rng.sample(log, min(40, len(log))):
            if store.position_of(e.id) != e.position:
                bad(f"position_of({e.id}) is {store.position_of(e.id)}, the log {e.position}")
        out["events"] = [[e.position, str(e.id), e.stream, e.version, e.type,
                          None if e.forgotten else digest(e.data), e.metadata, list(e.tags),
                          e.subject] for e in log]
    print(json.dumps(out))


# --------------------------------------------------------------------------------------------
# the parent: rounds and the model

class Model:
    """What must be in one store: acknowledged (or adopted) events, ids that must not be."""

    def __init__(self):
        # id -> [stream, version, position, type, digest, metadata, tags, subject]
        self.events = {}
        self.absent = set()  # ids of failed operations and of in-flight ones found absent


def _expect(op, parts):
    """The rows of an operation's events as the check dumps them, without position/version."""
    rows, i = [], 0
    for stream, _, ds in parts:
        part = []
        for d in ds:
            part.append([d[0], stream, d[1], digest(event_data(op, i, d[2])),
                         {"op": op} if d[4] else None, d[3], d[5]])
            i += 1
        rows.append(part)
    return rows


def check_round(model, dump, intents, acks, failed):
    """Compares one round's dump with the model; returns (violations, figures)."""
    v = list(dump.get("violations", []))
    fig = {"inflight_present": 0, "inflight_absent": 0, "checked": 0}
    if "open_error" in dump:
        return [f"the store does not open: {dump['open_error']}"], fig
    if "events" not in dump:
        return v or ["the check dumped no events"], fig
    by_id = {row[1]: row for row in dump["events"]}
    # this round's acknowledged operations join the model first
    for op, it in intents.items():
        if op in acks:
            for part, (version, position, first) in zip(_expect(op, it["parts"]), acks[op]):
                if position - first + 1 != len(part):
                    v.append(f"{op}: acknowledged positions {first}..{position} "
                             f"for {len(part)} events")
                for j, (i, stream, typ, dg, meta, tags, subj) in enumerate(part):
                    model.events[i] = [stream, version - len(part) + 1 + j, first + j, typ, dg,
                                       meta, tags, subj]
        elif op in failed:
            model.absent.update(d[0] for _, _, ds in it["parts"] for d in ds)
    for i, want in model.events.items():
        row = by_id.get(i)
        if row is None:
            v.append(f"acknowledged event {i} lost ({want[0]} version {want[1]}, "
                     f"position {want[2]})")
            continue
        got = [row[2], row[3], row[0], row[4], row[5], row[6], row[7], row[8]]
        if got != want:
            v.append(f"event {i}: {got} in the store, acknowledged as {want}")
        fig["checked"] += 1
    # in flight: all or nothing, then adopted
    for op, it in intents.items():
        if op in acks or op in failed:
            continue
        rows = _expect(op, it["parts"])
        ids = [r[0] for part in rows for r in part]
        present = [i for i in ids if i in by_id]
        if not present:
            model.absent.update(ids)
            fig["inflight_absent"] += 1
            continue
        if len(present) != len(ids):
            v.append(f"in-flight {it['kind']} {op} is torn: {len(present)} of {len(ids)} events")
            continue
        if it["fails"]:
            v.append(f"in-flight {it['kind']} {op}, which cannot succeed, is in the store")
            continue
        fig["inflight_present"] += 1
        for part in rows:
            first = by_id[part[0][0]]
            for j, (i, stream, typ, dg, meta, tags, subj) in enumerate(part):
                row = by_id[i]
                want = [stream, first[3] + j, first[0] + j, typ, dg, meta, tags, subj]
                got = [row[2], row[3], row[0], row[4], row[5], row[6], row[7], row[8]]
                if got != want:
                    v.append(f"in-flight {op}: event {i} is {got}, intended {want}")
                model.events[i] = want
    for i in model.absent & by_id.keys():
        v.append(f"event {i} of a failed or lost operation is in the store "
                 f"(position {by_id[i][0]})")
    stray = [row for i, row in by_id.items() if i not in model.events and i not in model.absent]
    if stray:
        v.append(f"{len(stray)} events never appended are in the store, first at position "
                 f"{min(r[0] for r in stray)}")
    return v, fig


def _read_child(proc, rfd, deadline_after_ready, min_acks, give_up):
    """Reads the child's messages until it has been ready for deadline_after_ready seconds
    and min_acks were acknowledged (or it died); then SIGKILL.  Returns the messages, how it
    ended and the time it ran after ready."""
    buf, msgs, ready_at, nacks, eof = b"", [], None, 0, False
    start = time.monotonic()
    while True:
        now = time.monotonic()
        if ready_at is not None and now - ready_at >= deadline_after_ready and nacks >= min_acks:
            break
        if now - start > give_up:
            break
        r, _, _ = select.select([rfd], [], [], 0.01)
        if r:
            chunk = os.read(rfd, 1 << 16)
            if not chunk:
                eof = True
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                m = json.loads(line)
                msgs.append(m)
                if m["k"] == "ready":
                    ready_at = time.monotonic()
                elif m["k"] == "ack":
                    nacks += 1
    ran = time.monotonic() - ready_at if ready_at is not None else None
    if not eof:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    while True:   # what it sent before it died
        chunk = os.read(rfd, 1 << 16)
        if not chunk:
            break
        buf += chunk
    *lines, buf = buf.split(b"\n")   # a last line without its newline was cut by the kill
    msgs.extend(json.loads(line) for line in lines)
    return msgs, ran, proc.returncode


def _journal_dir():
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def new_journal():
    fd, journal = tempfile.mkstemp(prefix="cairn-power-", suffix=".journal", dir=_journal_dir())
    os.close(fd)
    return journal


def spawn_writer(store_dir, shim, journal, *, seed=1, rnd=1, threads=1, durability="full",
                 kill_at=0, ignore_flush=False):
    """Starts the writer under the shim; returns the process and the read end of its pipe."""
    env = dict(os.environ, LD_PRELOAD=os.path.abspath(shim),
               CAIRN_POWER_DIR=os.path.abspath(store_dir),
               CAIRN_POWER_JOURNAL=journal, PYTHONPATH=os.path.join(ROOT, "python"))
    for k in ("CAIRN_POWER_KILL_AT", "CAIRN_POWER_IGNORE_FLUSH"):
        env.pop(k, None)
    if kill_at:
        env["CAIRN_POWER_KILL_AT"] = str(kill_at)
    if ignore_flush:
        env["CAIRN_POWER_IGNORE_FLUSH"] = "1" if ignore_flush is True else ignore_flush
    rfd, wfd = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--child", "--store", store_dir, "--seed",
         str(seed), "--round", str(rnd), "--threads", str(threads), "--durability", durability,
         "--pipe-fd", str(wfd)], pass_fds=(wfd,), env=env)
    os.close(wfd)
    return proc, rfd


def cut_creation(store_dir, shim, kill_at=2, torn_sectors=3):
    """A creation the power cut: a writer making a new store in store_dir is killed at its
    write or flush number kill_at (the shim), then the power goes with `torn_sectors` sectors
    of the last unflushed write on the disk (kill_at=2: LMDB's first write, its two meta
    pages, torn after 1.5 KiB; kill_at=3: the first commit's pages, the meta pages lost).
    Opening it once refused the directory (MDB_INVALID), found by this harness; now a
    read-write open makes the store afresh.  Returns apply_journal's figures."""
    journal = new_journal()
    try:
        proc, rfd = spawn_writer(store_dir, shim, journal, kill_at=kill_at)
        try:
            _read_child(proc, rfd, 0, 0, give_up=60)
        finally:
            os.close(rfd)
        return apply_journal(journal, "torn", random.Random(0), torn_sectors=torn_sectors)[0]
    finally:
        os.unlink(journal)


def creation_cut(store_dir):
    """After the loss: the power cut a new store's making before its first commit -- no
    notify file (made after the first setup committed), data.mdb not empty and without a
    meta page of a commit (each meta header zeros, past the end, or LMDB's new one, txnid 0)."""
    data = os.path.join(store_dir, "data.mdb")
    if (os.path.exists(os.path.join(store_dir, "notify")) or not os.path.exists(data)
            or not os.path.getsize(data)):
        return False
    with open(data, "rb") as f:
        b = f.read(2 * PAGE)
    for i in (0, 1):
        h = b[i * PAGE:i * PAGE + 152]
        if any(h) and (len(h) < 152 or struct.unpack_from("<Q", h, 0)[0] != i
                       or struct.unpack_from("<I", h, 16)[0] != 0xBEEFC0DE
                       or struct.unpack_from("<Q", h, 144)[0] != 0):
            return False
    return True


def run(rounds, seed, directory, *, shim, durability="full", ignore_flush=False, max_delay=0.4,
        fresh_every=10, generation=50, threads=(1, 1, 2, 4, 8), modes=MODES,
        stop_on_failure=True, quiet=False, keep_failed=True, log=print):
    """Runs `rounds` power losses; returns the figures (failures: a list of strings).  The
    main store is replaced by a new one every `generation` rounds, so that a check, which
    reads the whole store, takes about a second at most."""
    rng = random.Random(seed)
    os.makedirs(directory, exist_ok=True)
    main_store = os.path.join(directory, "store")
    shutil.rmtree(main_store, ignore_errors=True)
    model = Model()
    figs = {"rounds": 0, "failures": [], "acks": 0, "events_acked": 0, "event_checks": 0,
            "inflight_present": 0, "inflight_absent": 0, "failed_ops": 0,
            "kills": {"timer": 0, "write": 0}, "modes": {m: 0 for m in MODES}, "fresh": 0,
            "undone_writes": 0, "kept_sectors": 0, "in_a_commit": 0, "max_head": 0,
            "per_threads": {}, "creation_cut": 0, "seconds": 0.0}
    t0 = time.monotonic()
    for rnd in range(1, rounds + 1):
        fresh = fresh_every and rnd % fresh_every == 0
        if generation and rnd % generation == 1 and rnd > 1 and not figs["failures"]:
            shutil.rmtree(main_store, ignore_errors=True)
            model = Model()
        if fresh:
            store_dir = os.path.join(directory, "fresh")
            shutil.rmtree(store_dir, ignore_errors=True)
            rmodel = Model()
            nthreads = 1
            kill_at = rng.randint(1, 40)
        else:
            store_dir, rmodel = main_store, model
            nthreads = rng.choice(threads)
            kill_at = rng.randint(1, 3000) if rng.random() < 0.35 else 0
        mode = rng.choice(modes)
        delay = rng.uniform(0.0, max_delay)
        journal = new_journal()
        proc, rfd = spawn_writer(store_dir, shim, journal, seed=rng.randrange(1 << 30), rnd=rnd,
                                 threads=nthreads, durability=durability, kill_at=kill_at,
                                 ignore_flush=ignore_flush)
        try:
            msgs, ran, status = _read_child(proc, rfd, delay, 0 if fresh else 1, give_up=60)
        finally:
            os.close(rfd)
        stats, unsupported = apply_journal(journal, mode, rng, keep_p=rng.uniform(0.2, 0.8))
        intents = {m["op"]: m for m in msgs if m["k"] == "intent"}
        acks = {m["op"]: m["res"] for m in msgs if m["k"] == "ack"}
        failed = {m["op"] for m in msgs if m["k"] == "failed"}
        errors = [m for m in msgs if m["k"] == "error"]
        figs["creation_cut"] += creation_cut(store_dir)
        tc = time.monotonic()
        chk = subprocess.run([sys.executable, os.path.abspath(__file__), "--check", "--store",
                              store_dir], capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python")))
        try:
            dump = json.loads(chk.stdout)
        except ValueError:
            dump = {"open_error": f"the check process ended with status {chk.returncode}: "
                                  f"{chk.stderr.strip()[-800:]}"}
        violations, fig = check_round(rmodel, dump, intents, acks, failed)
        tc = time.monotonic() - tc
        violations += [f"the writer raised in {m['op']}: {m['err']}" for m in errors]
        violations += [f"the shim cannot follow: {u}" for u in unsupported]
        if status != -signal.SIGKILL:
            violations.append(f"the writer ended with status {status}, not by SIGKILL")
        elif ran is None and not stats["killed_by_shim"]:
            violations.append("the writer never became ready")
        elif "data.mdb" not in stats["flushes"]:
            violations.append("the shim followed no write of data.mdb: no power loss simulated")
        trigger = "write" if stats["killed_by_shim"] else "timer"
        figs["rounds"] += 1
        figs["kills"][trigger] += 1
        figs["modes"][mode] += 1
        figs["fresh"] += bool(fresh)
        figs["acks"] += len(acks)
        figs["events_acked"] += sum(len(ds) for op in acks for _, _, ds in intents[op]["parts"])
        figs["event_checks"] += fig["checked"]
        figs["inflight_present"] += fig["inflight_present"]
        figs["inflight_absent"] += fig["inflight_absent"]
        figs["failed_ops"] += len(failed)
        figs["undone_writes"] += stats["undone"]
        figs["kept_sectors"] += stats["kept_sectors"]
        figs["in_a_commit"] += stats["undone"] > 0
        figs["max_head"] = max(figs["max_head"], dump.get("head") or 0)
        if not fresh:   # acknowledged writes per flush of data.mdb, by writer threads
            pt = figs["per_threads"].setdefault(nthreads, [0, 0])
            pt[0] += len(acks)
            pt[1] += stats["flushes"].get("data.mdb", 0)
        if not quiet:
            log(f"round {rnd:4d} {'fresh' if fresh else 'main '} {nthreads} thr "
                f"{trigger:5s} {mode:7s} ran {ran or 0:.2f}s: acks {len(acks):4d} "
                f"in flight {fig['inflight_present']}+{fig['inflight_absent']} "
                f"undone {stats['undone']:4d} kept {stats['kept_sectors']:3d} "
                f"-> head {dump.get('head')} checked {fig['checked']} in {tc:.2f}s"
                + (f"  FAILED: {violations[0][:200]}" if violations else ""))
        if violations:
            figs["failures"].append(f"round {rnd} ({mode}, {trigger}): "
                                    + "; ".join(violations[:5]))
            if keep_failed:
                keep = os.path.join(directory, f"failed-round-{rnd}")
                shutil.rmtree(keep, ignore_errors=True)
                shutil.copytree(store_dir, os.path.join(keep, "store"))
                shutil.copy(journal, os.path.join(keep, "journal"))
                with open(os.path.join(keep, "failures.txt"), "w") as f:
                    f.write("\n".join(violations) + "\n")
                figs["kept"] = keep
        os.unlink(journal)
        if fresh:
            shutil.rmtree(store_dir, ignore_errors=True)
        if violations and stop_on_failure:
            break
    figs["seconds"] = round(time.monotonic() - t0, 1)
    return figs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("directory", nargs="?")
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--shim", help="the built shim (default: compile it into DIR)")
    ap.add_argument("--durability", default="full",
                    help="the writer's durability (none: the self-test, must fail)")
    ap.add_argument("--ignore-flush", nargs="?", const=True, default=False, metavar="FILE",
                    help="the shim ignores fdatasync, of FILE only if given (self-test: must fail)")
    ap.add_argument("--max-delay", type=float, default=0.4,
                    help="the longest a writer runs before the power goes (s)")
    ap.add_argument("--fresh-every", type=int, default=10,
                    help="every Nth round cuts the creation of a new store (0: never)")
    ap.add_argument("--generation", type=int, default=50,
                    help="a new main store every N rounds (0: one store throughout)")
    ap.add_argument("--keep-going", action="store_true", help="go on after a failed round")
    ap.add_argument("--quiet", action="store_true")
    # internal: the child and the check
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--check", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--pipe-fd", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child_main(args)
    if args.check:
        return check_main(args)
    if not args.directory:
        ap.error("DIR is required")
    os.makedirs(args.directory, exist_ok=True)
    shim = os.path.abspath(args.shim
                           or build_shim(os.path.join(args.directory, "libcairn_power.so")))
    f = run(args.rounds, args.seed, args.directory, shim=shim, durability=args.durability,
            ignore_flush=args.ignore_flush, max_delay=args.max_delay,
            fresh_every=args.fresh_every, generation=args.generation,
            stop_on_failure=not args.keep_going, quiet=args.quiet)
    print(f"powerloss: {f['rounds']} rounds ({f['fresh']} on a fresh store; kills: timer "
          f"{f['kills']['timer']}, at a write or flush {f['kills']['write']}; modes {f['modes']}), "
          f"{f['acks']} acknowledged operations ({f['events_acked']} events), "
          f"{f['event_checks']} acknowledged-event checks, in flight at the loss: "
          f"{f['inflight_present']} present, {f['inflight_absent']} absent; failed on purpose "
          f"{f['failed_ops']}; unflushed writes undone {f['undone_writes']}, sectors kept "
          f"{f['kept_sectors']} ({f['in_a_commit']} losses inside a commit); largest head "
          f"{f['max_head']}; a new store's creation cut before its first commit "
          f"{f['creation_cut']}; {len(f['failures'])} failures; {f['seconds']} s")
    print("acknowledged writes per flush of data.mdb, by writer threads: " + ", ".join(
        f"{t}: {a / max(n, 1):.2f} ({a} / {n})" for t, (a, n) in sorted(f["per_threads"].items())))
    for x in f["failures"]:
        print("FAILED", x)
    if f.get("kept"):
        print(f"the damaged store, the journal and the failures: {f['kept']}")
    return 1 if f["failures"] else 0


if __name__ == "__main__":
    sys.exit(main() or 0)
