"""Money: integers at a per-channel scale, ISO 4217 exponents, exact decimal parsing. No float
anywhere. The payout rounding rule of specs/0004 §4 (DESIGN §3) is in protocol.payout.

A channel amount is an ``int`` at the channel's *scale* (default 6: one unit is 10⁻⁶ EUR). A rail
moves *minor units* at the currency's ISO 4217 *exponent* (EUR 2, JPY 0, KWD 3). The scale is
never below the exponent, so a rail amount is always exactly representable at the channel scale.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import iso4217

from protocol.errors import ErrorCode, LocalProtocolError
from protocol.types import Amount, MinorUnits

DEFAULT_SCALE = 6
MAX_SCALE = 12
_DECIMAL = re.compile(r"([0-9]{1,20})(?:\.([0-9]{1,20}))?")  # ASCII digits only
_MONEY = re.compile(r"\s*(\S+)\s+([A-Za-z]{3})\s*")


def currency_exponent(code: str) -> int:
    """The ISO 4217 exponent of `code`; UNKNOWN_CURRENCY for anything else (including XAU)."""
    if not isinstance(code, str) or not re.fullmatch(r"[A-Z]{3}", code):
        raise LocalProtocolError(
            ErrorCode.UNKNOWN_CURRENCY, f"{code!r} is not an upper-case ISO 4217 code"
        )
    try:
        exponent = iso4217.Currency(code).exponent
    except (ValueError, KeyError):
        raise LocalProtocolError(
            ErrorCode.UNKNOWN_CURRENCY, f"{code} is not an ISO 4217 currency"
        ) from None
    if exponent is None:
        raise LocalProtocolError(
            ErrorCode.UNKNOWN_CURRENCY, f"{code} has no minor unit and cannot be paid over a rail"
        )
    return int(exponent)


def parse_decimal(text: str, scale: int) -> int:
    """Exactly ``text × 10^scale``; INVALID_AMOUNT if it has more decimals than `scale`.

    Accepts plain non-negative decimals only ("12", "12.5", "0.0123"); no sign, exponent,
    separators or whitespace inside. `scale` is checked first (0 to MAX_SCALE): it is an
    exponent, and ``10**scale`` of a caller's 10**7 would hold the process for seconds.
    """
    if not isinstance(scale, int) or isinstance(scale, bool) or not 0 <= scale <= MAX_SCALE:
        raise LocalProtocolError(
            ErrorCode.INVALID_TERMS, f"a scale of {scale!r} is not between 0 and {MAX_SCALE}"
        )
    match = _DECIMAL.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise LocalProtocolError(ErrorCode.INVALID_AMOUNT, f"{text!r} is not a plain decimal")
    whole, frac = match.group(1), match.group(2) or ""
    if len(frac) > scale and frac[scale:].strip("0"):
        raise LocalProtocolError(
            ErrorCode.INVALID_AMOUNT, f"{text!r} has more than {scale} decimal places"
        )
    frac = frac[:scale].ljust(scale, "0")
    result: int = int(whole) * 10**scale + (int(frac) if frac else 0)
    return result


def format_decimal(value: int, scale: int, *, min_places: int = 0) -> str:
    """``format_decimal(153750, 6) == "0.15375"``; trailing zeros trimmed to `min_places`."""
    sign = "-" if value < 0 else ""
    digits = str(abs(value)).rjust(scale + 1, "0")
    whole, frac = (digits[:-scale], digits[-scale:]) if scale else (digits, "")
    frac = frac.rstrip("0")
    if len(frac) < min_places:
        frac = frac.ljust(min_places, "0")
    return f"{sign}{whole}.{frac}" if frac else f"{sign}{whole}"


@dataclass(frozen=True, slots=True)
class Money:
    """An amount at a scale in a currency: what "5000.00 EUR" parses to."""

    amount: Amount
    currency: str
    scale: int = DEFAULT_SCALE

    def __str__(self) -> str:
        return format_money(self.amount, self.currency, self.scale)


def parse_money(text: str, scale: int = DEFAULT_SCALE) -> Money:
    """``parse_money("5000.00 EUR")`` → Money(5_000_000_000, "EUR", 6). Exact; no float."""
    match = _MONEY.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise LocalProtocolError(
            ErrorCode.INVALID_AMOUNT, f"{text!r} is not an amount like '5000.00 EUR'"
        )
    currency = match.group(2).upper()
    exponent = currency_exponent(currency)
    check_scale(scale, exponent)
    return Money(Amount(parse_decimal(match.group(1), scale)), currency, scale)


def check_scale(scale: int, exponent: int) -> None:
    """INVALID_TERMS unless ``exponent ≤ scale ≤ MAX_SCALE`` (before any ``10**scale``)."""
    if not exponent <= scale <= MAX_SCALE:
        raise LocalProtocolError(
            ErrorCode.INVALID_TERMS,
            f"amount scale {scale} must lie between the currency exponent {exponent} "
            f"and {MAX_SCALE}",
        )


def format_money(amount: int, currency: str, scale: int, *, precise: bool = False) -> str:
    """At the currency's exponent ("12.34 EUR"), or at full scale when `precise`.

    Without `precise` the amount is rounded *down* to the rail unit, as a payout would be.
    """
    exponent = currency_exponent(currency)
    if precise:
        return f"{format_decimal(amount, scale, min_places=exponent)} {currency}"
    minor = (
        to_minor_units(Amount(amount), scale, exponent)
        if amount >= 0
        else -to_minor_units(Amount(-amount), scale, exponent)
    )
    return f"{format_decimal(minor, exponent, min_places=exponent)} {currency}"


def to_minor_units(amount: Amount, scale: int, exponent: int) -> MinorUnits:
    """Round a channel amount *down* to whole rail units."""
    if amount < 0:
        raise LocalProtocolError(ErrorCode.INVALID_AMOUNT, "amounts are never negative")
    return MinorUnits(amount // 10 ** (scale - exponent))


def from_minor_units(minor: int, scale: int, exponent: int) -> Amount:
    return Amount(minor * 10 ** (scale - exponent))
