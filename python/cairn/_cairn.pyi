"""Type stubs for cairn._cairn, the C extension behind the `cairn` package."""

import datetime
import os
import uuid
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, ClassVar, Final, Literal, final

from cairn import Transaction

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
    positions: list[int] | None

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

@final
class Event:
    def __new__(
        cls,
        type: str,
        data: _JSON | bytes | bytearray | memoryview = None,
        *,
        metadata: dict[str, Any] | None = None,
        id: uuid.UUID | str | None = None,
        schema: int = 1,
        tags: Iterable[str] = (),
        subject: str | None = None,
    ) -> Event: ...
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
class ReadIterator(Iterator[RecordedEvent]):
    def __iter__(self) -> ReadIterator: ...
    def __next__(self) -> RecordedEvent: ...

@final
class StreamNameIterator(Iterator[str]):
    def __iter__(self) -> StreamNameIterator: ...
    def __next__(self) -> str: ...

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
    def close(self) -> None: ...
    def __enter__(self) -> Store: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]: ...
    def append(
        self, stream: str, events: Iterable[Event], *, expected_version: int = ...
    ) -> AppendResult: ...
    def _append_batch(
        self, requests: Iterable[tuple[str, Iterable[Event], int]], /
    ) -> list[AppendResult]: ...
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
    def head(self) -> int: ...
    def streams(self, prefix: str = "") -> StreamNameIterator: ...
    def get(self, position: int, *, raw: bool = False) -> RecordedEvent: ...
    def verify(self) -> VerifyReport: ...
    def sync(self) -> None: ...
    def define_aggregate(self, name: str, source: str) -> None: ...
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

def open(
    path: str | bytes | os.PathLike[str] | os.PathLike[bytes],
    *,
    durability: _Durability = "full",
    readonly: bool = False,
    map_size: int | None = None,
    script_instruction_limit: int = 10_000_000,
    script_memory_limit: int = 64 << 20,
) -> Store: ...
def _validate_append(
    stream: str, events: Iterable[Event], expected_version: int = ...
) -> tuple[Event, ...]: ...
def _json_dumps(value: Any, what: str = "data", /) -> bytes: ...
def _json_loads(
    data: bytes | bytearray | memoryview, decoder: Literal["jansson", "direct"] | None = None, /
) -> Any: ...
