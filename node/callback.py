"""Where a party wants the arbiter's messages: an address it signs, so nobody can redirect them.

The registering node sends ``X-Meterline-Callback`` (its peer API's base URL) and
``X-Meterline-Callback-Signature``: its Ed25519 signature, domain ``callback``, over the channel
id (hex) and the URL (specs/0005 §2).
"""

from __future__ import annotations

CALLBACK_DOMAIN = "callback"
MAX_CALLBACK = 300


def callback_body(channel_id_hex: str, url: str) -> bytes:
    return channel_id_hex.encode("ascii") + b"\n" + url.encode("utf-8")
