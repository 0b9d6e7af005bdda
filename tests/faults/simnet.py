"""The simulated clock and network of the deterministic simulation.

`Scheduler` is the clock: a heap of events ordered by (time, insertion number), so a run is a
pure function of its seed. One *step* of the simulation is one event taken off the heap.

`Network` carries envelopes between the simulated parties. While it is unhealed, each send is a
decision point of the `FaultPlan` for a drop, a long delay (which reorders it behind later
sends) and a duplicate; a partition between two parties drops everything between them until it
ends; a party that is down gets nothing. Once healed it delivers every envelope once, in order,
after a short latency: "the network heals" of the spec's liveness rule.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.faults.faultplan import FaultPlan


class Scheduler:
    def __init__(self, start_ms: int) -> None:
        self.now_ms = start_ms
        self._heap: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = 0

    def at(self, when_ms: int, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (max(when_ms, self.now_ms), self._seq, action))

    def after(self, delay_ms: int, action: Callable[[], None]) -> None:
        self.at(self.now_ms + delay_ms, action)

    def step(self) -> bool:
        """Run the next event; False when nothing is left."""
        if not self._heap:
            return False
        when, _, action = heapq.heappop(self._heap)
        self.now_ms = when
        action()
        return True


@dataclass(frozen=True, slots=True)
class Envelope:
    """One request or answer between two simulated parties.

    `kind` says what the body is ("msg": one encoded protocol message; "stream": a batch of
    encoded proofs in order; "ack": the transport's answer to request `ref`; "status?" and
    "receipt?": requests; "status" and "receipt": their answers). Bodies are wire bytes.
    """

    src: str
    dst: str
    kind: str
    body: tuple[bytes, ...]
    ref: int = 0
    """The number of the request this answers (or, for a request, its own number)."""


@dataclass(frozen=True, slots=True)
class NetworkWeather:
    drop: float = 0.15
    delay: float = 0.15
    duplicate: float = 0.08
    max_delay_ms: int = 2_500
    latency_ms: tuple[int, int] = (1, 8)


@dataclass
class Network:
    scheduler: Scheduler
    plan: FaultPlan
    deliver: Callable[[Envelope], None]
    is_up: Callable[[str], bool]
    weather: NetworkWeather = field(default_factory=NetworkWeather)
    healed: bool = False
    partitions: dict[frozenset[str], int] = field(default_factory=dict)
    """Pairs of parties that cannot reach each other, with when the partition ends."""
    sent: int = 0
    delivered: int = 0

    def partition(self, a: str, b: str, until_ms: int) -> None:
        self.partitions[frozenset((a, b))] = until_ms

    def heal(self) -> None:
        self.healed = True
        self.partitions.clear()

    def cut(self, a: str, b: str) -> bool:
        until = self.partitions.get(frozenset((a, b)))
        if until is None:
            return False
        if until <= self.scheduler.now_ms:
            del self.partitions[frozenset((a, b))]
            return False
        return True

    def send(self, envelope: Envelope) -> None:
        self.sent += 1
        latency = self.plan.uniform(*self.weather.latency_ms)
        if self.healed:
            self._schedule(envelope, latency)
            return
        if self.cut(envelope.src, envelope.dst):
            self.plan.counts["partitioned"] += 1
            return
        w = self.weather
        if self.plan.fault("drop", w.drop):
            return
        delay = latency
        if self.plan.fault("delay", w.delay):
            delay += self.plan.uniform(10, w.max_delay_ms)
        self._schedule(envelope, delay)
        if self.plan.fault("duplicate", w.duplicate):
            self._schedule(envelope, delay + self.plan.uniform(0, w.max_delay_ms // 2))

    def _schedule(self, envelope: Envelope, delay_ms: int) -> None:
        def arrive() -> None:
            if not self.is_up(envelope.dst):
                return  # nobody listening: the connection is refused
            if not self.healed and self.cut(envelope.src, envelope.dst):
                return
            self.delivered += 1
            self.deliver(envelope)

        self.scheduler.after(delay_ms, arrive)
