"""The SEPA profile: character set, identifiers, IBAN/BIC and amounts, shared by writer and checker.

The pain.001 XSD accepts files a SEPA bank refuses (a USD amount with 3 decimals, CJK names, an
IBAN with wrong check digits), so these rules sit on top of it. The same functions serve the
writer (to build a file that passes) and the checker (to refuse one that does not), so the two
can never drift apart.
"""

from __future__ import annotations

import base64
import hashlib
import re
import unicodedata

import schwifty
from schwifty.exceptions import SchwiftyException

SEPA_CHARSET = re.compile(r"[A-Za-z0-9/\-?:().,'+ ]*")
"""EPC's basic Latin set: what every SEPA bank must take unchanged."""

MAX_ID = 35
MAX_NAME = 70
"""EPC caps names at 70 characters although the XSD allows 140."""
MAX_USTRD = 140
MAX_STRD_REF = 35

_ID_DOMAIN = b"meterline/rails/iso20022/v1\x00"

# Letters NFKD does not split into a base letter and a mark.
_TRANSLIT = str.maketrans({
    "ß": "ss", "Æ": "AE", "æ": "ae", "Ø": "O", "ø": "o", "Œ": "OE", "œ": "oe",
    "Ł": "L", "ł": "l", "Đ": "D", "đ": "d", "Þ": "Th", "þ": "th", "&": "+",
    "_": "-", "\"": "'", "’": "'", "‘": "'", "–": "-", "—": "-",
})


def derive_id(idempotency_key: str, kind: str) -> str:
    """A deterministic ISO identifier for `kind` ("M" MsgId, "P" PmtInfId, "E" EndToEndId).

    SHA-256 of a domain tag and the key, base32 (A-Z, 2-7: inside the SEPA set), cut to 26
    characters: 130 bits, so two keys never share an id, and ``ML-E-`` + 26 = 31 characters,
    which fits UK Faster Payments' 31 as well as ISO's 35. The same key always gives the same
    ids, which is what lets a bank's duplicate check catch a retried file.
    """
    digest = hashlib.sha256(_ID_DOMAIN + kind.encode() + b"\x00" + idempotency_key.encode())
    return f"ML-{kind}-" + base64.b32encode(digest.digest()).decode()[:26]


def transliterate(text: str, limit: int = MAX_NAME) -> str:
    """Reduce a free-text name to the SEPA set (``Müller`` → ``Muller``), cut to `limit`.

    Only names pass through here: a bank would substitute or reject other characters anyway,
    and a name is for people. References are never rewritten (see :func:`charset_problem`),
    because a reference that changes on the way stops matching.
    """
    text = unicodedata.normalize("NFKD", text.translate(_TRANSLIT))
    out = []
    for ch in text:
        if unicodedata.combining(ch):
            continue
        out.append(ch if SEPA_CHARSET.fullmatch(ch) else " ")
    collapsed = " ".join("".join(out).split())
    return collapsed[:limit].rstrip()


def charset_problem(text: str) -> str | None:
    """Why `text` is not SEPA-safe, or None."""
    bad = sorted({ch for ch in text if not SEPA_CHARSET.fullmatch(ch)})
    if not bad:
        return None
    shown = ", ".join(repr(ch) for ch in bad[:5])
    return f"characters outside the SEPA set: {shown}"


def iban_problem(value: str) -> str | None:
    """Why `value` is not a valid IBAN (mod-97, country length, BBAN format), or None."""
    try:
        schwifty.IBAN(value, validate_bban=True)
    except SchwiftyException as exc:
        return f"{value} is not a valid IBAN: {exc}"
    except ValueError as exc:  # schwifty raises plain ValueError subclasses too
        return f"{value} is not a valid IBAN: {exc}"
    if value != value.strip().replace(" ", "").upper():
        return f"{value} must be written without spaces, in capitals"
    return None


def bic_problem(value: str) -> str | None:
    """Why `value` is not a well-formed BIC (ISO 9362), or None."""
    try:
        schwifty.BIC(value)
    except (SchwiftyException, ValueError) as exc:
        return f"{value} is not a valid BIC: {exc}"
    return None


def bic_for_iban(value: str) -> str | None:
    """The BIC schwifty's bank registry has for an IBAN, if any (DE89… → COBADEFFXXX)."""
    try:
        bic = schwifty.IBAN(value).bic
    except (SchwiftyException, ValueError):
        return None
    return str(bic) if bic is not None else None
