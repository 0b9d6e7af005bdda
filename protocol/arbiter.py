"""The arbiter's view of one channel (specs/0004-arbiter-and-settlement.md).

The arbiter holds both deposits in escrow, confirms each deposit when its bank shows it, pays out
on a cooperative close at once, and runs the dispute window of a unilateral close: each party may
hand in the latest proof it holds from the other; the highest valid nonce per direction wins; when
the window ends it pays out on what it has. Payouts always sum to what is held in escrow.

Same shape as :mod:`protocol.channel`: ``step(state, input, *, now_ms) -> Transition``, a table of
legal transitions, typed errors that leave the state untouched.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypeAlias

from protocol.channel import ANY_WINDOW, TermsBounds, check_terms
from protocol.crypto import Signer
from protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from protocol.machine import allowed_phases, check_landed
from protocol.messages import (
    EMPTY_SIGNATURE,
    BalanceProof,
    BankAccount,
    ChannelAcceptance,
    ChannelProposal,
    ChannelTerms,
    CooperativeClose,
    DisputeEvidence,
    DisputeNotice,
    EscrowStatus,
    FundingConfirmation,
    PayoutNotice,
    UnilateralClose,
)
from protocol.payout import Payouts, payouts
from protocol.references import Purpose, bank_reference, idempotency_key
from protocol.tariff import tariff_amount
from protocol.types import MAX_AMOUNT, MAX_TIME_MS, ChannelId, MinorUnits

MAX_DEPOSIT_ENTRIES = 32
"""Bank entries remembered per channel to make deposit observation idempotent."""


class ArbiterPhase(enum.StrEnum):
    FUNDING = "funding"
    """Registered; waiting for the deposits to show at the bank."""
    OPEN = "open"
    """Every deposit confirmed."""
    DISPUTE = "dispute"
    """A unilateral close is open; evidence is taken until the deadline."""
    PAYING = "paying"
    """Payouts decided and submitted to the bank; waiting for them to book."""
    SETTLED = "settled"
    """The bank booked every payout."""


@dataclass(frozen=True, slots=True)
class ArbiterState:
    terms: ChannelTerms
    channel_id: ChannelId
    phase: ArbiterPhase
    proposal: ChannelProposal
    acceptance: ChannelAcceptance
    deposited: tuple[MinorUnits, MinorUnits] = (MinorUnits(0), MinorUnits(0))
    deposit_entries: tuple[str, ...] = ()
    opened: bool = False
    """True once every deposit was confirmed (a channel that never opened just refunds)."""
    evidence: tuple[BalanceProof | None, BalanceProof | None] = (None, None)
    """The highest proof *sent by* each party that the arbiter has seen."""
    close: CooperativeClose | None = None
    claim: UnilateralClose | None = None
    deadline_ms: int | None = None
    payouts: Payouts | None = None
    booked: tuple[bool, bool] = (False, False)
    notice: PayoutNotice | None = None
    updated_ms: int = 0

    def held(self) -> MinorUnits:
        return MinorUnits(self.deposited[0] + self.deposited[1])


# Inputs


@dataclass(frozen=True, slots=True)
class ObserveDeposit:
    """The escrow account's bank shows a credit matched to `depositor` of this channel."""

    signer: Signer
    depositor: int
    amount: MinorUnits
    entry_id: str
    bank_reference: str
    booked_ms: int


@dataclass(frozen=True, slots=True)
class ReceiveCooperativeClose:
    close: CooperativeClose


@dataclass(frozen=True, slots=True)
class ReceiveUnilateralClose:
    claim: UnilateralClose
    signer: Signer | None = None
    """The arbiter's key: with it, the ForwardDispute a new claim produces carries the signed
    DisputeNotice the parties are sent (the daemon always passes it)."""


@dataclass(frozen=True, slots=True)
class ReceiveEvidence:
    evidence: DisputeEvidence


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed; the dispute window may have ended."""


@dataclass(frozen=True, slots=True)
class ObservePayoutBooked:
    signer: Signer
    party: int
    booked_ms: int


Input: TypeAlias = (
    ObserveDeposit
    | ReceiveCooperativeClose
    | ReceiveUnilateralClose
    | ReceiveEvidence
    | Tick
    | ObservePayoutBooked
)

# Effects


@dataclass(frozen=True, slots=True)
class SendFundingConfirmation:
    """Send to both parties."""

    confirmation: FundingConfirmation


@dataclass(frozen=True, slots=True)
class ForwardDispute:
    """Tell the party that did not close that a unilateral close is open, and until when."""

    to: int
    claim: UnilateralClose
    deadline_ms: int
    notice: DisputeNotice | None = None
    """What both parties are sent, signed by the arbiter (when the input carried its key)."""


@dataclass(frozen=True, slots=True)
class SubmitPayout:
    party: int
    amount: MinorUnits
    currency: str
    account: BankAccount
    reference: str
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class SendPayoutNotice:
    notice: PayoutNotice


Effect: TypeAlias = SendFundingConfirmation | ForwardDispute | SubmitPayout | SendPayoutNotice


@dataclass(frozen=True, slots=True)
class Transition:
    state: ArbiterState
    effects: tuple[Effect, ...] = field(default=())


A = ArbiterPhase
TRANSITIONS: dict[tuple[ArbiterPhase, type], frozenset[ArbiterPhase]] = {
    (A.FUNDING, ObserveDeposit): frozenset({A.FUNDING, A.OPEN}),
    (A.OPEN, ObserveDeposit): frozenset({A.OPEN}),
    (A.OPEN, ReceiveCooperativeClose): frozenset({A.PAYING}),
    (A.DISPUTE, ReceiveCooperativeClose): frozenset({A.PAYING}),
    (A.PAYING, ReceiveCooperativeClose): frozenset({A.PAYING}),
    (A.SETTLED, ReceiveCooperativeClose): frozenset({A.SETTLED}),
    (A.FUNDING, ReceiveUnilateralClose): frozenset({A.DISPUTE}),
    (A.OPEN, ReceiveUnilateralClose): frozenset({A.DISPUTE}),
    (A.DISPUTE, ReceiveUnilateralClose): frozenset({A.DISPUTE}),
    (A.DISPUTE, ReceiveEvidence): frozenset({A.DISPUTE}),
    (A.FUNDING, Tick): frozenset({A.FUNDING}),
    (A.OPEN, Tick): frozenset({A.OPEN}),
    (A.DISPUTE, Tick): frozenset({A.DISPUTE, A.PAYING}),
    (A.PAYING, Tick): frozenset({A.PAYING}),
    (A.SETTLED, Tick): frozenset({A.SETTLED}),
    (A.PAYING, ObservePayoutBooked): frozenset({A.PAYING, A.SETTLED}),
    (A.SETTLED, ObservePayoutBooked): frozenset({A.SETTLED}),
}


def register(
    proposal: ChannelProposal, acceptance: ChannelAcceptance, arbiter_id: bytes, *, now_ms: int,
    bounds: TermsBounds = ANY_WINDOW,
) -> ArbiterState:
    """Take a channel into escrow once both parties' signatures over the terms verify and the
    terms lie within the arbiter's `bounds` (its dispute-window policy)."""
    terms = proposal.terms
    if terms.arbiter != arbiter_id:
        raise RemoteProtocolError(ErrorCode.NOT_A_PARTY, "the terms name another arbiter")
    check_terms(terms, bounds)
    proposal.verify_signature(terms.opener)
    acceptance.verify_for(terms)
    return ArbiterState(
        terms=terms,
        channel_id=terms.channel_id,
        phase=ArbiterPhase.FUNDING,
        proposal=proposal,
        acceptance=acceptance,
        updated_ms=now_ms,
    )


def step(state: ArbiterState, event: Input, *, now_ms: int) -> Transition:
    allowed = allowed_phases(TRANSITIONS, state.phase, event,  # type: ignore[arg-type]
                             local=isinstance(event, ObserveDeposit | ObservePayoutBooked),
                             noun="escrow")
    result = _HANDLERS[type(event)](state, event, now_ms)
    check_landed(allowed, state.phase, result.state.phase, event)
    if result.state is state or result.state == state:
        # Nothing changed: the very same state (the shell persists exactly when it is not).
        return Transition(state, result.effects)
    return Transition(replace(result.state, updated_ms=now_ms), result.effects)


def _on_deposit(state: ArbiterState, event: ObserveDeposit, now_ms: int) -> Transition:
    if event.depositor not in (0, 1) or not 0 < event.amount <= MAX_AMOUNT:
        raise LocalProtocolError(ErrorCode.INVALID_AMOUNT, "a deposit is a positive credit")
    if not 0 <= event.booked_ms <= MAX_TIME_MS:
        raise LocalProtocolError(ErrorCode.INVALID_FIELD, "a booking time out of range")
    if state.deposited[event.depositor] + event.amount > MAX_AMOUNT:
        raise LocalProtocolError(ErrorCode.INVALID_AMOUNT, "deposits above 2^63-1")
    if event.entry_id in state.deposit_entries:
        return Transition(state)  # the same bank entry seen again
    if len(state.deposit_entries) >= MAX_DEPOSIT_ENTRIES:
        raise LocalProtocolError(ErrorCode.INVALID_STATE, "too many deposit entries")
    deposited = list(state.deposited)
    deposited[event.depositor] = MinorUnits(deposited[event.depositor] + event.amount)
    new = replace(
        state,
        deposited=(deposited[0], deposited[1]),
        deposit_entries=(*state.deposit_entries, event.entry_id),
    )
    confirmation = FundingConfirmation(
        state.channel_id,
        state.terms.parties()[event.depositor],
        new.deposited[event.depositor],
        event.bank_reference,
        event.booked_ms,
        EMPTY_SIGNATURE,
    ).signed_by(event.signer)
    required = state.terms.deposits()
    if all(new.deposited[i] >= required[i] for i in (0, 1)):
        new = replace(new, phase=ArbiterPhase.OPEN, opened=True)
    return Transition(new, (SendFundingConfirmation(confirmation),))


def _payout_effects(
    state: ArbiterState, payouts: Payouts
) -> tuple[ArbiterState, tuple[Effect, ...]]:
    amounts = (payouts.opener, payouts.peer)
    effects: list[Effect] = []
    for party in (0, 1):
        if amounts[party] > 0:
            effects.append(
                SubmitPayout(
                    party,
                    amounts[party],
                    state.terms.currency,
                    state.terms.accounts()[party],
                    bank_reference(state.channel_id, Purpose.PAYOUT, party),
                    idempotency_key(state.channel_id, Purpose.PAYOUT, party),
                )
            )
    booked = (amounts[0] == 0, amounts[1] == 0)
    return replace(state, phase=ArbiterPhase.PAYING, payouts=payouts, booked=booked), tuple(effects)


def decide_payouts(state: ArbiterState, opener_sent: int, peer_sent: int) -> Payouts:
    """The one payout rule (protocol.payout) on what escrow holds for this channel."""
    return payouts(state.terms, state.deposited, opener_sent, peer_sent)


def _on_cooperative_close(
    state: ArbiterState, event: ReceiveCooperativeClose, now_ms: int
) -> Transition:
    close = event.close
    if close.channel_id != state.channel_id:
        raise RemoteProtocolError(ErrorCode.WRONG_CHANNEL, "the close is for another channel")
    if not close.fully_signed():
        raise RemoteProtocolError(ErrorCode.BAD_SIGNATURE, "a cooperative close needs both")
    close.verify_signature(state.terms.opener, "opener_signature")
    close.verify_signature(state.terms.peer, "peer_signature")
    if state.phase in (ArbiterPhase.PAYING, ArbiterPhase.SETTLED):
        if state.close is not None and state.close.same_state(close):
            return Transition(state)  # handed in twice (both parties do): idempotent
        raise RemoteProtocolError(ErrorCode.CLOSE_MISMATCH, "payouts were already decided")
    payouts = decide_payouts(state, close.opener_amount, close.peer_amount)
    new, effects = _payout_effects(replace(state, close=close), payouts)
    return Transition(new, effects)


def _check_evidence_proof(state: ArbiterState, submitter: bytes, proof: BalanceProof) -> int:
    """Validate a proof handed in by `submitter`; return the index of its sender."""
    if proof.channel_id != state.channel_id:
        raise RemoteProtocolError(ErrorCode.WRONG_CHANNEL, "the proof is for another channel")
    sender = state.terms.party_index(proof.sender)
    if proof.sender == submitter:
        raise RemoteProtocolError(
            ErrorCode.NOT_A_PARTY, "evidence is a proof from the *other* party"
        )
    proof.verify_signature(proof.sender)
    expected = tariff_amount(state.terms.tariff, proof.quantities) + proof.direct_amount
    if len(proof.quantities) != len(state.terms.tariff) or proof.amount != expected:
        raise RemoteProtocolError(ErrorCode.TARIFF_MISMATCH, "proof amount disagrees with tariff")
    return sender


def _take_evidence(
    state: ArbiterState, submitter: bytes, proof: BalanceProof | None
) -> ArbiterState:
    if proof is None:
        return state
    sender = _check_evidence_proof(state, submitter, proof)
    held = state.evidence[sender]
    if held is not None and held.nonce >= proof.nonce:
        return state  # highest nonce wins; an older proof changes nothing
    evidence = (proof, state.evidence[1]) if sender == 0 else (state.evidence[0], proof)
    return replace(state, evidence=evidence)


def _on_unilateral(state: ArbiterState, event: ReceiveUnilateralClose, now_ms: int) -> Transition:
    claim = event.claim
    if claim.channel_id != state.channel_id:
        raise RemoteProtocolError(ErrorCode.WRONG_CHANNEL, "the claim is for another channel")
    claimant = state.terms.party_index(claim.claimant)
    claim.verify_signature(claim.claimant)
    new = _take_evidence(state, claim.claimant, claim.proof)
    if state.phase is ArbiterPhase.DISPUTE:
        if state.deadline_ms is not None and now_ms >= state.deadline_ms:
            raise RemoteProtocolError(ErrorCode.DISPUTE_WINDOW_CLOSED, "the window has ended")
        return Transition(new)  # the other party also closed: its proof is evidence
    deadline = now_ms + state.terms.dispute_window_ms
    new = replace(new, phase=ArbiterPhase.DISPUTE, claim=claim, deadline_ms=deadline)
    notice = None if event.signer is None else dispute_notice(new, event.signer)
    return Transition(new, (ForwardDispute(1 - claimant, claim, deadline, notice),))


def _on_evidence(state: ArbiterState, event: ReceiveEvidence, now_ms: int) -> Transition:
    evidence = event.evidence
    if evidence.channel_id != state.channel_id:
        raise RemoteProtocolError(ErrorCode.WRONG_CHANNEL, "evidence for another channel")
    state.terms.party_index(evidence.submitter)
    evidence.verify_signature(evidence.submitter)
    if state.deadline_ms is not None and now_ms >= state.deadline_ms:
        raise RemoteProtocolError(ErrorCode.DISPUTE_WINDOW_CLOSED, "the window has ended")
    return Transition(_take_evidence(state, evidence.submitter, evidence.proof))


def _on_tick(state: ArbiterState, event: Tick, now_ms: int) -> Transition:
    if state.phase is not ArbiterPhase.DISPUTE or state.deadline_ms is None:
        return Transition(state)
    if now_ms < state.deadline_ms:
        return Transition(state)
    sent = [p.amount if p is not None else 0 for p in state.evidence]
    payouts = decide_payouts(state, sent[0], sent[1])
    new, effects = _payout_effects(state, payouts)
    return Transition(new, effects)


def _on_booked(state: ArbiterState, event: ObservePayoutBooked, now_ms: int) -> Transition:
    if event.party not in (0, 1):
        raise LocalProtocolError(ErrorCode.INVALID_FIELD, "party is 0 or 1")
    if state.phase is ArbiterPhase.SETTLED or state.booked[event.party]:
        return Transition(state)
    booked = (True, state.booked[1]) if event.party == 0 else (state.booked[0], True)
    new = replace(state, booked=booked)
    if not all(booked):
        return Transition(new)
    assert state.payouts is not None
    notice = PayoutNotice(
        state.channel_id,
        state.payouts.opener,
        state.payouts.peer,
        bank_reference(state.channel_id, Purpose.PAYOUT, 0),
        bank_reference(state.channel_id, Purpose.PAYOUT, 1),
        event.booked_ms,
        EMPTY_SIGNATURE,
    ).signed_by(event.signer)
    return Transition(
        replace(new, phase=ArbiterPhase.SETTLED, notice=notice), (SendPayoutNotice(notice),)
    )


def dispute_notice(state: ArbiterState, signer: Signer) -> DisputeNotice | None:
    """The signed notice of the open (or decided) unilateral close, if there is one."""
    if state.claim is None or state.deadline_ms is None:
        return None
    return DisputeNotice(state.channel_id, state.claim, state.deadline_ms,
                         EMPTY_SIGNATURE).signed_by(signer)


def funding_confirmations(state: ArbiterState, signer: Signer) -> tuple[FundingConfirmation, ...]:
    """A signed confirmation of each party's total deposit seen so far (totals: a repeat
    changes nothing at the node)."""
    return tuple(
        FundingConfirmation(
            state.channel_id, state.terms.parties()[party], state.deposited[party],
            bank_reference(state.channel_id, Purpose.DEPOSIT, party), state.updated_ms,
            EMPTY_SIGNATURE,
        ).signed_by(signer)
        for party in (0, 1)
        if state.deposited[party]
    )


def status(state: ArbiterState, signer: Signer, challenge: bytes, *, now_ms: int
           ) -> EscrowStatus:
    """The arbiter's signed answer to a node watching its channel (specs/0005 §4): what it
    needs to act on without any push reaching it — deposits, an open dispute, the payouts."""
    return EscrowStatus(
        state.channel_id, state.phase.value, challenge, funding_confirmations(state, signer),
        dispute_notice(state, signer), state.notice, now_ms, EMPTY_SIGNATURE,
    ).signed_by(signer)


_HANDLERS: dict[type, Callable[[ArbiterState, Input, int], Transition]] = {
    ObserveDeposit: _on_deposit,  # type: ignore[dict-item]
    ReceiveCooperativeClose: _on_cooperative_close,  # type: ignore[dict-item]
    ReceiveUnilateralClose: _on_unilateral,  # type: ignore[dict-item]
    ReceiveEvidence: _on_evidence,  # type: ignore[dict-item]
    Tick: _on_tick,  # type: ignore[dict-item]
    ObservePayoutBooked: _on_booked,  # type: ignore[dict-item]
}
