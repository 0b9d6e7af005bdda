"""Tariffs: what a cumulative usage costs (specs/0003-channel.md §5).

A tariff is one or more *lines*, one per metered unit (``km``, ``container-hour``, ``message``).
Each line has a quantity scale (12.5 km at scale 3 is the integer 12500) and one or more graduated
*tiers*: ``price`` (per whole unit, at the channel's amount scale) applies to the part of the
cumulative quantity up to ``up_to`` (exclusive of earlier tiers; the last tier has no bound).

The amount owed is a pure function of the cumulative quantities::

    amount(line, q) = floor( Σ_tiers price_i × portion_i(q) / 10^quantity_scale )
    amount(tariff, qs) = Σ_lines amount(line, q_line)

Because it is computed on cumulative totals, rounding never drifts: the 10,000th kilometre costs
exactly what 10,000 km cost minus what 9,999 km cost.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from protocol.errors import ErrorCode, LocalProtocolError
from protocol.money import parse_decimal
from protocol.records import ListOf, Nested, Opt, Record, Text, UInt
from protocol.types import Amount, Quantity

MAX_LINES = 16
MAX_TIERS = 8
MAX_QUANTITY_SCALE = 9
DEFAULT_QUANTITY_SCALE = 3
UNIT_PATTERN = r"[a-z][a-z0-9-]{0,31}"
RESERVED_UNITS = frozenset({"amount"})
"""Statements book plain-amount payments under this name; no tariff line may use it."""


@dataclass(frozen=True, slots=True)
class TariffTier(Record):
    up_to: Quantity | None
    """Cumulative quantity (at the line's quantity scale) where this tier ends; None: no end."""
    price: Amount
    """Price of one whole unit at the channel's amount scale."""

    FIELDS = (("up_to", Opt(UInt())), ("price", UInt()))


@dataclass(frozen=True, slots=True)
class TariffLine(Record):
    unit: str
    quantity_scale: int
    tiers: tuple[TariffTier, ...]

    FIELDS = (
        ("unit", Text(32, UNIT_PATTERN, min_len=1)),
        ("quantity_scale", UInt(8)),
        ("tiers", ListOf(Nested(TariffTier), 1, MAX_TIERS)),
    )

    def amount(self, quantity: int) -> Amount:
        """What `quantity` (cumulative, at this line's quantity scale) costs."""
        total = 0
        lower = 0
        for tier in self.tiers:
            upper = quantity if tier.up_to is None else min(quantity, tier.up_to)
            if upper > lower:
                total += tier.price * (upper - lower)
            if tier.up_to is None or quantity <= tier.up_to:
                break
            lower = tier.up_to
        return Amount(total // 10**self.quantity_scale)


def check_tariff(lines: Sequence[TariffLine]) -> None:
    """Raise INVALID_TARIFF unless the lines form a usable tariff."""
    if not 1 <= len(lines) <= MAX_LINES:
        raise LocalProtocolError(ErrorCode.INVALID_TARIFF, f"a tariff has 1 to {MAX_LINES} lines")
    units = [line.unit for line in lines]
    if len(set(units)) != len(units):
        raise LocalProtocolError(ErrorCode.INVALID_TARIFF, "a unit appears twice in the tariff")
    for line in lines:
        if not re.fullmatch(UNIT_PATTERN, line.unit):
            raise LocalProtocolError(ErrorCode.INVALID_TARIFF, f"bad unit name {line.unit!r}")
        if line.unit in RESERVED_UNITS:
            raise LocalProtocolError(
                ErrorCode.INVALID_TARIFF, f"{line.unit!r} is reserved for plain-amount payments"
            )
        if not 0 <= line.quantity_scale <= MAX_QUANTITY_SCALE:
            raise LocalProtocolError(
                ErrorCode.INVALID_TARIFF, f"{line.unit}: quantity scale above {MAX_QUANTITY_SCALE}"
            )
        if not line.tiers or len(line.tiers) > MAX_TIERS:
            raise LocalProtocolError(ErrorCode.INVALID_TARIFF, f"{line.unit}: 1 to 8 tiers")
        previous = 0
        for i, tier in enumerate(line.tiers):
            last = i == len(line.tiers) - 1
            if (tier.up_to is None) != last:
                raise LocalProtocolError(
                    ErrorCode.INVALID_TARIFF,
                    f"{line.unit}: only the last tier is unbounded, and it must be",
                )
            if tier.up_to is not None and tier.up_to <= previous:
                raise LocalProtocolError(
                    ErrorCode.INVALID_TARIFF, f"{line.unit}: tier bounds must rise"
                )
            previous = tier.up_to or previous


def tariff_amount(lines: Sequence[TariffLine], quantities: Sequence[int]) -> Amount:
    """The amount owed for cumulative `quantities` (one per line, in tariff order)."""
    if len(quantities) != len(lines):
        raise LocalProtocolError(
            ErrorCode.TARIFF_MISMATCH,
            f"{len(quantities)} quantities for a tariff of {len(lines)} lines",
        )
    return Amount(sum(line.amount(q) for line, q in zip(lines, quantities, strict=True)))


def parse_tariff_line(
    text: str, *, scale: int, quantity_scale: int = DEFAULT_QUANTITY_SCALE
) -> TariffLine:
    """Parse ``UNIT=PRICE`` or graduated ``UNIT=PRICE:UPTO,PRICE:UPTO,PRICE``.

    ``km=0.0123`` — 0.0123 per km; ``km=0.015:1000,0.0123`` — the first 1000 km at 0.015, the
    rest at 0.0123. Prices are decimals in the channel currency; bounds are in whole units.
    """
    unit, sep, rest = text.partition("=")
    unit = unit.strip()
    if not sep or not re.fullmatch(UNIT_PATTERN, unit):
        raise LocalProtocolError(
            ErrorCode.INVALID_TARIFF, f"{text!r} is not like 'km=0.0123' (unit=price)"
        )
    tiers: list[TariffTier] = []
    parts = rest.split(",")
    for i, part in enumerate(parts):
        price_text, colon, bound_text = part.partition(":")
        if not colon and i + 1 < len(parts) and re.fullmatch(r"\s*[0-9]+\s*", parts[i + 1]):
            raise LocalProtocolError(
                ErrorCode.INVALID_TARIFF,
                f"{text!r}: a comma separates tiers (PRICE:UPTO,PRICE), so "
                f"{part.strip()},{parts[i + 1].strip()} is read as two prices; a decimal "
                f"takes a point: write {part.strip()}.{parts[i + 1].strip()}",
            )
        try:
            price = Amount(parse_decimal(price_text, scale))
            bound = Quantity(parse_decimal(bound_text, quantity_scale)) if colon else None
        except LocalProtocolError as exc:
            raise LocalProtocolError(ErrorCode.INVALID_TARIFF, f"{text!r}: {exc.message}") from None
        tiers.append(TariffTier(bound, price))
    line = TariffLine(unit, quantity_scale, tuple(tiers))
    check_tariff([line])
    return line


def parse_quantity(text: str, line: TariffLine) -> Quantity:
    """``parse_quantity("12.5", km_line)`` → 12500 at quantity scale 3."""
    try:
        return Quantity(parse_decimal(text, line.quantity_scale))
    except LocalProtocolError as exc:
        raise LocalProtocolError(ErrorCode.INVALID_AMOUNT, f"{line.unit}: {exc.message}") from None
