"""Reading a bank's HTTP answers: never more bytes than stated, never JSON that can blow up.

A bank (or anything on the path to it) decides how long its answer is and what is in it. Every
rail reads an answer through :func:`read_bounded` and parses JSON through :func:`parse_json`:

- at most `limit` bytes are read (:data:`JSON_ANSWER_LIMIT` for an API answer,
  :data:`STATEMENT_ANSWER_LIMIT` for a listing that carries statement files or a statement's
  transactions). A longer answer, declared or not, is :class:`~rails.errors.AnswerTooLarge`
  (transient: the rail retries, then raises :class:`~rails.errors.BankUnavailable`); the rest is
  not read, and the connection is dropped rather than drained. The limit counts the bytes after
  ``Content-Encoding`` is undone, so a small gzip body cannot inflate past it.
- JSON nested deeper than :data:`MAX_JSON_DEPTH`, or holding a number longer than
  :data:`MAX_JSON_NUMBER_CHARS` characters, ``NaN``, ``Infinity`` or a float out of range, is
  :class:`~rails.errors.BankProtocolError`, like any other answer that does not parse. The
  number is refused before it is converted (a 5,000-digit integer costs nothing).
"""

from __future__ import annotations

import json
import math
from typing import Any

import aiohttp

from rails.errors import AnswerTooLarge, BankProtocolError

JSON_ANSWER_LIMIT = 1 << 20
"""1 MiB: the longest JSON answer to one API call (a consent, a payment, a lookup)."""
STATEMENT_ANSWER_LIMIT = 16 << 20
"""16 MiB: the longest answer that carries statements (a message listing with camt.053 files, an
account's transactions)."""
MAX_JSON_DEPTH = 32
"""Containers nested deeper than this are refused (the deepest real answer is about 6)."""
MAX_JSON_NUMBER_CHARS = 40
"""A JSON number longer than this is refused unconverted (2⁶³−1 has 19 digits)."""


async def read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The answer's body, or :class:`AnswerTooLarge` as soon as it is longer than `limit`."""
    declared = resp.content_length
    if declared is not None and declared > limit:
        raise AnswerTooLarge(f"the bank's answer declares {declared} bytes; at most {limit} "
                             "are read")
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise AnswerTooLarge(f"the bank's answer is longer than {limit} bytes; the rest was "
                                 "not read")
        chunks.append(chunk)
    return b"".join(chunks)


class _Refused(ValueError):
    """Raised from inside the JSON decoder (a ValueError, so the decoder passes it on)."""


def _number(text: str) -> str:
    if len(text) > MAX_JSON_NUMBER_CHARS:
        raise _Refused(f"a number of {len(text)} characters (at most {MAX_JSON_NUMBER_CHARS})")
    return text


def _int(text: str) -> int:
    return int(_number(text))


def _float(text: str) -> float:
    value = float(_number(text))
    if not math.isfinite(value):
        raise _Refused(f"{text} is out of range")
    return value


def _constant(text: str) -> Any:
    raise _Refused(f"{text} is not JSON")


def _check_depth(value: Any) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > MAX_JSON_DEPTH:
            raise _Refused(f"containers nested more than {MAX_JSON_DEPTH} deep")
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))


def parse_json(data: bytes, what: str) -> Any:
    """`data` as JSON, or :class:`BankProtocolError` naming `what` (``POST /payments``)."""
    try:
        value = json.loads(data, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except RecursionError:
        raise BankProtocolError(
            f"{what}: JSON nested more than {MAX_JSON_DEPTH} deep") from None
    except _Refused as exc:
        raise BankProtocolError(f"{what}: JSON refused: {exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BankProtocolError(f"{what}: the answer is not JSON ({exc})") from exc
    if isinstance(value, dict | list):
        try:
            _check_depth(value)
        except _Refused as exc:
            raise BankProtocolError(f"{what}: JSON refused: {exc}") from None
    return value
