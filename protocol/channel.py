"""The channel state machine: one per node per channel (specs/0003-channel.md).

``step(state, input, *, now_ms) -> Transition(state, effects)`` is pure: it verifies, decides and
returns a new state plus the effects the node must carry out (send a proof, hand a close to the
arbiter). It never performs them. An input that is not legal in the current phase, or that breaks
a rule, raises a typed error and the caller keeps the state it had.

The rules do not depend on who we are: :func:`_apply_proof` validates our own outgoing proofs and
the peer's incoming ones with the same code (h11's "we don't cheat").
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeAlias

from protocol import checkpoint as cp
from protocol.crypto import Signer
from protocol.errors import ErrorCode, LocalProtocolError, ProtocolError, RemoteProtocolError
from protocol.machine import allowed_phases, check_landed
from protocol.messages import (
    EMPTY_SIGNATURE,
    BalanceProof,
    ChannelAcceptance,
    ChannelProposal,
    ChannelTerms,
    Checkpoint,
    CooperativeClose,
    DisputeEvidence,
    DisputeNotice,
    FundingConfirmation,
    PayoutNotice,
    Receipt,
    TopUpConfirmation,
    UnilateralClose,
    next_usage_digest,
)
from protocol.money import check_scale, currency_exponent, format_money, from_minor_units
from protocol.tariff import check_tariff, tariff_amount
from protocol.types import (
    MAX_AMOUNT,
    MAX_DISPUTE_WINDOW_MS,
    U64_MAX,
    Amount,
    ChannelId,
    MinorUnits,
    Nonce,
    Quantity,
)

MIN_DISPUTE_WINDOW_MS = 1_000


@dataclass(frozen=True, slots=True)
class TermsBounds:
    """The dispute windows a node (or arbiter) accepts in any channel's terms: its policy.

    The protocol's own limits are 1 s and 366 days; a node narrows them (specs/0001 §6: a
    window must leave an honest node many chances to learn of a unilateral close in time).
    """

    min_dispute_window_ms: int = MIN_DISPUTE_WINDOW_MS
    max_dispute_window_ms: int = MAX_DISPUTE_WINDOW_MS

    def check(self, window_ms: int) -> None:
        if not self.min_dispute_window_ms <= window_ms <= self.max_dispute_window_ms:
            raise RemoteProtocolError(
                ErrorCode.INVALID_TERMS,
                f"the dispute window {window_ms} ms is outside the accepted range "
                f"{self.min_dispute_window_ms}..{self.max_dispute_window_ms} ms",
            )


ANY_WINDOW = TermsBounds()


class Phase(enum.StrEnum):
    PROPOSED = "proposed"
    """We proposed; the peer has not accepted yet."""
    ACCEPTED = "accepted"
    """Both signed the terms; waiting for the arbiter to confirm the deposits."""
    OPEN = "open"
    """Funded: updates flow both ways."""
    CLOSING = "closing"
    """A cooperative close is being agreed; no new payments, in-flight proofs still land."""
    CLOSED = "closed"
    """Both signed the final state; the arbiter pays out."""
    DISPUTED = "disputed"
    """A unilateral close is open at the arbiter; its dispute window runs."""
    SETTLED = "settled"
    """The arbiter reported the payouts booked at its bank."""


# ---------------------------------------------------------------------------------------------
# State


@dataclass(frozen=True, slots=True)
class Flow:
    """One direction of the channel: what its sender has sent, cumulatively."""

    nonce: Nonce
    amount: Amount
    direct_amount: Amount
    quantities: tuple[Quantity, ...]
    usage_digest: bytes
    proof: BalanceProof | None = None
    """The latest proof in this direction (signed by its sender)."""
    acked_nonce: Nonce = Nonce(0)
    """The highest nonce the receiver's receipts cover."""
    receipt: Receipt | None = None
    """The latest receipt for this direction (signed by its receiver)."""

    @classmethod
    def empty(cls, channel_id: ChannelId, lines: int) -> Flow:
        return cls(Nonce(0), Amount(0), Amount(0), (Quantity(0),) * lines, bytes(channel_id))


@dataclass(frozen=True, slots=True)
class ChannelState:
    terms: ChannelTerms
    channel_id: ChannelId
    us: int
    """Our party index: 0 when we opened the channel, 1 when we accepted it."""
    phase: Phase
    opener_signature: bytes
    peer_signature: bytes
    flows: tuple[Flow, Flow]
    """Indexed by sender: flows[0] is opener → peer, flows[1] is peer → opener."""
    funded: tuple[MinorUnits, MinorUnits] = (MinorUnits(0), MinorUnits(0))
    funding: tuple[FundingConfirmation | None, FundingConfirmation | None] = (None, None)
    close: CooperativeClose | None = None
    """The close we signed (with the peer's signature too once we have it)."""
    peer_close: CooperativeClose | None = None
    """The peer's latest signed close request."""
    dispute: UnilateralClose | None = None
    payout: PayoutNotice | None = None
    updated_ms: int = 0
    dispute_deadline_ms: int | None = None
    """When the arbiter's dispute window ends (from its signed DisputeNotice)."""
    checkpoint: Checkpoint | None = None
    """The latest checkpoint both parties signed (specs/0003 §9)."""
    checkpoint_signed: Checkpoint | None = None
    """The latest checkpoint body *we* signed (our proposal, or the peer's we co-signed)."""
    peer_checkpoint: Checkpoint | None = None
    """The peer's proposal, signed by it only, waiting for ActionCheckpoint."""
    withdrawn: tuple[MinorUnits, MinorUnits] = (MinorUnits(0), MinorUnits(0))
    """What each party may have been paid out of escrow at the checkpoints we signed (rail
    units, running maximum): counted from the moment we sign, so capacity never trusts
    money the arbiter may already have paid out."""
    topped_up: tuple[MinorUnits, MinorUnits] = (MinorUnits(0), MinorUnits(0))
    """Top-ups per party, as the arbiter confirmed them (specs/0003 §9.4)."""
    settle_base_ms: int = 0
    """When the channel opened or we last signed a checkpoint: a schedule counts from here."""

    @property
    def them(self) -> int:
        return 1 - self.us

    @property
    def sent(self) -> Flow:
        return self.flows[self.us]

    @property
    def received(self) -> Flow:
        return self.flows[self.them]

    def balance(self) -> Amount:
        """What we would be owed at close now: deposit + top-ups − withdrawn − sent + received
        (channel scale; without checkpoints and top-ups, deposit − sent + received)."""
        room = cp.capacity(self.terms, self.topped_up, self.withdrawn, self.us,
                           self.received.amount)
        return Amount(room - self.sent.amount)

    def capacity(self, sender: int) -> Amount:
        """The most `sender` may have sent in total: its deposit plus confirmed top-ups plus
        what it has received, minus what it took out at checkpoints."""
        return cp.capacity(self.terms, self.topped_up, self.withdrawn, sender,
                           self.flows[1 - sender].amount)


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True, slots=True)
class ReceiveAcceptance:
    acceptance: ChannelAcceptance


@dataclass(frozen=True, slots=True)
class ReceiveFunding:
    confirmation: FundingConfirmation


@dataclass(frozen=True, slots=True)
class ActionPay:
    """Pay for `quantities` more units (one delta per tariff line) plus `direct_amount`."""

    signer: Signer
    quantities: tuple[Quantity, ...]
    direct_amount: Amount = Amount(0)
    reference: str = ""


@dataclass(frozen=True, slots=True, eq=False)
class CheckedProof:
    """A proof whose signature :func:`check_signature` verified, made only there.

    Compared by identity (``eq=False``): it vouches for the one `proof` object it holds, never
    for another that merely has equal fields."""

    proof: BalanceProof


def check_signature(proof: BalanceProof) -> CheckedProof:
    """Verify `proof`'s signature by its named sender, ahead of the machine (a node may run it
    on another thread while the previous batch commits); BAD_SIGNATURE when it does not."""
    proof.verify_signature(proof.sender)
    return CheckedProof(proof)


@dataclass(frozen=True, slots=True)
class ReceiveProof:
    """A proof from the peer. With `checked` from :func:`check_signature` for this very
    object (``checked.proof is proof``) the machine skips its own signature check; for any
    other object, equal or not, it checks the signature itself."""

    proof: BalanceProof
    checked: CheckedProof | None = None


@dataclass(frozen=True, slots=True)
class ActionAcknowledge:
    """Sign a receipt for everything received so far (after it is durably stored)."""

    signer: Signer


@dataclass(frozen=True, slots=True)
class ReceiveReceipt:
    receipt: Receipt


@dataclass(frozen=True, slots=True)
class ActionClose:
    """Sign the current state as final (or co-sign the peer's request when it matches)."""

    signer: Signer


@dataclass(frozen=True, slots=True)
class ReceiveClose:
    close: CooperativeClose


@dataclass(frozen=True, slots=True)
class ActionForceClose:
    """Close without the peer: hand the arbiter the latest proof we hold from it."""

    signer: Signer


@dataclass(frozen=True, slots=True)
class ReceiveUnilateralClose:
    """The arbiter forwarded the peer's unilateral close: our dispute window is running."""

    claim: UnilateralClose


@dataclass(frozen=True, slots=True)
class ReceiveDisputeNotice:
    """The arbiter says a unilateral close is open (by either party) and until when."""

    notice: DisputeNotice


@dataclass(frozen=True, slots=True)
class ActionSubmitEvidence:
    signer: Signer


@dataclass(frozen=True, slots=True)
class ReceivePayout:
    notice: PayoutNotice


@dataclass(frozen=True, slots=True)
class ActionCheckpoint:
    """Propose a checkpoint of what both sides have receipted, or co-sign the peer's."""

    signer: Signer


@dataclass(frozen=True, slots=True)
class ReceiveCheckpoint:
    checkpoint: Checkpoint


@dataclass(frozen=True, slots=True)
class ReceiveTopUp:
    confirmation: TopUpConfirmation


Input: TypeAlias = (
    ReceiveAcceptance
    | ReceiveFunding
    | ActionPay
    | ReceiveProof
    | ActionAcknowledge
    | ReceiveReceipt
    | ActionClose
    | ReceiveClose
    | ActionForceClose
    | ReceiveUnilateralClose
    | ReceiveDisputeNotice
    | ActionSubmitEvidence
    | ReceivePayout
    | ActionCheckpoint
    | ReceiveCheckpoint
    | ReceiveTopUp
)

# ---------------------------------------------------------------------------------------------
# Effects


@dataclass(frozen=True, slots=True)
class SendProposal:
    proposal: ChannelProposal


@dataclass(frozen=True, slots=True)
class SendAcceptance:
    acceptance: ChannelAcceptance


@dataclass(frozen=True, slots=True)
class RegisterWithArbiter:
    """Hand the arbiter both signatures over the terms, with our own signed callback: each
    party registers for itself, before it pays its deposit (specs/0004 §1.1; idempotent)."""

    proposal: ChannelProposal
    acceptance: ChannelAcceptance


@dataclass(frozen=True, slots=True)
class NotifyOpened:
    pass


@dataclass(frozen=True, slots=True)
class SendProof:
    proof: BalanceProof


@dataclass(frozen=True, slots=True)
class SendReceipt:
    receipt: Receipt


@dataclass(frozen=True, slots=True)
class SendClose:
    close: CooperativeClose


@dataclass(frozen=True, slots=True)
class NotifyCloseRequested:
    """The peer asked to close; answer with ActionClose (policy belongs to the node)."""


@dataclass(frozen=True, slots=True)
class SubmitClose:
    """Hand the fully signed close to the arbiter."""

    close: CooperativeClose


@dataclass(frozen=True, slots=True)
class SubmitUnilateralClose:
    claim: UnilateralClose


@dataclass(frozen=True, slots=True)
class NotifyDispute:
    """A unilateral close is open; answer with ActionSubmitEvidence before the deadline."""

    claim: UnilateralClose


@dataclass(frozen=True, slots=True)
class SubmitEvidence:
    evidence: DisputeEvidence


@dataclass(frozen=True, slots=True)
class NotifySettled:
    notice: PayoutNotice


@dataclass(frozen=True, slots=True)
class SendCheckpoint:
    checkpoint: Checkpoint


@dataclass(frozen=True, slots=True)
class NotifyCheckpointRequested:
    """The peer proposed a checkpoint; answer with ActionCheckpoint (policy: the node's)."""


@dataclass(frozen=True, slots=True)
class SubmitCheckpoint:
    """Hand the fully signed checkpoint to the arbiter, which pays out what it owes."""

    checkpoint: Checkpoint


Effect: TypeAlias = (
    SendProposal
    | SendAcceptance
    | RegisterWithArbiter
    | NotifyOpened
    | SendProof
    | SendReceipt
    | SendClose
    | NotifyCloseRequested
    | SubmitClose
    | SubmitUnilateralClose
    | NotifyDispute
    | SubmitEvidence
    | NotifySettled
    | SendCheckpoint
    | NotifyCheckpointRequested
    | SubmitCheckpoint
)


@dataclass(frozen=True, slots=True)
class Transition:
    state: ChannelState
    effects: tuple[Effect, ...] = field(default=())


# ---------------------------------------------------------------------------------------------
# The transition table: (phase, input type) → the phases the handler may move to.
# specs/0003-channel.md's lifecycle diagram is generated from this table.

P = Phase
TRANSITIONS: dict[tuple[Phase, type], frozenset[Phase]] = {
    (P.PROPOSED, ReceiveAcceptance): frozenset({P.ACCEPTED, P.OPEN}),
    (P.ACCEPTED, ReceiveAcceptance): frozenset({P.ACCEPTED}),
    (P.PROPOSED, ReceiveFunding): frozenset({P.PROPOSED}),
    (P.ACCEPTED, ReceiveFunding): frozenset({P.ACCEPTED, P.OPEN}),
    (P.OPEN, ReceiveFunding): frozenset({P.OPEN}),
    # A node may learn of a deposit only after the close began (its confirmation was lost and
    # the watch brings it with the dispute): it is kept, so the payout notice adds up (0003 §4).
    (P.CLOSING, ReceiveFunding): frozenset({P.CLOSING}),
    (P.CLOSED, ReceiveFunding): frozenset({P.CLOSED}),
    (P.DISPUTED, ReceiveFunding): frozenset({P.DISPUTED}),
    (P.OPEN, ActionPay): frozenset({P.OPEN}),
    (P.OPEN, ReceiveProof): frozenset({P.OPEN}),
    (P.CLOSING, ReceiveProof): frozenset({P.CLOSING}),
    (P.OPEN, ActionAcknowledge): frozenset({P.OPEN}),
    (P.CLOSING, ActionAcknowledge): frozenset({P.CLOSING}),
    (P.OPEN, ReceiveReceipt): frozenset({P.OPEN}),
    (P.CLOSING, ReceiveReceipt): frozenset({P.CLOSING}),
    (P.CLOSED, ReceiveReceipt): frozenset({P.CLOSED}),
    (P.OPEN, ActionClose): frozenset({P.CLOSING, P.CLOSED}),
    (P.CLOSING, ActionClose): frozenset({P.CLOSING, P.CLOSED}),
    (P.OPEN, ReceiveClose): frozenset({P.CLOSING, P.CLOSED}),
    (P.CLOSING, ReceiveClose): frozenset({P.CLOSING, P.CLOSED}),
    (P.CLOSED, ReceiveClose): frozenset({P.CLOSED}),
    (P.ACCEPTED, ActionForceClose): frozenset({P.DISPUTED}),
    (P.OPEN, ActionForceClose): frozenset({P.DISPUTED}),
    (P.CLOSING, ActionForceClose): frozenset({P.DISPUTED}),
    (P.ACCEPTED, ReceiveUnilateralClose): frozenset({P.DISPUTED}),
    (P.OPEN, ReceiveUnilateralClose): frozenset({P.DISPUTED}),
    (P.CLOSING, ReceiveUnilateralClose): frozenset({P.DISPUTED}),
    (P.DISPUTED, ReceiveUnilateralClose): frozenset({P.DISPUTED}),
    (P.ACCEPTED, ReceiveDisputeNotice): frozenset({P.DISPUTED}),
    (P.OPEN, ReceiveDisputeNotice): frozenset({P.DISPUTED}),
    (P.CLOSING, ReceiveDisputeNotice): frozenset({P.DISPUTED}),
    (P.DISPUTED, ReceiveDisputeNotice): frozenset({P.DISPUTED}),
    (P.CLOSED, ReceiveDisputeNotice): frozenset({P.CLOSED}),
    (P.DISPUTED, ActionSubmitEvidence): frozenset({P.DISPUTED}),
    (P.CLOSED, ActionSubmitEvidence): frozenset({P.CLOSED}),
    (P.OPEN, ReceivePayout): frozenset({P.SETTLED}),
    (P.CLOSING, ReceivePayout): frozenset({P.SETTLED}),
    (P.CLOSED, ReceivePayout): frozenset({P.SETTLED}),
    (P.DISPUTED, ReceivePayout): frozenset({P.SETTLED}),
    (P.SETTLED, ReceivePayout): frozenset({P.SETTLED}),
    (P.OPEN, ActionCheckpoint): frozenset({P.OPEN}),
    (P.OPEN, ReceiveCheckpoint): frozenset({P.OPEN}),
    # A body we signed, co-signed by a peer that had not yet learnt of our close (0003 §9.2).
    (P.CLOSING, ReceiveCheckpoint): frozenset({P.CLOSING}),
    (P.CLOSED, ReceiveCheckpoint): frozenset({P.CLOSED}),
    (P.DISPUTED, ReceiveCheckpoint): frozenset({P.DISPUTED}),
    (P.ACCEPTED, ReceiveTopUp): frozenset({P.ACCEPTED}),
    (P.OPEN, ReceiveTopUp): frozenset({P.OPEN}),
    (P.CLOSING, ReceiveTopUp): frozenset({P.CLOSING}),
    # The arbiter, still open, may confirm a top-up after we signed the close or handed in a
    # unilateral one: it is kept, as a late funding confirmation is, so the payout adds up.
    (P.CLOSED, ReceiveTopUp): frozenset({P.CLOSED}),
    (P.DISPUTED, ReceiveTopUp): frozenset({P.DISPUTED}),
}


# ---------------------------------------------------------------------------------------------
# Creating a channel


def check_terms(terms: ChannelTerms, bounds: TermsBounds = ANY_WINDOW) -> None:
    """INVALID_TERMS (or the money/tariff code) unless the terms can make a channel that
    `bounds` (the checking node's policy) allows."""
    parties = {terms.opener, terms.peer, terms.arbiter}
    if len(parties) != 3:
        raise RemoteProtocolError(
            ErrorCode.INVALID_TERMS, "opener, peer and arbiter must be three different nodes"
        )
    try:
        check_scale(terms.scale, currency_exponent(terms.currency))
        check_tariff(terms.tariff)
    except LocalProtocolError as exc:
        raise RemoteProtocolError(exc.code, exc.message) from None
    if terms.opener_deposit + terms.peer_deposit == 0:
        raise RemoteProtocolError(ErrorCode.INVALID_TERMS, "a channel needs a deposit")
    exponent = currency_exponent(terms.currency)
    total = from_minor_units(terms.opener_deposit + terms.peer_deposit, terms.scale, exponent)
    if total > MAX_AMOUNT:
        raise RemoteProtocolError(ErrorCode.INVALID_TERMS, "deposits exceed 2^63-1 at this scale")
    if terms.dispute_window_ms < MIN_DISPUTE_WINDOW_MS:
        raise RemoteProtocolError(ErrorCode.INVALID_TERMS, "the dispute window is under 1 s")
    bounds.check(terms.dispute_window_ms)


def _new_state(proposal: ChannelProposal, us: int, now_ms: int) -> ChannelState:
    terms = proposal.terms
    cid = terms.channel_id
    lines = len(terms.tariff)
    return ChannelState(
        terms=terms,
        channel_id=cid,
        us=us,
        phase=Phase.PROPOSED,
        opener_signature=proposal.signature,
        peer_signature=b"",
        flows=(Flow.empty(cid, lines), Flow.empty(cid, lines)),
        updated_ms=now_ms,
    )


def propose(terms: ChannelTerms, signer: Signer, *, now_ms: int,
            bounds: TermsBounds = ANY_WINDOW) -> Transition:
    """Open a channel: we are the opener; the effect sends the signed terms to the peer."""
    if terms.opener != signer.node_id:
        raise LocalProtocolError(ErrorCode.NOT_A_PARTY, "the opener signs the proposal")
    try:
        check_terms(terms, bounds)
    except RemoteProtocolError as exc:
        raise LocalProtocolError(exc.code, exc.message) from None
    proposal = ChannelProposal(terms, EMPTY_SIGNATURE).signed_by(signer)
    return Transition(_new_state(proposal, 0, now_ms), (SendProposal(proposal),))


def verify_proposal(proposal: ChannelProposal, bounds: TermsBounds = ANY_WINDOW) -> None:
    """What a peer checks before it even shows a proposal to its operator: the opener's
    signature, then the terms (specs/0002 §6.3: the signature before the rules)."""
    proposal.verify_signature(proposal.terms.opener)
    check_terms(proposal.terms, bounds)


def accept(proposal: ChannelProposal, signer: Signer, *, now_ms: int,
           bounds: TermsBounds = ANY_WINDOW) -> Transition:
    """Accept a verified proposal addressed to us."""
    if proposal.terms.peer != signer.node_id:
        raise RemoteProtocolError(ErrorCode.NOT_A_PARTY, "the proposal is not addressed to us")
    verify_proposal(proposal, bounds)
    acceptance = ChannelAcceptance.for_terms(proposal.terms, signer)
    state = replace(
        _new_state(proposal, 1, now_ms),
        phase=Phase.ACCEPTED,
        peer_signature=acceptance.signature,
    )
    return Transition(
        _funded_phase(state),
        (SendAcceptance(acceptance), RegisterWithArbiter(proposal, acceptance)),
    )


# ---------------------------------------------------------------------------------------------
# The step function


def step(state: ChannelState, event: Input, *, now_ms: int) -> Transition:
    """Apply one input. Raises ProtocolError (state untouched) when it is not allowed; an input
    that changes nothing returns the very same `state` object (its `updated_ms` too)."""
    allowed = allowed_phases(TRANSITIONS, state.phase, event,  # type: ignore[arg-type]
                             local=type(event).__name__.startswith("Action"), noun="channel")
    result = _HANDLERS[type(event)](state, event, now_ms)
    check_landed(allowed, state.phase, result.state.phase, event)
    if result.state is state or result.state == state:
        # Nothing changed: the very same state (the shell persists exactly when it is not).
        return Transition(state, result.effects)
    return Transition(replace(result.state, updated_ms=now_ms), result.effects)


def _on_acceptance(state: ChannelState, event: ReceiveAcceptance, now_ms: int) -> Transition:
    event.acceptance.verify_for(state.terms)
    if state.phase is Phase.ACCEPTED:
        return Transition(state)
    proposal = ChannelProposal(state.terms, state.opener_signature)  # type: ignore[arg-type]
    new = _funded_phase(
        replace(state, phase=Phase.ACCEPTED, peer_signature=event.acceptance.signature))
    register = RegisterWithArbiter(proposal, event.acceptance)
    # Deposits the arbiter confirmed before the acceptance reached us were kept in `funded`.
    if new.phase is Phase.OPEN:
        return Transition(new, (register, NotifyOpened()))
    return Transition(new, (register,))


def _funded_phase(state: ChannelState) -> ChannelState:
    """ACCEPTED becomes OPEN once every non-zero deposit is confirmed."""
    deposits = state.terms.deposits()
    if all(state.funded[i] >= deposits[i] for i in (0, 1)):
        return replace(state, phase=Phase.OPEN)
    return state


def _on_funding(state: ChannelState, event: ReceiveFunding, now_ms: int) -> Transition:
    conf = event.confirmation
    if conf.channel_id != state.channel_id:
        raise RemoteProtocolError(
            ErrorCode.WRONG_CHANNEL, "funding confirmation for another channel"
        )
    conf.verify_signature(state.terms.arbiter)
    side = state.terms.party_index(conf.depositor)
    if conf.amount <= state.funded[side]:
        return Transition(state)  # a repeat or an older confirmation: nothing new
    funded = list(state.funded)
    funding = list(state.funding)
    funded[side], funding[side] = conf.amount, conf
    new = replace(
        state,
        funded=(funded[0], funded[1]),
        funding=(funding[0], funding[1]),
    )
    # In PROPOSED (the peer registered and was confirmed before its acceptance reached us) the
    # confirmation is kept; the acceptance opens the channel once every deposit is confirmed.
    if state.phase is Phase.ACCEPTED:
        new = _funded_phase(new)
        if new.phase is Phase.OPEN:
            return Transition(replace(new, settle_base_ms=now_ms), (NotifyOpened(),))
    return Transition(new)


def _apply_proof(state: ChannelState, proof: BalanceProof, *, verify_signature: bool,
                 flow: Flow | None = None) -> Flow:
    """Validate `proof` against the flow of its sender and return the flow it produces.

    The same checks run for proofs we create and proofs we receive. `flow`: the sender's flow
    when it is newer than `state`'s (a batch folded without a new state per proof); the other
    flow, which the capacity counts, is `state`'s.
    """
    if proof.channel_id != state.channel_id:
        raise RemoteProtocolError(ErrorCode.WRONG_CHANNEL, "the proof is for another channel")
    sender = state.terms.party_index(proof.sender)
    if verify_signature:
        proof.verify_signature(proof.sender)
    flow = state.flows[sender] if flow is None else flow
    if proof.nonce <= flow.nonce:
        raise RemoteProtocolError(
            ErrorCode.NONCE_REPLAY, f"nonce {proof.nonce} is not above {flow.nonce}"
        )
    if proof.nonce != flow.nonce + 1:
        raise RemoteProtocolError(
            ErrorCode.NONCE_GAP, f"nonce {proof.nonce} skips past {flow.nonce + 1}"
        )
    if len(proof.quantities) != len(flow.quantities):
        raise RemoteProtocolError(ErrorCode.TARIFF_MISMATCH, "one quantity per tariff line")
    if (
        proof.amount < flow.amount
        or proof.direct_amount < flow.direct_amount
        or any(new < old for new, old in zip(proof.quantities, flow.quantities, strict=True))
    ):
        raise RemoteProtocolError(ErrorCode.AMOUNT_REGRESSION, "cumulative totals never fall")
    expected = tariff_amount(state.terms.tariff, proof.quantities) + proof.direct_amount
    if proof.amount != expected:
        raise RemoteProtocolError(
            ErrorCode.TARIFF_MISMATCH,
            f"amount {proof.amount} but the tariff and direct amount give {expected}",
        )
    if proof.amount > MAX_AMOUNT or any(q > MAX_AMOUNT for q in proof.quantities):
        raise RemoteProtocolError(ErrorCode.INVALID_AMOUNT, "a cumulative total above 2^63-1")
    if proof.amount > state.capacity(sender):
        terms = state.terms
        more = format_money(proof.amount - flow.amount, terms.currency, terms.scale, precise=True)
        room = format_money(
            state.capacity(sender) - flow.amount, terms.currency, terms.scale, precise=True
        )
        raise RemoteProtocolError(
            ErrorCode.CAPACITY_EXCEEDED,
            f"paying {more} exceeds the {room} the payer can still pay in this channel "
            f"(what it put in escrow plus what it received, less what it sent or took out)",
        )
    digest = next_usage_digest(
        flow.usage_digest,
        nonce=proof.nonce,
        amount=proof.amount,
        direct_amount=proof.direct_amount,
        quantities=proof.quantities,
        reference=proof.reference,
        time_ms=proof.time_ms,
    )
    if proof.usage_digest != digest:
        raise RemoteProtocolError(ErrorCode.USAGE_DIGEST_MISMATCH, "usage digest does not chain")
    return replace(
        flow,
        nonce=proof.nonce,
        amount=proof.amount,
        direct_amount=proof.direct_amount,
        quantities=proof.quantities,
        usage_digest=digest,
        proof=proof,
    )


def _with_flow(state: ChannelState, sender: int, flow: Flow) -> ChannelState:
    flows = (flow, state.flows[1]) if sender == 0 else (state.flows[0], flow)
    return replace(state, flows=flows)


def build_proof(state: ChannelState, event: ActionPay, *, now_ms: int,
                flow: Flow | None = None) -> BalanceProof:
    """The next proof from us for `event` (signed), without validating it (after `flow`, our
    flow when it is newer than `state`'s)."""
    flow = state.sent if flow is None else flow
    if len(event.quantities) != len(flow.quantities):
        raise LocalProtocolError(
            ErrorCode.TARIFF_MISMATCH,
            f"{len(event.quantities)} quantities for {len(flow.quantities)} tariff lines",
        )
    if any(q < 0 for q in event.quantities) or event.direct_amount < 0:
        raise LocalProtocolError(ErrorCode.INVALID_AMOUNT, "payments are never negative")
    if not any(event.quantities) and not event.direct_amount:
        raise LocalProtocolError(ErrorCode.INVALID_AMOUNT, "a payment of nothing")
    quantities = tuple(
        Quantity(old + new) for old, new in zip(flow.quantities, event.quantities, strict=True)
    )
    direct = Amount(flow.direct_amount + event.direct_amount)
    amount = Amount(tariff_amount(state.terms.tariff, quantities) + direct)
    if amount > U64_MAX or any(q > U64_MAX for q in quantities):
        # not even encodable; between 2^63 and 2^64 _apply_proof names it (INVALID_AMOUNT)
        raise LocalProtocolError(ErrorCode.INVALID_AMOUNT, "a cumulative total above 2^63-1")
    nonce = Nonce(flow.nonce + 1)
    digest = next_usage_digest(
        flow.usage_digest,
        nonce=nonce,
        amount=amount,
        direct_amount=direct,
        quantities=quantities,
        reference=event.reference,
        time_ms=now_ms,
    )
    return BalanceProof(
        state.channel_id,
        event.signer.node_id,
        nonce,
        amount,
        direct,
        quantities,
        digest,
        event.reference,
        now_ms,
        EMPTY_SIGNATURE,
    ).signed_by(event.signer)


def _local(fn: Callable[[], Flow]) -> Flow:
    """Run a rule check on our own action: a violation is *our* caller's error."""
    try:
        return fn()
    except RemoteProtocolError as exc:
        raise LocalProtocolError(exc.code, exc.message) from None


def _check_signer(state: ChannelState, signer: Signer) -> None:
    """Every action signs with our own key; anything else would be refused downstream."""
    if signer.node_id != state.terms.parties()[state.us]:
        raise LocalProtocolError(ErrorCode.NOT_A_PARTY, "signing with a key that is not ours")


def _pay_flow(state: ChannelState, event: ActionPay, flow: Flow, now_ms: int
              ) -> tuple[BalanceProof, Flow]:
    """The proof `event` signs after our `flow`, and the flow it produces."""
    proof = build_proof(state, event, now_ms=now_ms, flow=flow)
    return proof, _local(lambda: _apply_proof(state, proof, verify_signature=False, flow=flow))


def _on_pay(state: ChannelState, event: ActionPay, now_ms: int) -> Transition:
    _check_signer(state, event.signer)
    proof, flow = _pay_flow(state, event, state.sent, now_ms)
    return Transition(_with_flow(state, state.us, flow), (SendProof(proof),))


def _received_flow(state: ChannelState, proof: BalanceProof, checked: CheckedProof | None,
                   flow: Flow) -> Flow:
    """The flow `proof` produces after the peer's `flow` (the very same `flow` for the proof it
    carries already)."""
    if proof.channel_id != state.channel_id:  # addressing first (specs/0002 §6.3)
        raise RemoteProtocolError(ErrorCode.WRONG_CHANNEL, "the proof is for another channel")
    if proof.sender != state.terms.parties()[state.them]:
        raise RemoteProtocolError(ErrorCode.NOT_A_PARTY, "the proof is not signed by our peer")
    held = flow.proof
    if held is not None and proof.nonce == held.nonce and proof == held:
        return flow  # the same proof again: idempotent, nothing changes
    is_checked = checked is not None and checked.proof is proof  # identity only
    return _apply_proof(state, proof, verify_signature=not is_checked, flow=flow)


def _on_proof(state: ChannelState, event: ReceiveProof, now_ms: int) -> Transition:
    flow = _received_flow(state, event.proof, event.checked, state.received)
    if flow is state.received:
        return Transition(state)
    return Transition(_with_flow(state, state.them, flow))


# -- batches: the same rules folded over many inputs, one new state at the end ---------------


def pay_many(state: ChannelState, event: ActionPay, n: int, *, now_ms: int
             ) -> tuple[ChannelState, list[tuple[Flow, BalanceProof]]]:
    """`step(ActionPay)` `n` times: the state after the last and each proof with our flow
    before it. The same as folding :func:`step` (a ProtocolError refuses the whole batch,
    `state` untouched), with one new state for the batch instead of one per proof: the
    sender's per-update cost (issue 13). tests/protocol/test_batches.py holds it to the fold."""
    allowed_phases(TRANSITIONS, state.phase, event, local=True,  # type: ignore[arg-type]
                   noun="channel")
    _check_signer(state, event.signer)
    flow, out = state.sent, []
    for _ in range(n):
        proof, after = _pay_flow(state, event, flow, now_ms)
        out.append((flow, proof))
        flow = after
    if not out:
        return state, out
    return replace(_with_flow(state, state.us, flow), updated_ms=now_ms), out


def receive_proofs(state: ChannelState, proofs: Sequence[BalanceProof],
                   checked: Sequence[CheckedProof | None], *, now_ms: int
                   ) -> tuple[ChannelState, list[tuple[Flow, BalanceProof]],
                              list[ProtocolError]]:
    """`step(ReceiveProof)` of each proof in order, each refused one skipped: the state after
    the last, each proof applied with the peer's flow before it, and the errors in order. The
    same as folding :func:`step` over them (tests/protocol/test_batches.py holds it to that),
    with one new state for the batch instead of one per proof: the receiver's per-update cost
    (issue 13). `checked`: one signature check per proof, or none."""
    ahead: Sequence[CheckedProof | None] = checked or [None] * len(proofs)
    flow, applied, errors = state.received, [], []
    if proofs:  # a proof never changes the phase: one look for the batch
        try:
            allowed_phases(TRANSITIONS, state.phase,  # type: ignore[arg-type]
                           ReceiveProof(proofs[0]), local=False, noun="channel")
        except ProtocolError as refused:  # each proof is refused, as step refuses it
            return state, [], [refused] * len(proofs)
    for proof, check in zip(proofs, ahead, strict=True):
        try:
            after = _received_flow(state, proof, check, flow)
        except ProtocolError as exc:
            errors.append(exc)
            continue
        if after is not flow:
            applied.append((flow, proof))
            flow = after
    if flow is state.received:
        return state, applied, errors
    return replace(_with_flow(state, state.them, flow), updated_ms=now_ms), applied, errors


def _on_acknowledge(state: ChannelState, event: ActionAcknowledge, now_ms: int) -> Transition:
    _check_signer(state, event.signer)
    flow = state.received
    if flow.nonce == 0:
        raise LocalProtocolError(ErrorCode.INVALID_STATE, "nothing received to acknowledge")
    nonce, amount = flow.nonce, flow.amount
    signed = state.close
    if signed is not None and getattr(signed, signed.signature_field(state.us)):
        # Never acknowledge beyond the close we signed: the peer may still co-sign that body,
        # so a receipt past it would acknowledge a payment that close does not carry.
        covered = (signed.opener_nonce, signed.opener_amount) if state.them == 0 else (
            signed.peer_nonce, signed.peer_amount)
        if covered[0] < nonce:
            nonce, amount = Nonce(covered[0]), Amount(covered[1])
    if flow.receipt is not None and flow.receipt.nonce >= nonce:
        return Transition(state, (SendReceipt(flow.receipt),))
    receipt = Receipt(
        state.channel_id, event.signer.node_id, nonce, amount, EMPTY_SIGNATURE
    ).signed_by(event.signer)
    new_flow = replace(flow, receipt=receipt, acked_nonce=nonce)
    return Transition(_with_flow(state, state.them, new_flow), (SendReceipt(receipt),))


def _on_receipt(state: ChannelState, event: ReceiveReceipt, now_ms: int) -> Transition:
    receipt = event.receipt
    if receipt.channel_id != state.channel_id:
        raise RemoteProtocolError(ErrorCode.WRONG_CHANNEL, "the receipt is for another channel")
    if receipt.receiver != state.terms.parties()[state.them]:
        raise RemoteProtocolError(ErrorCode.NOT_A_PARTY, "the receipt is not signed by our peer")
    receipt.verify_signature(receipt.receiver)
    flow = state.sent
    if receipt.nonce > flow.nonce:
        raise RemoteProtocolError(
            ErrorCode.NONCE_GAP, f"receipt for nonce {receipt.nonce}; we sent up to {flow.nonce}"
        )
    if receipt.nonce <= flow.acked_nonce:
        return Transition(state)  # an older or repeated receipt: nothing new
    if flow.proof is not None and receipt.nonce == flow.nonce and receipt.amount != flow.amount:
        raise RemoteProtocolError(ErrorCode.CLOSE_MISMATCH, "receipt amount differs from proof")
    new_flow = replace(flow, acked_nonce=receipt.nonce, receipt=receipt)
    return Transition(_with_flow(state, state.us, new_flow))


def close_body(state: ChannelState) -> CooperativeClose:
    """The final state as we see it, unsigned."""
    return CooperativeClose(
        state.channel_id,
        state.flows[0].nonce,
        state.flows[0].amount,
        state.flows[1].nonce,
        state.flows[1].amount,
        EMPTY_SIGNATURE,
        EMPTY_SIGNATURE,
    )


def _merge(close: CooperativeClose, other: CooperativeClose) -> CooperativeClose:
    return replace(
        close,
        opener_signature=close.opener_signature or other.opener_signature,
        peer_signature=close.peer_signature or other.peer_signature,
    )


def signed_close(state: ChannelState) -> CooperativeClose | None:
    """The one close body we signed on this channel, if any.

    A node signs at most one close body per channel (specs/0003 §7.3): every body it ever
    signed stays valid at the arbiter, so a second one would let the peer pick the smaller.
    """
    close = state.close
    if close is not None and getattr(close, close.signature_field(state.us)):
        return close
    return None


def _flow_in_close(close: CooperativeClose, sender: int) -> tuple[int, int]:
    if sender == 0:
        return close.opener_nonce, close.opener_amount
    return close.peer_nonce, close.peer_amount


def acceptable_close(state: ChannelState, close: CooperativeClose) -> bool:
    """Whether we may co-sign the peer's close body as it is: it pays us at least everything
    we hold from the peer, and charges us at most what we have signed."""
    their_nonce, their_amount = _flow_in_close(close, state.them)
    our_nonce, our_amount = _flow_in_close(close, state.us)
    received, sent = state.received, state.sent
    return (
        their_nonce >= received.nonce
        and their_amount >= received.amount
        and our_nonce <= sent.nonce
        and our_amount <= sent.amount
    )


def _on_close_action(state: ChannelState, event: ActionClose, now_ms: int) -> Transition:
    _check_signer(state, event.signer)
    ours = signed_close(state)
    if ours is not None:
        return Transition(state, (SendClose(ours),))  # never a second body: send it again
    field = CooperativeClose.SIGNATURE_FIELDS[state.us]
    if state.peer_close is not None and acceptable_close(state, state.peer_close):
        full = state.peer_close.signed_by(event.signer, field)
        return Transition(
            replace(state, phase=Phase.CLOSED, close=full), (SendClose(full), SubmitClose(full))
        )
    ours = close_body(state).signed_by(event.signer, field)
    return Transition(replace(state, phase=Phase.CLOSING, close=ours), (SendClose(ours),))


def _on_close(state: ChannelState, event: ReceiveClose, now_ms: int) -> Transition:
    close = event.close
    if close.channel_id != state.channel_id:
        raise RemoteProtocolError(ErrorCode.WRONG_CHANNEL, "the close is for another channel")
    their_field = close.signature_field(state.them)
    close.verify_signature(state.terms.parties()[state.them], their_field)
    if state.phase is Phase.CLOSED:
        if state.close is not None and state.close.same_state(close):
            return Transition(state)
        raise RemoteProtocolError(ErrorCode.CLOSE_MISMATCH, "the channel closed on another state")
    peer_only = (
        replace(close, opener_signature=EMPTY_SIGNATURE)
        if state.us == 0
        else replace(close, peer_signature=EMPTY_SIGNATURE)
    )
    new = replace(state, phase=Phase.CLOSING, peer_close=peer_only)
    ours = signed_close(state)
    if ours is None:
        return Transition(new, (NotifyCloseRequested(),))
    if ours.same_state(close):
        full = _merge(ours, peer_only)
        return Transition(
            replace(new, phase=Phase.CLOSED, close=full), (SendClose(full), SubmitClose(full))
        )
    # Another body than the one we signed: we keep ours (the peer may still co-sign it).
    return Transition(new, (SendClose(ours),))


def _on_force_close(state: ChannelState, event: ActionForceClose, now_ms: int) -> Transition:
    _check_signer(state, event.signer)
    claim = UnilateralClose(
        state.channel_id, event.signer.node_id, state.received.proof, EMPTY_SIGNATURE
    ).signed_by(event.signer)
    return Transition(
        replace(state, phase=Phase.DISPUTED, dispute=claim), (SubmitUnilateralClose(claim),)
    )


def _on_unilateral(state: ChannelState, event: ReceiveUnilateralClose, now_ms: int) -> Transition:
    claim = event.claim
    if claim.channel_id != state.channel_id:
        raise RemoteProtocolError(ErrorCode.WRONG_CHANNEL, "the claim is for another channel")
    state.terms.party_index(claim.claimant)
    claim.verify_signature(claim.claimant)
    if state.phase is Phase.DISPUTED:
        return Transition(state)
    return Transition(replace(state, phase=Phase.DISPUTED, dispute=claim), (NotifyDispute(claim),))


def _on_dispute_notice(
    state: ChannelState, event: ReceiveDisputeNotice, now_ms: int
) -> Transition:
    notice = event.notice
    if notice.channel_id != state.channel_id or notice.claim.channel_id != state.channel_id:
        raise RemoteProtocolError(ErrorCode.WRONG_CHANNEL, "dispute notice for another channel")
    notice.verify_signature(state.terms.arbiter)
    claim = notice.claim
    state.terms.party_index(claim.claimant)
    claim.verify_signature(claim.claimant)
    if state.phase is Phase.CLOSED:
        # Our co-signed close overrides the claim — if the arbiter has it: hand it in again,
        # with our evidence, whoever claimed (once per notice).
        if state.dispute == claim and state.dispute_deadline_ms == notice.deadline_ms:
            return Transition(state)
        closed = replace(state, dispute=claim, dispute_deadline_ms=notice.deadline_ms)
        return Transition(closed, (NotifyDispute(claim),))
    new = replace(state, phase=Phase.DISPUTED, dispute=claim,
                  dispute_deadline_ms=notice.deadline_ms)
    ours = claim.claimant == state.terms.parties()[state.us]
    if ours or (state.phase is Phase.DISPUTED and state.dispute is not None
                and state.dispute.claimant == claim.claimant):
        return Transition(new)
    return Transition(new, (NotifyDispute(claim),))


def _on_evidence(state: ChannelState, event: ActionSubmitEvidence, now_ms: int) -> Transition:
    """Hand the arbiter the latest proof we hold; once closed, the co-signed close as well (it
    overrides the claim), so a close that never reached the arbiter still decides."""
    _check_signer(state, event.signer)
    evidence = DisputeEvidence(
        state.channel_id, event.signer.node_id, state.received.proof, EMPTY_SIGNATURE
    ).signed_by(event.signer)
    if state.phase is Phase.CLOSED and state.close is not None and state.close.fully_signed():
        return Transition(state, (SubmitClose(state.close), SubmitEvidence(evidence)))
    return Transition(state, (SubmitEvidence(evidence),))


def _on_payout(state: ChannelState, event: ReceivePayout, now_ms: int) -> Transition:
    notice = event.notice
    if notice.channel_id != state.channel_id:
        raise RemoteProtocolError(ErrorCode.WRONG_CHANNEL, "payout notice for another channel")
    notice.verify_signature(state.terms.arbiter)
    # What escrow holds as the arbiter confirmed it: the terms' deposits once the channel opened
    # (plus any over-deposit); only what was paid in when it never opened and is refunded.
    # With top-ups and checkpoints: plus the top-ups, less at most what the checkpoints we
    # signed paid out (the arbiter may not have taken every one of them, specs/0003 §9.3).
    held = sum(state.funded) + sum(state.topped_up)
    paid = notice.opener_payout + notice.peer_payout
    if not held - sum(state.withdrawn) <= paid <= held:
        raise RemoteProtocolError(ErrorCode.DEPOSIT_MISMATCH, "payouts do not sum to the deposits")
    if state.phase is Phase.SETTLED:
        return Transition(state)
    return Transition(replace(state, phase=Phase.SETTLED, payout=notice), (NotifySettled(notice),))


# ---------------------------------------------------------------------------------------------
# Checkpoints and top-ups (specs/0003 §9)


def _last_seq(state: ChannelState) -> int:
    """The highest checkpoint number we signed or hold fully signed."""
    return max((c.seq for c in (state.checkpoint, state.checkpoint_signed) if c is not None),
               default=0)


def _known_point(flow: Flow, nonce: int) -> int | None:
    """The amount of `flow` at `nonce`, when we still know it (latest proof or receipt)."""
    if nonce == 0:
        return 0
    if nonce == flow.nonce:
        return flow.amount
    if flow.receipt is not None and nonce == flow.receipt.nonce:
        return flow.receipt.amount
    return None


def check_checkpoint(state: ChannelState, checkpoint: Checkpoint) -> tuple[MinorUnits, MinorUnits]:
    """The rules of specs/0003 §9.2 for a checkpoint body, whoever proposed it (the same code
    checks ours and the peer's); returns what each party has withdrawn once it is signed.

    Per direction the point must be one its receiver has receipted (for the peer's direction:
    by our receipts; for ours: the proposer's signature acknowledges it), at most what its
    sender signed, and equal to the amount we know at that nonce; no total may fall below the
    last checkpoint; and every payment either side has signed so far must still fit the
    capacity left once the checkpoint's payouts leave escrow.
    """
    if checkpoint.channel_id != state.channel_id:
        raise RemoteProtocolError(ErrorCode.WRONG_CHANNEL, "the checkpoint is for another channel")
    cp.check_progress(state.checkpoint, checkpoint)
    for sender in (0, 1):
        nonce, amount = checkpoint.point(sender)
        flow = state.flows[sender]
        limit = flow.nonce if sender == state.us else flow.acked_nonce
        known = _known_point(flow, nonce)
        if nonce > limit or amount > flow.amount or (known is not None and known != amount):
            raise RemoteProtocolError(
                ErrorCode.CLOSE_MISMATCH,
                f"checkpoint point ({nonce}, {amount}) of party {sender} is not one both hold",
            )
    withdrawn = cp.withdrawn_after(state.terms, state.withdrawn, checkpoint)
    cp.check_within_capacity(state.terms, state.topped_up, withdrawn,
                             (state.flows[0].amount, state.flows[1].amount))
    return withdrawn


def checkpoint_body(state: ChannelState) -> Checkpoint:
    """The next checkpoint as we would propose it (unsigned): per direction the latest point
    its receiver has receipted — or the last checkpoint's, when that is later (its signature
    acknowledged the point before the receipt for it reached us)."""
    points = []
    for sender, flow in enumerate(state.flows):
        receipt = flow.receipt
        point = (Nonce(0), Amount(0)) if receipt is None else (receipt.nonce, receipt.amount)
        if state.checkpoint is not None and state.checkpoint.point(sender)[0] > point[0]:
            nonce, amount = state.checkpoint.point(sender)
            point = (Nonce(nonce), Amount(amount))
        points.append(point)
    return Checkpoint(state.channel_id, _last_seq(state) + 1, points[0][0], points[0][1],
                      points[1][0], points[1][1], EMPTY_SIGNATURE, EMPTY_SIGNATURE)


def _same_totals(a: Checkpoint, b: Checkpoint | None) -> bool:
    return b is not None and (a.point(0), a.point(1)) == (b.point(0), b.point(1))


def _signed(state: ChannelState, body: Checkpoint, withdrawn: tuple[MinorUnits, MinorUnits],
            now_ms: int) -> ChannelState:
    """`body` carries our signature now (and perhaps the peer's)."""
    new = replace(state, checkpoint_signed=body, withdrawn=withdrawn, settle_base_ms=now_ms,
                  peer_checkpoint=None)
    if body.fully_signed():
        new = replace(new, checkpoint=body)
    return new


def _on_checkpoint_action(state: ChannelState, event: ActionCheckpoint, now_ms: int
                          ) -> Transition:
    _check_signer(state, event.signer)
    field = Checkpoint.SIGNATURE_FIELDS[state.us]
    theirs = state.peer_checkpoint
    if theirs is not None:  # its number was checked on receipt; signing anything clears it
        try:
            withdrawn = check_checkpoint(state, theirs)
        except RemoteProtocolError:
            pass  # no longer acceptable (our view moved): propose our own instead
        else:
            full = theirs.signed_by(event.signer, field)
            return Transition(_signed(state, full, withdrawn, now_ms),
                              (SendCheckpoint(full), SubmitCheckpoint(full)))
    pending = state.checkpoint_signed
    body = checkpoint_body(state)
    if pending is not None and not pending.fully_signed() and _same_totals(body, pending):
        return Transition(state, (SendCheckpoint(pending),))  # nothing new: the same again
    if _same_totals(body, state.checkpoint):
        raise LocalProtocolError(ErrorCode.INVALID_STATE, "nothing new to checkpoint")
    try:
        withdrawn = check_checkpoint(state, body)
    except RemoteProtocolError as exc:
        raise LocalProtocolError(exc.code, exc.message) from None
    ours = body.signed_by(event.signer, field)
    return Transition(_signed(state, ours, withdrawn, now_ms), (SendCheckpoint(ours),))


def _on_checkpoint(state: ChannelState, event: ReceiveCheckpoint, now_ms: int) -> Transition:
    checkpoint = event.checkpoint
    if checkpoint.channel_id != state.channel_id:
        raise RemoteProtocolError(ErrorCode.WRONG_CHANNEL, "the checkpoint is for another channel")
    checkpoint.verify_signature(state.terms.parties()[state.them],
                                checkpoint.signature_field(state.them))
    if state.checkpoint is not None and state.checkpoint.same_state(checkpoint):
        return Transition(state)  # the one we hold, again
    ours = getattr(checkpoint, checkpoint.signature_field(state.us))
    if ours:
        # The peer co-signed a body we signed: nothing to decide, we counted it when we signed.
        checkpoint.verify_signature(state.terms.parties()[state.us],
                                    checkpoint.signature_field(state.us))
        cp.check_progress(state.checkpoint, checkpoint)
        new = replace(state, checkpoint=checkpoint)
        if state.checkpoint_signed is not None and state.checkpoint_signed.same_state(checkpoint):
            new = replace(new, checkpoint_signed=checkpoint)  # our proposal is signed: not pending
        return Transition(new, (SubmitCheckpoint(checkpoint),))
    if state.phase is not Phase.OPEN:  # a closing channel settles by its close
        raise RemoteProtocolError(
            ErrorCode.INVALID_STATE,
            f"a checkpoint proposal is not expected: the channel is {state.phase.value}")
    pending = state.checkpoint_signed
    if pending is not None and not pending.fully_signed() and pending.seq == checkpoint.seq:
        if pending.same_state(checkpoint):  # both proposed the same body: it is signed
            full = replace(pending, **{checkpoint.signature_field(state.them):
                                       getattr(checkpoint, checkpoint.signature_field(state.them))})
            return Transition(replace(state, checkpoint=full, checkpoint_signed=full),
                              (SendCheckpoint(full), SubmitCheckpoint(full)))
        if state.us == 0:
            # Both proposed at once: the opener's body stands (the peer will co-sign ours).
            raise RemoteProtocolError(ErrorCode.NONCE_REPLAY,
                                      f"checkpoint {checkpoint.seq} crosses the opener's")
    elif checkpoint.seq <= _last_seq(state):
        raise RemoteProtocolError(
            ErrorCode.NONCE_REPLAY,
            f"checkpoint {checkpoint.seq} is not above checkpoint {_last_seq(state)}",
        )
    check_checkpoint(state, checkpoint)
    return Transition(replace(state, peer_checkpoint=checkpoint), (NotifyCheckpointRequested(),))


def _on_topup(state: ChannelState, event: ReceiveTopUp, now_ms: int) -> Transition:
    conf = event.confirmation
    if conf.channel_id != state.channel_id:
        raise RemoteProtocolError(ErrorCode.WRONG_CHANNEL, "a top-up for another channel")
    conf.verify_signature(state.terms.arbiter)
    side = state.terms.party_index(conf.depositor)
    if conf.amount <= state.topped_up[side]:
        return Transition(state)  # a repeat or an older confirmation: nothing new
    everything = sum(state.terms.deposits()) + sum(state.topped_up) - state.topped_up[side]
    if from_minor_units(everything + conf.amount, state.terms.scale,
                        currency_exponent(state.terms.currency)) > MAX_AMOUNT:
        raise RemoteProtocolError(ErrorCode.INVALID_AMOUNT, "escrow above 2^63-1 at this scale")
    topped = list(state.topped_up)
    topped[side] = conf.amount
    return Transition(replace(state, topped_up=(topped[0], topped[1])))


_Handler = Callable[[ChannelState, Input, int], Transition]
_HANDLERS: dict[type, _Handler] = {
    ReceiveAcceptance: _on_acceptance,  # type: ignore[dict-item]
    ReceiveFunding: _on_funding,  # type: ignore[dict-item]
    ActionPay: _on_pay,  # type: ignore[dict-item]
    ReceiveProof: _on_proof,  # type: ignore[dict-item]
    ActionAcknowledge: _on_acknowledge,  # type: ignore[dict-item]
    ReceiveReceipt: _on_receipt,  # type: ignore[dict-item]
    ActionClose: _on_close_action,  # type: ignore[dict-item]
    ReceiveClose: _on_close,  # type: ignore[dict-item]
    ActionForceClose: _on_force_close,  # type: ignore[dict-item]
    ReceiveUnilateralClose: _on_unilateral,  # type: ignore[dict-item]
    ReceiveDisputeNotice: _on_dispute_notice,  # type: ignore[dict-item]
    ActionSubmitEvidence: _on_evidence,  # type: ignore[dict-item]
    ReceivePayout: _on_payout,  # type: ignore[dict-item]
    ActionCheckpoint: _on_checkpoint_action,  # type: ignore[dict-item]
    ReceiveCheckpoint: _on_checkpoint,  # type: ignore[dict-item]
    ReceiveTopUp: _on_topup,  # type: ignore[dict-item]
}

__all__ = ["ChannelState", "CheckedProof", "Phase", "ProtocolError", "TermsBounds", "Transition",
           "accept", "check_signature", "pay_many", "propose", "receive_proofs", "step"]
