"""Fixtures for the ACH rail: a real mock-bank whose accounts bank in NACHA and USD."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from rails.nacha import AchCreditRail
from rails.port import Account
from tests.rails.iso20022.harness import MockBank, mock_bank
from tests.rails.nacha.ach_data import ACME, bank_now


@pytest.fixture
def bank(tmp_path: Path) -> Iterator[MockBank]:
    with mock_bank(tmp_path) as b:
        yield b


@pytest.fixture
async def nacha_bank(bank: MockBank) -> MockBank:
    """ACME and GLOBEX set up for NACHA files, per mock-bank's README."""
    for account in ("ACME", "GLOBEX"):
        await bank.patch_account(account, format="nacha", currency="USD")
    return bank


@pytest.fixture
async def make_rail(nacha_bank: MockBank, tmp_path: Path
                    ) -> AsyncIterator[Callable[..., AchCreditRail]]:
    made: list[AchCreditRail] = []

    def make(account: Account = ACME, url: str | None = None, **kw: object) -> AchCreditRail:
        kw.setdefault("store_path", tmp_path / "ach.db")
        rail = AchCreditRail(base_url=url or nacha_bank.url, account=account, clock=bank_now,
                             backoff_s=0.01, **kw)  # type: ignore[arg-type]
        made.append(rail)
        return rail

    yield make
    for r in made:
        await r.aclose()


@pytest.fixture
def rail(make_rail: Callable[..., AchCreditRail]) -> AchCreditRail:
    return make_rail()
