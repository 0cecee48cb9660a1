"""Getting started, step 4: a subscriber -- every event from a position on, then live as
others commit, with a durable checkpoint (docs/getting-started.md)."""

import shutil
import threading
import time

import cairn

shutil.rmtree("subscriber-store", ignore_errors=True)  # start afresh on every run

with cairn.open("subscriber-store") as store:
    store.append("account-ann", [cairn.Event("Deposited", {"amount": 10})])

    def writer():  # another writer, a moment later (another process would do the same)
        time.sleep(0.2)
        for amount in (20, 30):
            store.append("account-ann", [cairn.Event("Deposited", {"amount": amount})])

    t = threading.Thread(target=writer)
    t.start()
    # a named subscription stores how far it got (its checkpoint) in the store
    with store.subscribe(1, name="mailer", timeout=5) as sub:
        for e in sub:  # position 1 is there already; 2 and 3 arrive as they commit
            print(f"mailer got @{e.position} {e.type} {e.data}")
            if e.position == 3:
                break
    t.join()
    print(f"checkpoint of mailer: {store.checkpoint('mailer')}")

    store.append("account-ann", [cairn.Event("Withdrawn", {"amount": 5})])
    # opened again, it resumes after its checkpoint; timeout=0: what is there, then stop
    with store.subscribe(1, name="mailer", timeout=0) as sub:
        for e in sub:
            print(f"mailer resumed with @{e.position} {e.type} {e.data}")
    print(f"checkpoint of mailer: {store.checkpoint('mailer')}")
