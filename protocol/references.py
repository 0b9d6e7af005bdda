"""Bank references and idempotency keys derived from the channel id (specs/0004 §5).

Everything a rail sees is a pure function of the channel id, the purpose and the party, so a
retry after a crash produces the same reference and the same key, and a bank that has seen the
key once never pays twice. References are 18 characters ``ML`` + 16 upper-case hex digits: inside
the SEPA character set, the 35-character ISO 20022 limit, the 18-character UK Faster Payments
reference and the 31-character EndToEndId. Keys are 35 characters, under the 40 of UK Open Banking.
"""

from __future__ import annotations

import enum
import hashlib


class Purpose(enum.StrEnum):
    DEPOSIT = "deposit"
    PAYOUT = "payout"
    TOPUP = "topup"
    REFUND = "refund"


def _digest(channel_id: bytes, purpose: Purpose, party: int, seq: int) -> bytes:
    if len(channel_id) != 32 or party not in (0, 1) or seq < 0:
        raise ValueError("channel id is 32 bytes, party 0 or 1, seq ≥ 0")
    material = b"meterline/ref\x00" + channel_id + purpose.value.encode() + bytes([party])
    return hashlib.sha256(material + seq.to_bytes(8, "big")).digest()


def bank_reference(channel_id: bytes, purpose: Purpose, party: int, seq: int = 0) -> str:
    """The remittance reference of a deposit into escrow or a payout out of it."""
    return "ML" + _digest(channel_id, purpose, party, seq)[:8].hex().upper()


def idempotency_key(channel_id: bytes, purpose: Purpose, party: int, seq: int = 0) -> str:
    """The rail idempotency key for that same transfer (``ml-`` + 32 hex digits)."""
    return "ml-" + _digest(channel_id, purpose, party, seq)[8:24].hex()


MAX_CHECKPOINT = 2**32 - 1
"""Checkpoint numbers are 1 … 2³²−1; 0 names the final close (specs/0004 §7)."""
MAX_ATTEMPT = 2**31 - 1


def payout_seq(checkpoint: int, attempt: int = 0) -> int:
    """The `seq` of a payout's reference and key: ``attempt · 2³² + checkpoint``.

    Checkpoint 0 is the final close, so the first attempt of the final payout keeps seq 0 (the
    reference and key of a channel without checkpoints are unchanged). A payout the bank
    rejected or returned is paid again as attempt 1, 2, …: a new key the bank has never seen,
    and a new reference that tells the two transfers apart on the statement.
    """
    if not 0 <= checkpoint <= MAX_CHECKPOINT or not 0 <= attempt <= MAX_ATTEMPT:
        raise ValueError("checkpoint 0..2^32-1, attempt 0..2^31-1")
    return attempt << 32 | checkpoint


MAX_REFUND_ATTEMPT = 15
"""Refund attempts are 0 … 15: at most 16 per credit (ADR 0322)."""


def _credit_digest(credit_id: str, attempt: int = 0) -> bytes:
    if not 1 <= len(credit_id.encode()) <= 128 or not 0 <= attempt <= MAX_REFUND_ATTEMPT:
        raise ValueError("a credit id is 1..128 bytes, a refund attempt 0..15")
    material = b"meterline/refund\x00" + credit_id.encode()
    if attempt:  # attempt 0 keeps the digest of a credit refunded once (specs/0004 §10)
        material += b"\x00" + attempt.to_bytes(1, "big")
    return hashlib.sha256(material).digest()


def refund_reference(credit_id: str, attempt: int = 0) -> str:
    """The reference of the refund of an unapplied credit, from the bank entry id it came in
    under (unmatched credits name no channel, so the entry is what the refund derives from);
    `attempt` n > 0: the n-th retry after the bank rejected the refund (a new reference)."""
    return "ML" + _credit_digest(credit_id, attempt)[:8].hex().upper()


def refund_idempotency_key(credit_id: str, attempt: int = 0) -> str:
    return "ml-" + _credit_digest(credit_id, attempt)[8:24].hex()
