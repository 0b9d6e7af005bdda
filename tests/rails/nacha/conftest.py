"""Fixtures for the ACH rail: a real mock-bank whose accounts bank in NACHA and USD."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from rails.nacha import AchCreditRail
from tests.rails.iso20022.harness import MockBank
from tests.rails.mockbank_fixtures import bank, rail_maker
from tests.rails.nacha.ach_data import ACME, ACME_ORIGIN, COMPANY_IDS, bank_now

__all__ = ["bank", "make_rail", "nacha_bank", "rail"]


@pytest.fixture
async def nacha_bank(bank: MockBank) -> MockBank:
    """ACME and GLOBEX set up for NACHA files, per mock-bank's README, each known to the bank
    by its company identification."""
    for account in ("ACME", "GLOBEX"):
        await bank.patch_account(account, format="nacha", currency="USD",
                                 account_number=COMPANY_IDS[account])
    return bank


@pytest.fixture
async def make_rail(nacha_bank: MockBank, tmp_path: Path
                    ) -> AsyncIterator[Callable[..., AchCreditRail]]:
    async with rail_maker(AchCreditRail, url=nacha_bank.url, store_path=tmp_path / "ach.db",
                          account=ACME, clock=bank_now) as make:
        make = functools.partial(make, originator=ACME_ORIGIN)
        yield make


@pytest.fixture
def rail(make_rail: Callable[..., AchCreditRail]) -> AchCreditRail:
    return make_rail()
