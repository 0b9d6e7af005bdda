"""The channel service: protocol.channel's machine, persisted, wired to peers, arbiter and rail.

Every input goes the same way (:meth:`ChannelService.apply`): the machine's `step`, the node's
policy answers to what the machine tells it (co-sign a close that matches what we hold, hand
in evidence when a dispute opens), then the new state is committed together with the
deliveries its effects make (node.deliveries) in one transaction — exactly when the state
changed or something must go out — the in-memory copy is replaced only after the commit, and
only then does anything leave the node (*persist, then act*). A receipt is signed into the
state and committed before it is sent.

The concepts around it live beside it: the proposals policy (node.proposals), the group-commit
writer and acknowledgement waiters (node.writer), the outbound streams (node.streams), the
queries (node.storage.repository).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from node.channel_states import ChannelStates
from node.checkpoints import Checkpoints, newly_checkpointed, settlement_rows
from node.context import Context, now_ms
from node.deliveries import INLINE_EFFECTS, channel_deliveries
from node.errors import Conflict, NodeError, NotFound
from node.outbox import Delivery, Outbox
from node.peers import signed_account
from node.proposals import Proposals, account_objection
from node.signing import SigningPool
from node.storage.models import Base
from node.storage.repository import Encoded, UsageRows, usage_rows
from node.streams import Streams
from node.topups import TopUps
from node.writer import Writer
from protocol import channel as ch
from protocol.crypto import Signer
from protocol.errors import ProtocolError
from protocol.messages import (
    BalanceProof,
    BankAccount,
    ChannelAcceptance,
    ChannelProposal,
    ChannelTerms,
    CooperativeClose,
    DisputeNotice,
    FundingConfirmation,
    PayoutNotice,
    Receipt,
)
from protocol.money import (
    check_scale,
    currency_exponent,
    parse_rail_money,
)
from protocol.tariff import TariffLine
from protocol.types import MinorUnits

log = structlog.get_logger()
POLICY: dict[type, Callable[[Signer], ch.Input]] = {
    ch.NotifyCloseRequested: ch.ActionClose,
    ch.NotifyDispute: ch.ActionSubmitEvidence,
    ch.NotifyCheckpointRequested: ch.ActionCheckpoint,
}
"""The node's answer to what the machine tells it: co-sign the peer's close (the machine signs
only a body that matches what we hold), hand in our latest proof when a dispute opens, co-sign
a checkpoint the machine accepted (0003 §9.5: whatever our own schedule)."""


class ChannelService:
    def __init__(self, ctx: Context, outbox: Outbox) -> None:
        self.ctx = ctx
        self.outbox = outbox
        self.states = ChannelStates()
        self.locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.changed = asyncio.Event()
        self.signing = SigningPool()
        self.streams = Streams(ctx, self.get, self.on_receipt)
        self.writer = Writer(self)
        self.proposals = Proposals(self)
        self.checkpoints = Checkpoints(self)
        self.topups = TopUps(self)

    # -- the registry ---------------------------------------------------------------------------

    async def load(self) -> None:
        """The stored states, decoded when first used (node.channel_states); a stream is
        opened at once only where the peer lacks proofs of ours — any other starts with the
        next payment (10,000 channels are not 10,000 sockets at boot, ADR 0316)."""
        self.states.load(await self.ctx.repo.channel_rows())
        for cid in await self.ctx.repo.unacked_channels():
            if cid in self.states and self.states.phase(cid) in (ch.Phase.OPEN,
                                                                  ch.Phase.CLOSING):
                await self.streams.open(cid)

    def get(self, cid: str) -> ch.ChannelState:
        state = self.states.get(cid)
        if state is None:
            raise NotFound(f"no channel {cid}", code="UNKNOWN_CHANNEL")
        return state

    def phase(self, cid: str) -> ch.Phase:
        """The channel's phase, without decoding a stored state."""
        if cid not in self.states:
            raise NotFound(f"no channel {cid}", code="UNKNOWN_CHANNEL")
        return self.states.phase(cid)

    def lock(self, cid: str) -> asyncio.Lock:
        """The channel's lock — only for a channel we have (no lock per unknown id)."""
        self.get(cid)
        return self.locks[cid]

    def resolve(self, prefix: str) -> str:
        """A channel id from any unique prefix of it."""
        prefix = prefix.lower().strip()
        if not prefix or any(c not in "0123456789abcdef" for c in prefix):
            raise NodeError(f"{prefix!r} is not a channel id (hex)", code="BAD_CHANNEL_ID")
        if prefix in self.states:  # a whole id, as the API's callers give it: no pass over
            return prefix  # every channel (10,000 at a time per admin request)
        matches = sorted(cid for cid in self.states if cid.startswith(prefix))
        if not matches:
            raise NotFound(f"no channel starts with {prefix}", code="UNKNOWN_CHANNEL")
        if len(matches) > 1:
            raise Conflict(
                f"{prefix} is ambiguous: it matches {', '.join(matches)}",
                code="AMBIGUOUS_CHANNEL",
            )
        return matches[0]

    # -- apply and commit -----------------------------------------------------------------------

    async def commit(
        self,
        state: ch.ChannelState,
        *,
        new: bool = False,
        usage: UsageRows | None = None,
        outgoing: Encoded = (),
        prune_upto: int | None = None,
        outbox: Sequence[Delivery] = (),
        rows: Sequence[Base] = (),
        also: Callable[[AsyncSession], Awaitable[None]] | None = None,
    ) -> None:
        """The state, the rows that go with it (and the settlements of a checkpoint it newly
        holds) and its deliveries, in one transaction; the in-memory copy is replaced after
        the commit, the deliveries start after it. `also` writes more rows in the same
        transaction (node.usage_events: the deduplication rows).

        A commit once begun runs to its end, in memory too, even when the caller is cancelled
        (Writer.stop's bound): a cancel does not stop the thread that commits it (the direct
        connection's, aiosqlite's), and a state in memory left behind the stored one would be
        written back over it (the stop's receipt flush) or signed on again."""
        done = asyncio.ensure_future(self._commit(state, new=new, usage=usage, outgoing=outgoing,
                                                  prune_upto=prune_upto, outbox=outbox,
                                                  rows=rows, also=also))
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            await asyncio.wait([done])
            if not done.cancelled():
                done.exception()  # its failure, if any, is the cancelled caller's: retrieved
            raise

    async def _commit(self, state: ch.ChannelState, *, new: bool, usage: UsageRows | None,
                      outgoing: Encoded, prune_upto: int | None, outbox: Sequence[Delivery],
                      rows: Sequence[Base],
                      also: Callable[[AsyncSession], Awaitable[None]] | None) -> None:
        cid = state.channel_id.hex()
        before = self.states.get(cid)
        if not (new or outbox or rows or also) and self._rows_alone(before, state):
            await self.ctx.repo.save_channel_alone(state, usage=usage, outgoing=outgoing,
                                                   prune_upto=prune_upto)
        else:
            async with self.ctx.repo.transaction() as session:
                await self.ctx.repo.save_channel(session, state, new=new, usage=usage,
                                                 outgoing=outgoing, prune_upto=prune_upto)
                if state.phase is ch.Phase.SETTLED:
                    await self.outbox.retire(session, cid)
                session.add_all([*rows, *await settlement_rows(session, before, state)])
                await self.outbox.add_all(session, cid, outbox)
                if also is not None:
                    await also(session)
                await self.ctx.events.channel(session, before, state)
        self.ctx.metrics.committed(cid, self.states.get(cid), state, (n for n, _ in outgoing))
        self.states[cid] = self.writer.with_receipts_since(state, self.states.get(cid))
        self.changed.set()
        if outbox:
            self.outbox.kick()

    def _rows_alone(self, before: ch.ChannelState | None, after: ch.ChannelState) -> bool:
        """Whether committing `after` over `before` writes the channel's own rows and nothing
        else (the commit of an update or a receipt): no outbox to retire, no settlement due,
        no event to append. It then runs without a session (ADR 0325)."""
        return (before is not None and after.phase is not ch.Phase.SETTLED
                and not newly_checkpointed(before, after)
                and self.ctx.events.without_rows(before, after))

    async def commit_transition(self, before: ch.ChannelState | None, t: ch.Transition, *,
                                inline: tuple[type, ...] = INLINE_EFFECTS,
                                usage: UsageRows | None = None) -> None:
        """Commit `t` with the deliveries of its effects — exactly when the state changed (the
        machine returns the very same state when it did not) or something must go out."""
        outbox = await channel_deliveries(self.ctx, t.state, t.effects, inline=inline)
        if t.state is before and not outbox:
            return
        await self.commit(t.state, new=before is None, usage=usage, outbox=outbox)

    async def apply(self, cid: str, event: ch.Input, *, at_ms: int | None = None
                    ) -> tuple[ch.ChannelState, ch.Transition]:
        """One input under the channel's lock, with the node's POLICY answers, committed;
        returns the state before and the transition (`t.state is before`: nothing changed).
        The machine is given the node's clock, or `at_ms` (a schedule run at a given time)."""
        async with self.lock(cid):
            state = self.get(cid)
            t = ch.step(state, event, now_ms=at_ms or now_ms())
            for effect in t.effects:
                answer = POLICY.get(type(effect))
                if answer is not None:
                    more = ch.step(t.state, answer(self.ctx.signer), now_ms=at_ms or now_ms())
                    t = ch.Transition(more.state, t.effects + more.effects)
            await self.commit_transition(state, t)
        return state, t

    # -- opening --------------------------------------------------------------------------------

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
        if (objection := account_objection(ctx.config, terms)) is not None:
            raise NodeError(objection, code="INVALID_TERMS")
        t = ch.propose(terms, ctx.signer, now_ms=now_ms(), bounds=self.bounds)
        cid = t.state.channel_id.hex()
        await self.commit(t.state, new=True, outbox=await channel_deliveries(ctx, t.state,
                                                                              t.effects))
        log.info("channel.proposed", channel=cid, peer=peer_id[:16])
        # SendProposal is carried out here: its answer may be the acceptance
        await self.propose_again(cid)
        return self.states[cid]

    async def propose_again(self, cid: str) -> None:
        """Send our stored proposal to the peer and take the acceptance its answer carries.
        Also what the watch does for a channel still `proposed` that the arbiter knows (ADR
        0240): a crash between our commit and the answer loses no channel; the peer answers
        with the acceptance it already signed."""
        state = self.get(cid)
        peer = await self.ctx.peer(state.terms.peer.hex())
        proposal = ChannelProposal(state.terms, state.opener_signature)  # type: ignore[arg-type]
        answer = await self.ctx.peers.send(peer.url, "/p2p/proposal", proposal)
        if isinstance(answer, ChannelAcceptance):
            await self.on_acceptance(answer)

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
        return await self.proposals.on_proposal(proposal)

    async def accept(self, proposal: ChannelProposal, *, reply_inline: bool) -> ChannelAcceptance:
        """Accept a proposal: the acceptance is the answer to the proposal (`reply_inline`) or
        goes to the opener through the outbox; registration and deposit go with it."""
        t = ch.accept(proposal, self.ctx.signer, now_ms=now_ms(), bounds=self.bounds)
        inline = (*INLINE_EFFECTS, ch.SendAcceptance) if reply_inline else INLINE_EFFECTS
        await self.commit_transition(None, t, inline=inline)
        log.info("channel.accepted", channel=t.state.channel_id.hex())
        return ChannelAcceptance(t.state.channel_id, t.state.peer_signature)  # type: ignore[arg-type]

    async def on_acceptance(self, acceptance: ChannelAcceptance) -> None:
        cid = acceptance.channel_id.hex()
        before, t = await self.apply(cid, ch.ReceiveAcceptance(acceptance))
        if t.state is not before:
            log.info("channel.accepted_by_peer", channel=cid)
        if any(isinstance(e, ch.NotifyOpened) for e in t.effects):
            log.info("channel.open", channel=cid)

    async def on_funding(self, conf: FundingConfirmation) -> None:
        """A confirmation the arbiter signed; one that arrives before the peer's acceptance is
        kept by the machine (phase `proposed`) and counts once the acceptance lands."""
        _, t = await self.apply(conf.channel_id.hex(), ch.ReceiveFunding(conf))
        if any(isinstance(e, ch.NotifyOpened) for e in t.effects):
            log.info("channel.open", channel=conf.channel_id.hex())

    # -- paying and being paid --------------------------------------------------------------------

    async def pay(self, cid: str, **kwargs: Any) -> ch.ChannelState:
        """Sign, commit and stream updates (node.writer: concurrent calls are coalesced)."""
        return await self.writer.pay(cid, **kwargs)

    async def on_receipt(self, receipt: Receipt) -> None:
        await self.writer.on_receipt(receipt)

    def latest_receipt(self, cid: str) -> Receipt | None:
        """Our latest receipt for what the peer sent us (what it needs to resume a stream)."""
        return self.get(cid).received.receipt

    async def on_proofs(
        self, cid: str, proofs: Sequence[BalanceProof],
        checked: Sequence[ch.CheckedProof | None] = (),
    ) -> tuple[Receipt | None, list[ProtocolError]]:
        """Validate, persist (one transaction), then sign one cumulative receipt (on the
        signing pool). `checked`: the proofs' signatures checked ahead (node.signing), one per
        proof; the machine checks any other itself."""
        async with self.lock(cid):
            start = self.get(cid)
            rows: UsageRows = defaultdict(lambda: [0, 0, 0])
            stamp = now_ms()
            state, applied, errors = ch.receive_proofs(start, proofs, checked, now_ms=stamp)
            for before, proof in applied:
                usage_rows(state, before, proof, rows)
            if state.received.nonce == 0:
                return None, errors
            if state.phase not in (ch.Phase.OPEN, ch.Phase.CLOSING):
                return state.received.receipt, errors
            t = await self.signing.run(ch.step, state, ch.ActionAcknowledge(self.ctx.signer),
                                       now_ms=stamp)
            await self.commit_transition(start, t, usage=rows)
        return t.state.received.receipt, errors

    # -- closing --------------------------------------------------------------------------------

    async def close(self, cid: str, *, timeout_s: float = 30.0) -> ch.ChannelState:
        state = self.get(cid)
        if state.phase not in (ch.Phase.OPEN, ch.Phase.CLOSING):
            raise Conflict(f"the channel is {state.phase.value}; only an open channel closes",
                           code="INVALID_STATE")
        await self.writer.wait_acked(cid, state.sent.nonce, timeout_s)
        await self.apply(cid, ch.ActionClose(self.ctx.signer))
        # The close goes to the peer through the outbox (it survives a crash); its answer, the
        # peer's signature, arrives through the same handler. Give it a moment to land.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.until(cid, lambda st: st.phase is not ch.Phase.CLOSING),
                                   min(timeout_s, 10.0))
        return self.states[cid]

    async def until(self, cid: str, done: Callable[[ch.ChannelState], bool]) -> None:
        while not done(self.get(cid)):
            self.changed.clear()
            await self.changed.wait()

    async def on_close(self, close: CooperativeClose) -> CooperativeClose | None:
        """The peer signed a close: co-sign it when it matches what we hold (node policy)."""
        cid = close.channel_id.hex()
        _, t = await self.apply(cid, ch.ReceiveClose(close))
        if t.state.phase is ch.Phase.CLOSED:
            log.info("channel.closed", channel=cid)
        return t.state.close

    async def force_close(self, cid: str) -> ch.ChannelState:
        await self.apply(cid, ch.ActionForceClose(self.ctx.signer))
        return self.states[cid]

    async def on_dispute(self, notice: DisputeNotice) -> None:
        """The arbiter opened a dispute window: hand in the latest proof we hold (policy)."""
        cid = notice.channel_id.hex()
        before, t = await self.apply(cid, ch.ReceiveDisputeNotice(notice))
        if t.state is not before:  # a notice seen again (pushed and asked for) changes nothing
            log.info("channel.disputed", channel=cid, deadline_ms=notice.deadline_ms)

    async def on_payout(self, notice: PayoutNotice) -> None:
        cid = notice.channel_id.hex()
        before, t = await self.apply(cid, ch.ReceivePayout(notice))
        await self.streams.close(cid)
        if t.state is not before:
            log.info("channel.settled", channel=cid)

    async def stop(self) -> None:
        await self.checkpoints.stop()
        await self.streams.close_all()
        await self.writer.stop()
        self.signing.close()


__all__ = ["ChannelService"]
