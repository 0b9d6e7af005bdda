"""Admin request bodies, checked before a handler uses any of it (specs/admin-api.yaml).

Two layers, both answering 400 with a code from the document's error table:

* :func:`read_json` reads the bytes under guards: at most ``MAX_BODY_BYTES``, then
  :func:`rails.jsonsafe.load` with nesting at most ``MAX_DEPTH`` deep (counted before the parser
  recurses), numbers of at most ``MAX_INT_DIGITS`` characters besides a sign (for an integer,
  its digits; a 5,000-digit number is never turned into an int), no ``NaN``/``Infinity`` or
  float out of range, no member named twice, UTF-8; and it must be a JSON object.
* a :class:`Body` per request schema: every member typed (a JSON boolean is ``true`` or
  ``false``, never ``"false"``), ranged, length- and pattern-checked, unknown members refused.

Each :class:`Body` names the schema it implements, and ``tests/node/test_admin_strict.py``
checks that :meth:`Field.schema` of every member is exactly what the document says, so the
code and the document cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from node.errors import NodeError
from protocol.errors import ProtocolError
from protocol.messages import USAGE_TEXT
from protocol.money import parse_decimal, parse_money
from rails import jsonsafe

MAX_BODY_BYTES = 64 * 1024
"""The largest admin body read; the largest valid one (16 graduated tariff lines) is ~17 KiB."""
MAX_DEPTH = 8
"""Arrays and objects nested deeper than this are refused before parsing (valid bodies: 2)."""
MAX_INT_DIGITS = 30
"""A JSON number longer than this (its sign not counted: for an integer, its digits) is refused
unconverted (no valid integer has more than 7 digits; no member takes a float)."""


class BadInput(NodeError):
    """A request body that is not what the admin API takes (always 400)."""

    status = 400


async def read_json(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    """The body as a JSON object, read under the guards above; ``{}`` for no body when
    `optional`."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise _too_large()
    raw = bytearray()
    if request.can_read_body:
        while len(raw) <= MAX_BODY_BYTES:
            chunk = await request.content.read(MAX_BODY_BYTES + 1 - len(raw))
            if not chunk:
                break
            raw += chunk
    if len(raw) > MAX_BODY_BYTES:
        raise _too_large()
    if not raw.strip():
        if optional:
            return {}
        raise BadInput("the body is empty; this route takes a JSON object", code="BAD_JSON")
    return parse_json(bytes(raw))


def parse_json(raw: bytes) -> dict[str, Any]:
    """:func:`read_json` without the reading (the guards apply to `raw`)."""
    try:
        data = jsonsafe.load(raw, max_depth=MAX_DEPTH, max_number_chars=MAX_INT_DIGITS,
                             reject_duplicates=True)
    except jsonsafe.UnsafeJson as exc:
        raise BadInput(f"the body {exc}", code="BAD_JSON") from None
    if not isinstance(data, dict):
        raise BadInput("the body must be a JSON object", code="BAD_JSON")
    return data


def _too_large() -> BadInput:
    return BadInput(f"the body is larger than {MAX_BODY_BYTES} bytes", code="BODY_TOO_LARGE")


# -- fields -------------------------------------------------------------------------------------


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "…"


def _refuse(code: str, name: str, what: str, value: Any) -> BadInput:
    return BadInput(f"{name} must be {what}, not {_shown(value)}", code=code)


class Field:
    """One member of a request body: what it must be, and the error code when it is not."""

    def check(self, name: str, value: Any) -> Any:
        """`value` unchanged when it is valid; BadInput (with `code`) otherwise."""
        raise NotImplementedError

    def schema(self) -> dict[str, Any]:
        """This field as the JSON Schema the document gives it."""
        raise NotImplementedError


@dataclass(frozen=True)
class Bool(Field):
    code: str

    def check(self, name: str, value: Any) -> Any:
        if not isinstance(value, bool):
            raise _refuse(self.code, name, "a JSON boolean (true or false)", value)
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "boolean"}


@dataclass(frozen=True)
class Int(Field):
    code: str
    minimum: int
    maximum: int

    def check(self, name: str, value: Any) -> Any:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _refuse(self.code, name, "a JSON integer", value)
        if not self.minimum <= value <= self.maximum:
            raise _refuse(self.code, name, f"between {self.minimum:,} and {self.maximum:,}", value)
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}


@dataclass(frozen=True)
class Text(Field):
    code: str
    max_length: int
    pattern: str
    """Anchored (``^…$``) with no top-level alternation, so ``re.fullmatch`` of the inside
    means what JSON Schema's ``pattern`` means."""
    like: str
    """An example for the message ("a duration like 24h")."""
    explain: Callable[[str], str | None] | None = None
    """What to write instead, for a value the pattern refuses (the money grammar's sentence,
    specs/0001 §2.1); None: the `like` message."""
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (self.pattern.startswith("^") and self.pattern.endswith("$")):
            raise ValueError(f"{self.pattern!r} is not anchored")
        object.__setattr__(self, "_regex", re.compile(self.pattern[1:-1]))

    def check(self, name: str, value: Any) -> Any:
        if not isinstance(value, str):
            raise _refuse(self.code, name, f"a string ({self.like})", value)
        if len(value) > self.max_length:
            raise BadInput(f"{name} is longer than {self.max_length} characters",
                           code=self.code)
        if not self._regex.fullmatch(value):
            sentence = self.explain(value) if self.explain is not None else None
            if sentence:
                raise BadInput(f"{name}: {sentence}", code=self.code)
            raise _refuse(self.code, name, self.like, value)
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "maxLength": self.max_length, "pattern": self.pattern}


@dataclass(frozen=True)
class Nullable(Field):
    inner: Field

    def check(self, name: str, value: Any) -> Any:
        return None if value is None else self.inner.check(name, value)

    def schema(self) -> dict[str, Any]:
        return {"oneOf": [self.inner.schema(), {"type": "null"}]}


@dataclass(frozen=True)
class TextOrList(Field):
    """One string, or a list of them (a tariff: one line, or several)."""

    item: Text
    max_items: int

    def check(self, name: str, value: Any) -> Any:
        if isinstance(value, str):
            return self.item.check(name, value)
        if not isinstance(value, list):
            raise _refuse(self.item.code, name,
                          f"a string or a list of strings ({self.item.like})", value)
        if not 1 <= len(value) <= self.max_items:
            raise BadInput(f"{name} has 1 to {self.max_items} entries, not {len(value)}",
                           code=self.item.code)
        for i, entry in enumerate(value):
            self.item.check(f"{name}[{i}]", entry)
        return value

    def schema(self) -> dict[str, Any]:
        return {"oneOf": [self.item.schema(),
                          {"type": "array", "minItems": 1, "maxItems": self.max_items,
                           "items": self.item.schema()}]}


@dataclass(frozen=True)
class MapOf(Field):
    """An object whose member names and values are strings of given shapes (their codes)."""

    code: str
    keys: Text
    values: Text
    max_properties: int

    def check(self, name: str, value: Any) -> Any:
        if not isinstance(value, dict):
            raise _refuse(self.code, name,
                          f"an object like {{{self.keys.like}: {self.values.like}}}", value)
        if len(value) > self.max_properties:
            raise BadInput(f"{name} has more than {self.max_properties} members",
                           code=self.code)
        for key, entry in value.items():
            self.keys.check(f"a member name of {name}", key)
            self.values.check(f"{name}[{_shown(key)}]", entry)
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "object", "maxProperties": self.max_properties,
                "propertyNames": self.keys.schema(),
                "additionalProperties": self.values.schema()}


@dataclass(frozen=True)
class Body:
    """A request body: its members (all others refused) and which are required."""

    schema_name: str
    """The ``components/schemas`` entry of admin-api.yaml this implements ("" for a route that
    takes no body)."""
    fields: Mapping[str, Field]
    required: frozenset[str] = frozenset()

    def check(self, data: dict[str, Any]) -> dict[str, Any]:
        """`data` unchanged when every member is valid; BadInput naming the first that is not."""
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            shown = ", ".join(_shown(k) for k in unknown[:5])
            takes = ", ".join(self.fields) or "nothing"
            raise BadInput(f"unknown member(s) {shown} (this route takes {takes})",
                           code="UNKNOWN_FIELD")
        for name in sorted(self.required):
            if name not in data:
                raise BadInput(f"{name} is required", code="MISSING_FIELD")
        for name, value in data.items():
            self.fields[name].check(name, value)
        return data


# -- the admin API's bodies ---------------------------------------------------------------------

NAME = r"^[^\x00-\x1f\x7f]+$"
def _grammar(parse: Callable[[str], object]) -> Callable[[str], str | None]:
    """The money grammar's refusal of a text, or None when the grammar would take it."""
    def explain(text: str) -> str | None:
        try:
            parse(text)
        except ProtocolError as exc:
            return exc.message
        return None
    return explain


MONEY = Text("INVALID_AMOUNT", 45, r"^[0-9]{1,20}(\.[0-9]{1,20})? [A-Za-z]{3}$",
             "an amount like \"5000.00 EUR\"", _grammar(lambda t: parse_money(t, MAX_SCALE)))
TARIFF_LINE = Text("INVALID_TARIFF", 1000, r"^[a-z][a-z0-9-]{0,31}=\S+$",
                   "a tariff line like \"km=0.0123\"")
UNIT = Text("BAD_UNITS", 32, r"^[a-z][a-z0-9-]{0,31}$", "\"km\"")
QUANTITY = Text("BAD_UNITS", 41, r"^[0-9]{1,20}(\.[0-9]{1,20})?$", "\"12.5\"",
                _grammar(lambda t: parse_decimal(t, MAX_SCALE)))
MAX_TARIFF_LINES = 16
MAX_SCALE = 12
"""As protocol.money.MAX_SCALE (a test checks that they agree)."""

OPEN_CHANNEL = Body("OpenChannelRequest", {
    "peer": Text("BAD_PEER", 100, NAME, "a node id, a unique prefix of it, or a name"),
    "arbiter": Text("BAD_ARBITER", 100, NAME, "a node id, a unique prefix of it, or a name"),
    "deposit": MONEY,
    "peer_deposit": Nullable(MONEY),
    "tariff": TextOrList(TARIFF_LINE, MAX_TARIFF_LINES),
    "dispute_window": Text("BAD_DURATION", 13, r"^[0-9]{1,11}(ms|s|m|h|d)$",
                           "a duration like 24h, 90m or 30s"),
    "scale": Int("BAD_SCALE", 0, MAX_SCALE),
}, frozenset({"peer", "arbiter", "deposit", "tariff"}))

CLOSE = Body("CloseRequest", {"force": Bool("BAD_FORCE")})

PAY = Body("PayRequest", {
    "units": MapOf("BAD_UNITS", UNIT, QUANTITY, MAX_TARIFF_LINES),
    "amount": MONEY,
    "reference": Text("BAD_REFERENCE", 64,
                      f"^{USAGE_TEXT}$",
                      "at most 64 characters of text, without control or invisible characters"),
    "repeat": Int("BAD_REPEAT", 1, 1_000_000),
    "wait": Bool("BAD_WAIT"),
})

ACCOUNT = Body("AccountRequest", {
    "scheme": Text("BAD_ACCOUNT", 40, r"^[A-Za-z0-9.]+$", "a rail scheme like IBAN"),
    "identification": Text("BAD_ACCOUNT", 64, r"^[A-Za-z0-9:]+$", "an IBAN or account number"),
    "name": Text("BAD_ACCOUNT", 70, r"^[ -~]+$", "the account holder's name"),
})

NO_BODY = Body("", {})
"""Routes that take no body (accept, reject): an empty object is allowed, nothing else."""

AUTHORISE_CONSENT = Body("AuthoriseConsentRequest", {
    "redirect": Text("BAD_REDIRECT", 4096, r"^[\x21-\x7e]+$",
                     "the URL the bank sent the account holder back to"),
}, frozenset({"redirect"}))

REQUEST_BODIES = (OPEN_CHANNEL, CLOSE, PAY, AUTHORISE_CONSENT, ACCOUNT)

CHANNEL_REF = re.compile(r"[0-9A-Fa-f]{1,64}")
"""The document's ``ChannelId`` path parameter."""


def channel_ref(text: str) -> str:
    """A channel id or prefix from a path, as the document's ``ChannelId`` parameter allows."""
    if not CHANNEL_REF.fullmatch(text):
        raise BadInput(f"{_shown(text)} is not a channel id or prefix (1 to 64 hex digits)",
                       code="BAD_CHANNEL_ID")
    return text


__all__ = [
    "AUTHORISE_CONSENT",
    "CLOSE",
    "NO_BODY",
    "OPEN_CHANNEL",
    "PAY",
    "REQUEST_BODIES",
    "BadInput",
    "Body",
    "channel_ref",
    "parse_json",
    "read_json",
]
