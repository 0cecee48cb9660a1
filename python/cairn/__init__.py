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

Everything public lives in the C extension `cairn._cairn`; this package re-exports it and adds
the small pure-Python conveniences (Transaction).  What scripts print() goes to the logging
logger "cairn" at INFO level, prefixed with the script's name.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Literal

from ._cairn import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    Aggregate,
    AlreadyCompensated,
    AppendResult,
    CommandRejected,
    ConditionFailed,
    CorruptionError,
    DuplicateEvent,
    Error,
    Event,
    NotCompensable,
    Projection,
    RecordedEvent,
    ScriptError,
    Store,
    StoreClosed,
    StreamDeleted,
    Subscription,
    VerifyReport,
    WrongExpectedVersion,
    _validate_append,
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
    "ConditionFailed",
    "CorruptionError",
    "DuplicateEvent",
    "Error",
    "Event",
    "NotCompensable",
    "Projection",
    "RecordedEvent",
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


class Transaction:
    """An atomic write across streams, made by ``store.transaction()``.

    ::

        with store.transaction() as tx:
            tx.append("order-1", [...], expected_version=3)
            tx.append("stock-9", [...], expected_version=cairn.NO_STREAM)
        tx.results   # list of AppendResult, in call order

    Nothing is written until the block exits without an exception; then every expectation is
    checked, in call order, and everything is written in one commit, or nothing is (the first
    failing check raises).  Appends to one stream within the block see each other.  The
    writer lock is not held while the block runs.  ``results`` is None until a successful
    commit, and stays None when the block or the commit fails.
    """

    __slots__ = ("_store", "_requests", "_state", "results")

    results: list[AppendResult] | None

    def __init__(self, store: Store) -> None:
        self._store = store
        self._requests: list[tuple[str, tuple[Event, ...], int]] = []
        self._state = "new"  # -> "open" in the with block -> "done"
        self.results = None

    def __enter__(self) -> Transaction:
        if self._state != "new":
            raise RuntimeError("a Transaction can be used for one with block only")
        if self._store.closed:
            raise StoreClosed("the store is closed")
        self._state = "open"
        return self

    def append(self, stream: str, events: Iterable[Event], *, expected_version: int = ANY) -> None:
        """Queue ``events`` for ``stream``; arguments are checked now, as ``Store.append`` does."""
        if self._state != "open":
            raise RuntimeError("Transaction.append() is only allowed inside its with block")
        events = _validate_append(stream, events, expected_version)
        self._requests.append((stream, events, expected_version))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        self._state = "done"
        requests, self._requests = self._requests, []
        if exc_type is None:
            self.results = self._store._append_batch(requests) if requests else []
        return False

    def __repr__(self) -> str:
        return f"<cairn.Transaction {self._state}, {len(self._requests)} append(s) queued>"
