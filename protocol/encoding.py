"""Canonical msgpack (specs/0002-wire.md §2).

A message is one msgpack array in a fixed field order, beginning with a type tag and the protocol
version. *Canonical* means the encoding ``msgpack.packb(value, use_bin_type=True)`` produces: every
integer, string, byte string and array header in its shortest form. Maps, floats, booleans,
extension types and negative integers never appear. A decoder re-encodes what it read and rejects
the input unless the bytes are identical, so every value has exactly one encoding and signatures
and channel ids are well defined.
"""

from __future__ import annotations

from typing import Any

import msgpack

from protocol.errors import DecodeError, ErrorCode

MAX_MESSAGE_BYTES = 16 * 1024
"""No message may be longer. A BalanceProof is about 250 bytes."""
MAX_STR_BYTES = 256
MAX_BIN_BYTES = 64
MAX_ARRAY_LEN = 64


def pack(value: object) -> bytes:
    """The canonical encoding of a value built from ints, str, bytes, None and lists."""
    out: bytes = msgpack.packb(value, use_bin_type=True)
    return out


def unpack(data: bytes) -> list[Any]:
    """Decode one canonical array, or raise DecodeError with the spec's code.

    Checks, in order: size; msgpack well-formedness; no trailing bytes; only permitted types;
    the top level is an array; the encoding is canonical.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(ErrorCode.MALFORMED, "input is not bytes")
    data = bytes(data)
    if len(data) > MAX_MESSAGE_BYTES:
        raise DecodeError(
            ErrorCode.TOO_LARGE, f"message is {len(data)} bytes; the limit is {MAX_MESSAGE_BYTES}"
        )
    if not data:
        raise DecodeError(ErrorCode.MALFORMED, "empty input")
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=MAX_STR_BYTES,
            max_bin_len=MAX_BIN_BYTES,
            max_array_len=MAX_ARRAY_LEN,
            max_map_len=0,
            max_ext_len=0,
        )
    except msgpack.ExtraData as exc:
        raise DecodeError(ErrorCode.TRAILING_BYTES, "bytes follow the message") from exc
    except ValueError as exc:
        # msgpack reports over-limit lengths as ValueError ("... exceeds max_..._len")
        if "max_map_len" in str(exc) or "max_ext_len" in str(exc):
            raise DecodeError(ErrorCode.INVALID_FIELD, "maps and extensions are not used") from exc
        if "exceeds max" in str(exc):
            raise DecodeError(ErrorCode.TOO_LARGE, str(exc)) from exc
        raise DecodeError(ErrorCode.MALFORMED, f"not msgpack: {exc}") from exc
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise DecodeError(ErrorCode.MALFORMED, f"not msgpack: {type(exc).__name__}") from exc
    _check_types(value, depth=0)
    if not isinstance(value, list):
        raise DecodeError(ErrorCode.MALFORMED, "a message is a msgpack array")
    if pack(value) != data:
        raise DecodeError(ErrorCode.NON_CANONICAL, "the encoding is not canonical")
    return value


def _check_types(value: object, *, depth: int) -> None:
    if type(value) is list and depth < 8:  # the common case, without a call per scalar
        for item in value:
            kind = type(item)
            if kind is int:
                if item < 0:
                    raise DecodeError(ErrorCode.INVALID_FIELD,
                                      "negative integers are not used on the wire")
            elif kind is not bytes and kind is not str and item is not None:
                _check_types(item, depth=depth + 1)  # a list, or the error for its type
        return
    if depth > 8:
        raise DecodeError(ErrorCode.MALFORMED, "nesting deeper than 8")
    if value is None or isinstance(value, str | bytes):
        return
    if isinstance(value, bool):
        raise DecodeError(ErrorCode.INVALID_FIELD, "booleans are not used on the wire")
    if isinstance(value, int):
        if value < 0:
            raise DecodeError(ErrorCode.INVALID_FIELD, "negative integers are not used on the wire")
        return
    if isinstance(value, list):
        for item in value:
            _check_types(item, depth=depth + 1)
        return
    raise DecodeError(ErrorCode.INVALID_FIELD, f"{type(value).__name__} is not used on the wire")
