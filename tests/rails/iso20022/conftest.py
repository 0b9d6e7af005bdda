"""Fixtures for the SEPA rail: a real mock-bank per test, and adapters on our own SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from rails.iso20022 import SepaCreditTransferRail
from tests.rails.iso20022.harness import MockBank
from tests.rails.iso20022.sepa_data import ACME, bank_now
from tests.rails.mockbank_fixtures import bank, rail_maker

__all__ = ["bank", "make_rail", "rail"]


@pytest.fixture
async def make_rail(bank: MockBank, tmp_path: Path
                    ) -> AsyncIterator[Callable[..., SepaCreditTransferRail]]:
    """Build adapters on tmp_path/rail.db (the same file each time, as after a restart)."""
    async with rail_maker(SepaCreditTransferRail, url=bank.url, store_path=tmp_path / "rail.db",
                          account=ACME, clock=bank_now) as make:
        yield make


@pytest.fixture
def rail(make_rail: Callable[..., SepaCreditTransferRail]) -> SepaCreditTransferRail:
    return make_rail()
