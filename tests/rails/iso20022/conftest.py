"""Fixtures for the SEPA rail: a real mock-bank per test, and adapters on our own SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from rails.iso20022 import SepaCreditTransferRail
from rails.port import Account
from tests.rails.iso20022.harness import MockBank, mock_bank
from tests.rails.iso20022.sepa_data import ACME, bank_now


@pytest.fixture
def bank(tmp_path: Path) -> Iterator[MockBank]:
    with mock_bank(tmp_path) as b:
        yield b


@pytest.fixture
async def make_rail(bank: MockBank, tmp_path: Path
                    ) -> AsyncIterator[Callable[..., SepaCreditTransferRail]]:
    """Build adapters on tmp_path/rail.db (the same file each time, as after a restart)."""
    made: list[SepaCreditTransferRail] = []

    def make(account: Account = ACME, url: str | None = None, **kw: object
             ) -> SepaCreditTransferRail:
        kw.setdefault("store_path", tmp_path / "rail.db")
        rail = SepaCreditTransferRail(base_url=url or bank.url, account=account,
                                      clock=bank_now, backoff_s=0.01, **kw)  # type: ignore[arg-type]
        made.append(rail)
        return rail

    yield make
    for r in made:
        await r.aclose()


@pytest.fixture
def rail(make_rail: Callable[..., SepaCreditTransferRail]) -> SepaCreditTransferRail:
    return make_rail()
