"""The proposals policy: which proposals this node accepts at once, which wait for the operator.

Terms outside our [policy] are refused; an allow-listed opener's proposal within its allowance is
accepted at once; any other is held for the operator, within quotas: MAX_HELD_PER_PROPOSER per
opener, MAX_HELD_PROPOSALS from openers that are not known peers (so fresh keys never crowd out
a known peer).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

from node.context import now_ms
from node.errors import Conflict, NodeError, NotFound
from node.peers import signed_account
from node.storage.models import HeldProposal
from protocol import channel as ch
from protocol.errors import ErrorCode, ProtocolError, RemoteProtocolError
from protocol.messages import ChannelAcceptance, ChannelProposal, ChannelTerms
from rails.port import payee_account
from rails.registry import check_payee_account

if TYPE_CHECKING:
    from node.channels import ChannelService
    from node.config import Config

log = structlog.get_logger()
MAX_HELD_PROPOSALS = 100
"""Held proposals from openers that are not known peers (anyone can make a key and sign one)."""
MAX_HELD_PER_PROPOSER = 3
"""Held proposals from any one opener, known peer or not: nobody crowds out the others."""


def account_objection(config: Config, terms: ChannelTerms) -> str | None:
    """Why our rail could never pay an account the terms name (a non-SEPA IBAN on SEPA, a
    bad routing number on ACH: rails.registry.check_payee_account), or None. Checked at
    propose and accept, so such a channel is never opened rather than failing at payout.
    The escrow account is the one we pay (our deposit): what that needs of our own account
    (a SEPA postal address for a non-EEA escrow) is checked too."""
    bank = config.bank
    for who, acct, payer in (("the opener's", terms.opener_account, None),
                             ("the peer's", terms.peer_account, None),
                             ("the escrow", terms.escrow_account, bank.settings)):
        try:
            account = payee_account(acct.scheme, acct.identification, acct.name)
        except ValueError:
            return f"{who} account has the unknown scheme {acct.scheme!r}"
        finding = check_payee_account(bank.rail, account, payer)
        if finding is not None:
            return f"{who} account {acct.identification}: {finding.message}"
    return None


class Proposals:
    def __init__(self, service: ChannelService) -> None:
        self.service = service
        self.ctx = service.ctx
        self.holding = asyncio.Lock()
        """Serialises the held-proposal quota checks with the writes they guard."""
        self.accepting = asyncio.Lock()
        """Serialises "do we have it?" with the acceptance it leads to: two copies of one
        proposal at once (an opener asking again, ADR 0240) get one acceptance, twice, and
        never a failed second insert (a 500)."""

    async def on_proposal(self, proposal: ChannelProposal) -> ChannelAcceptance | None:
        """A peer proposes: refused, accepted at once (the acceptance is the answer), or held."""
        ctx, service = self.ctx, self.service
        terms = proposal.terms
        if terms.peer != ctx.signer.node_id:
            raise RemoteProtocolError(ErrorCode.NOT_A_PARTY, "the proposal is not addressed to us")
        ch.verify_proposal(proposal, service.bounds)  # our [policy]: refused before it is stored
        if terms.peer_account != service.own_account():
            raise RemoteProtocolError(ErrorCode.INVALID_TERMS, "the terms name another account")
        if (objection := account_objection(ctx.config, terms)) is not None:
            raise RemoteProtocolError(ErrorCode.INVALID_TERMS, objection)
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
        async with self.accepting:
            known = service.states.get(cid)
            if known is not None:
                return ChannelAcceptance(
                    terms.channel_id, known.peer_signature,  # type: ignore[arg-type]
                ) if known.peer_signature else None
            reason = self.hold_reason(terms)
            if reason is None:
                return await service.accept(proposal, reply_inline=True)
        await self._hold(proposal)
        log.info("channel.held", channel=cid, opener=terms.opener.hex()[:16], reason=reason)
        return None

    def policy_objection(self, terms: ChannelTerms) -> str | None:
        """Why this node takes no channel on these terms from anyone (its [policy], as the
        protocol checks it); None when it may."""
        try:
            self.service.bounds.check(terms.dispute_window_ms)
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
        repo = self.ctx.repo
        async with self.holding, repo.transaction() as session:
            if await session.get(HeldProposal, cid) is not None:
                return
            theirs, strangers = await repo.held_counts(session, opener)
            if theirs >= MAX_HELD_PER_PROPOSER:
                raise RemoteProtocolError(
                    ErrorCode.INVALID_STATE,
                    f"too many proposals waiting from you: {theirs} wait for this node's "
                    "operator already; try again once they are answered",
                )
            if strangers is not None and strangers >= MAX_HELD_PROPOSALS:
                raise RemoteProtocolError(
                    ErrorCode.INVALID_STATE,
                    "too many proposals are waiting for this node's operator; try later",
                )
            session.add(HeldProposal(id=cid, opener_id=opener, proposal=proposal.encode(),
                                     received_ms=now_ms()))

    async def held(self) -> list[HeldProposal]:
        return await self.ctx.repo.held()

    async def _held_id(self, prefix: str) -> str:
        """The held proposal a unique id prefix names."""
        prefix = prefix.lower().strip()
        if not prefix or len(prefix) > 64 or any(c not in "0123456789abcdef" for c in prefix):
            raise NodeError(f"{prefix[:80]!r} is not a channel id (hex)", code="BAD_CHANNEL_ID")
        matches = await self.ctx.repo.held_ids(prefix)
        if not matches:
            if any(cid.startswith(prefix) for cid in self.service.states):
                raise Conflict("that channel is already accepted", code="ALREADY_ACCEPTED")
            raise NotFound(f"no proposal waiting with id {prefix}", code="UNKNOWN_CHANNEL")
        if len(matches) > 1:
            raise Conflict(f"{prefix} is ambiguous: {', '.join(matches)}…",
                           code="AMBIGUOUS_CHANNEL")
        return matches[0]

    async def find_held(self, prefix: str) -> HeldProposal:
        """The held proposal a unique id prefix names (for `channel show` before accept)."""
        cid = await self._held_id(prefix)
        row = await self.ctx.repo.held_proposal(cid)
        if row is None:  # accepted or rejected since the look-up
            raise NotFound(f"no proposal waiting with id {prefix}", code="UNKNOWN_CHANNEL")
        return row

    async def accept_held(self, prefix: str) -> ch.ChannelState:
        async with self.holding:
            cid = await self._held_id(prefix)
            row = await self.ctx.repo.held_proposal(cid)
            assert row is not None  # only deleted under self.holding
            # ch.accept checks the terms against our [policy] as it is now (INVALID_TERMS)
            await self.service.accept(ChannelProposal.decode(row.proposal), reply_inline=False)
            await self.ctx.repo.delete_held(cid)
        return self.service.states[cid]

    async def reject_held(self, prefix: str) -> HeldProposal:
        """Delete a held proposal (the operator said no); the opener is not told."""
        async with self.holding:
            cid = await self._held_id(prefix)
            row = await self.ctx.repo.delete_held(cid)
            assert row is not None  # only deleted under self.holding
        log.info("channel.rejected", channel=cid, opener=row.opener_id[:16])
        return row
