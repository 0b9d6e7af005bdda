"""Measuring on this machine: a process's memory, the Ed25519 verify ceiling, and open-loop
paced or sequential calls timed one by one (used by :mod:`node.bench`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from protocol.crypto import Signer
    from protocol.messages import BalanceProof


def rss_mb(pid: int) -> float:
    """Resident set size of process `pid` in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- 1. the verify ceiling --------------------------------------------------------------------


CEILING_OPS = ("verify", "sign", "raw_verify")
"""Per library: a proof's signature checked and made at the proof level (the canonical body
encoding, the signing input and the Ed25519 call), and the Ed25519 verify call alone."""


def _proof_calls(name: str, check: Callable[[bytes, bytes, bytes], bool],
                 sign: Callable[[bytes], bytes], proof: BalanceProof,
                 message: bytes) -> dict[str, Callable[[], object]]:
    from protocol.crypto import signing_input

    sender, signature = proof.sender, proof.signature
    return {
        f"{name}_verify": lambda: check(sender, signing_input(proof.DOMAIN, proof.body()),
                                        signature),
        f"{name}_sign": lambda: sign(signing_input(proof.DOMAIN, proof.body())),
        f"{name}_raw_verify": lambda: check(sender, message, signature),
    }


def bench_proof(tariff: str) -> tuple[BalanceProof, Signer]:
    """One real BalanceProof (one update of 1,000 units on `tariff`, signed by the channel's
    opener in a simulated channel) and its signer: what the ceiling and the floor time."""
    from protocol import channel as ch
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
    assert sim.opener.node_id == effect.proof.sender
    return effect.proof, sim.opener


def verify_ceiling(seconds: float, tariff: str) -> dict[str, float]:
    """Ed25519 of one real BalanceProof on `tariff` per second, in this process, on one core.

    For each library of :data:`protocol.crypto.BACKENDS`: ``{name}_verify``, ``{name}_sign``
    and ``{name}_raw_verify`` (:data:`CEILING_OPS`), the libraries measured in turns (three
    rounds of `seconds` / 3 each, the best kept) so that load on the machine falls on both
    alike. ``path``: ``BalanceProof.verify_signature`` itself, on the per-update path.
    ``proof`` and ``raw``: the fastest library's verify and raw verify: the ceiling."""
    from protocol.crypto import BACKENDS, signing_input

    proof, signer = bench_proof(tariff)
    sender = proof.sender
    seed = signer.seed()

    def rate(fn: Callable[[], object], run_s: float) -> float:
        for _ in range(200):  # warm up
            fn()
        count, batch = 0, 250
        start = time.perf_counter()
        while True:
            for _ in range(batch):
                fn()
            count += batch
            elapsed = time.perf_counter() - start
            if elapsed >= run_s:
                return count / elapsed

    message, signature = signing_input(proof.DOMAIN, proof.body()), proof.signature
    calls: dict[str, Callable[[], object]] = {
        "path": lambda: proof.verify_signature(sender)}
    for name, lib in BACKENDS.items():
        sign = lib.signing_key(seed)
        assert sign(message) == signature, name
        assert lib.verify(sender, message, signature), name
        calls |= _proof_calls(name, lib.verify, sign, proof, message)
    best = dict.fromkeys(calls, 0.0)
    for _ in range(3):
        for key, call in calls.items():
            best[key] = max(best[key], rate(call, seconds / 3))
    fastest = max(BACKENDS, key=lambda name: best[f"{name}_verify"])
    return {**best, "proof": best[f"{fastest}_verify"], "raw": best[f"{fastest}_raw_verify"]}


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
