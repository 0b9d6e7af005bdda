"""Federal Reserve banking days and the effective entry dates the ACH rail writes on them."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from rails.nacha import effective_date
from rails.nacha.checks import effective_day_problem
from rails.nacha.holidays import fed_holidays, is_banking_day, next_banking_day
from rails.port import Account, AccountScheme, PaymentInstruction

# The Federal Reserve's published holiday schedule (federalreserve.gov), as observed.
FED_2026 = {
    date(2026, 1, 1), date(2026, 1, 19), date(2026, 2, 16), date(2026, 5, 25),
    date(2026, 6, 19), date(2026, 9, 7), date(2026, 10, 12), date(2026, 11, 11),
    date(2026, 11, 26), date(2026, 12, 25),
    # 4 July 2026 is a Saturday: not observed (the Reserve Banks open on Friday 3 July)
}
FED_2027 = {
    date(2027, 1, 1), date(2027, 1, 18), date(2027, 2, 15), date(2027, 5, 31),
    # 19 June 2027 is a Saturday: not observed
    date(2027, 7, 5),  # 4 July is a Sunday: observed Monday 5 July
    date(2027, 9, 6), date(2027, 10, 11), date(2027, 11, 11), date(2027, 11, 25),
    # 25 December 2027 is a Saturday: not observed (Friday 24 December is a banking day)
}


def test_the_calendar_is_the_feds_published_one() -> None:
    assert fed_holidays(2026) == FED_2026
    assert fed_holidays(2027) == FED_2027
    assert date(2023, 1, 2) in fed_holidays(2023)  # New Year's Day 2023 was a Sunday
    assert date(2021, 12, 31) not in fed_holidays(2021)  # …2022's a Saturday: Friday open
    assert date(2021, 6, 18) not in fed_holidays(2021)  # Juneteenth closes only from 2022
    assert is_banking_day(date(2026, 7, 3))
    assert not is_banking_day(date(2026, 7, 4))


def test_the_next_banking_day_skips_weekends_and_holidays() -> None:
    assert next_banking_day(date(2026, 10, 1)) == date(2026, 10, 2)  # Thursday → Friday
    assert next_banking_day(date(2026, 10, 9)) == date(2026, 10, 13)  # Fri, over Columbus Day
    assert next_banking_day(date(2026, 11, 25)) == date(2026, 11, 27)  # over Thanksgiving
    assert next_banking_day(date(2026, 12, 24)) == date(2026, 12, 28)  # Christmas, weekend
    assert next_banking_day(date(2026, 12, 31)) == date(2027, 1, 4)  # New Year, weekend


def _pay(amount_minor: int, execution: date | None = None) -> PaymentInstruction:
    return PaymentInstruction(
        idempotency_key="chan-1/payout/0", amount_minor=amount_minor, currency="USD",
        debtor=Account("ACME", AccountScheme.US_ABA, "0000000001", "999999992"),
        creditor=Account("Carrier LLC", AccountScheme.US_ABA, "0000000202", "999999992"),
        reference="meterline payout", execution_date=execution)


@pytest.mark.parametrize(("created", "amount", "requested", "expected"), [
    (datetime(2026, 10, 1, 9, tzinfo=UTC), 100, None, date(2026, 10, 1)),  # same day
    (datetime(2026, 10, 12, 9, tzinfo=UTC), 100, None, date(2026, 10, 13)),  # Columbus Day
    (datetime(2026, 10, 10, 9, tzinfo=UTC), 100, None, date(2026, 10, 13)),  # Saturday
    (datetime(2026, 10, 9, 9, tzinfo=UTC), 1_000_000_01, None, date(2026, 10, 13)),  # over
    (datetime(2026, 11, 25, 9, tzinfo=UTC), 1_000_000_01, None, date(2026, 11, 27)),
    (datetime(2026, 10, 1, 9, tzinfo=UTC), 100, date(2026, 11, 26), date(2026, 11, 27)),
    (datetime(2026, 10, 1, 9, tzinfo=UTC), 1_000_000_00, None, date(2026, 10, 1)),  # at limit
])
def test_effective_dates_fall_on_banking_days_and_respect_the_same_day_limit(
    created: datetime, amount: int, requested: date | None, expected: date
) -> None:
    assert effective_date(_pay(amount, requested), created) == expected


def test_the_checker_warns_of_a_non_banking_effective_date_and_refuses_a_non_date() -> None:
    assert effective_day_problem("261001") is None
    severity, why = effective_day_problem("261012") or ("", "")
    assert severity == "warning"
    assert "Federal Reserve holiday" in why
    assert "2026-10-13" in why
    severity, why = effective_day_problem("261010") or ("", "")
    assert severity == "warning"
    assert "Saturday or Sunday" in why
    assert (effective_day_problem("261399") or ("",))[0] == "error"
