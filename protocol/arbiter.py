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

from protocol import checkpoint as cp
from protocol import transfers as tr
from protocol.channel import ANY_WINDOW, TermsBounds, check_terms
from protocol.crypto import Signer
from protocol.encoding import MAX_MESSAGE_BYTES
from protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from protocol.machine import allowed_phases, check_landed
from protocol.messages import (
    EMPTY_SIGNATURE,
    MAX_STATUS_BATCH,
    MAX_STATUS_TRANSFERS,
    BalanceProof,
    BankAccount,
    ChannelAcceptance,
    ChannelProposal,
    ChannelTerms,
    Checkpoint,
    CooperativeClose,
    DisputeEvidence,
    DisputeNotice,
    EscrowStatus,
    EscrowStatuses,
    EscrowStatusQuery,
    FundingConfirmation,
    PayoutAccount,
    PayoutNotice,
    PayoutReturned,
    TopUpConfirmation,
    TransferNotice,
    UnilateralClose,
)
from protocol.money import currency_exponent
from protocol.payout import Payouts, payouts
from protocol.references import Purpose, bank_reference
from protocol.refunds import CreditReason, HoldCredit, UnappliedCredit
from protocol.tariff import tariff_amount
from protocol.types import MAX_AMOUNT, MAX_TIME_MS, ChannelId, MinorUnits

MAX_DEPOSIT_ENTRIES = 32
"""Bank entries remembered per channel to make deposit observation idempotent."""
MAX_TOPUP_ENTRIES = 400
"""Top-up entries remembered per channel: a year of daily top-ups, and then some."""


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
    checkpoint: Checkpoint | None = None
    """The latest checkpoint taken (specs/0004 §7); closes and evidence never decide below it."""
    withdrawn: tuple[MinorUnits, MinorUnits] = (MinorUnits(0), MinorUnits(0))
    """What each party has been paid at checkpoints so far (running maximum, rail units)."""
    topped_up: tuple[MinorUnits, MinorUnits] = (MinorUnits(0), MinorUnits(0))
    """Top-ups confirmed per party (specs/0004 §8)."""
    topup_entries: tuple[str, ...] = ()
    transfers: tuple[tr.Transfer, ...] = ()
    """Every payout attempt, at checkpoints and at the close (specs/0004 §9)."""
    accounts: tuple[PayoutAccount | None, PayoutAccount | None] = (None, None)
    """Each party's latest signed payout account, if it named one."""
    corrections: tuple[tr.Correction | None, tr.Correction | None] = (None, None)
    """Each party's account as its bank's latest notification of change corrected it."""
    outcomes: tuple[TransferNotice, ...] = ()
    """The latest payout outcomes told to the parties, signed (at most MAX_STATUS_TRANSFERS,
    oldest first): what EscrowStatus carries for a node that missed a push (0004 §9.4)."""

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

    signer: Signer | None = None
    """The arbiter's key: with it, a decision that leaves nothing to pay (a channel closed
    before any deposit was booked) settles at once with a signed payout notice (specs/0004
    §5); without it, such a channel waits in `paying` for the next tick that carries it (the
    daemon always passes it)."""


@dataclass(frozen=True, slots=True)
class ObservePayoutBooked:
    signer: Signer
    party: int
    booked_ms: int


@dataclass(frozen=True, slots=True)
class ReceiveCheckpoint:
    """A checkpoint signed by both parties (either may hand it in; both usually do)."""

    checkpoint: Checkpoint


@dataclass(frozen=True, slots=True)
class ObserveTopUp:
    """The escrow account's bank shows a credit with `depositor`'s top-up reference."""

    signer: Signer
    depositor: int
    amount: MinorUnits
    entry_id: str
    bank_reference: str
    booked_ms: int


@dataclass(frozen=True, slots=True)
class ObserveTransferBooked:
    """The bank shows the payout with this end-to-end reference booked."""

    signer: Signer
    reference: str
    booked_ms: int


@dataclass(frozen=True, slots=True)
class ObservePayoutReturned:
    """The bank rejected (pain.002 RJCT, a rejected Open Banking payment) or returned (pacs.004,
    an ACH R-code return) the payout with this reference, for `reason` (AC04, AM04, R03…)."""

    reference: str
    reason: str
    returned_ms: int
    signer: Signer | None = None
    """The arbiter's key: with it, both parties are sent the signed PayoutReturned and
    TransferNotice (the daemon always passes it)."""
    rejected: bool = False
    """Refused before booking (pain.002 RJCT…), not returned after it: what the notice says."""


@dataclass(frozen=True, slots=True)
class ObservePayoutCorrected:
    """The payee's bank booked the payout with this reference and sent a notification of
    change (an ACH COR entry: C01-C13 and the corrected data): later payouts to that party go
    to the corrected account (specs/0004 §9)."""

    reference: str
    code: str
    corrected_data: str
    observed_ms: int


@dataclass(frozen=True, slots=True)
class ReceivePayoutAccount:
    account: PayoutAccount


@dataclass(frozen=True, slots=True)
class CatchUp:
    """A party registered (again): what it may have missed, signed by the arbiter's key —
    a confirmation of each deposit seen so far (totals: a repeat changes nothing at the node)
    and, during a dispute, the dispute notice."""

    signer: Signer


Input: TypeAlias = (
    ObserveDeposit
    | ReceiveCooperativeClose
    | ReceiveUnilateralClose
    | ReceiveEvidence
    | Tick
    | ObservePayoutBooked
    | ReceiveCheckpoint
    | ObserveTopUp
    | ObserveTransferBooked
    | ObservePayoutReturned
    | ReceivePayoutAccount
    | CatchUp
    | ObservePayoutCorrected
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
    checkpoint: int = 0
    """The checkpoint it pays (0: the final close)."""
    attempt: int = 0
    """0, or the how-manieth payment after rejections and returns."""


@dataclass(frozen=True, slots=True)
class SendPayoutNotice:
    notice: PayoutNotice


@dataclass(frozen=True, slots=True)
class SendTopUpConfirmation:
    """Send to both parties: the depositor's capacity grows on this."""

    confirmation: TopUpConfirmation


@dataclass(frozen=True, slots=True)
class SendPayoutReturned:
    """Send to both parties: a payout was rejected or returned, and why."""

    notice: PayoutReturned


@dataclass(frozen=True, slots=True)
class SendTransferNotice:
    """Send to both parties: one payout attempt's outcome at the bank (0004 §9.4)."""

    notice: TransferNotice


Effect: TypeAlias = (
    SendPayoutReturned
    | SendTransferNotice
    | SendFundingConfirmation
    | ForwardDispute
    | SubmitPayout
    | SendPayoutNotice
    | SendTopUpConfirmation
    | HoldCredit
)


@dataclass(frozen=True, slots=True)
class Transition:
    state: ArbiterState
    effects: tuple[Effect, ...] = field(default=())


A = ArbiterPhase


def _stays(event: type, *phases: ArbiterPhase) -> dict[tuple[ArbiterPhase, type],
                                                        frozenset[ArbiterPhase]]:
    """Table entries for an input that leaves each of `phases` as it is."""
    return {(phase, event): frozenset({phase}) for phase in phases}


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
    (A.DISPUTE, Tick): frozenset({A.DISPUTE, A.PAYING, A.SETTLED}),
    (A.PAYING, Tick): frozenset({A.PAYING, A.SETTLED}),
    (A.SETTLED, Tick): frozenset({A.SETTLED}),
    (A.PAYING, ObservePayoutBooked): frozenset({A.PAYING, A.SETTLED}),
    (A.SETTLED, ObservePayoutBooked): frozenset({A.SETTLED}),
    # specs/0004 §7-10: checkpoints, top-ups, returned payouts, late credits (held, §10)
    **_stays(ReceiveCheckpoint, A.OPEN, A.DISPUTE),
    **_stays(ObserveTopUp, *ArbiterPhase),
    **_stays(ObserveDeposit, A.DISPUTE, A.PAYING, A.SETTLED),
    **_stays(ObserveTransferBooked, A.OPEN, A.DISPUTE, A.SETTLED),
    (A.PAYING, ObserveTransferBooked): frozenset({A.PAYING, A.SETTLED}),
    **_stays(ObservePayoutReturned, A.OPEN, A.DISPUTE, A.PAYING, A.SETTLED),
    **_stays(ReceivePayoutAccount, *ArbiterPhase),
    **_stays(CatchUp, *ArbiterPhase),
    **_stays(ObservePayoutCorrected, A.OPEN, A.DISPUTE, A.PAYING, A.SETTLED),
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
    proposal.verify_signature(terms.opener)
    acceptance.verify_for(terms)
    check_terms(terms, bounds)  # the signatures before the rules (specs/0002 §6.3)
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
                             local=type(event).__name__.startswith("Observe"),
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
    if state.phase in (ArbiterPhase.DISPUTE, ArbiterPhase.PAYING, ArbiterPhase.SETTLED):
        return _hold(state, event.depositor, event.amount, event.entry_id, event.bank_reference,
                     event.booked_ms, CreditReason.LATE)
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
    state, effects = _submit(state, 0, amounts, now_ms=state.updated_ms)
    booked = (amounts[0] == 0, amounts[1] == 0)
    return replace(state, phase=ArbiterPhase.PAYING, payouts=payouts, booked=booked), effects


def decide_payouts(state: ArbiterState, opener_sent: int, peer_sent: int) -> Payouts:
    """The one payout rule (protocol.payout, DESIGN §3) on what escrow holds for this channel:
    a channel that never opened refunds each deposit; one that opened pays the rule on what
    escrow still holds after its checkpoints and top-ups, on totals never below the last
    checkpoint (specs/0004 §7.3)."""
    return payouts(state.terms, state.deposited, opener_sent, peer_sent,
                   checkpoint=state.checkpoint, topped_up=state.topped_up,
                   withdrawn=state.withdrawn)


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
    if state.phase is ArbiterPhase.PAYING:
        return _settle_if_nothing_left(state, event.signer, now_ms, ())
    if state.phase is not ArbiterPhase.DISPUTE or state.deadline_ms is None:
        return Transition(state)
    if now_ms < state.deadline_ms:
        return Transition(state)
    sent = [p.amount if p is not None else 0 for p in state.evidence]
    payouts = decide_payouts(state, sent[0], sent[1])
    new, effects = _payout_effects(state, payouts)
    return _settle_if_nothing_left(new, event.signer, now_ms, effects)


def _settle_if_nothing_left(state: ArbiterState, signer: Signer | None, now_ms: int,
                            effects: tuple[Effect, ...]) -> Transition:
    """A decision with nothing left to book — payouts of 0 and 0, as for a channel closed
    before any deposit was booked — submits nothing, so no booking will ever settle it: it
    settles now, with the notice signed by `signer`. A payout still unbooked, or no key to
    sign with, leaves the state as it is."""
    if (state.phase is not ArbiterPhase.PAYING or state.payouts is None or signer is None
            or not all(state.booked)):
        return Transition(state, effects)
    settled, notice = _settled(state, now_ms, signer)
    return Transition(settled, (*effects, SendPayoutNotice(notice)))


def _on_booked(state: ArbiterState, event: ObservePayoutBooked, now_ms: int) -> Transition:
    if event.party not in (0, 1):
        raise LocalProtocolError(ErrorCode.INVALID_FIELD, "party is 0 or 1")
    attempt = tr.live(state.transfers, (0, event.party))
    if attempt is not None:
        if attempt.attempt > 0:
            return Transition(state)  # names the first attempt, which was returned: see §9
        return _on_transfer_booked(
            state, ObserveTransferBooked(event.signer, attempt.reference, event.booked_ms), now_ms
        )
    return _final_booked(state, event.party, event.signer, event.booked_ms)


def _final_booked(state: ArbiterState, party: int, signer: Signer, booked_ms: int) -> Transition:
    """The final payout to `party` is booked: once both are, sign the payout notice."""
    event = ObservePayoutBooked(signer, party, booked_ms)
    if state.phase is ArbiterPhase.SETTLED or state.booked[event.party]:
        return Transition(state)
    booked = (True, state.booked[1]) if event.party == 0 else (state.booked[0], True)
    new = replace(state, booked=booked)
    if not all(booked):
        return Transition(new)
    settled, notice = _settled(new, event.booked_ms, event.signer)
    return Transition(settled, (SendPayoutNotice(notice),))


def _settled(state: ArbiterState, booked_ms: int, signer: Signer
             ) -> tuple[ArbiterState, PayoutNotice]:
    """Every payout is booked (or there was none to make): sign the payout notice."""
    assert state.payouts is not None
    notice = PayoutNotice(
        state.channel_id,
        state.payouts.opener,
        state.payouts.peer,
        bank_reference(state.channel_id, Purpose.PAYOUT, 0),
        bank_reference(state.channel_id, Purpose.PAYOUT, 1),
        booked_ms,
        EMPTY_SIGNATURE,
    ).signed_by(signer)
    return replace(state, phase=ArbiterPhase.SETTLED, notice=notice), notice


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
    return _unsigned_status(state, signer, challenge, now_ms).signed_by(signer)


def _unsigned_status(state: ArbiterState, signer: Signer, challenge: bytes, now_ms: int
                     ) -> EscrowStatus:
    return EscrowStatus(
        state.channel_id, state.phase.value, challenge, funding_confirmations(state, signer),
        dispute_notice(state, signer), state.notice, now_ms, state.outcomes, EMPTY_SIGNATURE)


def statuses(held: Callable[[ChannelId], ArbiterState | None], query: EscrowStatusQuery,
             signer: Signer, *, now_ms: int) -> EscrowStatuses:
    """The arbiter's one signed answer to a batched status query (specs/0005 §4.1): the
    status of each channel `held` finds, in the order asked, and the ids it does not hold. The
    statuses inside are unsigned: the answer's signature covers them with the challenge.
    Statuses are taken in order while the answer stays within MAX_MESSAGE_BYTES; the held ids
    left over are listed in `later` (never the first: one status always fits)."""
    known: list[EscrowStatus] = []
    unknown: list[ChannelId] = []
    for cid in dict.fromkeys(query.channel_ids):  # an id asked twice is answered once
        state = held(cid)
        if state is None:
            unknown.append(cid)
        else:
            known.append(_unsigned_status(state, signer, query.challenge, now_ms))
    room, fits = MAX_MESSAGE_BYTES - SIGNATURE_BYTES - _BATCH_ENVELOPE, 0
    for status in known:  # a first guess from each status' own size, checked below
        room -= len(status.encode())
        if room < 0:
            break
        fits += 1
    while True:
        fits = max(fits, 1)
        answer = EscrowStatuses(query.challenge, tuple(known[:fits]), tuple(unknown),
                                tuple(s.channel_id for s in known[fits:]), now_ms,
                                EMPTY_SIGNATURE)
        if fits == 1 or len(answer.encode()) + SIGNATURE_BYTES <= MAX_MESSAGE_BYTES:
            return answer.signed_by(signer)
        fits -= 1


_BATCH_ENVELOPE = 2 * MAX_STATUS_BATCH * 35 + 64
"""An upper bound of an EscrowStatuses' bytes besides its statuses and signature (its ids,
challenge, time and headers)."""
SIGNATURE_BYTES = 64


# Checkpoints, top-ups, returned payouts, late credits (specs/0004 §7-10) --------------------


def _payout_account(state: ArbiterState, party: int) -> tuple[BankAccount, int]:
    """Where `party` is paid: the newer of its latest signed PayoutAccount and its bank's
    latest notification of change, else the account in the terms."""
    named, corrected = state.accounts[party], state.corrections[party]
    if corrected is not None and (named is None or named.issued_ms < corrected.observed_ms):
        return corrected.account, corrected.observed_ms
    if named is None:
        return state.terms.accounts()[party], 0
    return named.account, named.issued_ms


def _submit_transfer(transfer: tr.Transfer, currency: str) -> SubmitPayout:
    return SubmitPayout(transfer.party, transfer.amount, currency, transfer.account,
                        transfer.reference, transfer.idempotency_key, transfer.checkpoint,
                        transfer.attempt)


def _submit(
    state: ArbiterState, checkpoint: int, amounts: tuple[int, int], *, now_ms: int
) -> tuple[ArbiterState, tuple[Effect, ...]]:
    """The first attempt of each non-zero payout of `checkpoint` (0: the close)."""
    effects: list[Effect] = []
    transfers = state.transfers
    for party in (0, 1):
        if amounts[party] > 0:
            account, issued = _payout_account(state, party)
            transfer = tr.new_transfer(state.channel_id, checkpoint, party,
                                       MinorUnits(amounts[party]), account,
                                       account_issued_ms=issued, now_ms=now_ms)
            transfers = (*transfers, transfer)
            effects.append(_submit_transfer(transfer, state.terms.currency))
    return replace(state, transfers=tr.bounded(transfers, now_ms)), tuple(effects)


def _on_checkpoint(state: ArbiterState, event: ReceiveCheckpoint, now_ms: int) -> Transition:
    checkpoint = event.checkpoint
    if checkpoint.channel_id != state.channel_id:
        raise RemoteProtocolError(ErrorCode.WRONG_CHANNEL, "the checkpoint is for another channel")
    if not checkpoint.fully_signed():
        raise RemoteProtocolError(ErrorCode.BAD_SIGNATURE, "a checkpoint needs both signatures")
    checkpoint.verify_signature(state.terms.opener, "opener_signature")
    checkpoint.verify_signature(state.terms.peer, "peer_signature")
    if state.checkpoint is not None and state.checkpoint.same_state(checkpoint):
        return Transition(state)  # handed in by both parties: idempotent
    cp.check_progress(state.checkpoint, checkpoint)
    if state.phase is ArbiterPhase.DISPUTE:
        # Both signed it: the window decides on nothing below it, and pays nothing out early.
        return Transition(replace(state, checkpoint=checkpoint))
    withdrawn = cp.withdrawn_after(state.terms, state.withdrawn, checkpoint)
    cp.check_within_capacity(state.terms, state.topped_up, withdrawn, checkpoint.sent())
    amounts = cp.payouts_at(state.terms, state.withdrawn, checkpoint)
    new = replace(state, checkpoint=checkpoint, withdrawn=withdrawn)
    new, effects = _submit(new, checkpoint.seq, amounts, now_ms=now_ms)
    return Transition(new, effects)


def _hold(state: ArbiterState, party: int, amount: MinorUnits, entry_id: str, reference: str,
          booked_ms: int, reason: CreditReason) -> Transition:
    """A credit for this channel that it cannot take: held for refund to the party (§10)."""
    account, _ = _payout_account(state, party)
    credit = UnappliedCredit(entry_id, amount, state.terms.currency, reason, reference,
                             booked_ms, account, bytes(state.channel_id))
    return Transition(state, (HoldCredit(credit),))


def _on_topup(state: ArbiterState, event: ObserveTopUp, now_ms: int) -> Transition:
    if event.depositor not in (0, 1) or not 0 < event.amount <= MAX_AMOUNT:
        raise LocalProtocolError(ErrorCode.INVALID_AMOUNT, "a top-up is a positive credit")
    if not 0 <= event.booked_ms <= MAX_TIME_MS:
        raise LocalProtocolError(ErrorCode.INVALID_FIELD, "a booking time out of range")
    reference = bank_reference(state.channel_id, Purpose.TOPUP, event.depositor)
    if event.bank_reference != reference:
        raise LocalProtocolError(ErrorCode.INVALID_FIELD, "not this party's top-up reference")
    if event.entry_id in state.topup_entries:
        return Transition(state)  # the same bank entry seen again
    if state.phase is not ArbiterPhase.OPEN:
        reason = CreditReason.EARLY if state.phase is ArbiterPhase.FUNDING else CreditReason.LATE
        return _hold(state, event.depositor, event.amount, event.entry_id, reference,
                     event.booked_ms, reason)
    if len(state.topup_entries) >= MAX_TOPUP_ENTRIES:
        raise LocalProtocolError(ErrorCode.INVALID_STATE, "too many top-up entries")
    total = state.topped_up[event.depositor] + event.amount
    deposits = state.terms.deposits()
    exponent = currency_exponent(state.terms.currency)
    everything = sum(deposits) + sum(state.topped_up) + event.amount
    if everything * 10 ** (state.terms.scale - exponent) > MAX_AMOUNT:
        raise LocalProtocolError(ErrorCode.INVALID_AMOUNT, "escrow above 2^63-1 at this scale")
    topped = list(state.topped_up)
    topped[event.depositor] = MinorUnits(total)
    new = replace(state, topped_up=(topped[0], topped[1]),
                  topup_entries=(*state.topup_entries, event.entry_id))
    confirmation = TopUpConfirmation(
        state.channel_id, state.terms.parties()[event.depositor], MinorUnits(total), reference,
        event.booked_ms, EMPTY_SIGNATURE,
    ).signed_by(event.signer)
    return Transition(new, (SendTopUpConfirmation(confirmation),))


def _on_transfer_booked(
    state: ArbiterState, event: ObserveTransferBooked, now_ms: int
) -> Transition:
    if not 0 <= event.booked_ms <= MAX_TIME_MS:
        raise LocalProtocolError(ErrorCode.INVALID_FIELD, "a booking time out of range")
    transfer = tr.find(state.transfers, event.reference)
    if transfer.status is not tr.TransferStatus.SUBMITTED:
        return Transition(state)  # booked already, or returned: a late booking counts nothing
    new = replace(state, transfers=tr.mark_booked(state.transfers, transfer, now_ms))
    new, told = _told(new, transfer, "booked", "", event.booked_ms, event.signer)
    if transfer.checkpoint != 0 or state.phase is not ArbiterPhase.PAYING:
        return Transition(new, told)
    final = _final_booked(new, transfer.party, event.signer, event.booked_ms)
    return Transition(final.state, (*told, *final.effects))


def _told(state: ArbiterState, transfer: tr.Transfer, status: str, reason: str, at_ms: int,
          signer: Signer | None) -> tuple[ArbiterState, tuple[Effect, ...]]:
    """The signed TransferNotice of `transfer`'s outcome, kept among the latest outcomes
    (EscrowStatus carries them) and sent to both parties; nothing without a key to sign."""
    if signer is None:
        return state, ()
    notice = TransferNotice(
        state.channel_id, transfer.checkpoint, state.terms.parties()[transfer.party],
        transfer.amount, status, reason, transfer.attempt, transfer.reference, at_ms,
        EMPTY_SIGNATURE,
    ).signed_by(signer)
    outcomes = (*state.outcomes, notice)[-MAX_STATUS_TRANSFERS:]
    return replace(state, outcomes=outcomes), (SendTransferNotice(notice),)


def _repay(state: ArbiterState, party: int, *, now_ms: int
           ) -> tuple[ArbiterState, tuple[Effect, ...]]:
    """Pay again every returned payout of `party` whose account it has since corrected."""
    account, issued = _payout_account(state, party)
    transfers, effects = state.transfers, []
    for old in tr.awaiting_account(transfers, party):
        if old.account_issued_ms >= issued or old.attempt + 1 >= tr.MAX_ATTEMPTS:
            continue  # no newer account named yet (or left to the operator)
        again = tr.new_transfer(state.channel_id, old.checkpoint, party, old.amount, account,
                                attempt=old.attempt + 1, account_issued_ms=issued, now_ms=now_ms)
        transfers = (*transfers, again)
        effects.append(_submit_transfer(again, state.terms.currency))
    return replace(state, transfers=tr.bounded(transfers, now_ms)), tuple(effects)


def _on_returned(state: ArbiterState, event: ObservePayoutReturned, now_ms: int) -> Transition:
    if not 0 <= event.returned_ms <= MAX_TIME_MS:
        raise LocalProtocolError(ErrorCode.INVALID_FIELD, "a return time out of range")
    transfer = tr.find(state.transfers, event.reference)
    if transfer.status is tr.TransferStatus.RETURNED:
        return Transition(state)  # the same return reported again
    new = replace(state, transfers=tr.mark_returned(state.transfers, transfer, event.reason,
                                                    now_ms))
    if transfer.checkpoint == 0 and new.phase is ArbiterPhase.PAYING:
        booked = list(new.booked)
        booked[transfer.party] = False  # settled only once the payment that stays is booked
        new = replace(new, booked=(booked[0], booked[1]))
    new, told = _told(new, transfer, "rejected" if event.rejected else "returned",
                      event.reason, event.returned_ms, event.signer)
    new, effects = _repay(new, transfer.party, now_ms=now_ms)
    effects = (*told, *effects)
    if event.signer is not None:
        notice = PayoutReturned(state.channel_id, state.terms.parties()[transfer.party],
                                transfer.amount, transfer.reference, event.reason,
                                event.returned_ms, EMPTY_SIGNATURE).signed_by(event.signer)
        effects = (SendPayoutReturned(notice), *effects)
    return Transition(new, effects)


def _on_payout_account(
    state: ArbiterState, event: ReceivePayoutAccount, now_ms: int
) -> Transition:
    named = event.account
    if named.channel_id != state.channel_id:
        raise RemoteProtocolError(ErrorCode.WRONG_CHANNEL, "an account for another channel")
    party = state.terms.party_index(named.party)
    named.verify_signature(named.party)
    held = state.accounts[party]
    if held is not None and held.issued_ms >= named.issued_ms:
        return Transition(state)  # an older (or the same) account: a replay changes nothing
    accounts = (named, state.accounts[1]) if party == 0 else (state.accounts[0], named)
    new, effects = _repay(replace(state, accounts=accounts), party, now_ms=now_ms)
    return Transition(new, effects)


def _on_catch_up(state: ArbiterState, event: CatchUp, now_ms: int) -> Transition:
    effects: list[Effect] = [SendFundingConfirmation(conf)
                             for conf in funding_confirmations(state, event.signer)]
    notice = dispute_notice(state, event.signer)
    if state.phase is ArbiterPhase.DISPUTE and state.claim is not None and notice is not None:
        claimant = state.terms.party_index(state.claim.claimant)
        effects.append(ForwardDispute(1 - claimant, state.claim, notice.deadline_ms, notice))
    return Transition(state, tuple(effects))


def _on_corrected(state: ArbiterState, event: ObservePayoutCorrected, now_ms: int
                  ) -> Transition:
    if not 0 <= event.observed_ms <= MAX_TIME_MS:
        raise LocalProtocolError(ErrorCode.INVALID_FIELD, "a notification time out of range")
    if not tr.CHANGE_CODE.fullmatch(event.code):
        raise LocalProtocolError(ErrorCode.INVALID_FIELD, f"{event.code!r} is not C01-C13")
    transfer = tr.find(state.transfers, event.reference)
    fixed = tr.corrected_account(transfer.account, event.code, event.corrected_data)
    held = state.corrections[transfer.party]
    if fixed is None or (held is not None and held.account == fixed):
        return Transition(state)  # nothing to correct, or corrected so already
    correction = tr.Correction(fixed, event.code, event.observed_ms)
    corrections = ((correction, state.corrections[1]) if transfer.party == 0
                   else (state.corrections[0], correction))
    return Transition(replace(state, corrections=corrections))


_HANDLERS: dict[type, Callable[[ArbiterState, Input, int], Transition]] = {
    ObserveDeposit: _on_deposit,  # type: ignore[dict-item]
    ReceiveCooperativeClose: _on_cooperative_close,  # type: ignore[dict-item]
    ReceiveUnilateralClose: _on_unilateral,  # type: ignore[dict-item]
    ReceiveEvidence: _on_evidence,  # type: ignore[dict-item]
    Tick: _on_tick,  # type: ignore[dict-item]
    ObservePayoutBooked: _on_booked,  # type: ignore[dict-item]
    ReceiveCheckpoint: _on_checkpoint,  # type: ignore[dict-item]
    ObserveTopUp: _on_topup,  # type: ignore[dict-item]
    ObserveTransferBooked: _on_transfer_booked,  # type: ignore[dict-item]
    ObservePayoutReturned: _on_returned,  # type: ignore[dict-item]
    ReceivePayoutAccount: _on_payout_account,  # type: ignore[dict-item]
    CatchUp: _on_catch_up,  # type: ignore[dict-item]
    ObservePayoutCorrected: _on_corrected,  # type: ignore[dict-item]
}
