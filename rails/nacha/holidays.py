"""Federal Reserve banking days: the days ACH entries settle on.

The ACH operators (FedACH, EPN) settle only on days the Federal Reserve Banks are open: Monday
to Friday except the eleven Federal Reserve holidays (federalreserve.gov, "Federal Reserve Bank
Holidays"; 12 CFR 7.2 and 5 U.S.C. 6103 name the same days):

- New Year's Day (1 January), Juneteenth National Independence Day (19 June, from 2022),
  Independence Day (4 July), Veterans Day (11 November), Christmas Day (25 December);
- Birthday of Martin Luther King, Jr. (third Monday of January), Washington's Birthday (third
  Monday of February), Memorial Day (last Monday of May), Labor Day (first Monday of
  September), Columbus Day (second Monday of October), Thanksgiving Day (fourth Thursday of
  November).

The Fed's observance rule is not the federal employees' one: a fixed-date holiday that falls on
a **Sunday** is observed on the Monday after (the Reserve Banks are closed that Monday), but
one that falls on a **Saturday** is not moved: the Reserve Banks are open on the Friday before.
So 2021-12-31 (the Friday before New Year's Day 2022, a Saturday) is a banking day and
2023-01-02 (the Monday after New Year's Day 2023, a Sunday) is not.

The calendar is computed, not a table, so it does not run out; an ODFI that closes on other
days still moves an effective date that falls on one (NACHA Rules, Article Eight,
"Settlement Date"), but no file of ours asks for a Fed holiday.
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import lru_cache

JUNETEENTH_FROM = 2022
"""The first year the Reserve Banks closed on 19 June (the holiday was enacted June 2021)."""


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    """The `n`-th `weekday` (Monday 0) of the month; n = -1 for the last."""
    if n > 0:
        first = date(year, month, 1)
        return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))
    last = (date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1))
    return last - timedelta(days=(last.weekday() - weekday) % 7)


@lru_cache(maxsize=64)
def fed_holidays(year: int) -> frozenset[date]:
    """The days of `year` the Federal Reserve Banks are closed for a holiday (as observed)."""
    fixed = [date(year, 1, 1), date(year, 7, 4), date(year, 11, 11), date(year, 12, 25)]
    if year >= JUNETEENTH_FROM:
        fixed.append(date(year, 6, 19))
    observed = {d + timedelta(days=1) if d.weekday() == 6 else d for d in fixed}
    observed -= {d for d in observed if d.weekday() == 5}  # Saturday: not moved, not closed
    observed |= {
        _nth_weekday(year, 1, 0, 3),   # Martin Luther King, Jr.
        _nth_weekday(year, 2, 0, 3),   # Washington's Birthday
        _nth_weekday(year, 5, 0, -1),  # Memorial Day
        _nth_weekday(year, 9, 0, 1),   # Labor Day
        _nth_weekday(year, 10, 0, 2),  # Columbus Day
        _nth_weekday(year, 11, 3, 4),  # Thanksgiving Day
    }
    return frozenset(observed)


def is_banking_day(day: date) -> bool:
    """Monday to Friday and not a Federal Reserve holiday."""
    return day.weekday() < 5 and day not in fed_holidays(day.year)


def next_banking_day(day: date) -> date:
    """The first banking day after `day`."""
    day += timedelta(days=1)
    while not is_banking_day(day):
        day += timedelta(days=1)
    return day


def banking_day_on_or_after(day: date) -> date:
    """`day` if it is a banking day, else the next one."""
    return day if is_banking_day(day) else next_banking_day(day)
