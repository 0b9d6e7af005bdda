"""What every simulated party (node or arbiter) shares: being up or down, timers that die with
the process that set them, an outbox of rows retried until their recipient answers, and
sending envelopes."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tests.faults.simnet import Envelope

if TYPE_CHECKING:
    from tests.faults.simulator import World

RETRY_MS = 400


@dataclass(frozen=True, slots=True)
class Row:
    """One outbox row: a message for `dst`, retried until answered."""

    row_id: int
    dst: str
    body: bytes


class SimParty:
    name: str

    def __init__(self, world: World) -> None:
        self.world = world
        self.up = True
        self.epoch = 0
        """Bumped by every crash and restart: a timer set before it never fires."""
        self.outbox: dict[str, Row] = {}
        self.ids = itertools.count(1)

    def _timer(self, delay_ms: int, action: str) -> None:
        epoch = self.epoch

        def fire() -> None:
            if self.up and self.epoch == epoch:
                getattr(self, action)()

        self.world.scheduler.after(delay_ms, fire)

    def crash(self) -> None:
        self.world.say(f"{self.name} crashes")
        self.up = False
        self.epoch += 1

    def restart(self) -> None:
        self.world.say(f"{self.name} restarts")
        self.up = True
        self.epoch += 1

    def _new_row(self, dst: str, body: bytes) -> Row:
        return Row(next(self.ids) + 1_000_000 * self.epoch, dst, body)

    def _send(self, dst: str, kind: str, body: tuple[bytes, ...], ref: int = 0) -> None:
        self.world.network.send(Envelope(self.name, dst, kind, body, ref))

    def _send_row(self, row: Row) -> None:
        self._send(row.dst, "msg", (row.body,), row.row_id)

    def _answered(self, env: Envelope) -> None:
        """The recipient answered (or refused) row `env.ref`: it is done."""
        for purpose, row in list(self.outbox.items()):
            if row.row_id == env.ref:
                del self.outbox[purpose]
