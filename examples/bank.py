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

Run it twice: the store remembers everything.

    python examples/bank.py --store demo-store
"""

import argparse
import os
import subprocess
import sys
import time
import uuid

import cairn


def say(text=""):
    print(text, flush=True)


def balance_of(store, account):
    """The state of an account, folded from its events (later issues move this into Lua)."""
    balance = 0
    for e in store.read_stream(account):
        if e.type == "Deposited":
            balance += e.data["amount"]
        elif e.type == "Withdrawn":
            balance -= e.data["amount"]
    return balance


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="demo-store", help="store directory (created when missing)")
    args = ap.parse_args(argv)

    run = uuid.uuid4().hex[:6]  # each run opens fresh accounts, so runs can be repeated
    alice, bob, order = f"account-alice{run}", f"account-bob{run}", f"order-{run}"

    with cairn.open(args.store) as store:
        say(f"store {args.store!r}: {store.head()} events already recorded before this run")

        # 1. Open two accounts; NO_STREAM guarantees each is opened only once.
        for acct, owner, amount in ((alice, "Alice", 100), (bob, "Bob", 20)):
            r = store.append(acct, [cairn.Event("Opened", {"owner": owner}),
                                    cairn.Event("Deposited", {"amount": amount})],
                             expected_version=cairn.NO_STREAM)
            say(f"opened {acct} for {owner} with {amount}: version {r.version}, positions "
                f"{r.first_position}..{r.position}")

        # 2. A stream's history, oldest first.
        store.append(alice, [cairn.Event("Withdrawn", {"amount": 30})], expected_version=1)
        say(f"\nhistory of {alice}:")
        for e in store.read_stream(alice):
            say(f"  v{e.version} @{e.position} {e.timestamp:%H:%M:%S.%f} {e.type:<10} {e.data}")
        say(f"  balance now {balance_of(store, alice)}")

        # 3. Two clerks read the same version, both try to withdraw: the second is refused.
        seen = store.stream_version(bob)
        store.append(bob, [cairn.Event("Withdrawn", {"amount": 15})], expected_version=seen)
        try:
            store.append(bob, [cairn.Event("Withdrawn", {"amount": 15})], expected_version=seen)
        except cairn.WrongExpectedVersion as err:
            say(f"\nconcurrency conflict caught on {err.stream}: expected version {err.expected}, "
                f"actual {err.actual} -> second withdrawal refused, balance stays {balance_of(store, bob)}")

        # 4. A retry after a lost reply writes nothing twice.
        deposit = [cairn.Event("Deposited", {"amount": 5}, metadata={"clerk": "carol"})]
        first = store.append(bob, deposit)
        again = store.append(bob, deposit)
        say(f"\nretried append returned the same result: {first == again} (position {again.position}); "
            f"{bob} still has {store.stream_version(bob) + 1} events")

        # 5. An order and the payment for it, in one atomic multi-stream transaction.
        with store.transaction() as tx:
            tx.append(order, [cairn.Event("OrderPlaced", {"item": "lamp", "price": 25}, tags=["customer:alice"])],
                      expected_version=cairn.NO_STREAM)
            tx.append(alice, [cairn.Event("Withdrawn", {"amount": 25}, tags=["customer:alice"])],
                      expected_version=store.stream_version(alice))
        say(f"\norder {order} and its payment committed together at positions "
            f"{tx.results[0].position} and {tx.results[1].position}")

        # 6. The global log, filtered by category (read through the category index).
        say("\nthe last 5 events of category 'account' across all accounts, newest first:")
        for e in store.read_all(categories=["account"], backwards=True, limit=5):
            say(f"  @{e.position} {e.stream:<22} v{e.version} {e.type:<10} {e.data}")
        tagged = list(store.read_all(tags=["customer:alice"]))
        say(f"events tagged customer:alice: {len(tagged)} ({', '.join(e.type for e in tagged[-2:])} ...)")

        lua_part(store, run)
        projections_part(store, args.store, run)

        report = store.verify()
        say(f"\nverify: {report}")
        say(f"store now holds {store.head()} events in {sum(1 for _ in store.streams())} streams")
    return 0


def lua_part(store, run):
    say("\n=== Part 2: the account as a Lua aggregate ===")
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "account.lua"), encoding="utf-8") as f:
        store.define_aggregate("account", f.read())
    carol, dave = f"account-carol{run}", f"account-dave{run}"

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
    saga = f"transfer-{run}"
    store.append(dave, [cairn.Event("Closed", {"reason": "moved away"})])
    step1 = store.execute(carol, "Withdraw", {"amount": 70}, metadata={"correlation_id": saga})
    say(f"\nsaga {saga}: step 1 withdrew 70 from {carol} (position {step1.position})")
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
        note = f" (compensates {e.metadata['compensates'][:8]}...)" if e.metadata and "compensates" in e.metadata else ""
        say(f"  v{e.version} {e.type:<10} -> balance {state['balance']:>4}, open={state['open']}{note}")
    first = next(iter(store.read_stream(carol)))
    say(f"as of {first.timestamp:%H:%M:%S.%f} (load(at=...)): {store.load(carol, at=first.timestamp).state}")


def projections_part(store, path, run):
    say("\n=== Part 3: read models and live delivery ===")
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "projections.lua"), encoding="utf-8") as f:
        chunks = f.read().split("-- %% ")[1:]
    for chunk in chunks:
        name = chunk.split(":", 1)[0].strip()
        store.define_projection(name, "-- " + chunk)   # the same source again changes nothing
    n = store.run_projections()
    say(f"projections {', '.join(store.scripts()['projection'])} caught up over {n} events")

    # a subscriber in another process, started before the writes it will see
    watcher = subprocess.Popen([sys.executable, os.path.join(here, "watch.py"), "--store", path,
                                "--count", "4", "--start", str(store.head() + 1)])
    store.start_projections()                  # keeps them current as events commit
    erin = f"account-erin{run}"
    time.sleep(0.5)                            # let the watcher subscribe
    store.execute(erin, "Open", {"owner": "Erin"}, expected_version=cairn.NO_STREAM)
    store.execute(erin, "Deposit", {"amount": 300})
    store.execute(erin, "Withdraw", {"amount": 120})
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
    alerts = [e for e in store.read_stream("alerts-bank")]
    say(f"alerts emitted so far: {len(alerts)}; newest: {alerts[-1].data if alerts else None}")
    status = {name: store.projection(name).status for name in store.scripts()["projection"]}
    say(f"projection status: {status}")


if __name__ == "__main__":
    sys.exit(main())
