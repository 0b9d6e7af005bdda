"""NACHA records: field layouts, identifiers, and the CCD+ writer (one credit, one 05 addenda).

:func:`build_ccd_plus` renders records from integer cents and never shortens a value to make it
fit, except names, which are transliterated (:mod:`rails.transliterate`) and cut at the end;
a reference that does not fit the addenda is refused upstream, because a cut reference stops
matching. Every layout the package reads or writes is declared once in :data:`LAYOUTS`.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from datetime import date, datetime

from rails.transliterate import to_latin

RECORD_LEN = 94
BLOCKING_FACTOR = 10
MAX_AMOUNT_CENTS = 99_999_999_99
"""The entry amount field is 10 digits of cents."""
MAX_ADDENDA_INFO = 80
CREDIT_CODES = frozenset({"22", "32", "42", "52"})
DEBIT_CODES = frozenset({"27", "37", "47"})
_ID_DOMAIN = b"meterline/rails/nacha/v1\x00"


def aba_check_digit(routing8: str) -> int:
    """The ABA check digit: weights 3-7-1 over the first 8 digits, to a multiple of 10."""
    weights = (3, 7, 1, 3, 7, 1, 3, 7)
    total = sum(int(d) * w for d, w in zip(routing8, weights, strict=True))
    return (10 - total % 10) % 10


def aba_valid(routing: str) -> bool:
    return bool(re.fullmatch(r"\d{9}", routing)) and aba_check_digit(routing[:8]) == int(
        routing[8])


def derive_individual_id(idempotency_key: str) -> str:
    """15 characters from the key: ``ML`` + 13 base32 (65 bits), printable and upper case."""
    digest = hashlib.sha256(_ID_DOMAIN + idempotency_key.encode()).digest()
    return "ML" + base64.b32encode(digest).decode()[:13]


def derive_file_reference(idempotency_key: str) -> str:
    """8 characters for the file header's reference code: the file's own deterministic id."""
    digest = hashlib.sha256(_ID_DOMAIN + b"file\x00" + idempotency_key.encode()).digest()
    return base64.b32encode(digest).decode()[:8]


def ach_text(text: str) -> str:
    """A name as NACHA carries it: transliterated (``Müller & Söhne Straße`` → ``MULLER & SOHNE
    STRASSE``, specs/adr/0120), upper case, runs of spaces folded, left-justified."""
    return " ".join(to_latin(text).upper().split())


# -- layouts -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    start: int
    width: int
    numeric: bool


def layout(*spec: tuple[str, int, bool]) -> tuple[Field, ...]:
    out, start = [], 1
    for name, width, numeric in spec:
        out.append(Field(name, start, width, numeric))
        start += width
    assert start == RECORD_LEN + 1
    return tuple(out)


LAYOUTS: dict[str, tuple[str, tuple[Field, ...]]] = {
    "1": ("file header", layout(
        ("record type code", 1, True), ("priority code", 2, True),
        ("immediate destination", 10, False), ("immediate origin", 10, False),
        ("file creation date", 6, True), ("file creation time", 4, False),
        ("file ID modifier", 1, False), ("record size", 3, True), ("blocking factor", 2, True),
        ("format code", 1, True), ("immediate destination name", 23, False),
        ("immediate origin name", 23, False), ("reference code", 8, False))),
    "5": ("batch header", layout(
        ("record type code", 1, True), ("service class code", 3, True),
        ("company name", 16, False), ("company discretionary data", 20, False),
        ("company identification", 10, False), ("standard entry class code", 3, False),
        ("company entry description", 10, False), ("company descriptive date", 6, False),
        ("effective entry date", 6, True), ("settlement date", 3, False),
        ("originator status code", 1, False), ("originating DFI identification", 8, True),
        ("batch number", 7, True))),
    "6": ("entry detail", layout(
        ("record type code", 1, True), ("transaction code", 2, True),
        ("receiving DFI identification", 8, True), ("check digit", 1, True),
        ("DFI account number", 17, False), ("amount", 10, True),
        ("individual identification number", 15, False), ("individual name", 22, False),
        ("discretionary data", 2, False), ("addenda record indicator", 1, True),
        ("trace number", 15, True))),
    "7": ("addenda", layout(
        ("record type code", 1, True), ("addenda type code", 2, True),
        ("payment related information", 80, False), ("addenda sequence number", 4, True),
        ("entry detail sequence number", 7, True))),
    "8": ("batch control", layout(
        ("record type code", 1, True), ("service class code", 3, True),
        ("entry/addenda count", 6, True), ("entry hash", 10, True),
        ("total debit entry dollar amount", 12, True),
        ("total credit entry dollar amount", 12, True),
        ("company identification", 10, False), ("message authentication code", 19, False),
        ("reserved", 6, False), ("originating DFI identification", 8, True),
        ("batch number", 7, True))),
    "9": ("file control", layout(
        ("record type code", 1, True), ("batch count", 6, True), ("block count", 6, True),
        ("entry/addenda count", 8, True), ("entry hash", 10, True),
        ("total debit entry dollar amount", 12, True),
        ("total credit entry dollar amount", 12, True), ("reserved", 39, False))),
}
RETURN_ADDENDA = layout(
    ("record type code", 1, True), ("addenda type code", 2, True),
    ("return reason code", 3, False), ("original entry trace number", 15, True),
    ("date of death", 6, False), ("original receiving DFI identification", 8, True),
    ("addenda information", 44, False), ("trace number", 15, True))
"""Addenda type 99: the R code of a return entry."""
NOC_ADDENDA = layout(
    ("record type code", 1, True), ("addenda type code", 2, True),
    ("change code", 3, False), ("original entry trace number", 15, True),
    ("reserved", 6, False), ("original receiving DFI identification", 8, True),
    ("corrected data", 29, False), ("reserved 2", 15, False), ("trace number", 15, True))
"""Addenda type 98: the C code and corrected data of a notification of change (COR entry)."""


class Rec:
    """One 94-character record read by its layout."""

    def __init__(self, number: int, text: str, layout: tuple[Field, ...]) -> None:
        self.number = number
        self.text = text
        self.fields = {f.name: f for f in layout}

    def get(self, name: str) -> str:
        f = self.fields[name]
        return self.text[f.start - 1:f.start - 1 + f.width]

    def where(self, name: str) -> str:
        return f"line {self.number} col {self.fields[name].start}"

    def num(self, name: str) -> int | None:
        value = self.get(name).strip()
        return int(value) if value.isdigit() else None


# -- writing -------------------------------------------------------------------------------


def _a(value: str, width: int) -> str:
    if len(value) > width:
        raise ValueError(f"{value!r} does not fit {width} characters")
    return value.ljust(width)


def _name(text: str, width: int) -> str:
    """A name transliterated, cut to `width` at the end (never at the start)."""
    return ach_text(text)[:width].rstrip()


def _n(value: int, width: int) -> str:
    text = str(value)
    if value < 0 or len(text) > width:
        raise ValueError(f"{value} does not fit {width} digits")
    return text.rjust(width, "0")


@dataclass(frozen=True, slots=True)
class AchCredit:
    """One CCD+ credit entry with its 05 addenda."""

    individual_id: str
    amount_cents: int
    receiver_routing: str
    receiver_account: str
    receiver_name: str
    payment_info: str
    transaction_code: str = "22"


@dataclass(frozen=True, slots=True)
class Originator:
    """Who sends the file and to whom, as the ODFI assigned it (``[rails.nacha]``).

    None of these is our account number: the ODFI assigns the Immediate Origin (often
    ``␣`` + its routing number, or ``1`` + the company's EIN) and the Company Identification
    (``1`` + EIN as a rule) when it agrees to take the company's files. Checked by
    :func:`rails.nacha.checks.originator_findings`.
    """

    immediate_destination: str
    """10 characters, positions 4-13 of the file header: ``␣`` + the routing number of the
    bank the file is sent to (the ODFI or its processor)."""
    immediate_destination_name: str
    """That bank's name (23 characters at most)."""
    immediate_origin: str
    """10 characters, positions 14-23: ``␣TTTTAAAAC`` or 10 alphanumerics as assigned."""
    immediate_origin_name: str
    """The company's name in the file header (23 at most)."""
    company_id: str
    """10 characters, batch header positions 41-50: ``1`` + EIN, ``3`` + DUNS, ``9`` + a
    number the ODFI assigned."""
    company_name: str
    """The company's name in the batch header (16 at most), what the receiver sees."""


@dataclass(frozen=True, slots=True)
class AchFileSpec:
    """One file, one CCD batch (service class 220: credits only)."""

    odfi_routing: str
    originator: Originator
    created_at: datetime
    file_id_modifier: str
    effective_date: date
    entries: tuple[AchCredit, ...]
    reference_code: str = ""
    entry_description: str = "SETTLEMENT"


def build_ccd_plus(spec: AchFileSpec) -> bytes:
    """Render a NACHA CCD+ file: header, one batch, controls, padded to blocks of ten.

    Raises ValueError when a value does not fit its field (the caller checks first and turns
    that into findings; this is the last line, never a silent cut).
    """
    odfi8 = spec.odfi_routing[:8]
    who = spec.originator
    records = [
        "1" + "01" + _a(who.immediate_destination, 10) + _a(who.immediate_origin, 10)
        + spec.created_at.strftime("%y%m%d") + spec.created_at.strftime("%H%M")
        + _a(spec.file_id_modifier, 1) + "094" + "10" + "1"
        + _a(_name(who.immediate_destination_name, 23), 23)
        + _a(_name(who.immediate_origin_name, 23), 23) + _a(spec.reference_code, 8),
        "5" + "220" + _a(_name(who.company_name, 16), 16) + _a("", 20)
        + _a(who.company_id, 10) + "CCD" + _a(spec.entry_description, 10) + _a("", 6)
        + spec.effective_date.strftime("%y%m%d") + _a("", 3) + "1" + _n(int(odfi8), 8)
        + _n(1, 7),
    ]
    entry_hash = 0
    credit_total = 0
    for seq, e in enumerate(spec.entries, start=1):
        trace = odfi8 + _n(seq, 7)
        records.append(
            "6" + _a(e.transaction_code, 2) + _a(e.receiver_routing[:8], 8)
            + _a(e.receiver_routing[8:9], 1) + _a(e.receiver_account, 17)
            + _n(e.amount_cents, 10) + _a(e.individual_id, 15)
            + _a(_name(e.receiver_name, 22), 22) + _a("", 2) + "1" + trace)
        records.append("7" + "05" + _a(e.payment_info, MAX_ADDENDA_INFO) + _n(1, 4)
                       + trace[-7:])
        entry_hash += int(e.receiver_routing[:8])
        credit_total += e.amount_cents
    count = 2 * len(spec.entries)
    hash10 = entry_hash % 10**10
    records.append(
        "8" + "220" + _n(count, 6) + _n(hash10, 10) + _n(0, 12) + _n(credit_total, 12)
        + _a(who.company_id, 10) + _a("", 19) + _a("", 6) + _n(int(odfi8), 8) + _n(1, 7))
    blocks = -(-(len(records) + 1) // BLOCKING_FACTOR)
    records.append(
        "9" + _n(1, 6) + _n(blocks, 6) + _n(count, 8) + _n(hash10, 10) + _n(0, 12)
        + _n(credit_total, 12) + _a("", 39))
    while len(records) % BLOCKING_FACTOR:
        records.append("9" * RECORD_LEN)
    return ("\n".join(records) + "\n").encode("ascii")
