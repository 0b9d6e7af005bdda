"""Minor units and decimal strings at a currency's ISO 4217 exponent. No float anywhere."""

from __future__ import annotations

import re

import iso4217

_DECIMAL = re.compile(r"^(\d{1,18})(?:\.(\d{1,18}))?$")


def currency_exponent(code: str) -> int:
    """ISO 4217 exponent (EUR 2, JPY 0, KWD 3); ValueError for an unknown code."""
    if not re.fullmatch(r"[A-Z]{3}", code or ""):
        raise ValueError(f"currency code {code!r} is not three upper-case letters")
    try:
        exponent = iso4217.Currency(code).exponent
    except (ValueError, KeyError) as exc:
        raise ValueError(f"unknown currency {code!r}") from exc
    if exponent is None:
        raise ValueError(f"currency {code!r} has no minor unit (not a payment currency)")
    return int(exponent)


def format_minor(amount_minor: int, currency: str) -> str:
    """1234 EUR → "12.34"; 5 JPY → "5"; what ISO 20022 and OB put on the wire."""
    exponent = currency_exponent(currency)
    sign = "-" if amount_minor < 0 else ""
    digits = str(abs(amount_minor)).rjust(exponent + 1, "0")
    if exponent == 0:
        return sign + digits
    return f"{sign}{digits[:-exponent]}.{digits[-exponent:]}"


def parse_minor(text: str, currency: str) -> int:
    """ "12.34" EUR → 1234. More decimals than the exponent, or junk, is a ValueError."""
    exponent = currency_exponent(currency)
    match = _DECIMAL.fullmatch(text.strip())
    if not match:
        raise ValueError(f"amount {text!r} is not a plain decimal")
    whole, frac = match.group(1), match.group(2) or ""
    if len(frac) > exponent:
        significant = frac[exponent:]
        if significant.strip("0"):
            raise ValueError(f"amount {text!r} has more than {exponent} decimals for {currency}")
        frac = frac[:exponent]
    return int(int(whole) * 10**exponent + int(frac.ljust(exponent, "0") or "0"))
