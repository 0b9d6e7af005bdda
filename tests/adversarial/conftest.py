"""The attack suite of issue 8: each attack end to end against real daemons on loopback.

| attack | module |
| --- | --- |
| 1 starved delivery, and the pull path alone | test_starved_delivery.py |
| 2 second-close bypass | test_second_close.py |
| 3 `peer add` impostor of the arbiter | test_peer_impostor.py |
| 4 unbounded terms | test_unbounded_terms.py |
| 5 transient answers on the path / 6 a closed node facing a dispute | test_transient_answers.py |
| 7 unbounded reads and half-sent requests | test_unbounded_reads.py |
| 8 proposal flood | test_proposal_flood.py |
| 9 sockets held open on a channel's update stream | test_stream_sockets.py |

The attacker uses only its own key and stored state (tests/adversarial/toolkit.py); each module
starts its own bank, arbiter and companies (tests/adversarial/arena.py). Here: one loop thread
per module for the attacker's servers.
"""

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
