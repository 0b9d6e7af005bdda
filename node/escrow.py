"""Arbiter mode: protocol.arbiter's machine over storage, the escrow account's rail and peers."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

import structlog
from sqlalchemy import select, update

from node.context import Context, now_ms
from node.errors import NotFound
from node.outbox import Outbox
from node.storage.codec import decode_escrow, encode_escrow
from node.storage.models import Cursor, Escrow
from node.storage.models import Outbox as OutboxRow
from node.transfers import Transfers
from protocol import arbiter as arb
from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.messages import (
    EMPTY_SIGNATURE,
    ChannelRegistration,
    CooperativeClose,
    DisputeEvidence,
    DisputeNotice,
    UnilateralClose,
)
from protocol.references import Purpose, bank_reference
from protocol.types import MinorUnits

log = structlog.get_logger()
CREDITS_CURSOR = "escrow-credits"


class EscrowService:
    def __init__(self, ctx: Context, outbox: Outbox, transfers: Transfers) -> None:
        self.ctx = ctx
        self.outbox = outbox
        self.transfers = transfers
        self.states: dict[str, arb.ArbiterState] = {}
        self.urls: dict[str, list[str]] = {}
        self.locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.references: dict[str, tuple[str, int]] = {}
        outbox.handlers["payout"] = self._payout
        self._tasks: list[asyncio.Task[None]] = []

    async def load(self) -> None:
        async with self.ctx.db() as session:
            for row in (await session.scalars(select(Escrow))).all():
                self._remember(decode_escrow(row.state), [row.opener_url, row.peer_url])

    def _remember(self, state: arb.ArbiterState, urls: list[str]) -> None:
        cid = state.channel_id.hex()
        self.states[cid] = state
        self.urls[cid] = urls
        for party in (0, 1):
            self.references[bank_reference(state.channel_id, Purpose.DEPOSIT, party)] = (cid, party)

    def get(self, cid: str) -> arb.ArbiterState:
        state = self.states.get(cid)
        if state is None:
            raise RemoteProtocolError(ErrorCode.UNKNOWN_CHANNEL, "no such channel in escrow")
        return state

    async def _commit(self, state: arb.ArbiterState, effects: Sequence[arb.Effect] = (),
                      *, new: bool = False) -> None:
        cid = state.channel_id.hex()
        urls = self.urls[cid]
        async with self.ctx.db() as session, session.begin():
            values = {"phase": state.phase.value, "state": encode_escrow(state),
                      "opener_url": urls[0], "peer_url": urls[1], "updated_ms": state.updated_ms}
            if new:
                session.add(Escrow(id=cid, **values))
            else:
                await session.execute(update(Escrow).where(Escrow.id == cid).values(**values))
            for effect in effects:
                for kind, target, payload in self._outbox_rows(cid, effect):
                    self.outbox.add(session, cid, kind, target, payload)
        self.states[cid] = state
        if effects:
            self.outbox.kick()

    def _outbox_rows(self, cid: str, effect: arb.Effect) -> list[tuple[str, str, bytes]]:
        urls = self.urls[cid]
        if isinstance(effect, arb.SendFundingConfirmation):
            return [("send", f"{u}/p2p/funding", effect.confirmation.encode()) for u in urls if u]
        if isinstance(effect, arb.SendPayoutNotice):
            return [("send", f"{u}/p2p/payout", effect.notice.encode()) for u in urls if u]
        if isinstance(effect, arb.ForwardDispute):
            # Both parties hear it, signed: the other side must answer before the deadline,
            # the claimant learns when the payout is decided.
            notice = DisputeNotice(effect.claim.channel_id, effect.claim, effect.deadline_ms,
                                   EMPTY_SIGNATURE).signed_by(self.ctx.signer)
            return [("send", f"{u}/p2p/dispute", notice.encode()) for u in urls if u]
        if isinstance(effect, arb.SubmitPayout):
            spec = {
                "idempotency_key": effect.idempotency_key, "purpose": Purpose.PAYOUT.value,
                "party": effect.party, "amount_minor": effect.amount,
                "currency": effect.currency, "reference": effect.reference,
                "creditor": {"scheme": effect.account.scheme,
                             "identification": effect.account.identification,
                             "name": effect.account.name},
            }
            return [("payout", "", json.dumps(spec).encode())]
        raise AssertionError(f"unhandled arbiter effect {effect!r}")

    # -- messages from nodes ------------------------------------------------------------------

    async def on_register(self, reg: ChannelRegistration, node_id: str, callback: str) -> None:
        terms = reg.proposal.terms
        cid = terms.channel_id.hex()
        async with self.locks[cid]:
            existing = self.states.get(cid)
            if existing is None:
                state = arb.register(reg.proposal, reg.acceptance, self.ctx.signer.node_id,
                                     now_ms=now_ms())
                self.urls[cid] = ["", ""]
            else:
                state = existing
            party = next((i for i, p in enumerate(terms.parties()) if p.hex() == node_id), None)
            if party is not None and callback.startswith(("http://", "https://")):
                self.urls[cid][party] = callback.rstrip("/")
            self._remember(state, self.urls[cid])
            await self._commit(state, new=existing is None)
        log.info("escrow.registered", channel=cid)

    async def on_close(self, close: CooperativeClose) -> None:
        await self._apply(close.channel_id.hex(), arb.ReceiveCooperativeClose(close))

    async def on_unilateral(self, claim: UnilateralClose) -> None:
        await self._apply(claim.channel_id.hex(), arb.ReceiveUnilateralClose(claim))

    async def on_evidence(self, evidence: DisputeEvidence) -> None:
        await self._apply(evidence.channel_id.hex(), arb.ReceiveEvidence(evidence))

    async def _apply(self, cid: str, event: arb.Input) -> arb.Transition:
        async with self.locks[cid]:
            state = self.get(cid)
            t = arb.step(state, event, now_ms=now_ms())
            if t.state != state:
                await self._commit(t.state, t.effects)
        return t

    # -- the bank -----------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._watch(), name="escrow-watch"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _watch(self) -> None:
        interval = self.ctx.config.bank.poll_interval_ms / 1000
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the bank being down must not stop the arbiter
                log.warning("escrow.poll_failed", error=str(exc)[:300])
            await asyncio.sleep(interval)

    async def poll_once(self) -> None:
        """Match new escrow credits to deposits; advance payouts; end dispute windows."""
        rail = self.ctx.rail
        if rail is None:
            return
        async with self.ctx.db() as session:
            row = await session.get(Cursor, CREDITS_CURSOR)
            cursor = row.value if row else None
        page = await rail.incoming_credits(cursor)
        for credit in page.credits:
            match = self.references.get((credit.reference or "").strip().upper())
            if match is None:
                log.info("escrow.unmatched_credit", reference=credit.reference,
                         amount_minor=credit.amount_minor)
                continue
            cid, party = match
            state = self.get(cid)
            if credit.currency != state.terms.currency:
                log.warning("escrow.wrong_currency", channel=cid[:16], currency=credit.currency)
                continue
            booked = datetime.combine(credit.booking_date, datetime.min.time(), tzinfo=UTC)
            try:
                await self._apply(cid, arb.ObserveDeposit(
                    self.ctx.signer, party, MinorUnits(credit.amount_minor), credit.entry_id,
                    credit.reference or "", int(booked.timestamp() * 1000)))
                log.info("escrow.deposit", channel=cid[:16], party=party,
                         amount_minor=credit.amount_minor)
            except RemoteProtocolError as exc:
                log.warning("escrow.deposit_refused", channel=cid[:16], error=str(exc))
        if page.cursor != cursor:
            async with self.ctx.db() as session, session.begin():
                row = await session.get(Cursor, CREDITS_CURSOR)
                if row is None:
                    session.add(Cursor(name=CREDITS_CURSOR, value=page.cursor))
                else:
                    row.value = page.cursor
        for record in await self.transfers.refresh():
            if record.status.value == "booked":
                await self._booked(record.idempotency_key)
            elif record.status.final:
                log.error("escrow.payout_failed", key=record.idempotency_key,
                          status=record.status.value, reason=record.reason_code)
        for cid, state in list(self.states.items()):
            if state.phase is arb.ArbiterPhase.DISPUTE:
                await self._apply(cid, arb.Tick())

    async def _payout(self, row: OutboxRow) -> None:
        record = await self.transfers.submit(row.channel_id, json.loads(row.payload))
        if record.status.value == "booked":
            await self._booked(record.idempotency_key)

    async def _booked(self, key: str) -> None:
        for transfer in await self.transfers.for_channel_key(key):
            await self._apply(transfer.channel_id, arb.ObservePayoutBooked(
                self.ctx.signer, transfer.party, now_ms()))

    def find(self, prefix: str) -> arb.ArbiterState:
        matches = [cid for cid in self.states if cid.startswith(prefix)]
        if len(matches) != 1:
            raise NotFound(f"no single escrow matches {prefix}")
        return self.states[matches[0]]
