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
