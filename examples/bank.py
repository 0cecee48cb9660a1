"""A small bank and shop on cairn: the demo behind `make demo`.

Part 1 (plain events): opens accounts and places orders as events, reads one stream's
history back, reads the global log by category, catches a concurrency conflict between two
clerks, retries an append idempotently, and shows a multi-stream transaction.

Part 2 (Lua): the account becomes a Lua aggregate (examples/account.lua): deposits and
withdrawals are commands decided inside the write transaction, an overdraft is rejected, a
money transfer saga fails at its second step and is rolled back by compensating events, and
the audit trail is printed as the state after each event (time travel).

Part 3 (read models and live delivery): projections of balances per account, daily totals
(partitioned by day) and an alerting projection that emits events exactly once; a
subscriber in a second process (examples/watch.py) prints the events as they commit.

Part 4 (old events): the shape of `Opened` changes (schema 2 has a currency); an upcaster
(examples/upcasters.lua) gives the schema-1 events of Part 1 the new shape whenever they are
read, while the stored bytes stay as they were.

At the end: what this run wrote, part by part, in all and as verify() counts it (the three
agree), and the `cairn` commands to explore the store it leaves behind.

    python examples/bank.py --store demo-store

`make demo` runs it on a fresh ./demo-store. Run it again on the same store and it adds a
second bank day beside the first (its streams get a suffix).
"""

import argparse
import collections
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid

import cairn

HERE = os.path.dirname(os.path.abspath(__file__))


def say(text=""):
    print(text, flush=True)


def balance_of(store, account):
    """The state of an account folded in Python from its events (Part 2 moves this into Lua)."""
    balance = 0
    for e in store.read_stream(account):
        if e.type == "Deposited":
            balance += e.data["amount"]
        elif e.type == "Withdrawn":
            balance -= e.data["amount"]
    return balance


def read_script(name):
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return f.read()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="demo-store", help="store directory (created when missing)")
    args = ap.parse_args(argv)

    with cairn.open(args.store) as store:
        before = store.head()
        # A fresh store gets plain names; a store that already holds a run gets fresh streams,
        # so the expectations (NO_STREAM, exact versions) hold again.
        run = "" if before == 0 else "-" + uuid.uuid4().hex[:6]
        names = {k: f"account-{k}{run}" for k in ("alice", "bob", "carol", "dave", "erin", "frank")}
        names["order"] = f"order-1{run}"
        names["run"] = run
        say(f"store {args.store!r}: {before} events recorded before this run")

        heads = [before]
        for part in (plain_part, lua_part, projections_part, upcaster_part):
            part(store, args.store, names)
            heads.append(store.head())
        summary(store, heads)
        explore(args.store, names)
    return 0


def plain_part(store, path, names):
    say("\n=== Part 1: events, streams and the log ===")
    alice, bob, order = names["alice"], names["bob"], names["order"]

    # Open two accounts; NO_STREAM guarantees each is opened only once.
    for acct, owner, amount in ((alice, "Alice", 100), (bob, "Bob", 20)):
        r = store.append(acct, [cairn.Event("Opened", {"owner": owner}),
                                cairn.Event("Deposited", {"amount": amount})],
                         expected_version=cairn.NO_STREAM)
        say(f"opened {acct} for {owner} with {amount}: version {r.version}, positions "
            f"{r.first_position}..{r.position}")

    # A stream's history, oldest first.
    store.append(alice, [cairn.Event("Withdrawn", {"amount": 30})], expected_version=1)
    say(f"\nhistory of {alice}:")
    for e in store.read_stream(alice):
        say(f"  v{e.version} @{e.position} {e.timestamp:%H:%M:%S.%f} {e.type:<10} {e.data}")
    say(f"  balance now {balance_of(store, alice)}")

    # Two clerks read the same version, both try to withdraw: the second is refused.
    seen = store.stream_version(bob)
    store.append(bob, [cairn.Event("Withdrawn", {"amount": 15})], expected_version=seen)
    try:
        store.append(bob, [cairn.Event("Withdrawn", {"amount": 15})], expected_version=seen)
    except cairn.WrongExpectedVersion as err:
        say(f"\nconcurrency conflict caught on {err.stream}: expected version {err.expected}, "
            f"actual {err.actual} -> second withdrawal refused, balance stays {balance_of(store, bob)}")

    # A retry after a lost reply writes nothing twice.
    deposit = [cairn.Event("Deposited", {"amount": 5}, metadata={"clerk": "carol"})]
    first = store.append(bob, deposit)
    again = store.append(bob, deposit)
    say(f"\nretried append returned the same result: {first == again} (position {again.position}); "
        f"{bob} still has {store.stream_version(bob) + 1} events")

    # An order and the payment for it, in one atomic multi-stream transaction.
    with store.transaction() as tx:
        tx.append(order, [cairn.Event("OrderPlaced", {"item": "lamp", "price": 25}, tags=["customer:alice"])],
                  expected_version=cairn.NO_STREAM)
        tx.append(alice, [cairn.Event("Withdrawn", {"amount": 25}, tags=["customer:alice"])],
                  expected_version=store.stream_version(alice))
    say(f"\norder {order} and its payment committed together at positions "
        f"{tx.results[0].position} and {tx.results[1].position}")

    # The global log, filtered by category (read through the category index).
    say("\nthe last 5 events of category 'account' across all accounts, newest first:")
    for e in store.read_all(categories=["account"], backwards=True, limit=5):
        say(f"  @{e.position} {e.stream:<22} v{e.version} {e.type:<10} {e.data}")
    tagged = list(store.read_all(tags=["customer:alice"]))
    say(f"events tagged customer:alice: {len(tagged)} ({', '.join(e.type for e in tagged[-2:])})")


def lua_part(store, path, names):
    say("\n=== Part 2: the account as a Lua aggregate ===")
    store.define_aggregate("account", read_script("account.lua"))
    carol, dave = names["carol"], names["dave"]

    store.execute(carol, "Open", {"owner": "Carol"}, expected_version=cairn.NO_STREAM)
    store.execute(carol, "Deposit", {"amount": 120})
    store.execute(dave, "Open", {"owner": "Dave"}, expected_version=cairn.NO_STREAM)
    say(f"{carol}: {store.load(carol).state}")

    try:
        store.execute(carol, "Withdraw", {"amount": 500})
    except cairn.CommandRejected as err:
        say(f"overdraft rejected by the script: {err.reason} {err.details}; nothing written "
            f"({carol} still at version {store.stream_version(carol)})")

    # A transfer saga: withdraw from Carol, then deposit to Dave -- whose account was closed
    # a moment ago, so the second step is rejected and the saga rolls back.
    saga = f"transfer-1{names['run']}"
    store.append(dave, [cairn.Event("Closed", {"reason": "moved away"})])
    say(f"\n{dave} is closed (a plain append: {dave} now has {store.stream_version(dave) + 1} events)")
    step1 = store.execute(carol, "Withdraw", {"amount": 70}, metadata={"correlation_id": saga})
    say(f"saga {saga}: step 1 withdrew 70 from {carol} (position {step1.position})")
    try:
        store.execute(dave, "Deposit", {"amount": 70}, metadata={"correlation_id": saga})
    except cairn.CommandRejected as err:
        say(f"saga {saga}: step 2 rejected ({err.reason}) -> rolling back")
        undone = store.rollback(saga)
        say(f"rollback appended {len(undone)} compensating event(s) at position(s) "
            f"{', '.join(str(r.position) for r in undone)}; a second rollback finds "
            f"{len(store.rollback(saga))} left to undo")

    say(f"\naudit trail of {carol} (state after each event, via load(version=...)):")
    for e in store.read_stream(carol):
        state = store.load(carol, version=e.version).state
        note = f" (compensates {e.metadata['compensates'][:8]}...)" if "compensates" in (e.metadata or {}) else ""
        say(f"  v{e.version} {e.type:<10} -> balance {state['balance']:>4}, open={state['open']}{note}")
    first = next(iter(store.read_stream(carol)))
    say(f"as of {first.timestamp:%H:%M:%S.%f} (load(at=...)): {store.load(carol, at=first.timestamp).state}")


def projections_part(store, path, names):
    say("\n=== Part 3: read models and live delivery ===")
    chunks = read_script("projections.lua").split("-- %% ")[1:]
    for chunk in chunks:
        name = chunk.split(":", 1)[0].strip()
        store.define_projection(name, "-- " + chunk)   # the same source again changes nothing
    head = store.head()
    say(f"the log holds {head} events; each projection reads the ones its source selects:")
    for name in store.scripts()["projection"]:
        before = store.head()
        n = store.run_projections(name)
        emitted = store.head() - before
        say(f"  {name:<12} applied {n:>2} events" + (f", emitted {emitted}" if emitted else ""))
    say(f"(run_projections() counts each projection's own events, so together they applied more "
        f"events than the log holds; the head is now {store.head()})")

    # A subscriber in another process, started before the writes it will see.
    start = store.head() + 1
    watcher = subprocess.Popen([sys.executable, os.path.join(HERE, "watch.py"), "--store", path,
                                "--count", "4", "--start", str(start)])
    store.start_projections()                  # keeps them current as events commit
    erin = names["erin"]
    time.sleep(0.5)                            # let the watcher subscribe
    store.execute(erin, "Open", {"owner": "Erin"}, expected_version=cairn.NO_STREAM)
    store.execute(erin, "Deposit", {"amount": 300})
    store.execute(erin, "Withdraw", {"amount": 120})   # >= 50: the runner emits an alert
    try:
        watcher.wait(timeout=15)
    except subprocess.TimeoutExpired:
        watcher.kill()
        say("watcher did not see every event in time")
    store.stop_projections()
    store.run_projections()

    balances = store.projection("balances")
    say(f"balances: {erin} -> {balances.state(erin)}; {len(list(balances.partitions()))} accounts known")
    daily = store.projection("daily_totals")
    for day in daily.partitions():
        say(f"daily totals {day}: {daily.state(day)}")
    alerts = list(store.read_stream("alerts-bank"))
    say(f"alerts emitted so far: {len(alerts)}; newest: {alerts[-1].data if alerts else None}")
    status = {name: (store.projection(name).status, store.projection(name).position)
              for name in store.scripts()["projection"]}
    say(f"projections (status, position): {status}; head {store.head()}")


def upcaster_part(store, path, names):
    say("\n=== Part 4: an old event in a new shape ===")
    alice = names["alice"]
    frank = names["frank"]
    # From now on an account is opened with a currency (schema 2) ...
    store.append(frank, [cairn.Event("Opened", {"owner": "Frank", "currency": "CHF"}, schema=2)],
                 expected_version=cairn.NO_STREAM)
    # ... and the schema-1 events of Part 1 get one when they are read.
    store.define_upcasters(read_script("upcasters.lua"))
    stored = next(iter(store.read_stream(alice, raw=True)))
    read = next(iter(store.read_stream(alice)))
    new = next(iter(store.read_stream(frank)))
    say(f"{alice} v0 as stored (raw=True): schema {stored.schema} {stored.data}")
    say(f"{alice} v0 as read:              schema {read.schema} {read.data}")
    say(f"{frank} v0 (written as schema 2): schema {new.schema} {new.data}")


def summary(store, heads):
    say("\n=== What this run wrote ===")
    for part, (a, b) in enumerate(zip(heads, heads[1:]), 1):
        emitted = sum(1 for e in store.read_all(a + 1, limit=b - a) if e.stream.startswith("alerts-"))
        what = f" ({emitted} emitted by the alerts projection)" if emitted else ""
        say(f"  Part {part}: {b - a:>2} event{'s' if b - a != 1 else ''} at positions {a + 1}..{b}{what}")
    before, head = heads[0], heads[-1]
    say(f"  in all: {head - before} events, positions {before + 1}..{head}")
    report = store.verify()
    say(f"verify(): {report.events} events in {report.streams} streams, head {report.head}: "
        f"the store holds {report.events} events, {before} of them from earlier runs")


def explore(path, names):
    say("\n=== Explore the store ===")
    p = shlex.quote(path)
    if shutil.which("cairn") is None:
        here = os.path.dirname(HERE)
        say("`pip install .` installs the `cairn` command; until then, define it in your shell:")
        say(f"  alias cairn='PYTHONPATH={shlex.quote(os.path.join(here, 'python'))} {sys.executable} -m cairn'")
    commands = [
        (f"cairn info {p}", "head, events, streams, file size, scripts, projections"),
        (f"cairn streams {p}", "every stream with its version"),
        (f"cairn read {p} {names['alice']}", "one stream's history (upcast)"),
        (f"cairn read {p} {names['alice']} --raw", "the same as stored: Opened at schema 1"),
        (f"cairn log {p} --category account --backwards --limit 5", "the log, filtered"),
        (f"cairn load {p} {names['carol']} --version 2", "the aggregate's state at version 2"),
        (f"cairn projections list {p}", "projections: position and status"),
        (f"cairn projections state {p} balances {names['erin']}", "one partition's state"),
        (f"cairn execute {p} {names['erin']} Withdraw '{{\"amount\": 1000}}'", "rejected: insufficient funds"),
        (f"cairn verify {p}", "checksums and indexes"),
        (f"cairn export {p} > demo.jsonl", "the log as JSON lines"),
        (f"cairn backup {p} demo-backup", "a consistent, compacted copy"),
        (f"cairn tail {p}", "follow new events live (Ctrl-C ends it)"),
    ]
    width = max(len(c) for c, _ in commands)
    for command, what in commands:
        say(f"  {command:<{width}}   # {what}")


if __name__ == "__main__":
    sys.exit(main())
