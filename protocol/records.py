"""Field kinds and the positional-record base that every wire message is built on.

A :class:`Record` is a frozen dataclass whose ``FIELDS`` list each field's name and :class:`Kind`
in wire order. A record encodes as an array of its fields; a :class:`Message` prepends its type
tag and the protocol version. Decoding checks arity and every field's kind and raises
:class:`~protocol.errors.DecodeError` with the spec's code, naming the field path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar, Self

from protocol import PROTOCOL_VERSION
from protocol.encoding import pack, unpack
from protocol.errors import DecodeError, ErrorCode


class Kind:
    """How one field looks on the wire. `load` validates raw wire data into a Python value."""

    def load(self, raw: object, path: str) -> Any:
        raise NotImplementedError

    def dump(self, value: Any) -> object:
        return value

    def describe(self) -> str:
        raise NotImplementedError


def _bad(path: str, why: str) -> DecodeError:
    return DecodeError(ErrorCode.INVALID_FIELD, f"{path}: {why}")


class UInt(Kind):
    """An unsigned integer of `bits` bits, at most `max_value` when given (a range check at the
    wire, before the value reaches arithmetic or storage)."""

    def __init__(self, bits: int = 64, *, max_value: int | None = None) -> None:
        self.bits = bits
        self.max_value = 2**bits - 1 if max_value is None else max_value

    def load(self, raw: object, path: str) -> int:
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise _bad(path, f"expected an unsigned integer, got {type(raw).__name__}")
        if not 0 <= raw < 2**self.bits:
            raise _bad(path, f"{raw} does not fit in u{self.bits}")
        if raw > self.max_value:
            raise _bad(path, f"{raw} is above the largest allowed, {self.max_value}")
        return raw

    def describe(self) -> str:
        if self.max_value != 2**self.bits - 1:
            return f"u{self.bits} ≤ {self.max_value}"
        return f"u{self.bits}"


class Bin(Kind):
    def __init__(self, *sizes: int) -> None:
        self.sizes = sizes

    def load(self, raw: object, path: str) -> bytes:
        if not isinstance(raw, bytes):
            raise _bad(path, f"expected bytes, got {type(raw).__name__}")
        if len(raw) not in self.sizes:
            allowed = " or ".join(str(s) for s in self.sizes)
            raise _bad(path, f"expected {allowed} bytes, got {len(raw)}")
        return raw

    def describe(self) -> str:
        return "bin[" + "|".join(str(s) for s in self.sizes) + "]"


class Text(Kind):
    def __init__(self, max_len: int, pattern: str | None = None, min_len: int = 0) -> None:
        self.max_len = max_len
        self.min_len = min_len
        self.pattern = re.compile(pattern) if pattern else None

    def load(self, raw: object, path: str) -> str:
        if not isinstance(raw, str):
            raise _bad(path, f"expected a string, got {type(raw).__name__}")
        if not self.min_len <= len(raw) <= self.max_len:
            raise _bad(path, f"length {len(raw)} outside {self.min_len}..{self.max_len}")
        if self.pattern is not None and not self.pattern.fullmatch(raw):
            raise _bad(path, f"{raw!r} does not match {self.pattern.pattern}")
        return raw

    def describe(self) -> str:
        return f"str[{self.min_len}..{self.max_len}]"


class Opt(Kind):
    """The inner kind, or nil."""

    def __init__(self, inner: Kind) -> None:
        self.inner = inner

    def load(self, raw: object, path: str) -> Any:
        return None if raw is None else self.inner.load(raw, path)

    def dump(self, value: Any) -> object:
        return None if value is None else self.inner.dump(value)

    def describe(self) -> str:
        return f"{self.inner.describe()} | nil"


class ListOf(Kind):
    def __init__(self, inner: Kind, min_len: int = 0, max_len: int = 16) -> None:
        self.inner, self.min_len, self.max_len = inner, min_len, max_len

    def load(self, raw: object, path: str) -> tuple[Any, ...]:
        if not isinstance(raw, list):
            raise _bad(path, f"expected an array, got {type(raw).__name__}")
        if not self.min_len <= len(raw) <= self.max_len:
            raise _bad(path, f"{len(raw)} items outside {self.min_len}..{self.max_len}")
        return tuple(self.inner.load(item, f"{path}[{i}]") for i, item in enumerate(raw))

    def dump(self, value: Any) -> object:
        return [self.inner.dump(v) for v in value]

    def describe(self) -> str:
        return f"[{self.inner.describe()}; {self.min_len}..{self.max_len}]"


class Nested(Kind):
    """A record embedded as an array (no tag); or a whole message when `cls` is a Message."""

    def __init__(self, cls: type[Record]) -> None:
        self.cls = cls

    def load(self, raw: object, path: str) -> Any:
        return self.cls.from_wire(raw, path)

    def dump(self, value: Any) -> object:
        return value.to_wire()

    def describe(self) -> str:
        return self.cls.__name__


class Record:
    """Positional record. Subclasses are ``@dataclass(frozen=True, slots=True)``."""

    FIELDS: ClassVar[tuple[tuple[str, Kind], ...]] = ()

    def fields_to_wire(self, names: Sequence[tuple[str, Kind]] | None = None) -> list[object]:
        return [kind.dump(getattr(self, name)) for name, kind in (names or self.FIELDS)]

    def to_wire(self) -> list[object]:
        return self.fields_to_wire()

    @classmethod
    def _load_fields(cls, raw: list[Any], path: str) -> dict[str, Any]:
        if len(raw) != len(cls.FIELDS):
            raise DecodeError(
                ErrorCode.WRONG_ARITY,
                f"{path}: {cls.__name__} has {len(cls.FIELDS)} fields, got {len(raw)}",
            )
        paths = _field_paths(cls, path)
        return {
            name: kind.load(value, where)
            for (name, kind), value, where in zip(cls.FIELDS, raw, paths, strict=True)
        }

    @classmethod
    def from_wire(cls, raw: object, path: str = "") -> Self:
        if not isinstance(raw, list):
            raise _bad(path or cls.__name__, f"{cls.__name__} is an array")
        return cls(**cls._load_fields(raw, path or cls.__name__))


_PATHS: dict[tuple[type, str], tuple[str, ...]] = {}
"""Each record's field paths under a path (the error messages' ``Proof.amount``), built once:
the paths come from the schema's names and bounded list indices, never from the input."""


def _field_paths(cls: type[Record], path: str) -> tuple[str, ...]:
    found = _PATHS.get((cls, path))
    if found is None:
        found = tuple(f"{path}.{name}" for name, _ in cls.FIELDS)
        if len(_PATHS) < 4096:
            _PATHS[(cls, path)] = found
    return found


_REGISTRY: dict[int, type[Message]] = {}


class Message(Record):
    """A top-level wire message: ``[TAG, VERSION, field…]``."""

    TAG: ClassVar[int] = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.TAG:
            known = _REGISTRY.get(cls.TAG)
            # dataclass(slots=True) re-creates the class: the same name may register twice.
            if known is not None and known.__qualname__ != cls.__qualname__:
                raise TypeError(f"message tag {cls.TAG} used twice")
            _REGISTRY[cls.TAG] = cls

    def to_wire(self) -> list[object]:
        return [self.TAG, PROTOCOL_VERSION, *self.fields_to_wire()]

    def encode(self) -> bytes:
        return pack(self.to_wire())

    @classmethod
    def from_wire(cls, raw: object, path: str = "") -> Self:
        path = path or cls.__name__
        if not isinstance(raw, list) or len(raw) < 2:
            raise DecodeError(ErrorCode.MALFORMED, f"{path}: a message starts with tag, version")
        tag, version = raw[0], raw[1]
        if tag != cls.TAG:
            known = isinstance(tag, int) and tag in _REGISTRY  # a tag may be any wire value
            raise DecodeError(
                ErrorCode.INVALID_FIELD if known else ErrorCode.UNKNOWN_MESSAGE_TYPE,
                f"{path}: expected {cls.__name__} (tag {cls.TAG}), got tag {tag!r}",
            )
        if version != PROTOCOL_VERSION:
            raise DecodeError(ErrorCode.UNSUPPORTED_VERSION, f"{path}: version {version!r}")
        return cls(**cls._load_fields(raw[2:], path))

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Decode bytes that must hold this message type."""
        return cls.from_wire(unpack(data))


def message_types() -> dict[int, type[Message]]:
    return dict(_REGISTRY)


def decode_message(data: bytes) -> Message:
    """Decode any known message; UNKNOWN_MESSAGE_TYPE for a tag nobody registered."""
    import protocol.messages  # noqa: F401 - registers every message type
    raw = unpack(data)
    if len(raw) < 2:
        raise DecodeError(ErrorCode.MALFORMED, "a message starts with tag, version")
    tag = raw[0]
    cls = _REGISTRY.get(tag) if isinstance(tag, int) and not isinstance(tag, bool) else None
    if cls is None:
        raise DecodeError(ErrorCode.UNKNOWN_MESSAGE_TYPE, f"unknown message type {tag!r}")
    return cls.from_wire(raw)
