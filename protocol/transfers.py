"""The arbiter's payouts as bank transfers: each attempt, its status, and paying again after a
rejection or return (specs/0004 §9).

Every payout — at a checkpoint or at the close — is one :class:`Transfer` per attempt. Its
reference and idempotency key derive from the channel id, the party, the checkpoint number (0 for
the close) and the attempt (:func:`protocol.references.payout_seq`). At most one attempt per
payout is *live*: the latest. A payout the bank rejects (pain.002 ``RJCT`` with AC04, AM04…) or
returns later (pacs.004, an ACH R-code return, a rejected Open Banking payment) is marked
``returned`` with the bank's reason; it is paid again, as a new attempt with a new key, only once
the payee has named an account signed with its own key (:class:`protocol.messages.PayoutAccount`)
that is newer than the one the returned attempt went to. A booking reported later for a returned
attempt changes nothing: that money came back, and the new attempt is what counts.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, replace

from protocol.errors import ErrorCode, LocalProtocolError
from protocol.messages import BankAccount
from protocol.references import Purpose, bank_reference, idempotency_key, payout_seq
from protocol.types import ChannelId, MinorUnits

MAX_TRANSFERS = 512
"""Transfers remembered per channel; the oldest booked ones are forgotten first (their money
is in the running totals, so nothing depends on them once no return of them can come)."""
RETURN_HORIZON_MS = 90 * 86_400_000
"""How long after its booking a payout attempt is remembered whatever MAX_TRANSFERS: a bank
can return a payout it booked for weeks (ACH: up to 60 days for some returns), and a return of
an attempt the arbiter had forgotten found no payout — its money back in escrow, never paid
again, nobody told. The node asks its bank about returns for `[bank] return_window_s`, which is
at most this (node.bank)."""
MAX_ATTEMPTS = 16
"""Attempts per payout before it is left to the operator (a payee that keeps naming accounts
that bounce cannot make the arbiter submit without end)."""
REASON = re.compile(r"[A-Z0-9]{2,8}")
CHANGE_CODE = re.compile(r"C(0[1-9]|1[0-3])")
"""An ACH notification of change (COR entry, addenda 98): C01-C13."""
"""A bank's reason code: ISO 20022 ``AC04``, ``AM04``, ``MS03``; NACHA ``R01``…; Open Banking
rejections mapped to the ISO code their status report carries."""


class TransferStatus(enum.StrEnum):
    SUBMITTED = "submitted"
    """Handed to the rail (or to be, on restart: same key); not yet booked."""
    BOOKED = "booked"
    """The bank statement shows it booked on the escrow account's side."""
    RETURNED = "returned"
    """Rejected before booking or returned after it; the money is (back) in escrow."""


@dataclass(frozen=True, slots=True)
class Transfer:
    """One attempt to pay one party one payout."""

    checkpoint: int
    """The checkpoint number, or 0 for the final close."""
    party: int
    attempt: int
    amount: MinorUnits
    account: BankAccount
    reference: str
    idempotency_key: str
    status: TransferStatus = TransferStatus.SUBMITTED
    reason: str = ""
    """The bank's reason code once returned."""
    changed_ms: int = 0
    account_issued_ms: int = 0
    """`issued_ms` of the signed PayoutAccount it was sent to (0: the account in the terms)."""

    @property
    def payout(self) -> tuple[int, int]:
        return self.checkpoint, self.party


def new_transfer(
    channel_id: ChannelId,
    checkpoint: int,
    party: int,
    amount: MinorUnits,
    account: BankAccount,
    *,
    attempt: int = 0,
    account_issued_ms: int = 0,
    now_ms: int = 0,
) -> Transfer:
    seq = payout_seq(checkpoint, attempt)
    return Transfer(
        checkpoint, party, attempt, amount, account,
        bank_reference(channel_id, Purpose.PAYOUT, party, seq),
        idempotency_key(channel_id, Purpose.PAYOUT, party, seq),
        changed_ms=now_ms, account_issued_ms=account_issued_ms,
    )


def find(transfers: tuple[Transfer, ...], reference: str) -> Transfer:
    """The attempt with this end-to-end reference; INVALID_FIELD for one this channel never
    submitted (the caller matched a statement entry to the wrong channel)."""
    for transfer in transfers:
        if transfer.reference == reference:
            return transfer
    raise LocalProtocolError(ErrorCode.INVALID_FIELD, f"no payout with reference {reference!r}")


def live(transfers: tuple[Transfer, ...], payout: tuple[int, int]) -> Transfer | None:
    """The latest attempt of `payout` (checkpoint, party), if any."""
    attempts = [t for t in transfers if t.payout == payout]
    return max(attempts, key=lambda t: t.attempt) if attempts else None


def replaced(transfers: tuple[Transfer, ...], old: Transfer, new: Transfer) -> tuple[Transfer, ...]:
    return tuple(new if t is old else t for t in transfers)


def mark_booked(transfers: tuple[Transfer, ...], transfer: Transfer, now_ms: int
                ) -> tuple[Transfer, ...]:
    return replaced(transfers, transfer,
                    replace(transfer, status=TransferStatus.BOOKED, changed_ms=now_ms))


def mark_returned(transfers: tuple[Transfer, ...], transfer: Transfer, reason: str, now_ms: int
                  ) -> tuple[Transfer, ...]:
    if not REASON.fullmatch(reason):
        raise LocalProtocolError(ErrorCode.INVALID_FIELD, f"{reason!r} is not a reason code")
    return replaced(transfers, transfer, replace(
        transfer, status=TransferStatus.RETURNED, reason=reason, changed_ms=now_ms))


def awaiting_account(transfers: tuple[Transfer, ...], party: int) -> list[Transfer]:
    """Live attempts of `party` that were returned: they wait for a corrected account."""
    payouts = {t.payout for t in transfers if t.party == party}
    out = []
    for payout in sorted(payouts):
        attempt = live(transfers, payout)
        if attempt is not None and attempt.status is TransferStatus.RETURNED:
            out.append(attempt)
    return out


def bounded(transfers: tuple[Transfer, ...], now_ms: int) -> tuple[Transfer, ...]:
    """Forget the oldest booked attempts beyond MAX_TRANSFERS: never a live unbooked one; nor
    a booked attempt after returned ones (they are kept, and without it the latest of them
    would look live again, to be paid a second time on the party's next account); nor one
    booked less than RETURN_HORIZON_MS ago (a return of it may still come)."""
    excess = len(transfers) - MAX_TRANSFERS
    if excess <= 0:
        return transfers
    out = []
    for transfer in transfers:
        if (excess > 0 and transfer.status is TransferStatus.BOOKED and transfer.attempt == 0
                and transfer.changed_ms + RETURN_HORIZON_MS <= now_ms):
            excess -= 1
            continue
        out.append(transfer)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Correction:
    """A payee account as an ACH notification of change corrected it (C01-C13): where later
    payouts to the party go, until the party signs a newer PayoutAccount of its own."""

    account: BankAccount
    code: str
    observed_ms: int


_ROUTING = re.compile(r"[0-9]{9}")
_ACCOUNT = re.compile(r"[0-9A-Za-z]{1,17}")


def corrected_account(account: BankAccount, code: str, data: str) -> BankAccount | None:
    """`account` (scheme US.ABA, identification ``routing:account``) as the NOC `code` with
    `data` corrects it (Nacha Rules, Appendix Five, addenda 98 "corrected data"): C01 the
    account number; C02 the routing number; C03 routing in 1-9, account from 13; C06 account
    in 1-17 (and a transaction code); C07 routing in 1-9, account in 10-26. None for a code
    that corrects no account (C05 transaction code, C08-C13) or data that is not one."""
    if account.scheme != "US.ABA" or ":" not in account.identification:
        return None
    routing, number = account.identification.split(":", 1)
    if code == "C01":
        number = data.strip()
    elif code == "C02":
        routing = data.strip()
    elif code == "C03":
        routing, number = data[:9], data[9:].strip()
    elif code == "C06":
        number = data[:17].strip()
    elif code == "C07":
        routing, number = data[:9], data[9:26].strip()
    else:
        return None
    if not (_ROUTING.fullmatch(routing) and _ACCOUNT.fullmatch(number)):
        return None
    fixed = BankAccount(account.scheme, f"{routing}:{number}", account.name)
    return None if fixed == account else fixed
