"""Measuring on this machine: a process's memory, the Ed25519 verify ceiling, and open-loop
paced or sequential calls timed one by one (used by :mod:`node.bench`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path


def rss_mb(pid: int) -> float:
    """Resident set size of process `pid` in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- 1. the verify ceiling --------------------------------------------------------------------


def verify_ceiling(seconds: float, tariff: str) -> dict[str, float]:
    """Verifications/s of one real BalanceProof on `tariff`, in this process, on one core."""
    from protocol import channel as ch
    from protocol.crypto import ed25519_verify, signing_input
    from protocol.messages import BalanceProof
    from protocol.simulation import Simulation
    from protocol.tariff import parse_tariff_line
    from protocol.types import Amount, Quantity

    sim = Simulation.create(tariff=(parse_tariff_line(tariff, scale=6),),
                            opener_deposit=10**12)
    sim.open()
    t = ch.step(sim.states[0], ch.ActionPay(sim.opener, (Quantity(1000),), Amount(0), ""),
                now_ms=sim.tick())
    effect = t.effects[0]
    assert isinstance(effect, ch.SendProof)
    proof: BalanceProof = effect.proof
    sender = proof.sender

    def rate(fn: Callable[[], object]) -> float:
        for _ in range(200):  # warm up
            fn()
        count, batch = 0, 250
        start = time.perf_counter()
        while True:
            for _ in range(batch):
                fn()
            count += batch
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return count / elapsed

    message, signature = signing_input(proof.DOMAIN, proof.body()), proof.signature
    return {
        "proof": rate(lambda: proof.verify_signature(sender)),
        "raw": rate(lambda: ed25519_verify(sender, message, signature)),
    }


# -- paced load -------------------------------------------------------------------------------


@dataclass
class Paced:
    offered: int = 0
    latencies_s: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    saturated: bool = False

    @property
    def achieved_per_s(self) -> float:
        return len(self.latencies_s) / self.elapsed_s if self.elapsed_s else 0.0


async def paced(call: Callable[[], Awaitable[object]], *, rate: float, count: int,
                max_backlog_s: float = 0.5) -> Paced:
    """Open loop: start one `call` every 1/rate s, each timed from its start to its return.

    When more than `max_backlog_s` worth of calls are still waiting, the system cannot keep the
    rate: stop offering (``saturated``) and let the ones in flight finish."""
    result = Paced()
    backlog = max(1, int(rate * max_backlog_s))
    in_flight = 0

    async def one() -> None:
        nonlocal in_flight
        started = time.perf_counter()
        try:
            await call()
        finally:
            in_flight -= 1
        result.latencies_s.append(time.perf_counter() - started)

    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter()
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if in_flight >= backlog:
            result.saturated = True
            break
        in_flight += 1
        tasks.append(asyncio.create_task(one()))
    result.offered = len(tasks)
    await asyncio.gather(*tasks)
    result.elapsed_s = time.perf_counter() - start
    return result


async def sequential(call: Callable[[], Awaitable[object]], count: int) -> list[float]:
    out = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        out.append(time.perf_counter() - started)
    return out
