"""The one guarded JSON loader (rails/jsonsafe.py) that a bank's answers and the admin API's
bodies go through: each guard at its edge, on both sides of it, with the limits small so that
the edges are plain to see."""

from __future__ import annotations

import sys
import time
from typing import Any

import pytest

from rails.jsonsafe import UnsafeJson, load


def safe(data: bytes, *, depth: int = 4, chars: int = 10, duplicates: bool = True) -> Any:
    return load(data, max_depth=depth, max_number_chars=chars, reject_duplicates=duplicates)


def refused(data: bytes, *, depth: int = 4, chars: int = 10, duplicates: bool = True) -> str:
    with pytest.raises(UnsafeJson) as caught:
        safe(data, depth=depth, chars=chars, duplicates=duplicates)
    return str(caught.value)


@pytest.mark.parametrize(("data", "value"), [
    (b'{"a": [1, -2.5, "x", null, true, false]}', {"a": [1, -2.5, "x", None, True, False]}),
    (b"[[[[]]]]", [[[[]]]]),
    (b'{"a": {"b": {"c": {}}}}', {"a": {"b": {"c": {}}}}),
    (b'[[[["[[[[{{{{"]]]]', [[[["[[[[{{{{"]]]]),  # brackets in a string do not count
    (b'[[[["\\"[[[[\\\\", "{{{{"]]]]', [[[['"[[[[\\', "{{{{"]]]]),  # nor after escapes
    (b"9999999999", 9999999999),
    (b"-9999999999", -9999999999),  # the sign is not counted
    (b"1.23456789", 1.23456789),
    (b"-1.5e+300", -1.5e300),
    (b"1e-400", 0.0),  # underflow is a number, just a small one
    (b' \n"caf\xc3\xa9"\t', "café"),
])
def test_what_passes(data: bytes, value: Any) -> None:
    assert safe(data) == value


@pytest.mark.parametrize(("data", "says"), [
    (b"[[[[[]]]]]", "nests arrays or objects more than 4 deep"),
    (b'{"a": {"b": {"c": {"d": {}}}}}', "more than 4 deep"),
    (b'[[[[{"a": 1}]]]]', "more than 4 deep"),
    (b"99999999999", "has a number longer than 10 characters"),
    (b"-99999999999", "longer than 10 characters"),
    (b"1.234567891", "longer than 10 characters"),
    (b"1.5e+300000", "longer than 10 characters"),
    (b"[1, 2, 3, " + b"7" * 5000 + b"]", "longer than 10 characters"),
    (b"1e400", "has the number 1e400, out of range"),
    (b"[-1e400]", "has the number -1e400, out of range"),
    (b"NaN", "has NaN, which is not JSON"),
    (b'{"a": Infinity}', "has Infinity, which is not JSON"),
    (b"[-Infinity]", "has -Infinity, which is not JSON"),
    (b'{"a": 1, "a": 1}', "names the member 'a' twice"),
    (b'{"x": {"a": 1, "b": 2, "a": 3}}', "names the member 'a' twice"),
    (b'{"a": 1}\xff', "is not UTF-8"),
    (b'"\xc3\x28"', "is not UTF-8"),
    (b"\xef\xbb\xbf{}", "is not JSON"),  # UTF-8 with a byte order mark
    ("{}".encode("utf-16"), "is not UTF-8"),
    (b"", "is not JSON"),
    (b"{a: 1}", "is not JSON"),
    (b"[1, 2]]", "is not JSON"),
    (b'["unterminated [[[[[[', "is not JSON"),
])
def test_what_is_refused(data: bytes, says: str) -> None:
    assert says in refused(data)


def test_the_message_follows_a_subject() -> None:
    assert f"the body {refused(b'[[[[[]]]]]')}" == \
        "the body nests arrays or objects more than 4 deep"
    assert issubclass(UnsafeJson, ValueError)


def test_duplicates_when_allowed_keep_the_last() -> None:
    assert safe(b'{"a": 1, "b": {"c": 2, "c": 3}, "a": 4}', duplicates=False) == \
        {"a": 4, "b": {"c": 3}}


@pytest.mark.parametrize("opening", [b"[", b'{"a":'])
def test_fifty_thousand_deep_is_refused_not_a_recursion_error(opening: bytes) -> None:
    closing = b"]" if opening == b"[" else b"}"
    bomb = opening * 50_000 + b"1" + closing * 50_000
    assert "more than 32 deep" in refused(bomb, depth=32)
    # With a limit the interpreter cannot recurse to, the parser's RecursionError is caught.
    assert sys.getrecursionlimit() < 50_000
    assert "too deep to parse" in refused(bomb, depth=100_000)


def test_an_unterminated_string_of_escaped_quotes_is_scanned_once() -> None:
    # A string pattern that must end in a quote fails from each of these quotes in turn and is
    # quadratic (minutes for this text); the loader's pattern may end the text instead.
    text = b'"' + b'\\"' * 500_000
    started = time.monotonic()
    assert "is not JSON" in refused(text)
    assert time.monotonic() - started < 5
