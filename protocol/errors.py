"""The single error table of ``specs/0002-wire.md`` and the typed errors that carry its codes.

`LocalProtocolError` means our caller broke the rules (an action that is not allowed now, an
amount over capacity); `RemoteProtocolError` means the peer (or a bank document, or bytes off the
wire) did. Both carry a stable :class:`ErrorCode`. Neither changes any state: a transition that
raises leaves the state it was given untouched.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    """Stable numeric codes; the names are what JSON APIs show. See specs/0002-wire.md §6."""

    # decoding (1–19)
    MALFORMED = 1
    UNKNOWN_MESSAGE_TYPE = 2
    UNSUPPORTED_VERSION = 3
    WRONG_ARITY = 4
    INVALID_FIELD = 5
    TRAILING_BYTES = 6
    NON_CANONICAL = 7
    TOO_LARGE = 8
    # authentication and addressing (20–29)
    BAD_SIGNATURE = 20
    UNKNOWN_CHANNEL = 21
    WRONG_CHANNEL = 22
    NOT_A_PARTY = 23
    # channel rules (30–49)
    NONCE_REPLAY = 30
    NONCE_GAP = 31
    AMOUNT_REGRESSION = 32
    CAPACITY_EXCEEDED = 33
    TARIFF_MISMATCH = 34
    USAGE_DIGEST_MISMATCH = 35
    INVALID_TERMS = 36
    INVALID_STATE = 37
    CLOSE_MISMATCH = 38
    DISPUTE_WINDOW_CLOSED = 39
    DEPOSIT_MISMATCH = 40
    # money (50–59)
    INVALID_AMOUNT = 50
    UNKNOWN_CURRENCY = 51
    INVALID_TARIFF = 52
    # everything else (90–99)
    INTERNAL = 99


class ProtocolError(Exception):
    """Base of the protocol's errors; not raised directly."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        if type(self) is ProtocolError:
            raise TypeError("raise LocalProtocolError or RemoteProtocolError")
        self.code = code
        self.message = message
        super().__init__(f"{code.name}: {message}")


class LocalProtocolError(ProtocolError):
    """Our caller asked for something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer (or the bytes we were handed) broke the protocol."""


class DecodeError(RemoteProtocolError):
    """Bytes that are not a valid canonical message. Always carries a decoding code (1–19)."""
