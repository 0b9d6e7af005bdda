"""The SEPA profile: character set, identifiers, IBAN/BIC and amounts, shared by writer and checker.

The pain.001 XSD accepts files a SEPA bank refuses (a USD amount with 3 decimals, CJK names, an
IBAN with wrong check digits), so these rules sit on top of it. The same functions serve the
writer (to build a file that passes) and the checker (to refuse one that does not), so the two
can never drift apart.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import re
from dataclasses import dataclass

import schwifty
from schwifty.exceptions import SchwiftyException

from rails.transliterate import to_latin

SEPA_CHARSET = re.compile(r"[A-Za-z0-9/\-?:().,'+ ]*")
"""EPC's basic Latin set: what every SEPA bank must take unchanged."""

MAX_ID = 35
MAX_NAME = 70
"""EPC caps names at 70 characters although the XSD allows 140."""
MAX_USTRD = 140
MAX_STRD_REF = 35

_ID_DOMAIN = b"meterline/rails/iso20022/v1\x00"

# -- where SEPA reaches (EPC409-09 "EPC list of SEPA scheme countries", v6.0, 2025) ----------

EEA_EURO = frozenset({
    "AT", "BE", "BG", "CY", "DE", "EE", "ES", "FI", "FR", "GR", "HR", "IE", "IT", "LT", "LU",
    "LV", "MT", "NL", "PT", "SI", "SK",
})
"""EEA countries whose currency is the euro (Bulgaria since 1 January 2026). French overseas
departments and Åland bank under FR and FI IBANs."""
EEA_NON_EURO = frozenset({"CZ", "DK", "HU", "PL", "RO", "SE", "IS", "LI", "NO"})
NON_EEA_SEPA = frozenset({
    "AD", "AL", "CH", "GB", "GG", "GI", "IM", "JE", "MC", "MD", "ME", "MK", "RS", "SM", "VA",
})
"""SEPA countries and territories outside the EEA: a transfer involving one needs the
payer's postal address (EPC SCT rulebook 2023 §4.2; EU 2023/1113 art. 4) and the payee's BIC.
Albania, Moldova, Montenegro, North Macedonia and Serbia joined the schemes in 2025-2026."""


class CountryClass(enum.StrEnum):
    EEA_EURO = "EEA euro"
    EEA_NON_EURO = "EEA non-euro"
    NON_EEA_SEPA = "non-EEA SEPA"
    NOT_SEPA = "not SEPA"


def country_class(iban: str) -> CountryClass:
    """Which part of SEPA an IBAN's country is in (by its first two letters)."""
    country = iban[:2].upper()
    if country in EEA_EURO:
        return CountryClass.EEA_EURO
    if country in EEA_NON_EURO:
        return CountryClass.EEA_NON_EURO
    if country in NON_EEA_SEPA:
        return CountryClass.NON_EEA_SEPA
    return CountryClass.NOT_SEPA


def payee_problem(iban: str, bic: str | None = None) -> str | None:
    """Why a SEPA credit transfer can never reach this account, or None: an invalid IBAN, a
    country outside SEPA (TR, BR…), a given BIC that cannot be the payee's bank
    (:func:`creditor_bic_problem`), or a non-EEA SEPA account whose BIC is neither given nor
    in schwifty's registry (the scheme requires it there)."""
    if (problem := iban_problem(iban)) is not None:
        return problem
    kind = country_class(iban)
    if kind is CountryClass.NOT_SEPA:
        return (f"{iban[:2]} is not a SEPA country: a SEPA credit transfer cannot reach "
                f"{iban}")
    if bic:
        return creditor_bic_problem(iban, bic)
    if kind is CountryClass.NON_EEA_SEPA and bic_for_iban(iban) is None:
        return (f"{iban} is in a non-EEA SEPA country, where the payee's BIC is required, and "
                "no BIC is known for it")
    return None


MAX_ADDRESS_PART = {"street_name": 70, "building_number": 16, "post_code": 16,
                    "town_name": 35}
"""pain.001.001.09 PostalAddress24: StrtNm 70, BldgNb 16, PstCd 16, TwnNm 35."""


@dataclass(frozen=True, slots=True)
class PostalAddress:
    """A structured postal address, town and country at least (the EPC rulebooks are phasing
    out unstructured address lines; structured ones are always accepted)."""

    street_name: str
    building_number: str
    post_code: str
    town_name: str
    country: str

    def problems(self) -> list[tuple[str, str]]:
        found = []
        for key, limit in MAX_ADDRESS_PART.items():
            written = transliterate(getattr(self, key), 10**6)
            if len(written) > limit:
                found.append((key, f"is {len(written)} characters; pain.001 allows {limit}"))
        if not transliterate(self.town_name):
            found.append(("town_name", "is required"))
        if not re.fullmatch(r"[A-Z]{2}", self.country):
            found.append(("country", f"{self.country!r} is not an ISO 3166 alpha-2 code"))
        return found

# ASCII that is outside the SEPA set, mapped to its nearest member.
_SEPA_ASCII = str.maketrans({"&": "+", "_": "-", "\"": "'", "`": "'"})


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
    """Reduce a free-text name to the SEPA set (``Müller`` → ``Muller``, ``Παπαδόπουλος`` →
    ``Papadopoulos``), cut to `limit`, by :func:`rails.transliterate.to_latin` (specs/adr/0120).

    Only names pass through here: a bank would substitute or reject other characters anyway,
    and a name is for people. References are never rewritten (see :func:`charset_problem`),
    because a reference that changes on the way stops matching.
    """
    latin = to_latin(text).translate(_SEPA_ASCII)
    out = "".join(ch if SEPA_CHARSET.fullmatch(ch) else " " for ch in latin)
    return " ".join(out.split())[:limit].rstrip()


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


BIC_COUNTRIES_OF_IBAN = {
    "GB": frozenset({"GB", "JE", "GG", "IM"}),
    "FR": frozenset({"FR", "GF", "GP", "MQ", "RE", "YT", "PM", "BL", "MF"}),
    "FI": frozenset({"FI", "AX"}),
}
"""Where an IBAN country's accounts are held under another ISO 3166 code, so their banks' BICs
carry it: Jersey, Guernsey and the Isle of Man bank under GB IBANs, the French overseas
departments and collectivities under FR, Åland under FI. Every other IBAN's bank has a BIC
of the IBAN's own country."""


def creditor_bic_problem(iban: str, bic: str) -> str | None:
    """Why `bic` cannot be the creditor agent of `iban`, or None (ADR 0230).

    Refused is what can be shown wrong: a malformed BIC (ISO 9362), a BIC of another country
    than the IBAN's (a SEPA bank routes by the BIC: the transfer would go to the wrong bank or
    be rejected with RC01), and a BIC whose institution (its first four letters) contradicts the
    one schwifty's bank registry gives for the IBAN's bank code (``DEUTDEFF`` for a Commerzbank
    IBAN; the country and branch may differ within a territory, ``NWBKJESH`` for
    ``NWBKGB2L``). A BIC the registry does not list, for an IBAN whose bank it does not know,
    is taken as given: the registries cover only some countries.
    """
    if (problem := bic_problem(bic)) is not None:
        return problem
    country = iban[:2].upper()
    bic_country = bic[4:6].upper()
    if bic_country not in BIC_COUNTRIES_OF_IBAN.get(country, frozenset({country})):
        return (f"BIC {bic} is of a bank in {bic_country}, but IBAN {iban} is held in "
                f"{country}: it is not the payee's bank")
    registered = bic_for_iban(iban)
    if registered is not None and registered[:4] != bic[:4].upper():
        return (f"BIC {bic} is not the payee's bank: the bank registry has {registered} for "
                f"IBAN {iban}'s bank code")
    return None
