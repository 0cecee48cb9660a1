"""Type stubs for cairn._cairn, the C extension behind the `cairn` package."""

import datetime
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, ClassVar, Final, Literal, TypeVar, final

ANY: Final[int]  # -2
NO_STREAM: Final[int]  # -1
STREAM_EXISTS: Final[int]  # -4
MAX_TYPE: Final[int]
MAX_STREAM: Final[int]
MAX_TAG: Final[int]
MAX_TAGS: Final[int]
MAX_RECORD: Final[int]

_Durability = Literal["full", "relaxed", "none"]
_Filter = str | Iterable[str] | None
_E = TypeVar("_E", bound=Event)
_JSON = None | bool | int | float | str | list[Any] | tuple[Any, ...] | dict[str, Any]

class Error(Exception): ...

class WrongExpectedVersion(Error):
    stream: str | None
    expected: int | None
    actual: int | None

class DuplicateEvent(Error):
    stream: str | None
    position: int | None

class ConditionFailed(Error):
    positions: list[int]

class StreamDeleted(Error):
    stream: str | None

class ScriptError(Error):
    script: str | None
    line: int | None
    position: int | None

class CommandRejected(Error):
    reason: str | None
    details: Any
    script: str | None

class AlreadyCompensated(Error): ...
class NotCompensable(Error): ...

class CorruptionError(Error):
    position: int | None

class StoreClosed(Error): ...

class Event:
    """An event to append; a value (==, hash, pickle, copy).  Subclassable: a subclass's
    ``type`` defaults to its class name and it must not redefine the fields."""

    def __init__(
        self,
        type: str = ...,  # required for Event itself; a subclass's default is its class name
        data: _JSON | bytes | bytearray | memoryview = None,
        *,
        metadata: dict[str, Any] | None = None,
        id: uuid.UUID | str | None = None,
        schema: int = 1,
        tags: Iterable[str] = (),
        subject: str | None = None,  # the data subject whose key encrypts data (spec 6)
    ) -> None: ...
    @classmethod
    def from_recorded(cls: type[_E], recorded: RecordedEvent, /, **changes: Any) -> _E: ...
    @property
    def type(self) -> str: ...
    @property
    def data(self) -> Any: ...
    @property
    def metadata(self) -> dict[str, Any] | None: ...
    @property
    def id(self) -> uuid.UUID: ...
    @property
    def schema(self) -> int: ...
    @property
    def tags(self) -> tuple[str, ...]: ...
    @property
    def subject(self) -> str | None: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

@final
class RecordedEvent:
    @property
    def stream(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def position(self) -> int: ...
    @property
    def type(self) -> str: ...
    @property
    def data(self) -> Any: ...
    @property
    def metadata(self) -> dict[str, Any] | None: ...
    @property
    def id(self) -> uuid.UUID: ...
    @property
    def schema(self) -> int: ...
    @property
    def tags(self) -> tuple[str, ...]: ...
    @property
    def timestamp(self) -> datetime.datetime: ...
    @property
    def timestamp_ns(self) -> int: ...
    @property
    def subject(self) -> str | None: ...
    @property
    def forgotten(self) -> bool: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

@final
class AppendResult:
    def __new__(
        cls, version: int, position: int | None = None, first_position: int | None = None
    ) -> AppendResult: ...
    @property
    def version(self) -> int: ...
    @property
    def position(self) -> int | None: ...
    @property
    def first_position(self) -> int | None: ...

@final
class VerifyReport(tuple[int, int, int]):
    n_fields: ClassVar[int]
    n_sequence_fields: ClassVar[int]
    n_unnamed_fields: ClassVar[int]
    __match_args__: ClassVar[tuple[str, str, str]]
    @property
    def events(self) -> int: ...
    @property
    def streams(self) -> int: ...
    @property
    def head(self) -> int: ...
    @property
    def chain(self) -> str: ...

@final
class Aggregate:
    @property
    def stream(self) -> str: ...
    @property
    def aggregate(self) -> str: ...
    @property
    def state(self) -> Any: ...
    @property
    def version(self) -> int: ...
    @property
    def applied(self) -> int: ...

@final
class Projection:
    """A live view of a projection: every attribute reads the store."""

    @property
    def name(self) -> str: ...
    @property
    def position(self) -> int: ...
    @property
    def status(self) -> Literal["ok", "faulted"]: ...
    @property
    def error(self) -> str | None: ...
    def state(self, partition: str | None = None) -> Any: ...
    def partitions(self) -> Iterator[str]: ...
    def reset(self) -> None: ...

@final
class ReadIterator(Iterator[RecordedEvent]):
    @property
    def head(self) -> int:
        """store.query() only: the head when the query was made (nothing after it is yielded)."""
    def __iter__(self) -> ReadIterator: ...
    def __next__(self) -> RecordedEvent: ...

@final
class QueryItem:
    """Matches an event whose type is one of ``types`` and whose tags include all of ``tags``."""
    types: tuple[str, ...] | None
    tags: tuple[str, ...] | None
    def __init__(self, types: _Filter = None, tags: _Filter = None) -> None: ...

@final
class Query:
    """Matches an event that any item matches; ``Query()`` matches every event."""
    items: tuple[QueryItem, ...]
    def __init__(self, *items: QueryItem) -> None: ...

@final
class Condition:
    """An append condition: no event matching ``query`` after position ``after`` (None: at all)."""
    query: Query
    after: int | None
    def __init__(self, query: Query, after: int | None = None) -> None: ...

@final
class StreamNameIterator(Iterator[str]):
    def __iter__(self) -> StreamNameIterator: ...
    def __next__(self) -> str: ...

@final
class Subscription(Iterator[RecordedEvent]):
    @property
    def closed(self) -> bool: ...
    def __iter__(self) -> Subscription: ...
    def __next__(self) -> RecordedEvent: ...
    def close(self) -> None: ...
    def ack(self) -> None: ...
    def __enter__(self) -> Subscription: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]: ...

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

    results: list[AppendResult] | None

    def __init__(self, store: Store) -> None: ...
    def __enter__(self) -> Transaction: ...
    def append(
        self,
        stream: str,
        events: Iterable[Event | RecordedEvent],
        *,
        expected_version: int = ...,
        condition: Condition | None = None,
    ) -> None:
        """Queue ``events`` for ``stream``; arguments are checked now, as ``Store.append`` does."""
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]: ...

@final
class Store:
    @property
    def path(self) -> str: ...
    @property
    def readonly(self) -> bool: ...
    @property
    def durability(self) -> _Durability: ...
    @property
    def closed(self) -> bool: ...
    @property
    def script_instruction_limit(self) -> int: ...
    @property
    def script_memory_limit(self) -> int: ...
    @property
    def script_time_limit(self) -> float | None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Store: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]: ...
    def append(
        self,
        stream: str,
        events: Iterable[Event | RecordedEvent],
        *,
        expected_version: int = ...,
        condition: Condition | None = None,
    ) -> AppendResult: ...
    def query(
        self, query: Query, start: int | None = None, *, backwards: bool = False, limit: int | None = None
    ) -> ReadIterator: ...
    def transaction(self) -> Transaction: ...
    def read_stream(
        self,
        stream: str,
        start: int | None = None,
        *,
        backwards: bool = False,
        limit: int | None = None,
        raw: bool = False,
    ) -> ReadIterator: ...
    def read_all(
        self,
        start: int | None = None,
        *,
        backwards: bool = False,
        limit: int | None = None,
        types: _Filter = None,
        categories: _Filter = None,
        streams: _Filter = None,
        tags: _Filter = None,
        raw: bool = False,
    ) -> ReadIterator: ...
    def stream_version(self, stream: str) -> int: ...
    def delete_stream(
        self, stream: str, *, expected_version: int = ..., hard: bool = False
    ) -> int: ...
    def set_stream_metadata(
        self,
        stream: str,
        *,
        max_count: int | None = None,
        max_age: int | None = None,
        truncate_before: int | None = None,
    ) -> int: ...
    def stream_metadata(self, stream: str) -> dict[str, int | None]: ...
    def maintain(
        self, *, progress: Callable[[int, int], object] | None = None
    ) -> dict[str, int]: ...
    def head(self) -> int: ...
    def chain_head(self) -> tuple[int, str]: ...
    def streams(self, prefix: str = "") -> StreamNameIterator: ...
    def get(self, position: int, *, raw: bool = False) -> RecordedEvent: ...
    def verify(
        self,
        *,
        progress: Callable[[int, int], object] | None = None,
        damage: Callable[[int, str], object] | None = None,
    ) -> VerifyReport: ...
    def sync(self) -> None: ...
    def position_of(self, id: uuid.UUID | str) -> int | None: ...
    def forget(self, subject: str) -> None: ...
    def _subject_key(self, subject: str) -> bytes | None: ...
    def backup(self, dest: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> None: ...
    def stat(self) -> dict[str, int]: ...
    def subscriptions(self) -> dict[str, int]: ...
    def define_aggregate(self, name: str, source: str) -> None: ...
    def define_projection(self, name: str, source: str) -> None: ...
    def projection(self, name: str) -> Projection: ...
    def run_projections(self, name: str | None = None) -> int: ...
    def delete_projection(self, name: str) -> None: ...
    def start_projections(self) -> None: ...
    def stop_projections(self) -> None: ...
    def define_upcasters(self, source: str) -> None: ...
    def scripts(self) -> dict[str, list[str]]: ...
    def load(
        self,
        stream: str,
        *,
        aggregate: str | None = None,
        version: int | None = None,
        at: datetime.datetime | None = None,
    ) -> Aggregate: ...
    def execute(
        self,
        stream: str,
        command: str,
        data: _JSON = None,
        *,
        aggregate: str | None = None,
        expected_version: int = ...,
        metadata: dict[str, Any] | None = None,
        id: uuid.UUID | str | None = None,
    ) -> AppendResult: ...
    def decide(
        self,
        aggregate: str,
        command: str,
        data: _JSON = None,
        *,
        stream: str,
        metadata: dict[str, Any] | None = None,
    ) -> AppendResult: ...
    def compensate(
        self,
        stream: str,
        version: int,
        *,
        aggregate: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> AppendResult: ...
    def rollback(self, correlation_id: str) -> list[AppendResult]: ...
    def subscribe(
        self,
        start: int | None = 1,
        *,
        name: str | None = None,
        timeout: float | None = None,
        types: _Filter = None,
        categories: _Filter = None,
        streams: _Filter = None,
        tags: _Filter = None,
    ) -> Subscription: ...
    def checkpoint(self, name: str) -> int: ...

def open(
    path: str | bytes | os.PathLike[str] | os.PathLike[bytes],
    *,
    durability: _Durability = "full",
    readonly: bool = False,
    map_size: int | None = None,
    script_instruction_limit: int = 10_000_000,
    script_memory_limit: int = 64 << 20,
    script_time_limit: float | None = 1.0,
) -> Store: ...
def _json_dumps(value: Any, what: str = "data", /) -> bytes: ...
def _json_loads(data: bytes | bytearray | memoryview, /) -> Any: ...
