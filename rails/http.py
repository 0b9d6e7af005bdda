"""Reading a bank's HTTP answers: never more bytes than stated, never JSON that can blow up.

A bank (or anything on the path to it) decides how long its answer is and what is in it. Every
rail reads an answer through :func:`read_bounded` and parses JSON through :func:`parse_json`:

- at most `limit` bytes are read (:data:`JSON_ANSWER_LIMIT` for an API answer,
  :data:`STATEMENT_ANSWER_LIMIT` for a listing that carries statement files or a statement's
  transactions). A longer answer, declared or not, is :class:`~rails.errors.AnswerTooLarge`
  (transient: the rail retries, then raises :class:`~rails.errors.BankUnavailable`); the rest is
  not read, and the connection is dropped rather than drained. The limit counts the bytes after
  ``Content-Encoding`` is undone, so a small gzip body cannot inflate past it.
- JSON that is not UTF-8, nested deeper than :data:`MAX_JSON_DEPTH`, or holding a number
  longer than :data:`MAX_JSON_NUMBER_CHARS` characters, ``NaN``, ``Infinity`` or a float out
  of range, is :class:`~rails.errors.BankProtocolError`, like any other answer that does not
  parse (the guards are :func:`rails.jsonsafe.load`'s). The depth is counted before the parser
  recurses and a number is refused before it is converted, so a 50,000-deep array or a
  5,000-digit integer costs nothing. A member named twice is not refused: the last one counts.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from rails import jsonsafe
from rails.errors import AnswerTooLarge, BankProtocolError

JSON_ANSWER_LIMIT = 1 << 20
"""1 MiB: the longest JSON answer to one API call (a consent, a payment, a lookup)."""
STATEMENT_ANSWER_LIMIT = 16 << 20
"""16 MiB: the longest answer that carries statements (a message listing with camt.053 files, an
account's transactions)."""
MAX_JSON_DEPTH = 32
"""Containers nested deeper than this are refused (the deepest real answer is about 6)."""
MAX_JSON_NUMBER_CHARS = 40
"""A JSON number longer than this (its sign not counted) is refused unconverted (2⁶³−1 has 19
digits)."""


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


def parse_json(data: bytes, what: str) -> Any:
    """`data` as JSON, or :class:`BankProtocolError` naming `what` (``POST /payments``)."""
    try:
        return jsonsafe.load(data, max_depth=MAX_JSON_DEPTH,
                             max_number_chars=MAX_JSON_NUMBER_CHARS, reject_duplicates=False)
    except jsonsafe.UnsafeJson as exc:
        raise BankProtocolError(f"{what}: JSON refused: the answer {exc}") from None
