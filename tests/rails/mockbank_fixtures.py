"""What the SEPA and ACH rail suites share: a real mock-bank per test, and a maker of adapters
that all keep their store in one SQLite file (so a second adapter is the first after a restart)
and are closed after the test.

Each suite's conftest imports :func:`bank` (a fixture) and builds its own ``make_rail`` with
:func:`rail_maker`. ``tests/rails/sandbox`` has a ``bank`` of its own and does not import this.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import pytest

from rails.filebank import FileBankRail
from rails.port import Account
from tests.rails.iso20022.harness import MockBank, mock_bank

R = TypeVar("R", bound=FileBankRail)


@pytest.fixture
def bank(tmp_path: Path) -> Iterator[MockBank]:
    with mock_bank(tmp_path) as b:
        yield b


@asynccontextmanager
async def rail_maker(cls: Callable[..., R], *, url: str, store_path: Path, account: Account,
                     clock: Callable[[], datetime]) -> AsyncIterator[Callable[..., R]]:
    """``make(account=account, url=None, **kw)``: an adapter on `url` (or the one given) with
    `store_path` unless `kw` names a store; every adapter made is closed on the way out."""
    made: list[R] = []
    default_account, default_url = account, url

    def make(account: Account = default_account, url: str | None = None, **kw: object) -> R:
        kw.setdefault("store_path", store_path)
        rail = cls(base_url=url or default_url, account=account, clock=clock, backoff_s=0.01,
                   **kw)
        made.append(rail)
        return rail

    yield make
    for r in made:
        await r.aclose()
