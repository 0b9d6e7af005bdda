"""Fixtures for the attack suite (issue 8): one loop thread for the attacker's servers per
module; each module starts its own daemons (tests/adversarial/arena.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.adversarial.toolkit import Loop


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    servers = Loop()
    try:
        yield servers
    finally:
        servers.close()
