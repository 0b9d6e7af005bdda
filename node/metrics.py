"""The node's Prometheus metrics: one registry per node, built here, reached as ``ctx.metrics``.

Counters count what this process did since it started (Prometheus' counter semantics: a restart
resets them and ``rate()`` handles the reset); gauges are read from the node's state at each
scrape (:meth:`Metrics.refresh`), so they are never stale and cost nothing between scrapes.
Names follow the Prometheus conventions (``meterline_`` prefix, base units, ``_total`` for
counters, ``_seconds`` for durations); ADR 0220 says why the endpoint is behind the admin token.

Money in gauges is in currency units as a float (Prometheus has no decimals): it is for graphs
and alerts; the admin API's decimal strings stay the money that moves.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import date
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import func, select

from node.storage.models import Outbox as OutboxRow
from protocol import channel as ch
from protocol.arbiter import ArbiterPhase, ArbiterState
from protocol.money import currency_exponent
from rails.errors import RailError
from rails.port import (
    CreditPage,
    PaymentInstruction,
    PaymentRecord,
    Rail,
    Reconciliation,
    Statement,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

CONTENT_TYPE = CONTENT_TYPE_LATEST
EVENT_OUTCOMES = ("accepted", "duplicate", "refused")
"""The outcomes of a usage event (the events API's answer per event)."""
DELIVERY_OUTCOMES = ("delivered", "retry", "refused")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0)
"""Seconds; a receipt normally follows its update within milliseconds on a LAN, within the
stream's timeout (30 s) at worst."""
MAX_TIMED_PER_CHANNEL = 4096
"""Committed groups of updates whose commit time is kept per channel for the latency histogram
(the in-flight window is far smaller; a peer that never answers cannot grow it past this)."""
BANK_OPERATIONS = ("submit", "status", "incoming_credits", "reconcile")


class Metrics:
    """Every metric of one node, in its own registry (never the process-global one: two nodes
    in one process, as the tests run them, each expose only their own)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.updates_sent = Counter(
            "meterline_updates_sent", "Balance proofs this node signed and committed (payer).",
            registry=r)
        self.updates_received = Counter(
            "meterline_updates_received",
            "Balance proofs from peers this node verified and committed (payee).", registry=r)
        self.receipts_sent = Counter(
            "meterline_receipts_sent", "Receipts this node signed for the updates it received.",
            registry=r)
        self.receipts_received = Counter(
            "meterline_receipts_received",
            "Peer receipts that moved an acknowledged nonce of ours.", registry=r)
        self.update_latency = Histogram(
            "meterline_update_latency_seconds",
            "From the commit of a group of signed updates (the writer's group commit) to the "
            "peer's receipt covering all of it; one observation per group.",
            buckets=LATENCY_BUCKETS, registry=r)
        self.usage_events = Counter(
            "meterline_usage_events", "Usage events by outcome (events API, MQTT ingest).",
            ["outcome"], registry=r)
        self.deliveries = Counter(
            "meterline_deliveries", "Outbox delivery attempts by outcome.", ["outcome"],
            registry=r)
        self.queue_depth = Gauge(
            "meterline_delivery_queue_depth", "Outbox rows still to be delivered.", registry=r)
        self.queue_age = Gauge(
            "meterline_delivery_queue_oldest_age_seconds",
            "Age of the oldest outbox row still to be delivered (0 when none).", registry=r)
        self.bank_requests = Counter(
            "meterline_bank_requests", "Calls to the bank rail by operation.", ["operation"],
            registry=r)
        self.bank_errors = Counter(
            "meterline_bank_errors", "Failed calls to the bank rail by operation and error code.",
            ["operation", "code"], registry=r)
        self.channels = Gauge(
            "meterline_channels", "Channels by phase.", ["phase"], registry=r)
        self.channel_balance = Gauge(
            "meterline_channel_balance", "Our balance in a channel (deposit − sent + received), "
            "currency units.", ["channel", "currency"], registry=r)
        self.channel_capacity = Gauge(
            "meterline_channel_capacity", "Both deposits of a channel, currency units.",
            ["channel", "currency"], registry=r)
        self.escrows = Gauge(
            "meterline_escrows", "Escrows by phase (arbiter).", ["phase"], registry=r)
        self.escrow_held = Gauge(
            "meterline_escrow_held", "Deposits an arbiter holds for a channel, currency units.",
            ["channel", "currency"], registry=r)
        for outcome in EVENT_OUTCOMES:
            self.usage_events.labels(outcome)
        for outcome in DELIVERY_OUTCOMES:
            self.deliveries.labels(outcome)
        for operation in BANK_OPERATIONS:
            self.bank_requests.labels(operation)
        self._sent_at: dict[str, deque[tuple[int, float]]] = {}
        """Per channel: (last nonce, commit time) of each group of our updates not yet acked."""

    # -- what the node calls --------------------------------------------------------------------

    def usage_event(self, outcome: str, n: int = 1) -> None:
        """Count `n` usage events answered `outcome` (accepted, duplicate or refused)."""
        if outcome not in EVENT_OUTCOMES:
            raise ValueError(f"unknown usage event outcome {outcome!r} "
                             f"({', '.join(EVENT_OUTCOMES)})")
        if n > 0:
            self.usage_events.labels(outcome).inc(n)

    def delivery(self, done: bool, refused: bool) -> None:
        """One outbox attempt's outcome (node.outbox.Outcome)."""
        self.deliveries.labels("delivered" if done else "refused" if refused else "retry").inc()

    def committed(self, cid: str, before: ch.ChannelState | None, after: ch.ChannelState,
                  outgoing: Iterable[int]) -> None:
        """A channel state was committed with the nonces of the updates we signed in it."""
        sent, last = 0, 0
        for nonce in outgoing:
            sent, last = sent + 1, max(last, nonce)
        if sent:
            self.updates_sent.inc(sent)
            timed = self._sent_at.get(cid)
            if timed is None:
                timed = self._sent_at[cid] = deque(maxlen=MAX_TIMED_PER_CHANNEL)
            timed.append((last, time.monotonic()))
        received_before = 0 if before is None else before.received.nonce
        if after.received.nonce > received_before:
            self.updates_received.inc(after.received.nonce - received_before)
        receipt_before = None if before is None else before.received.receipt
        if after.received.receipt is not None and after.received.receipt is not receipt_before:
            self.receipts_sent.inc()

    def acknowledged(self, cid: str, before: int, after: int) -> None:
        """A peer's receipt moved our acknowledged nonce from `before` to `after`."""
        if after <= before:
            return
        self.receipts_received.inc()
        timed = self._sent_at.get(cid)
        if not timed:
            return
        now = time.monotonic()
        while timed and timed[0][0] <= after:
            _, at = timed.popleft()
            self.update_latency.observe(max(0.0, now - at))

    def counted(self, rail: Rail | None) -> Rail | None:
        """`rail` with every call counted (None stays None)."""
        return None if rail is None else CountedRail(rail, self)

    # -- at each scrape -------------------------------------------------------------------------

    async def refresh(self, *, channels: Mapping[str, ch.ChannelState] | None,
                      escrows: Mapping[str, ArbiterState] | None,
                      db: async_sessionmaker[AsyncSession], now_ms: int) -> None:
        """Set the gauges from the node's state (what a node or an arbiter holds)."""
        if channels is not None:
            by_phase = dict.fromkeys((p.value for p in ch.Phase), 0)
            self.channel_balance.clear()
            self.channel_capacity.clear()
            for cid, state in channels.items():
                by_phase[state.phase.value] += 1
                cur = state.terms.currency
                scale = 10 ** state.terms.scale
                self.channel_balance.labels(cid, cur).set(state.balance() / scale)
                exponent = 10 ** currency_exponent(cur)
                self.channel_capacity.labels(cid, cur).set(sum(state.terms.deposits()) / exponent)
            for phase, n in by_phase.items():
                self.channels.labels(phase).set(n)
        if escrows is not None:
            by_arb = dict.fromkeys((p.value for p in ArbiterPhase), 0)
            self.escrow_held.clear()
            for cid, escrow in escrows.items():
                by_arb[escrow.phase.value] += 1
                cur = escrow.terms.currency
                self.escrow_held.labels(cid, cur).set(
                    escrow.held() / 10 ** currency_exponent(cur))
            for phase, n in by_arb.items():
                self.escrows.labels(phase).set(n)
        async with db() as session:
            depth, oldest = (await session.execute(
                select(func.count(), func.min(OutboxRow.created_ms)).where(
                    OutboxRow.done.is_(False), OutboxRow.refused.is_(False)))).one()
        self.queue_depth.set(depth)
        self.queue_age.set(0 if oldest is None else max(0, now_ms - oldest) / 1000)

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)


class CountedRail:
    """A rail whose every call is counted by operation, and every failure by its error code
    (:attr:`rails.errors.RailError.code`; ``UNEXPECTED`` for anything else). Otherwise it is
    the rail: attributes it does not define are the wrapped rail's."""

    def __init__(self, rail: Rail, metrics: Metrics) -> None:
        self._rail = rail
        self._metrics = metrics
        self.name = rail.name

    def __getattr__(self, name: str) -> object:
        return getattr(self._rail, name)

    def _failed(self, operation: str, exc: BaseException) -> None:
        code = exc.code if isinstance(exc, RailError) else "UNEXPECTED"
        self._metrics.bank_errors.labels(operation, code).inc()

    async def submit(self, instruction: PaymentInstruction) -> PaymentRecord:
        self._metrics.bank_requests.labels("submit").inc()
        try:
            return await self._rail.submit(instruction)
        except Exception as exc:
            self._failed("submit", exc)
            raise

    async def status(self, idempotency_key: str) -> PaymentRecord:
        self._metrics.bank_requests.labels("status").inc()
        try:
            return await self._rail.status(idempotency_key)
        except Exception as exc:
            self._failed("status", exc)
            raise

    async def incoming_credits(self, cursor: str | None = None) -> CreditPage:
        self._metrics.bank_requests.labels("incoming_credits").inc()
        try:
            return await self._rail.incoming_credits(cursor)
        except Exception as exc:
            self._failed("incoming_credits", exc)
            raise

    async def reconcile(self, statement: Statement | None = None, *,
                        since: date | None = None, until: date | None = None
                        ) -> Reconciliation:
        self._metrics.bank_requests.labels("reconcile").inc()
        try:
            return await self._rail.reconcile(statement, since=since, until=until)
        except Exception as exc:
            self._failed("reconcile", exc)
            raise

    async def aclose(self) -> None:
        await self._rail.aclose()


__all__ = ["CONTENT_TYPE", "CountedRail", "Metrics"]
