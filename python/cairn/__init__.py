"""cairn -- an embedded event store: an append-only log of events on LMDB, written in C.

    import cairn

    with cairn.open("bank-store") as store:
        store.append("account-42", [cairn.Event("Deposited", {"amount": 100})],
                     expected_version=cairn.NO_STREAM)
        for e in store.read_stream("account-42"):
            print(e.version, e.type, e.data)

        store.define_aggregate("account", ACCOUNT_LUA)   # reducers + command handlers in Lua
        store.execute("account-42", "Withdraw", {"amount": 30})
        store.load("account-42").state                   # {"balance": 70, ...}

        with store.transaction() as tx:            # several streams, one atomic commit
            tx.append("account-42", [cairn.Event("Withdrawn", {"amount": 30})],
                      expected_version=0)
            tx.append("account-7", [cairn.Event("Deposited", {"amount": 30})])

Everything public lives in the C extension `cairn._cairn`; this package re-exports it.  What
scripts print() goes to the logging logger "cairn" at INFO level, prefixed with the script's
name.
"""

from ._cairn import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    Aggregate,
    AlreadyCompensated,
    AppendResult,
    CommandRejected,
    Condition,
    ConditionFailed,
    CorruptionError,
    DuplicateEvent,
    Error,
    Event,
    NotCompensable,
    Projection,
    RecordedEvent,
    Query,
    QueryItem,
    ScriptError,
    Store,
    StoreClosed,
    StreamDeleted,
    Subscription,
    Transaction,
    VerifyReport,
    WrongExpectedVersion,
    open,
)

__version__ = "0.1.0"

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "Aggregate",
    "AlreadyCompensated",
    "AppendResult",
    "CommandRejected",
    "Condition",
    "ConditionFailed",
    "CorruptionError",
    "DuplicateEvent",
    "Error",
    "Event",
    "NotCompensable",
    "Projection",
    "RecordedEvent",
    "Query",
    "QueryItem",
    "ScriptError",
    "Store",
    "StoreClosed",
    "StreamDeleted",
    "Subscription",
    "Transaction",
    "VerifyReport",
    "WrongExpectedVersion",
    "open",
]

