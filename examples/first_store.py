"""Getting started, step 1: a store, events, streams and the log (docs/getting-started.md)."""

import shutil

import cairn

shutil.rmtree("first-store", ignore_errors=True)  # start afresh on every run

with cairn.open("first-store") as store:  # a directory; created when missing
    r = store.append("order-1", [
        cairn.Event("OrderPlaced", {"item": "lamp", "price": 25}, tags=["customer:ann"]),
        cairn.Event("OrderPaid", {"amount": 25}),
    ], expected_version=cairn.NO_STREAM)  # the stream must not exist yet
    print(f"order-1 is at version {r.version}; its events are at positions "
          f"{r.first_position}..{r.position}")

    store.append("order-2", [cairn.Event("OrderPlaced", {"item": "desk", "price": 120},
                                         tags=["customer:bob"])])

    print("the history of order-1:")
    for e in store.read_stream("order-1"):  # one stream, oldest first
        print(f"  v{e.version} {e.type} {e.data}")

    print("every OrderPlaced in the store:")
    for e in store.read_all(types=["OrderPlaced"]):  # the whole log, through the type index
        print(f"  @{e.position} {e.stream} {e.data['item']} (tags {list(e.tags)})")

    try:  # a writer that read version 0 is too late: the stream is at version 1
        store.append("order-1", [cairn.Event("OrderShipped")], expected_version=0)
    except cairn.WrongExpectedVersion as err:
        print(f"conflict on {err.stream}: expected version {err.expected}, actual {err.actual}")

    with store.transaction() as tx:  # several streams, one atomic commit
        tx.append("order-1", [cairn.Event("OrderShipped")], expected_version=1)
        tx.append("stock-lamp", [cairn.Event("StockReduced", {"by": 1})])
    print("shipped and stock reduced together at positions",
          [res.position for res in tx.results])

    print(f"head {store.head()}, streams {list(store.streams())}")
