"""JSON from someone we do not trust, parsed under guards: one loader for a bank's answers and
the admin API's bodies.

:func:`load` refuses, with :class:`UnsafeJson`, a text that

- is not UTF-8 (no other encoding, no byte order mark: RFC 8259 §8.1),
- nests arrays and objects more than `max_depth` deep, counted in one linear pass over the text
  before the parser (which recurses) sees it, so a 50,000-deep array costs nothing and never
  reaches the interpreter's recursion limit,
- holds a number longer than `max_number_chars` characters, its leading minus sign not counted
  (for an integer: its digits), refused before it is converted (a 5,000-digit integer costs
  nothing),
- holds ``NaN``, ``Infinity`` or ``-Infinity`` (not JSON), or a float out of range (``1e400``),
- names a member of one object twice, when `reject_duplicates` (otherwise the last one wins,
  as :func:`json.loads` has it),
- or is not JSON at all.

What the text may be (an object, a list, …) is the caller's to check, and so is its size: the
loader takes the bytes it is given. Each caller keeps its own limits and turns
:class:`UnsafeJson` into its own typed error.
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

__all__ = ["UnsafeJson", "load"]


class UnsafeJson(ValueError):
    """A text :func:`load` refuses. The message says what is wrong without a subject, ready to
    follow one: ``f"the body {exc}"`` reads "the body is not UTF-8 (…)"."""


_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
"""A JSON string, or an unterminated one up to the end of the text (so that every quote starts
a match and the scan stays linear on any input)."""
_NOT_BRACKET = re.compile(r"[^][{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def load(data: bytes, *, max_depth: int, max_number_chars: int,
         reject_duplicates: bool) -> Any:
    """`data` as JSON, or :class:`UnsafeJson` saying why not (the guards above)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnsafeJson(f"is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if _deepest(text) > max_depth:
        raise UnsafeJson(f"nests arrays or objects more than {max_depth} deep")

    def number(digits: str) -> str:
        if len(digits.removeprefix("-")) > max_number_chars:
            raise UnsafeJson(f"has a number longer than {max_number_chars} characters (its sign "
                              "not counted)")
        return digits

    def parse_float(digits: str) -> float:
        value = float(number(digits))
        if not math.isfinite(value):
            raise UnsafeJson(f"has the number {digits}, out of range")
        return value

    try:
        return json.loads(text, parse_int=lambda digits: int(number(digits)),
                          parse_float=parse_float, parse_constant=_constant,
                          object_pairs_hook=_unique_members if reject_duplicates else None)
    except RecursionError:
        # Not reached while max_depth is below the interpreter's recursion limit; a backstop.
        raise UnsafeJson("nests arrays or objects too deep to parse") from None
    except json.JSONDecodeError as exc:
        raise UnsafeJson(f"is not JSON ({exc})") from None


def _deepest(text: str) -> int:
    """How deep arrays and objects nest in `text`: brackets inside strings do not count."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _constant(name: str) -> Any:
    raise UnsafeJson(f"has {name}, which is not JSON")


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise UnsafeJson(f"names the member {key[:40]!r} twice")
        out[key] = value
    return out
