"""Fixtures shared by the synchronous protocol tests: tariffs, keys and an opened simulation.

Everything here is pure: no event loop, no clock, no randomness beyond fixed labels and salts.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

import protocol.messages  # noqa: F401  (registers every message type with the decoder)
from protocol.crypto import Signer
from protocol.simulation import Simulation
from protocol.tariff import TariffLine, TariffTier
from protocol.types import Amount, Quantity

KM = TariffLine("km", 3, (TariffTier(None, Amount(12_300)),))
"""0.0123 EUR per km at amount scale 6; quantities in metres (quantity scale 3)."""
KM_GRADUATED = TariffLine(
    "km",
    3,
    (TariffTier(Quantity(1_000_000), Amount(15_000)), TariffTier(None, Amount(12_300))),
)
"""The first 1000 km at 0.015 EUR, the rest at 0.0123 EUR."""
MSG = TariffLine("message", 0, (TariffTier(None, Amount(7)),))
"""0.000007 EUR per message."""


@pytest.fixture
def third() -> Signer:
    """A key that is no party to any channel in these tests."""
    return Signer.from_label("mallory")


@pytest.fixture
def make_sim() -> Callable[..., Simulation]:
    """Create (not open) a simulation; keyword arguments go to `Simulation.create`."""

    def make(**kwargs: object) -> Simulation:
        kwargs.setdefault("tariff", (KM,))
        kwargs.setdefault("opener_deposit", 10_000)  # 100.00 EUR
        kwargs.setdefault("peer_deposit", 5_000)  # 50.00 EUR
        return Simulation.create(**kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture
def sim(make_sim: Callable[..., Simulation]) -> Simulation:
    """An opened channel: opener 100.00 EUR, peer 50.00 EUR, tariff 0.0123 EUR/km."""
    s = make_sim()
    s.open()
    return s


@pytest.fixture
def sim2(make_sim: Callable[..., Simulation]) -> Simulation:
    """An opened channel with a two-line tariff (graduated km, messages)."""
    s = make_sim(tariff=(KM_GRADUATED, MSG))
    s.open()
    return s
