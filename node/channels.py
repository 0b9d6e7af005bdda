"""The channel service: protocol.channel's machine, persisted, wired to peers, arbiter and rail.

Every change follows *persist, then act*: the new state (and the rows that go with it: usage,
our in-flight proofs, outbox effects) is committed in one transaction, the in-memory copy is
replaced only after the commit, and only then does anything leave the node. A receipt is signed
into the state and committed before it is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import os
from collections import defaultdict, deque
from collections.abc import Sequence
from typing import Any

import structlog
from sqlalchemy import delete, func, insert, select, update

from node.context import Context, now_ms, upsert_usage
from node.errors import Conflict, NodeError, NotFound, PeerUnavailable
from node.outbox import Delivery, Outbox
from node.peerclient import OutboundStream
from node.peers import signed_account
from node.storage.codec import decode_channel, encode_channel
from node.storage.models import Channel, HeldProposal, OutgoingProof, Peer
from protocol import channel as ch
from protocol.errors import ErrorCode, ProtocolError, RemoteProtocolError
from protocol.messages import (
    EMPTY_SIGNATURE,
    BalanceProof,
    BankAccount,
    CallbackAddress,
    ChannelAcceptance,
    ChannelProposal,
    ChannelRegistration,
    ChannelTerms,
    CooperativeClose,
    DisputeNotice,
    FundingConfirmation,
    PayoutNotice,
    Receipt,
)
from protocol.money import check_scale, currency_exponent, parse_rail_money
from protocol.records import Message
from protocol.references import Purpose, bank_reference, idempotency_key
from protocol.tariff import TariffLine
from protocol.types import Amount, ChannelId, MinorUnits, Quantity

log = structlog.get_logger()
BUCKET_MS = 3_600_000
MAX_HELD_PROPOSALS = 100
"""Held proposals from openers that are not known peers (anyone can make a key and sign one)."""
MAX_HELD_PER_PROPOSER = 3
"""Held proposals from any one opener, known peer or not: nobody crowds out the others."""


def usage_rows(
    state: ch.ChannelState, before: ch.Flow, proof: BalanceProof, rows: dict[Any, list[int]]
) -> None:
    """Add one proof's usage (its deltas over `before`) to the aggregate `rows`."""
    sender = state.terms.party_index(proof.sender)
    bucket = proof.time_ms - proof.time_ms % BUCKET_MS
    cid = state.channel_id.hex()
    for line, old, new in zip(state.terms.tariff, before.quantities, proof.quantities, strict=True):
        if new != old:
            row = rows[(cid, sender, line.unit, proof.reference, bucket)]
            row[0] += new - old
            row[1] += line.amount(new) - line.amount(old)
            row[2] += 1
    if proof.direct_amount != before.direct_amount:
        row = rows[(cid, sender, "amount", proof.reference, bucket)]
        row[1] += proof.direct_amount - before.direct_amount
        row[2] += 1


class ChannelService:
    def __init__(self, ctx: Context, outbox: Outbox) -> None:
        self.ctx = ctx
        self.outbox = outbox
        self.states: dict[str, ch.ChannelState] = {}
        self.locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.ack_waiters: defaultdict[str, list[tuple[int, int, asyncio.Future[None]]]] = (
            defaultdict(list))
        self._tiebreak = itertools.count()
        self.pending: defaultdict[str, deque[tuple[ch.ActionPay, int, asyncio.Future[int]]]] = (
            defaultdict(deque))
        self.writers: dict[str, asyncio.Task[None]] = {}
        self.dirty: set[str] = set()
        self.flusher: asyncio.Task[None] | None = None
        self.streams: dict[str, OutboundStream] = {}
        self.early_funding: defaultdict[str, dict[int, FundingConfirmation]] = defaultdict(dict)
        self.changed = asyncio.Event()
        self.holding = asyncio.Lock()
        """Serialises the held-proposal quota checks with the writes they guard."""

    # -- loading and saving -------------------------------------------------------------------

    async def load(self) -> None:
        async with self.ctx.db() as session:
            for row in (await session.scalars(select(Channel))).all():
                self.states[row.id] = decode_channel(row.state)
        for cid, state in self.states.items():
            if state.phase in (ch.Phase.OPEN, ch.Phase.CLOSING) and state.sent.nonce:
                await self._stream(cid)

    def get(self, cid: str) -> ch.ChannelState:
        state = self.states.get(cid)
        if state is None:
            raise NotFound(f"no channel {cid}", code="UNKNOWN_CHANNEL")
        return state

    def lock(self, cid: str) -> asyncio.Lock:
        """The channel's lock — only for a channel we have (no lock per unknown id)."""
        self.get(cid)
        return self.locks[cid]

    def resolve(self, prefix: str) -> str:
        """A channel id from any unique prefix of it."""
        prefix = prefix.lower().strip()
        if not prefix or any(c not in "0123456789abcdef" for c in prefix):
            raise NodeError(f"{prefix!r} is not a channel id (hex)", code="BAD_CHANNEL_ID")
        matches = sorted(cid for cid in self.states if cid.startswith(prefix))
        if not matches:
            raise NotFound(f"no channel starts with {prefix}", code="UNKNOWN_CHANNEL")
        if len(matches) > 1:
            raise Conflict(
                f"{prefix} is ambiguous: it matches {', '.join(matches)}",
                code="AMBIGUOUS_CHANNEL",
            )
        return matches[0]

    async def _commit(
        self,
        state: ch.ChannelState,
        *,
        new: bool = False,
        usage: dict[Any, list[int]] | None = None,
        outgoing: Sequence[BalanceProof] = (),
        prune_upto: int | None = None,
        outbox: Sequence[Delivery] = (),
    ) -> None:
        cid = state.channel_id.hex()
        async with self.ctx.db() as session, session.begin():
            data = encode_channel(state)
            if new:
                peer = state.terms.parties()[state.them].hex()
                session.add(
                    Channel(
                        id=cid,
                        peer_id=peer,
                        phase=state.phase.value,
                        state=data,
                        created_ms=state.updated_ms,
                        updated_ms=state.updated_ms,
                    )
                )
            else:
                await session.execute(
                    update(Channel)
                    .where(Channel.id == cid)
                    .values(phase=state.phase.value, state=data, updated_ms=state.updated_ms)
                )
            if usage:
                await session.execute(upsert_usage(session, usage))
            if outgoing:
                await session.execute(
                    insert(OutgoingProof),
                    [{"channel_id": cid, "nonce": p.nonce, "proof": p.encode()} for p in outgoing],
                )
            if prune_upto is not None:
                await session.execute(
                    delete(OutgoingProof).where(
                        OutgoingProof.channel_id == cid, OutgoingProof.nonce <= prune_upto
                    )
                )
            await self.outbox.add_all(session, cid, outbox)
        self.states[cid] = state
        self.dirty.discard(cid)
        self.changed.set()
        if outbox:
            self.outbox.kick()

    # -- opening ------------------------------------------------------------------------------

    async def open(
        self,
        *,
        peer_id: str,
        arbiter_id: str,
        deposit: str,
        peer_deposit: str | None,
        tariff: Sequence[TariffLine],
        dispute_window_ms: int,
        scale: int,
    ) -> ch.ChannelState:
        ctx = self.ctx
        try:  # before anything else: ch.propose checks it again, with the other terms
            self.bounds.check(dispute_window_ms)
        except ProtocolError as exc:
            raise NodeError(f"{exc.message} of this node's [policy]",
                            code="INVALID_DISPUTE_WINDOW") from None
        if peer_id == ctx.node_id or arbiter_id in (ctx.node_id, peer_id):
            raise NodeError("peer, arbiter and this node must be three different nodes")
        peer, arbiter = await ctx.peer(peer_id), await ctx.peer(arbiter_id)
        if arbiter.role != "arbiter":
            raise NodeError(f"{arbiter_id[:16]}… is not an arbiter", code="NOT_AN_ARBITER")
        ours = parse_rail_money(deposit)  # a deposit moves over the bank: whole minor units
        theirs = parse_rail_money(peer_deposit) if peer_deposit else None
        if theirs is not None and theirs.currency != ours.currency:
            raise NodeError("both deposits must be in the same currency", code="INVALID_AMOUNT")
        held = ctx.config.bank.account_currency()
        if held and ours.currency != held:
            raise NodeError(
                f"the deposit is in {ours.currency}, but this node's bank account is held in "
                f"{held}, so the bank would refuse it: give the deposit in {held}",
                code="WRONG_CURRENCY")
        check_scale(scale, currency_exponent(ours.currency))
        terms = ChannelTerms(
            ctx.signer.node_id,
            bytes.fromhex(peer_id),  # type: ignore[arg-type]
            bytes.fromhex(arbiter_id),  # type: ignore[arg-type]
            ours.currency,
            scale,
            MinorUnits(ours.amount),
            MinorUnits(theirs.amount if theirs else 0),
            tuple(tariff),
            dispute_window_ms,
            self.own_account(),
            signed_account(peer, "the peer"),
            signed_account(arbiter, "the arbiter"),
            os.urandom(16),
        )
        t = ch.propose(terms, ctx.signer, now_ms=now_ms(), bounds=self.bounds)
        cid = t.state.channel_id.hex()
        await self._commit(t.state, new=True)
        log.info("channel.proposed", channel=cid, peer=peer_id[:16])
        (send,) = t.effects
        assert isinstance(send, ch.SendProposal)
        answer = await ctx.peers.send(peer.url, "/p2p/proposal", send.proposal)
        if isinstance(answer, ChannelAcceptance):
            await self.on_acceptance(answer)
        return self.states[cid]

    @property
    def bounds(self) -> ch.TermsBounds:
        """The dispute windows this node's policy accepts, in terms it proposes or accepts."""
        return self.ctx.config.policy.terms_bounds()

    def own_account(self) -> BankAccount:
        account = self.ctx.config.own_account()
        if account is None:
            raise NodeError("this node has no bank account: set [bank] in config.toml")
        return account

    async def on_proposal(self, proposal: ChannelProposal) -> ChannelAcceptance | None:
        """A peer proposes. Terms outside our [policy] are refused; an allow-listed opener's
        proposal within its allowance is accepted at once; any other waits for the operator,
        within quotas: MAX_HELD_PER_PROPOSER per opener, MAX_HELD_PROPOSALS from openers that
        are not known peers (so fresh keys never crowd out a known peer)."""
        ctx = self.ctx
        terms = proposal.terms
        if terms.peer != ctx.signer.node_id:
            raise RemoteProtocolError(ErrorCode.NOT_A_PARTY, "the proposal is not addressed to us")
        ch.verify_proposal(proposal, self.bounds)  # our [policy]: refused before it is stored
        if terms.peer_account != self.own_account():
            raise RemoteProtocolError(ErrorCode.INVALID_TERMS, "the terms name another account")
        try:
            arbiter = await ctx.peer(terms.arbiter.hex())
        except NotFound:
            raise RemoteProtocolError(
                ErrorCode.INVALID_TERMS, "we do not know the arbiter the terms name"
            ) from None
        if arbiter.role != "arbiter":
            raise RemoteProtocolError(ErrorCode.INVALID_TERMS, "the terms' arbiter is no arbiter")
        if terms.escrow_account != signed_account(arbiter, "the arbiter"):
            raise RemoteProtocolError(
                ErrorCode.INVALID_TERMS,
                "the terms name another escrow account than the arbiter's own",
            )
        cid = terms.channel_id.hex()
        if cid in self.states:
            acceptance = ChannelAcceptance(terms.channel_id, self.states[cid].peer_signature)  # type: ignore[arg-type]
            return acceptance if self.states[cid].peer_signature else None
        reason = self.hold_reason(terms)
        if reason is None:
            return await self._accept(proposal, reply_inline=True)
        await self._hold(proposal)
        log.info("channel.held", channel=cid, opener=terms.opener.hex()[:16], reason=reason)
        return None

    def policy_objection(self, terms: ChannelTerms) -> str | None:
        """Why this node takes no channel on these terms from anyone (its [policy], as the
        protocol checks it); None when it may."""
        try:
            self.bounds.check(terms.dispute_window_ms)
        except ProtocolError as exc:
            return exc.message
        return None

    def hold_reason(self, terms: ChannelTerms) -> str | None:
        """Why a proposal on these terms waits for the operator; None: accept it at once."""
        allowance = self.ctx.config.allowance(terms.opener.hex())
        if allowance is None:
            return "the opener is not on the allow-list"
        objection = allowance.objection(terms.currency, terms.peer_deposit,
                                        terms.dispute_window_ms)
        return None if objection is None else f"outside the opener's allowance: {objection}"

    def held_reason(self, held: HeldProposal) -> str:
        """What the operator is asked to decide, as of the config now."""
        terms = ChannelProposal.decode(held.proposal).terms
        outside = self.policy_objection(terms)
        if outside is not None:
            return f"outside this node's [policy] now: {outside}"
        return self.hold_reason(terms) or "within the opener's allowance now (not when it came)"

    async def _hold(self, proposal: ChannelProposal) -> None:
        """Store a proposal for the operator, or refuse it when its opener has no room."""
        terms = proposal.terms
        cid, opener = terms.channel_id.hex(), terms.opener.hex()
        async with self.holding, self.ctx.db() as session, session.begin():
            if await session.get(HeldProposal, cid) is not None:
                return
            count = select(func.count()).select_from(HeldProposal)
            theirs = await session.scalar(count.where(HeldProposal.opener_id == opener)) or 0
            if theirs >= MAX_HELD_PER_PROPOSER:
                raise RemoteProtocolError(
                    ErrorCode.INVALID_STATE,
                    f"too many proposals waiting from you: {theirs} wait for this node's "
                    "operator already; try again once they are answered",
                )
            if await session.get(Peer, opener) is None:
                strangers = await session.scalar(count.where(
                    HeldProposal.opener_id.not_in(select(Peer.node_id)))) or 0
                if strangers >= MAX_HELD_PROPOSALS:
                    raise RemoteProtocolError(
                        ErrorCode.INVALID_STATE,
                        "too many proposals are waiting for this node's operator; try later",
                    )
            session.add(HeldProposal(id=cid, opener_id=opener, proposal=proposal.encode(),
                                     received_ms=now_ms()))

    async def held(self) -> list[HeldProposal]:
        async with self.ctx.db() as session:
            return list((await session.scalars(
                select(HeldProposal).order_by(HeldProposal.received_ms))).all())

    async def _held_id(self, prefix: str) -> str:
        """The held proposal a unique id prefix names."""
        prefix = prefix.lower().strip()
        if not prefix or len(prefix) > 64 or any(c not in "0123456789abcdef" for c in prefix):
            raise NodeError(f"{prefix[:80]!r} is not a channel id (hex)", code="BAD_CHANNEL_ID")
        async with self.ctx.db() as session:
            matches = list((await session.scalars(
                select(HeldProposal.id).where(HeldProposal.id.startswith(prefix))
                .order_by(HeldProposal.id).limit(2))).all())
        if not matches:
            if any(cid.startswith(prefix) for cid in self.states):
                raise Conflict("that channel is already accepted", code="ALREADY_ACCEPTED")
            raise NotFound(f"no proposal waiting with id {prefix}", code="UNKNOWN_CHANNEL")
        if len(matches) > 1:
            raise Conflict(f"{prefix} is ambiguous: {', '.join(matches)}…",
                           code="AMBIGUOUS_CHANNEL")
        return str(matches[0])

    async def accept_held(self, prefix: str) -> ch.ChannelState:
        async with self.holding:
            cid = await self._held_id(prefix)
            async with self.ctx.db() as session:
                row = await session.get(HeldProposal, cid)
                assert row is not None  # only deleted under self.holding
            # ch.accept checks the terms against our [policy] as it is now (INVALID_TERMS)
            await self._accept(ChannelProposal.decode(row.proposal), reply_inline=False)
            async with self.ctx.db() as session, session.begin():
                await session.execute(delete(HeldProposal).where(HeldProposal.id == cid))
        return self.states[cid]

    async def reject_held(self, prefix: str) -> HeldProposal:
        """Delete a held proposal (the operator said no); the opener is not told."""
        async with self.holding:
            cid = await self._held_id(prefix)
            async with self.ctx.db() as session, session.begin():
                row = await session.get(HeldProposal, cid)
                assert row is not None  # only deleted under self.holding
                await session.delete(row)
        log.info("channel.rejected", channel=cid, opener=row.opener_id[:16])
        return row

    async def _accept(self, proposal: ChannelProposal, *, reply_inline: bool) -> ChannelAcceptance:
        t = ch.accept(proposal, self.ctx.signer, now_ms=now_ms(), bounds=self.bounds)
        acceptance = next(e.acceptance for e in t.effects if isinstance(e, ch.SendAcceptance))
        outbox = await self._funding_effects(t.state, proposal, acceptance)
        if not reply_inline:
            opener = await self.ctx.peer(proposal.terms.opener.hex())
            outbox.append(Delivery("send", f"{opener.url}/p2p/acceptance", acceptance.encode(),
                                   recipient=opener.node_id, purpose="acceptance"))
        await self._commit(t.state, new=True, outbox=outbox)
        log.info("channel.accepted", channel=t.state.channel_id.hex())
        return acceptance

    async def _funding_effects(
        self, state: ch.ChannelState, proposal: ChannelProposal, acceptance: ChannelAcceptance
    ) -> list[Delivery]:
        """Register with the arbiter and pay our deposit into escrow (both via the outbox)."""
        arbiter = await self.ctx.peer(state.terms.arbiter.hex())
        callback = CallbackAddress(state.channel_id, self.ctx.signer.node_id,
                                   self.ctx.config.public_url, now_ms(),
                                   EMPTY_SIGNATURE).signed_by(self.ctx.signer)
        out = [
            Delivery(
                "send",
                f"{arbiter.url}/p2p/register",
                ChannelRegistration(proposal, acceptance, callback).encode(),
                recipient=arbiter.node_id,
                purpose="register",
            )
        ]
        deposit = state.terms.deposits()[state.us]
        if deposit:
            out.append(Delivery("deposit", "", json.dumps(self.deposit_instruction(state)).encode(),
                                recipient="", purpose="deposit"))
        return out

    def deposit_instruction(self, state: ch.ChannelState) -> dict[str, Any]:
        cid = state.channel_id
        escrow = state.terms.escrow_account
        return {
            "idempotency_key": idempotency_key(cid, Purpose.DEPOSIT, state.us),
            "purpose": Purpose.DEPOSIT.value,
            "party": state.us,
            "amount_minor": state.terms.deposits()[state.us],
            "currency": state.terms.currency,
            "reference": bank_reference(cid, Purpose.DEPOSIT, state.us),
            "creditor": {
                "scheme": escrow.scheme,
                "identification": escrow.identification,
                "name": escrow.name,
            },
        }

    async def on_acceptance(self, acceptance: ChannelAcceptance) -> None:
        cid = acceptance.channel_id.hex()
        async with self.lock(cid):
            state = self.get(cid)
            t = ch.step(state, ch.ReceiveAcceptance(acceptance), now_ms=now_ms())
            if t.state is state or state.phase is not ch.Phase.PROPOSED:
                return
            proposal = ChannelProposal(state.terms, state.opener_signature)  # type: ignore[arg-type]
            outbox = await self._funding_effects(t.state, proposal, acceptance)
            await self._commit(t.state, outbox=outbox)
        log.info("channel.accepted_by_peer", channel=cid)
        for conf in self.early_funding.pop(cid, {}).values():
            await self.on_funding(conf)

    async def on_funding(self, conf: FundingConfirmation) -> None:
        cid = conf.channel_id.hex()
        async with self.lock(cid):
            state = self.get(cid)
            if state.phase is ch.Phase.PROPOSED:
                # The peer registered and was confirmed before its acceptance reached us:
                # check the arbiter's signature now, apply it once the acceptance lands.
                conf.verify_signature(state.terms.arbiter)
                held = self.early_funding[cid]
                side = state.terms.party_index(conf.depositor)
                if side not in held or held[side].amount < conf.amount:
                    held[side] = conf
                return
            t = ch.step(state, ch.ReceiveFunding(conf), now_ms=now_ms())
            if t.state.funded != state.funded or t.state.phase != state.phase:
                await self._commit(t.state)
        if any(isinstance(e, ch.NotifyOpened) for e in t.effects):
            log.info("channel.open", channel=cid)

    # -- paying -------------------------------------------------------------------------------

    async def _stream(self, cid: str) -> OutboundStream:
        stream = self.streams.get(cid)
        if stream is None:
            state = self.get(cid)
            peer = await self.ctx.peer(state.terms.parties()[state.them].hex())
            url = f"{peer.url.rstrip('/')}/p2p/channels/{cid}/stream"
            stream = OutboundStream(
                url=url.replace("http://", "ws://", 1).replace("https://", "wss://", 1),
                session=self.ctx.peers.session,
                on_message=self._on_stream_message,
                resend=lambda after: self._unacked(cid, after),
                max_msg_size=self.ctx.config.limits.max_body_bytes,
            )
            self.streams[cid] = stream
            stream.start()
        return stream

    async def _unacked(self, cid: str, after: int = 0) -> list[tuple[int, bytes]]:
        """What to (re)send after the stream connects: first learn what the peer already holds
        (its latest receipt — lost if it crashed after committing), then only what is newer."""
        state = self.get(cid)
        if after:
            return await self._stored_after(cid, after)
        peer = await self.ctx.peer(state.terms.parties()[state.them].hex())
        try:
            receipt = await self.ctx.peers.fetch(
                f"{peer.url.rstrip('/')}/p2p/channels/{cid}/receipt")
        except (PeerUnavailable, ProtocolError) as exc:
            log.info("stream.no_receipt", channel=cid[:16], error=str(exc))
            receipt = None
        if isinstance(receipt, Receipt):
            try:
                await self.on_receipt(receipt)
            except ProtocolError as exc:
                log.warning("stream.bad_receipt", channel=cid[:16], error=str(exc))
        return await self._stored_after(cid, after)

    async def _stored_after(self, cid: str, after: int) -> list[tuple[int, bytes]]:
        start = max(self.get(cid).sent.acked_nonce, after)
        async with self.ctx.db() as session:
            rows = await session.execute(
                select(OutgoingProof.nonce, OutgoingProof.proof)
                .where(OutgoingProof.channel_id == cid, OutgoingProof.nonce > start)
                .order_by(OutgoingProof.nonce)
            )
            return [(int(n), bytes(p)) for n, p in rows.all()]

    async def _on_stream_message(self, message: Message) -> None:
        if isinstance(message, Receipt):
            await self.on_receipt(message)
        else:
            log.warning("stream.peer_error", message=repr(message)[:300])

    async def pay(
        self,
        cid: str,
        *,
        quantities: Sequence[int],
        direct_amount: int = 0,
        reference: str = "",
        repeat: int = 1,
        wait: bool = True,
        timeout_s: float = 30.0,
    ) -> ch.ChannelState:
        """Sign `repeat` updates of `quantities` (+ `direct_amount`) each, stream them, and with
        `wait` return once the peer's receipts cover the last one.

        Concurrent calls on one channel are coalesced: one writer signs everything queued,
        commits it in one transaction and sends it (group commit on the sender side too).
        """
        if not 1 <= repeat <= 1_000_000:
            raise NodeError("repeat must be between 1 and 1,000,000")
        phase = self.get(cid).phase
        if phase is not ch.Phase.OPEN:
            raise Conflict(f"cannot pay: the channel is {phase.value}, not open",
                           code="INVALID_STATE")
        await self._stream(cid)
        action = ch.ActionPay(
            self.ctx.signer, tuple(Quantity(q) for q in quantities), Amount(direct_amount),
            reference)
        chunk = max(1, min(self.ctx.config.limits.max_batch,
                           self.ctx.config.limits.max_inflight // 2))
        remaining, last = repeat, 0
        while remaining:
            n = min(remaining, chunk)
            last = await self._enqueue(cid, action, n, timeout_s)
            remaining -= n
        if wait:
            await self._wait_acked(cid, last, timeout_s)
        return self.states[cid]

    async def _enqueue(self, cid: str, action: ch.ActionPay, n: int, timeout_s: float) -> int:
        """Queue `n` updates for the channel's writer; returns the last nonce once committed
        and handed to the stream."""
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pending[cid].append((action, n, done))
        writer = self.writers.get(cid)
        if writer is None or writer.done():
            self.writers[cid] = asyncio.create_task(self._write(cid, timeout_s),
                                                    name=f"writer {cid[:16]}")
        return await done

    async def _write(self, cid: str, timeout_s: float) -> None:
        """Sign and commit whatever is queued, as few transactions as the window allows."""
        window = self.ctx.config.limits.max_inflight
        queue = self.pending[cid]
        while queue:
            try:
                await self._wait_room(cid, window - queue[0][1], timeout_s)
            except NodeError as exc:
                for _, _, done in queue:
                    if not done.done():
                        done.set_exception(exc)
                queue.clear()
                return
            async with self.lock(cid):
                state = self.get(cid)
                room = window - (state.sent.nonce - state.sent.acked_nonce)
                taken: list[tuple[int, asyncio.Future[int]]] = []
                proofs: list[BalanceProof] = []
                rows: dict[Any, list[int]] = defaultdict(lambda: [0, 0, 0])
                stamp = now_ms()
                # the head fits (we waited for it); take more while the window has room
                while queue and queue[0][1] <= room - len(proofs):
                    action, n, done = queue.popleft()
                    before_request = (state, len(proofs), {k: list(v) for k, v in rows.items()})
                    try:
                        for _ in range(n):
                            before = state.sent
                            t = ch.step(state, action, now_ms=stamp)
                            state = t.state
                            proof = t.effects[0].proof  # type: ignore[union-attr]
                            usage_rows(state, before, proof, rows)
                            proofs.append(proof)
                    except ProtocolError as exc:  # this request only: the others go on
                        state, keep, saved = before_request
                        del proofs[keep:]
                        rows = defaultdict(lambda: [0, 0, 0], saved)
                        done.set_exception(exc)
                        continue
                    taken.append((state.sent.nonce, done))
                if proofs:
                    try:
                        await self._commit(state, usage=rows, outgoing=proofs,
                                           prune_upto=state.sent.acked_nonce)
                    except Exception as exc:
                        for _, done in taken:
                            done.set_exception(exc)
                        continue
            stream = self.streams.get(cid)
            if stream is not None:
                for proof in proofs:
                    await stream.send(proof.nonce, proof.encode())
            for nonce, done in taken:
                done.set_result(nonce)

    async def _wait_room(self, cid: str, inflight: int, timeout_s: float) -> None:
        """Until at most `inflight` of our proofs are unacknowledged."""
        await self._wait_acked(cid, self.get(cid).sent.nonce - max(0, inflight), timeout_s,
                               what="acknowledged nothing")

    async def _wait_acked(self, cid: str, nonce: int, timeout_s: float, *,
                          what: str = "not acknowledged") -> None:
        if self.get(cid).sent.acked_nonce >= nonce:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heap = self.ack_waiters[cid]
        if len(heap) > 1024:  # drop waiters that gave up, while the peer stays away
            heap[:] = [w for w in heap if not w[2].done()]
            heapq.heapify(heap)
        heapq.heappush(heap, (nonce, next(self._tiebreak), waiter))
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout_s)
        except TimeoutError:
            waiter.cancel()
            raise NodeError(
                f"the peer has {what} update {nonce} within {timeout_s:.0f} s; what was signed "
                "is stored and will be resent when it is back",
                code="NOT_ACKNOWLEDGED",
                status=504,
            ) from None

    def _release_waiters(self, cid: str) -> None:
        acked = self.get(cid).sent.acked_nonce
        heap = self.ack_waiters[cid]
        while heap and heap[0][0] <= acked:
            _, _, waiter = heapq.heappop(heap)
            if not waiter.done():
                waiter.set_result(None)

    async def on_receipt(self, receipt: Receipt) -> None:
        """A receipt moves our acknowledged nonce. It is kept in memory at once and written
        with the next commit (or by the flusher within a moment): the peer holds it too, and a
        restarted sender reads it back before resuming (ADR 0002)."""
        cid = receipt.channel_id.hex()
        async with self.lock(cid):
            state = self.get(cid)
            t = ch.step(state, ch.ReceiveReceipt(receipt), now_ms=now_ms())
            if t.state.sent.acked_nonce == state.sent.acked_nonce:
                return
            self.states[cid] = t.state
            self.dirty.add(cid)
        self._release_waiters(cid)
        if self.flusher is None or self.flusher.done():
            self.flusher = asyncio.create_task(self._flush_soon(), name="receipt flusher")

    async def _flush_soon(self, delay_s: float = 0.05) -> None:
        await asyncio.sleep(delay_s)
        await self.flush()

    async def flush(self) -> None:
        """Write receipts held only in memory (and prune what they acknowledge)."""
        while self.dirty:
            cid = self.dirty.pop()
            async with self.lock(cid):
                state = self.get(cid)
                await self._commit(state, prune_upto=state.sent.acked_nonce)

    def latest_receipt(self, cid: str) -> Receipt | None:
        """Our latest receipt for what the peer sent us (what it needs to resume a stream)."""
        return self.get(cid).received.receipt

    async def on_proofs(
        self, cid: str, proofs: Sequence[BalanceProof]
    ) -> tuple[Receipt | None, list[ProtocolError]]:
        """Validate, persist (one transaction), then sign one cumulative receipt."""
        errors: list[ProtocolError] = []
        async with self.lock(cid):
            state = self.get(cid)
            start = state
            rows: dict[Any, list[int]] = defaultdict(lambda: [0, 0, 0])
            stamp = now_ms()
            for proof in proofs:
                if proof.channel_id != state.channel_id:
                    errors.append(
                        RemoteProtocolError(ErrorCode.WRONG_CHANNEL, "proof for another channel")
                    )
                    continue
                before = state.received
                try:
                    state = ch.step(state, ch.ReceiveProof(proof), now_ms=stamp).state
                except ProtocolError as exc:
                    errors.append(exc)
                    continue
                usage_rows(state, before, proof, rows)
            if state.received.nonce == 0:
                return None, errors
            if state.phase not in (ch.Phase.OPEN, ch.Phase.CLOSING):
                return state.received.receipt, errors
            t = ch.step(state, ch.ActionAcknowledge(self.ctx.signer), now_ms=stamp)
            if (t.state.received.nonce != start.received.nonce
                    or t.state.received.receipt != start.received.receipt):
                await self._commit(t.state, usage=rows)
            receipt = t.state.received.receipt
        return receipt, errors

    # -- closing ------------------------------------------------------------------------------

    async def close(self, cid: str, *, timeout_s: float = 30.0) -> ch.ChannelState:
        state = self.get(cid)
        if state.phase not in (ch.Phase.OPEN, ch.Phase.CLOSING):
            raise Conflict(f"the channel is {state.phase.value}; only an open channel closes",
                           code="INVALID_STATE")
        await self._wait_acked(cid, state.sent.nonce, timeout_s)
        async with self.lock(cid):
            t = ch.step(self.get(cid), ch.ActionClose(self.ctx.signer), now_ms=now_ms())
            await self._commit(t.state, outbox=await self._close_outbox(t))
        # The close goes to the peer through the outbox (it survives a crash); its answer, the
        # peer's signature, arrives through the same handler. Give it a moment to land.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._until(cid, lambda st: st.phase is not ch.Phase.CLOSING),
                                   min(timeout_s, 10.0))
        return self.states[cid]

    async def _until(self, cid: str, done: Any) -> None:
        while not done(self.get(cid)):
            self.changed.clear()
            await self.changed.wait()

    async def _close_outbox(self, t: ch.Transition) -> list[Delivery]:
        """Closes, claims and evidence: all urgent (time-critical, never behind other rows)."""
        out = []
        for effect in t.effects:
            if isinstance(effect, ch.SendClose):
                peer = await self.ctx.peer(t.state.terms.parties()[t.state.them].hex())
                out.append(Delivery("send", f"{peer.url}/p2p/close", effect.close.encode(),
                                    recipient=peer.node_id, purpose="close", urgent=True))
            if isinstance(effect, ch.SubmitClose):
                arbiter = await self.ctx.peer(t.state.terms.arbiter.hex())
                out.append(Delivery("send", f"{arbiter.url}/p2p/close", effect.close.encode(),
                                    recipient=arbiter.node_id, purpose="close-submit",
                                    urgent=True))
            if isinstance(effect, ch.SubmitUnilateralClose):
                arbiter = await self.ctx.peer(t.state.terms.arbiter.hex())
                out.append(Delivery("send", f"{arbiter.url}/p2p/unilateral",
                                    effect.claim.encode(), recipient=arbiter.node_id,
                                    purpose="unilateral", urgent=True))
            if isinstance(effect, ch.SubmitEvidence):
                arbiter = await self.ctx.peer(t.state.terms.arbiter.hex())
                out.append(Delivery("send", f"{arbiter.url}/p2p/evidence",
                                    effect.evidence.encode(), recipient=arbiter.node_id,
                                    purpose="evidence", urgent=True))
        return out

    async def on_close(self, close: CooperativeClose) -> CooperativeClose | None:
        """The peer signed a close: co-sign it when it matches what we hold (node policy)."""
        cid = close.channel_id.hex()
        async with self.lock(cid):
            state = self.get(cid)
            t = ch.step(state, ch.ReceiveClose(close), now_ms=now_ms())
            if any(isinstance(e, ch.NotifyCloseRequested) for e in t.effects):
                t = ch.step(t.state, ch.ActionClose(self.ctx.signer), now_ms=now_ms())
            if t.state is not state:
                await self._commit(t.state, outbox=await self._close_outbox(t))
        if t.state.phase is ch.Phase.CLOSED:
            log.info("channel.closed", channel=cid)
        return t.state.close

    async def force_close(self, cid: str) -> ch.ChannelState:
        async with self.lock(cid):
            t = ch.step(self.get(cid), ch.ActionForceClose(self.ctx.signer), now_ms=now_ms())
            await self._commit(t.state, outbox=await self._close_outbox(t))
        return self.states[cid]

    async def on_dispute(self, notice: DisputeNotice) -> None:
        """The arbiter opened a dispute window: hand in the latest proof we hold (policy)."""
        cid = notice.channel_id.hex()
        async with self.lock(cid):
            state = self.get(cid)
            t = ch.step(state, ch.ReceiveDisputeNotice(notice), now_ms=now_ms())
            if any(isinstance(e, ch.NotifyDispute) for e in t.effects):
                t = ch.step(t.state, ch.ActionSubmitEvidence(self.ctx.signer), now_ms=now_ms())
            changed = (t.state.phase, t.state.dispute_deadline_ms) != (
                state.phase, state.dispute_deadline_ms)
            if changed:
                await self._commit(t.state, outbox=await self._close_outbox(t))
        if changed:  # a notice seen again (pushed and asked for) changes nothing
            log.info("channel.disputed", channel=cid, deadline_ms=notice.deadline_ms)

    async def on_payout(self, notice: PayoutNotice) -> None:
        cid = notice.channel_id.hex()
        async with self.lock(cid):
            state = self.get(cid)
            t = ch.step(state, ch.ReceivePayout(notice), now_ms=now_ms())
            settled = t.state.phase != state.phase
            if settled:
                await self._commit(t.state)
        stream = self.streams.pop(cid, None)
        if stream is not None:
            await stream.stop()
        if settled:
            log.info("channel.settled", channel=cid)

    async def stop(self) -> None:
        for stream in list(self.streams.values()):
            await stream.stop()
        self.streams.clear()
        for writer in list(self.writers.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer, 5)
        if self.flusher is not None:
            self.flusher.cancel()
        await self.flush()


__all__ = ["ChannelId", "ChannelService", "usage_rows"]
