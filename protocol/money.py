"""Money: integers at a per-channel scale, ISO 4217 exponents, exact decimal parsing. No float
anywhere. The payout rounding rule of specs/0004 §4 (DESIGN §3) is in protocol.payout.

A channel amount is an ``int`` at the channel's *scale* (default 6: one unit is 10⁻⁶ EUR). A rail
moves *minor units* at the currency's ISO 4217 *exponent* (EUR 2, JPY 0, KWD 3). The scale is
never below the exponent, so a rail amount is always exactly representable at the channel scale.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import iso4217

from protocol.errors import ErrorCode, LocalProtocolError
from protocol.types import MAX_AMOUNT, Amount, MinorUnits

DEFAULT_SCALE = 6
MAX_SCALE = 12
_DECIMAL = re.compile(r"([0-9]+)(?:\.([0-9]+))?", re.ASCII)  # ASCII digits only
_MONEY = re.compile(r"\s*(\S+)\s+([A-Za-z]{3})\s*")


_EXPONENTS: dict[str, int] = {}
"""The exponents looked up so far: only currencies that have one (at most ISO 4217's list), so a
peer's made-up codes never grow it. Every proof checks its capacity through here (issue 13)."""


def currency_exponent(code: str) -> int:
    """The ISO 4217 exponent of `code`; UNKNOWN_CURRENCY for anything else (including XAU)."""
    if isinstance(code, str):
        known = _EXPONENTS.get(code)
        if known is not None:
            return known
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
    _EXPONENTS[code] = int(exponent)
    return int(exponent)


MAX_TEXT = 64
"""The longest amount or quantity text read at all (a u63 at scale 12 has 32 characters)."""


def parse_decimal(text: str, scale: int) -> int:
    """Exactly ``text × 10^scale`` by the money grammar of specs/0001 §2.1, or INVALID_AMOUNT
    with a sentence that says what to write instead.

    The grammar: ASCII digits, optionally one point and at least one digit after it
    (``12``, ``12.5``, ``0.0123``); surrounding whitespace ignored; leading zeros and trailing
    zeros after the point carry no value (``012.50`` at scale 1 is 125). Refused: a sign, an
    exponent (``1e3``), a decimal comma or any grouping (``1,5``, ``1 000``, ``1_000``), a bare
    point (``.5``, ``5.``), more *significant* decimals than `scale`, and a value above
    2^63 − 1 at `scale` (no cumulative total may exceed it, 0002 §2.1). `scale` is checked first
    (0 to MAX_SCALE): it is an exponent, and ``10**scale`` of a caller's 10**7 would hold the
    process for seconds.
    """
    if not isinstance(scale, int) or isinstance(scale, bool) or not 0 <= scale <= MAX_SCALE:
        raise LocalProtocolError(
            ErrorCode.INVALID_TERMS, f"a scale of {scale!r} is not between 0 and {MAX_SCALE}"
        )
    if not isinstance(text, str):
        raise LocalProtocolError(ErrorCode.INVALID_AMOUNT, f"{text!r} is not a decimal text")
    stripped = text.strip()
    match = _DECIMAL.fullmatch(stripped) if len(stripped) <= MAX_TEXT else None
    if match is None:
        raise LocalProtocolError(ErrorCode.INVALID_AMOUNT, _not_a_decimal(stripped))
    whole, frac = match.group(1), match.group(2) or ""
    if frac[scale:].strip("0"):
        example = f"{whole}.{frac[:scale]}" if scale else whole
        places = len(frac.rstrip("0"))
        raise LocalProtocolError(
            ErrorCode.INVALID_AMOUNT,
            f"{stripped!r} has {places} decimal place{'s' if places != 1 else ''}, more than "
            f"the {scale} this amount carries: round it yourself (e.g. {example})",
        )
    frac = frac[:scale].ljust(scale, "0")
    result: int = int(whole) * 10**scale + (int(frac) if frac else 0)
    if result > MAX_AMOUNT:
        raise LocalProtocolError(
            ErrorCode.INVALID_AMOUNT,
            f"{stripped!r} is above the largest amount a channel can carry "
            f"({format_decimal(MAX_AMOUNT, scale)} at {scale} decimal places)",
        )
    return result


def _not_a_decimal(text: str) -> str:
    """The sentence for a text that is not a plain decimal: what is wrong, what to write."""
    if not text:
        return "an empty amount: write a number such as 12.50"
    if len(text) > MAX_TEXT:
        return f"an amount of {len(text)} characters: at most {MAX_TEXT} are read"
    if text[0] in "+-":
        rest = text[1:].strip()
        if text[0] == "-":
            return f"{text!r} is negative: amounts and quantities are never below 0"
        return f"{text!r} has a sign: write {rest} without the +"
    if re.fullmatch(r"[0-9]*\.?[0-9]*[eE][+-]?[0-9]+", text):
        return f"{text!r} uses an exponent: write the number out in full (1e3 is 1000)"
    if re.fullmatch(r"[0-9]+,[0-9]+", text):
        return (f"{text!r} uses a decimal comma: write {text.replace(',', '.')} "
                f"(a point, no thousands separators)")
    if re.fullmatch(r"[0-9]{1,3}([,' _][0-9]{3})+(\.[0-9]+)?", text):
        plain = re.sub(r"[,' _]", "", text)
        return f"{text!r} groups its digits: write {plain} (no thousands separators)"
    if re.fullmatch(r"\.[0-9]+", text):
        return f"{text!r} has no digit before the point: write 0{text}"
    if re.fullmatch(r"[0-9]+\.", text):
        return f"{text!r} ends in a point: write {text[:-1]}"
    return (f"{text!r} is not a plain decimal: write ASCII digits with at most one point, "
            f"such as 12.50")


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
    """``parse_money("5000.00 EUR")`` → Money(5_000_000_000, "EUR", 6). Exact; no float.

    The grammar of specs/0001 §2.1: a decimal (:func:`parse_decimal`), one or more spaces, an
    ISO 4217 code in any case (``eur`` is EUR). Up to `scale` decimals: a channel amount may
    be below the currency's minor unit (``0.001 EUR`` at scale 6 is 1000); what moves over a
    rail is parsed by :func:`parse_rail_money` instead.
    """
    number, currency = _split_money(text)
    check_scale(scale, currency_exponent(currency))
    return Money(Amount(parse_decimal(number, scale)), currency, scale)


def parse_rail_money(text: str) -> Money:
    """An amount that moves over a bank rail (a deposit, an opening balance): whole minor
    units, so at most the currency's exponent in decimals; the result is at that scale.

    ``parse_rail_money("3.205 EUR")`` is refused with the two amounts one could write.
    """
    number, currency = _split_money(text)
    exponent = currency_exponent(currency)
    match = _DECIMAL.fullmatch(number) if len(number) <= MAX_TEXT else None
    frac = (match.group(2) or "") if match else ""
    if match and frac[exponent:].strip("0"):
        kept = int(match.group(1) + frac[:exponent])
        down, up = (format_decimal(v, exponent, min_places=exponent) for v in (kept, kept + 1))
        raise LocalProtocolError(
            ErrorCode.INVALID_AMOUNT,
            f"{number} {currency} is not a whole number of {currency} minor units (a bank "
            f"moves {exponent} decimal places): write {down} {currency} or {up} {currency}",
        )
    return Money(Amount(parse_decimal(number, exponent)), currency, exponent)


def _split_money(text: str) -> tuple[str, str]:
    """("5000.00", "EUR") from "5000.00 EUR"; INVALID_AMOUNT (saying what to write) else."""
    match = _MONEY.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        stripped = text.strip() if isinstance(text, str) else repr(text)
        flipped = re.fullmatch(r"([A-Za-z]{3})\s+(\S+)", stripped)
        hint = (f"write the number first: {flipped.group(2)} {flipped.group(1).upper()}"
                if flipped else "write a number, a space and the currency, e.g. 5000.00 EUR")
        raise LocalProtocolError(
            ErrorCode.INVALID_AMOUNT, f"{stripped!r} is not an amount with its currency: {hint}"
        )
    return match.group(1), match.group(2).upper()


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


def allocate(values: Sequence[int], unit: int) -> list[int]:
    """Round each signed value (channel scale) to whole `unit`s so that the shares add up to
    the sum of `values` rounded towards zero, exactly: the largest-remainder rule (ADR 0152).

    Each value starts at its floor; the units the floors fall short of the total are given,
    one each, to the values with the largest remainders (ties to the earlier value). So every
    share is within one unit of its value, and a statement's rounded lines add up to the net
    the payout rule moves (0004 §4: the net payee is rounded down, towards zero).
    """
    if unit <= 0:
        raise ValueError("the unit is a positive number of channel units")
    total = sum(values)
    target = abs(total) // unit * (1 if total >= 0 else -1)
    shares = [v // unit for v in values]
    remainders = [v - s * unit for v, s in zip(values, shares, strict=True)]
    short = target - sum(shares)  # 0 ≤ short ≤ how many values have a remainder
    for i in sorted(range(len(values)), key=lambda i: (-remainders[i], i))[:short]:
        shares[i] += 1
    return shares
