"""Typed rail errors. Nothing escapes an adapter as a bare exception."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing wrong (or worth a warning) in an instruction or a file.

    `path` is an element path (``/Document/CstmrCdtTrfInitn/PmtInf[1]/...``) for XML or
    ``line N col M`` for fixed-width files; `code` is a reason code (ISO external codes such as
    ``AC01``, or ``FF01`` for anything structural).
    """

    path: str
    code: str
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        return f"{self.severity} {self.code} at {self.path}: {self.message}"


class RailError(Exception):
    """Base of every error a rail raises. `code` is stable and machine-readable."""

    code = "RAIL_ERROR"
    retryable = False


class InvalidInstruction(RailError):
    """The instruction (or the file built from it) breaks a rule; nothing was submitted."""

    code = "INVALID_INSTRUCTION"

    def __init__(self, message: str, findings: list[Finding] | None = None) -> None:
        self.findings = list(findings or [])
        detail = "; ".join(str(f) for f in self.findings)
        super().__init__(f"{message}: {detail}" if detail else message)


class IdempotencyConflict(RailError):
    """The idempotency key was already used for a different instruction."""

    code = "IDEMPOTENCY_CONFLICT"


class UnknownPayment(RailError):
    """No payment was ever submitted under this idempotency key."""

    code = "UNKNOWN_PAYMENT"


class NotConfigured(RailError):
    """The rail was asked for a step its settings do not provide (a PSU authorisation without
    a redirect URI)."""

    code = "NOT_CONFIGURED"


class InvalidRedirect(RailError):
    """A redirect back from the bank that is not to our redirect URI, or says nothing usable
    (no ``state``, neither ``code`` nor ``error``)."""

    code = "INVALID_REDIRECT"


class BankUnavailable(RailError):
    """The bank timed out or answered 5xx after every retry; retry later with the same key."""

    code = "BANK_UNAVAILABLE"
    retryable = True


class AnswerTooLarge(BankUnavailable):
    """The bank's answer was longer than the rail reads (:mod:`rails.http`); it was not read.

    Transient like any other unusable answer: the rail retries with the same key, then raises
    :class:`BankUnavailable`.
    """

    code = "BANK_ANSWER_TOO_LARGE"


class StatusRefused(BankUnavailable):
    """The bank refused a query about a payment it holds (a 4xx to the ``GET`` of a payment
    whose id it gave us: an expired token, a consent it no longer shows, a gateway's policy).
    That is not the bank's word on the payment, which may still be booked: transient, asked
    again later, never taken as a rejection (after which a payout would be paid again
    elsewhere while this one is still booked)."""

    code = "BANK_STATUS_REFUSED"


class BankProtocolError(RailError):
    """The bank's answer did not parse or broke its own specification."""

    code = "BANK_PROTOCOL_ERROR"


class BankRejected(RailError):
    """The bank refused the request outright (for example an unknown or closed account)."""

    code = "BANK_REJECTED"

    def __init__(self, message: str, reason_code: str | None = None) -> None:
        self.reason_code = reason_code
        super().__init__(f"{message} ({reason_code})" if reason_code else message)
