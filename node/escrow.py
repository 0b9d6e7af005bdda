"""Arbiter mode: protocol.arbiter's machine over storage, the escrow account's rail and peers."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

import structlog

from node.background import stop_tasks
from node.context import Context, now_ms
from node.credits import Credits, account_json, sender_of
from node.deliveries import escrow_deliveries
from node.errors import NotFound
from node.escrow_payouts import bank_answers
from node.outbox import Outbox
from node.storage.models import Outbox as OutboxRow
from node.storage.models import UnappliedCredit
from node.transfers import Transfers
from protocol import arbiter as arb
from protocol.errors import ErrorCode, ProtocolError, RemoteProtocolError
from protocol.messages import (
    CallbackAddress,
    ChannelRegistration,
    ChannelTerms,
    Checkpoint,
    CooperativeClose,
    DisputeEvidence,
    EscrowStatus,
    EscrowStatuses,
    EscrowStatusQuery,
    PayoutAccount,
    UnilateralClose,
)
from protocol.references import Purpose, bank_reference
from protocol.refunds import HoldCredit
from protocol.types import MAX_AMOUNT, MAX_TIME_MS, MinorUnits

log = structlog.get_logger()
CREDITS_CURSOR = "escrow-credits"


class EscrowService:
    def __init__(self, ctx: Context, outbox: Outbox, transfers: Transfers) -> None:
        self.ctx = ctx
        self.outbox = outbox
        self.transfers = transfers
        self.states: dict[str, arb.ArbiterState] = {}
        self.urls: dict[str, list[str]] = {}
        self.url_ms: dict[str, list[int]] = {}
        """Per channel, `issued_ms` of each party's callback held (a newer one replaces it)."""
        self.locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.references: dict[str, tuple[str, int]] = {}
        self.topup_references: set[str] = set()
        outbox.handlers["payout"] = self._payout
        outbox.handlers["refund"] = transfers.submit_row
        self.credits = Credits(ctx, outbox)
        self._tasks: list[asyncio.Task[None]] = []

    async def load(self) -> None:
        for state, urls, stamps in await self.ctx.repo.escrows():
            self._remember(state, urls, stamps)

    def _remember(self, state: arb.ArbiterState, urls: list[str], stamps: list[int]) -> None:
        cid = state.channel_id.hex()
        self.states[cid] = state
        self.urls[cid] = urls
        self.url_ms[cid] = stamps
        for party in (0, 1):
            self.references[bank_reference(state.channel_id, Purpose.DEPOSIT, party)] = (cid, party)
            topup = bank_reference(state.channel_id, Purpose.TOPUP, party)
            self.references[topup] = (cid, party)
            self.topup_references.add(topup)

    def get(self, cid: str) -> arb.ArbiterState:
        state = self.states.get(cid)
        if state is None:
            raise RemoteProtocolError(ErrorCode.UNKNOWN_CHANNEL, "no such channel in escrow")
        return state

    async def commit(self, state: arb.ArbiterState, effects: Sequence[arb.Effect] = (),
                     *, new: bool = False) -> None:
        """The escrow state and the deliveries of its effects, in one transaction."""
        cid = state.channel_id.hex()
        urls, stamps = self.urls[cid], self.url_ms.get(cid, [0, 0])
        outbox = escrow_deliveries(state, effects, urls)
        async with self.ctx.repo.transaction() as session:
            await self.ctx.repo.save_escrow(session, state, urls, stamps, new=new)
            if state.phase is arb.ArbiterPhase.SETTLED:
                # only the payout notices still matter: the booking, and any return told later
                # (a return after settlement must reach both parties, however many arrive)
                await self.outbox.retire(session, cid, keep=("payout-notice", "payout-returned:",
                                                          "transfer:"))
            await self.outbox.add_all(session, cid, outbox)
            await self.ctx.events.escrow(session, self.states.get(cid), state, effects)
        self.states[cid] = state
        if outbox:
            self.outbox.kick()

    # -- messages from nodes ------------------------------------------------------------------

    async def on_register(self, reg: ChannelRegistration) -> None:
        """Take a channel into escrow (idempotent). A registering party names where it wants
        the arbiter's messages in a `CallbackAddress` it signs; only a newer one than held
        replaces it, so nobody else can redirect them and an old one cannot be replayed."""
        terms = reg.proposal.terms
        cid = terms.channel_id.hex()
        own = self.ctx.config.own_account()
        if own is not None and terms.escrow_account != own:
            raise RemoteProtocolError(ErrorCode.INVALID_TERMS,
                                      "the terms name another escrow account than this arbiter's")
        async with self.locks[cid]:
            existing = self.states.get(cid)
            state = existing or arb.register(reg.proposal, reg.acceptance,
                                             self.ctx.signer.node_id, now_ms=now_ms(),
                                             bounds=self.ctx.config.policy.terms_bounds())
            urls = list(self.urls.get(cid, ["", ""]))
            stamps = list(self.url_ms.get(cid, [0, 0]))
            if reg.callback is not None:
                party = self._callback_party(terms, reg.callback)
                if reg.callback.issued_ms > stamps[party]:
                    urls[party] = reg.callback.url.rstrip("/")
                    stamps[party] = reg.callback.issued_ms
            previous = self.urls.get(cid), self.url_ms.get(cid)
            self.urls[cid], self.url_ms[cid] = urls, stamps
            caught_up = arb.step(state, arb.CatchUp(self.ctx.signer), now_ms=now_ms())
            try:
                await self.commit(caught_up.state, caught_up.effects, new=existing is None)
            except Exception:
                if previous[0] is None:
                    self.urls.pop(cid, None)
                    self.url_ms.pop(cid, None)
                else:
                    self.urls[cid], self.url_ms[cid] = previous[0], previous[1] or [0, 0]
                raise
            self._remember(caught_up.state, urls, stamps)
        log.info("escrow.registered", channel=cid)
        await self._rematch(cid)

    @staticmethod
    def _callback_party(terms: ChannelTerms, callback: CallbackAddress) -> int:
        """Which party's address `callback` is — only with that party's signature."""
        if callback.channel_id != terms.channel_id:
            raise RemoteProtocolError(ErrorCode.WRONG_CHANNEL, "a callback for another channel")
        party = terms.party_index(callback.party)
        callback.verify_signature(callback.party)
        return party

    def status(self, cid: str, challenge: bytes) -> EscrowStatus:
        """The signed status a node watching its channel asks for (specs/0005 §4)."""
        return arb.status(self.get(cid), self.ctx.signer, challenge, now_ms=now_ms())

    def statuses(self, query: EscrowStatusQuery) -> EscrowStatuses:
        """One signed answer for up to MAX_STATUS_BATCH channels (specs/0005 §4.1)."""
        return arb.statuses(lambda cid: self.states.get(cid.hex()), query, self.ctx.signer,
                            now_ms=now_ms())

    async def on_close(self, close: CooperativeClose) -> None:
        await self._apply(close.channel_id.hex(), arb.ReceiveCooperativeClose(close))

    async def on_unilateral(self, claim: UnilateralClose) -> None:
        await self._apply(claim.channel_id.hex(),
                          arb.ReceiveUnilateralClose(claim, self.ctx.signer))

    async def on_evidence(self, evidence: DisputeEvidence) -> None:
        await self._apply(evidence.channel_id.hex(), arb.ReceiveEvidence(evidence))

    async def on_payout_account(self, named: PayoutAccount) -> None:
        """A party names (signed) where its payouts go from now on; its returned payouts are
        paid again there (the machine decides, specs/0004 §9)."""
        await self._apply(named.channel_id.hex(), arb.ReceivePayoutAccount(named))
    async def on_checkpoint(self, checkpoint: Checkpoint) -> None:
        """A checkpoint both parties signed: the machine pays what it owes (0004 §7)."""
        await self._apply(checkpoint.channel_id.hex(), arb.ReceiveCheckpoint(checkpoint))

    async def _apply(self, cid: str, event: arb.Input) -> arb.Transition:
        """One input under the channel's lock, committed with its deliveries — exactly when
        the state changed (the machine returns the very same state when it did not)."""
        async with self.locks[cid]:
            state = self.get(cid)
            t = arb.step(state, event, now_ms=now_ms())
            if t.state is not state or t.effects:
                await self.commit(t.state, t.effects)
        return t

    # -- the bank -----------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._watch(), name="escrow-watch"))

    async def stop(self) -> None:
        await stop_tasks(*self._tasks)

    async def _watch(self) -> None:
        interval = self.ctx.config.bank.poll_interval_ms / 1000
        while True:
            await self.poll_once()
            await asyncio.sleep(interval)

    async def poll_once(self) -> None:
        """Match new escrow credits to deposits; advance payouts; end dispute windows.

        Each part runs even when another fails: a bank that is down must not hold a dispute
        window open past its deadline.
        """
        for part in (self._poll_credits, self._poll_payouts, self._poll_deadlines,
                     self.credits.poll):
            try:
                await part()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # logged; the next poll tries again
                log.warning("escrow.poll_failed", part=part.__name__, error=str(exc)[:300])

    async def _poll_credits(self) -> None:
        rail = self.ctx.rail
        if rail is None:
            return
        cursor = await self.ctx.repo.cursor(CREDITS_CURSOR)
        page = await rail.incoming_credits(cursor)
        for credit in page.credits:
            # the bank's booking time; a bank that gives only a date: that day at 00:00 UTC
            booked = credit.booked_at or datetime.combine(credit.booking_date,
                                                          datetime.min.time(), tzinfo=UTC)
            sender = sender_of(self.ctx.config.bank.scheme, credit.debtor_account,
                               credit.debtor_name)  # a debtor on the escrow account's rail
            await self._credit(credit.entry_id, (credit.reference or "").strip().upper(),
                               credit.amount_minor, credit.currency, credit.debtor_name or "",
                               int(booked.timestamp() * 1000), account_json(sender))
        if page.cursor != cursor:
            await self.ctx.repo.set_cursor(CREDITS_CURSOR, page.cursor)

    async def _poll_payouts(self) -> None:
        for record in await self.transfers.refresh():
            if record.status.final and record.status.value != "booked":
                log.error("escrow.payout_failed", key=record.idempotency_key,
                          status=record.status.value, reason=record.reason_code)
        await self.apply_bank_answers()

    async def _poll_deadlines(self) -> None:
        for cid, state in list(self.states.items()):
            if state.phase in (arb.ArbiterPhase.DISPUTE, arb.ArbiterPhase.PAYING):
                await self._apply(cid, arb.Tick(self.ctx.signer))

    async def _credit(self, entry_id: str, reference: str, amount: int, currency: str,
                      debtor: str, booked_ms: int, sender: str = "") -> None:
        """Apply one escrow credit to its channel, or keep it as unapplied — never drop it,
        and never let one credit stop the others (or the payouts and deadlines after them).
        Under the refunds' lock: an operator's refund of a credit kept unmatched (its channel
        not registered yet) never lands between the look at it and its deposit."""
        async with self.credits.lock:
            match = await self._take_credit(entry_id, reference, amount, currency, debtor,
                                            booked_ms, sender)
        if match is None and reference in self.references:
            # registered while this credit was being written (its look-up came before the
            # registration, the write after the registration's rematch): match it now
            await self._rematch(self.references[reference][0])

    async def _take_credit(self, entry_id: str, reference: str, amount: int, currency: str,
                           debtor: str, booked_ms: int, sender: str) -> tuple[str, int] | None:
        """:meth:`_credit`'s work: the channel and party the reference matched, if any."""
        async with self.ctx.db() as session:
            seen = await session.get(UnappliedCredit, entry_id)
        if seen is not None and seen.status != "held":
            # read again, refunded (or being refunded) since: that money is no deposit
            return self.references.get(reference)
        match = self.references.get(reference)
        reason, kind, channel = "", "unmatched", ""
        if not 0 < amount <= MAX_AMOUNT or not 0 <= booked_ms <= MAX_TIME_MS:
            # kept for the operator (never dropped), but no number out of range is stored
            reason = f"amount {amount} or booking time {booked_ms} out of range"
            amount, booked_ms = 0, max(0, min(booked_ms, MAX_TIME_MS))
        elif match is None:
            reason = "no registered channel has this deposit reference"
        else:
            cid, party = match
            if currency != self.states[cid].terms.currency:
                reason = f"currency {currency}, the channel is in {self.states[cid].terms.currency}"
            else:
                try:
                    observe = (arb.ObserveTopUp if reference in self.topup_references
                               else arb.ObserveDeposit)
                    t = await self._apply(cid, observe(
                        self.ctx.signer, party, MinorUnits(amount), entry_id, reference,
                        booked_ms))
                    held = [e.credit for e in t.effects if isinstance(e, HoldCredit)]
                    if held:  # the machine took nothing: kept below for a refund
                        reason = f"held for refund: a {held[0].reason.value} deposit"
                        kind, channel = held[0].reason.value, cid
                        sender = account_json(held[0].sender)
                    else:
                        log.info("escrow.deposit", channel=cid[:16], party=party,
                                 amount_minor=amount)
                except ProtocolError as exc:
                    reason = f"refused by the channel: {exc.message}"
        kept = await self.ctx.repo.note_credit(UnappliedCredit(
            entry_id=entry_id, reference=reference, amount_minor=amount, currency=currency,
            debtor=debtor[:200], booked_ms=booked_ms, reason=reason, applied=False,
            kind=kind, channel_id=channel, sender=sender))
        if kept:
            log.warning("escrow.unapplied_credit", reference=reference, amount_minor=amount,
                        reason=reason)
        return match

    async def unapplied(self) -> list[UnappliedCredit]:
        """Credits on the escrow account that no channel took: money to refund by hand."""
        return await self.ctx.repo.unapplied()

    async def _rematch(self, cid: str) -> None:
        """Credits that arrived before this channel was registered."""
        state = self.states[cid]
        refs = [bank_reference(state.channel_id, Purpose.DEPOSIT, p) for p in (0, 1)]
        for c in await self.ctx.repo.unapplied(refs):
            if c.status != "held":
                continue  # refunded (or being refunded): that money is no deposit any more
            await self._credit(c.entry_id, c.reference, c.amount_minor, c.currency, c.debtor,
                               c.booked_ms, c.sender)

    async def apply_bank_answers(self) -> None:
        """Every booking, rejection and return the rail reported for a payout is applied,
        also after a crash between saving the answer and applying it (re-derived from the
        transfer rows each poll, node.escrow_payouts)."""
        for cid, rows in (await self.transfers.payouts_by_channel()).items():
            state = self.states.get(cid)
            if state is None or state.phase is arb.ArbiterPhase.FUNDING:
                continue
            for event in bank_answers(state, rows, self.ctx.signer):
                try:
                    await self._apply(cid, event)
                except ProtocolError as exc:  # logged; one bad answer never stops the rest
                    log.warning("escrow.bank_answer_refused", channel=cid[:16],
                                error=exc.message)

    async def _payout(self, row: OutboxRow) -> None:
        await self.transfers.submit_row(row)
        await self.apply_bank_answers()

    def find(self, prefix: str) -> arb.ArbiterState:
        if prefix and prefix in self.states:  # a whole id: no pass over every escrow
            return self.states[prefix]
        matches = [cid for cid in self.states if cid.startswith(prefix)]
        if len(matches) != 1:
            raise NotFound(f"no single escrow matches {prefix}")
        return self.states[matches[0]]
