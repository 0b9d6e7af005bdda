"""Distinct names for the integers and byte strings the protocol passes around."""

from __future__ import annotations

from typing import NewType

Amount = NewType("Amount", int)
"""Money at the channel's amount scale (default 10⁻⁶ of the currency unit). Never a float."""
MinorUnits = NewType("MinorUnits", int)
"""Money at the currency's ISO 4217 exponent: what a rail moves (EUR cents)."""
Quantity = NewType("Quantity", int)
"""A tariff line's quantity at its quantity scale (12.5 km at scale 3 is 12500)."""
Nonce = NewType("Nonce", int)
ChannelId = NewType("ChannelId", bytes)
"""SHA-256 of the canonical channel terms (32 bytes); shown as lowercase hex."""
NodeId = NewType("NodeId", bytes)
"""An Ed25519 public key (32 bytes); shown as lowercase hex."""
Signature = NewType("Signature", bytes)

U64_MAX = 2**64 - 1

MAX_AMOUNT = 2**63 - 1
"""The largest amount, deposit, nonce or quantity on the wire: it fits a signed 64-bit column."""
MAX_TIME_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z: the latest time a message may name."""
MAX_DISPUTE_WINDOW_MS = 366 * 86_400_000
"""No channel's dispute window is longer than a year, whatever a node's policy allows."""
