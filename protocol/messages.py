"""Every wire message (specs/0002-wire.md §5): frozen dataclasses, encode/decode, sign/verify.

Signed messages carry their signature(s) as the last field(s). The bytes a signature covers are
the canonical encoding of the message *without* its signature fields (:meth:`Signed.body`), under
the message's domain tag (:mod:`protocol.crypto`). Signing returns a new value; nothing mutates.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import ClassVar, Self

from protocol.crypto import Signer, verify
from protocol.encoding import pack
from protocol.errors import ErrorCode, ProtocolError, RemoteProtocolError
from protocol.records import Bin, Kind, ListOf, Message, Nested, Opt, Record, Text, UInt
from protocol.tariff import MAX_LINES, TariffLine
from protocol.types import (
    MAX_AMOUNT,
    MAX_DISPUTE_WINDOW_MS,
    MAX_TIME_MS,
    Amount,
    ChannelId,
    MinorUnits,
    NodeId,
    Nonce,
    Quantity,
    Signature,
)

ID = Bin(32)
AMOUNT = UInt(max_value=MAX_AMOUNT)
"""Amounts, deposits, nonces and quantities: at most 2⁶³−1, so they fit a signed 64-bit column
and a sum of two never leaves u64."""
TIME = UInt(max_value=MAX_TIME_MS)
"""Milliseconds since 1970 (UTC), at most 9999-12-31T23:59:59.999Z."""
CHALLENGE = Bin(0, 16, 32)
URL = Text(256, r"https?://[A-Za-z0-9.\-:\[\]]+(/[\x21-\x7e]*)?", min_len=8)
"""A peer API's base URL: at most 256 characters, the decoder's limit for any string."""
SIG = Bin(64)
SIG_OR_EMPTY = Bin(0, 64)
CURRENCY = Text(3, r"[A-Z]{3}", min_len=3)
REFERENCE = Text(64, r"[\x20-\x7e]*")
"""Bank references ("ML0123…"): printable ASCII, as every rail's character set allows."""
USAGE_TEXT = (
    r"[^\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ud800-\udfff"
    r"\ufeff\ufff0-\uffff]*"
)
"""Text without C0/C1 controls, invisible, line-separator or bidirectional-control characters,
lone surrogates or specials."""
USAGE_REFERENCE = Text(64, USAGE_TEXT)
"""Usage references ("SHIPMENT-4711", "Lieferschein-Nr. Ä-17"): up to 64 characters of UTF-8
text without control, invisible or bidirectional-override characters (0002 §5.2). They are
signed between the two parties and never reach a bank (ADR 0152)."""

EMPTY_SIGNATURE = Signature(b"")


class Signed(Message):
    """A message with one or more signature fields at the end."""

    DOMAIN: ClassVar[str] = ""
    SIGNATURE_FIELDS: ClassVar[tuple[str, ...]] = ("signature",)

    def body(self) -> bytes:
        """The canonical bytes the signature(s) cover."""
        from protocol import PROTOCOL_VERSION

        fields = [(n, k) for n, k in self.FIELDS if n not in self.SIGNATURE_FIELDS]
        return pack([self.TAG, PROTOCOL_VERSION, *self.fields_to_wire(fields)])

    def signed_by(self, signer: Signer, field: str = "signature") -> Self:
        if field not in self.SIGNATURE_FIELDS:
            raise ValueError(f"{type(self).__name__} has no signature field {field!r}")
        signed: Self = replace(self, **{field: signer.sign(self.DOMAIN, self.body())})  # type: ignore[type-var]
        return signed

    def verify_signature(self, node_id: bytes, field: str = "signature") -> None:
        verify(node_id, self.DOMAIN, self.body(), getattr(self, field))


@dataclass(frozen=True, slots=True)
class BankAccount(Record):
    """Where money is paid: a rail scheme, the account's identification, the holder's name."""

    scheme: str
    """``IBAN``, ``UK.OBIE.SortCodeAccountNumber``, ``US.ABA`` (identification routing:account)."""
    identification: str
    name: str

    FIELDS: ClassVar[tuple[tuple[str, Kind], ...]] = (
        ("scheme", Text(40, r"[A-Za-z0-9.]+", min_len=1)),
        ("identification", Text(64, r"[A-Za-z0-9:]+", min_len=1)),
        ("name", Text(70, r"[\x20-\x7e]+", min_len=1)),
    )


@dataclass(frozen=True, slots=True)
class ChannelTerms(Message):
    """What both parties sign; the channel id is SHA-256 of these canonical bytes."""

    opener: NodeId
    peer: NodeId
    arbiter: NodeId
    currency: str
    scale: int
    opener_deposit: MinorUnits
    """Whole rail units (minor units at the currency's exponent)."""
    peer_deposit: MinorUnits
    tariff: tuple[TariffLine, ...]
    dispute_window_ms: int
    opener_account: BankAccount
    peer_account: BankAccount
    escrow_account: BankAccount
    salt: bytes

    TAG = 16
    FIELDS = (
        ("opener", ID),
        ("peer", ID),
        ("arbiter", ID),
        ("currency", CURRENCY),
        ("scale", UInt(8)),
        ("opener_deposit", AMOUNT),
        ("peer_deposit", AMOUNT),
        ("tariff", ListOf(Nested(TariffLine), 1, MAX_LINES)),
        ("dispute_window_ms", UInt(max_value=MAX_DISPUTE_WINDOW_MS)),
        ("opener_account", Nested(BankAccount)),
        ("peer_account", Nested(BankAccount)),
        ("escrow_account", Nested(BankAccount)),
        ("salt", Bin(16)),
    )

    @property
    def channel_id(self) -> ChannelId:
        return ChannelId(hashlib.sha256(self.encode()).digest())

    def party_index(self, node_id: bytes) -> int:
        """0 for the opener, 1 for the peer; NOT_A_PARTY otherwise."""
        if node_id == self.opener:
            return 0
        if node_id == self.peer:
            return 1
        raise RemoteProtocolError(
            ErrorCode.NOT_A_PARTY, f"{node_id.hex()} is not a party to this channel"
        )

    def parties(self) -> tuple[NodeId, NodeId]:
        return (self.opener, self.peer)

    def deposits(self) -> tuple[MinorUnits, MinorUnits]:
        return (self.opener_deposit, self.peer_deposit)

    def accounts(self) -> tuple[BankAccount, BankAccount]:
        return (self.opener_account, self.peer_account)


@dataclass(frozen=True, slots=True)
class ChannelProposal(Signed):
    """The opener's signed terms. The signature covers the *terms'* bytes, domain ``terms``."""

    terms: ChannelTerms
    signature: Signature

    TAG = 1
    DOMAIN = "terms"
    FIELDS = (("terms", Nested(ChannelTerms)), ("signature", SIG_OR_EMPTY))

    def body(self) -> bytes:
        return self.terms.encode()


@dataclass(frozen=True, slots=True)
class ChannelAcceptance(Signed):
    """The peer's signature over the same terms bytes (domain ``terms``)."""

    channel_id: ChannelId
    signature: Signature

    TAG = 2
    DOMAIN = "terms"
    FIELDS = (("channel_id", ID), ("signature", SIG_OR_EMPTY))

    @classmethod
    def for_terms(cls, terms: ChannelTerms, signer: Signer) -> ChannelAcceptance:
        return cls(terms.channel_id, signer.sign(cls.DOMAIN, terms.encode()))

    def verify_for(self, terms: ChannelTerms) -> None:
        if self.channel_id != terms.channel_id:
            raise RemoteProtocolError(ErrorCode.WRONG_CHANNEL, "acceptance names another channel")
        verify(terms.peer, self.DOMAIN, terms.encode(), self.signature)

    def body(self) -> bytes:
        """The signature covers the terms, which this message does not carry."""
        raise TypeError("an acceptance signs the terms: use for_terms() and verify_for()")


@dataclass(frozen=True, slots=True)
class CallbackAddress(Signed):
    """Where `party` wants the arbiter's messages for one channel, signed by that party.

    The arbiter keeps, per party, the callback with the highest `issued_ms` it has seen: an
    older one (a replay) changes nothing, so nobody but the party can redirect its messages.
    """

    channel_id: ChannelId
    party: NodeId
    url: str
    issued_ms: int
    signature: Signature

    TAG = 17
    DOMAIN = "callback"
    FIELDS = (
        ("channel_id", ID),
        ("party", ID),
        ("url", URL),
        ("issued_ms", TIME),
        ("signature", SIG_OR_EMPTY),
    )


@dataclass(frozen=True, slots=True)
class ChannelRegistration(Message):
    """Both signatures over the terms, handed to the arbiter by each party (idempotent), with
    the registering party's signed callback address (or nil: the arbiter keeps what it has).

    Unsigned itself: the proposal, acceptance and callback inside carry the signatures.
    """

    proposal: ChannelProposal
    acceptance: ChannelAcceptance
    callback: CallbackAddress | None = None

    TAG = 12
    FIELDS = (
        ("proposal", Nested(ChannelProposal)),
        ("acceptance", Nested(ChannelAcceptance)),
        ("callback", Opt(Nested(CallbackAddress))),
    )


@dataclass(frozen=True, slots=True)
class FundingConfirmation(Signed):
    """The arbiter saw `depositor`'s deposit booked on its escrow account."""

    channel_id: ChannelId
    depositor: NodeId
    amount: MinorUnits
    """Total confirmed for this depositor so far, in rail minor units."""
    bank_reference: str
    booked_ms: int
    signature: Signature

    TAG = 3
    DOMAIN = "funding"
    FIELDS = (
        ("channel_id", ID),
        ("depositor", ID),
        ("amount", AMOUNT),
        ("bank_reference", REFERENCE),
        ("booked_ms", TIME),
        ("signature", SIG_OR_EMPTY),
    )


@dataclass(frozen=True, slots=True)
class BalanceProof(Signed):
    """The sender's cumulative promise: everything it has ever sent on this channel."""

    channel_id: ChannelId
    sender: NodeId
    nonce: Nonce
    amount: Amount
    """Cumulative amount sent, at channel scale: tariff(quantities) + direct_amount."""
    direct_amount: Amount
    """Cumulative part paid as plain amounts rather than metered units."""
    quantities: tuple[Quantity, ...]
    """Cumulative quantity per tariff line, in tariff order."""
    usage_digest: bytes
    """Running SHA-256 over every proof's usage fields (specs/0003 §6)."""
    reference: str
    """The usage reference of this update ("SHIPMENT-4711"), or ""."""
    time_ms: int
    signature: Signature

    TAG = 4
    DOMAIN = "balance-proof"
    FIELDS = (
        ("channel_id", ID),
        ("sender", ID),
        ("nonce", AMOUNT),
        ("amount", AMOUNT),
        ("direct_amount", AMOUNT),
        ("quantities", ListOf(AMOUNT, 1, MAX_LINES)),
        ("usage_digest", Bin(32)),
        ("reference", USAGE_REFERENCE),
        ("time_ms", TIME),
        ("signature", SIG_OR_EMPTY),
    )


def next_usage_digest(
    previous: bytes,
    *,
    nonce: int,
    amount: int,
    direct_amount: int,
    quantities: tuple[int, ...],
    reference: str,
    time_ms: int,
) -> bytes:
    """digest_n = SHA-256(digest_{n-1} ‖ canonical([nonce, amount, direct, quantities, ref, t]))."""
    return hashlib.sha256(
        previous + pack([nonce, amount, direct_amount, list(quantities), reference, time_ms])
    ).digest()


@dataclass(frozen=True, slots=True)
class Receipt(Signed):
    """Cumulative acknowledgement: the receiver holds every proof up to `nonce`."""

    channel_id: ChannelId
    receiver: NodeId
    nonce: Nonce
    amount: Amount
    signature: Signature

    TAG = 5
    DOMAIN = "receipt"
    FIELDS = (
        ("channel_id", ID),
        ("receiver", ID),
        ("nonce", AMOUNT),
        ("amount", AMOUNT),
        ("signature", SIG_OR_EMPTY),
    )


CHECKPOINT_SEQ = UInt(32, max_value=2**32 - 1)
"""A checkpoint's number: 1, 2, … (0 on the wire is refused by the machines: it names the
final close in payout references, specs/0004 §7)."""


@dataclass(frozen=True, slots=True)
class Checkpoint(Signed):
    """Both sides agree the cumulative totals up to a point; the arbiter pays the net owed since
    the previous checkpoint out of escrow and the channel goes on (specs/0003 §9, 0004 §7).

    Each direction's ``(nonce, amount)`` is a point its receiver has receipted. Numbers rise
    strictly; a checkpoint at or below one already held changes nothing (a stale one never
    wins). Like a close, one body with two signatures over it.
    """

    channel_id: ChannelId
    seq: int
    opener_nonce: Nonce
    opener_amount: Amount
    peer_nonce: Nonce
    peer_amount: Amount
    opener_signature: Signature
    peer_signature: Signature

    TAG = 6
    DOMAIN = "checkpoint"
    SIGNATURE_FIELDS = ("opener_signature", "peer_signature")
    FIELDS = (
        ("channel_id", ID),
        ("seq", CHECKPOINT_SEQ),
        ("opener_nonce", AMOUNT),
        ("opener_amount", AMOUNT),
        ("peer_nonce", AMOUNT),
        ("peer_amount", AMOUNT),
        ("opener_signature", SIG_OR_EMPTY),
        ("peer_signature", SIG_OR_EMPTY),
    )

    def signature_field(self, index: int) -> str:
        return self.SIGNATURE_FIELDS[index]

    def fully_signed(self) -> bool:
        return bool(self.opener_signature) and bool(self.peer_signature)

    def same_state(self, other: Checkpoint) -> bool:
        return self.body() == other.body()

    def point(self, sender: int) -> tuple[int, int]:
        """``(nonce, amount)`` of the direction sent by `sender` (0 opener, 1 peer)."""
        if sender == 0:
            return self.opener_nonce, self.opener_amount
        return self.peer_nonce, self.peer_amount

    def sent(self) -> tuple[Amount, Amount]:
        return self.opener_amount, self.peer_amount


@dataclass(frozen=True, slots=True)
class CooperativeClose(Signed):
    """The final state, signed by both parties; handed to the arbiter for payout."""

    channel_id: ChannelId
    opener_nonce: Nonce
    opener_amount: Amount
    peer_nonce: Nonce
    peer_amount: Amount
    opener_signature: Signature
    peer_signature: Signature

    TAG = 7
    DOMAIN = "close"
    SIGNATURE_FIELDS = ("opener_signature", "peer_signature")
    FIELDS = (
        ("channel_id", ID),
        ("opener_nonce", AMOUNT),
        ("opener_amount", AMOUNT),
        ("peer_nonce", AMOUNT),
        ("peer_amount", AMOUNT),
        ("opener_signature", SIG_OR_EMPTY),
        ("peer_signature", SIG_OR_EMPTY),
    )

    def signature_field(self, index: int) -> str:
        return self.SIGNATURE_FIELDS[index]

    def fully_signed(self) -> bool:
        return bool(self.opener_signature) and bool(self.peer_signature)

    def same_state(self, other: CooperativeClose) -> bool:
        return self.body() == other.body()


@dataclass(frozen=True, slots=True)
class UnilateralClose(Signed):
    """`claimant` asks the arbiter to close on the latest proof it holds from the other side."""

    channel_id: ChannelId
    claimant: NodeId
    proof: BalanceProof | None
    signature: Signature

    TAG = 8
    DOMAIN = "unilateral-close"
    FIELDS = (
        ("channel_id", ID),
        ("claimant", ID),
        ("proof", Opt(Nested(BalanceProof))),
        ("signature", SIG_OR_EMPTY),
    )


@dataclass(frozen=True, slots=True)
class DisputeEvidence(Signed):
    """During the dispute window: the latest proof `submitter` holds from the other side."""

    channel_id: ChannelId
    submitter: NodeId
    proof: BalanceProof | None
    signature: Signature

    TAG = 9
    DOMAIN = "evidence"
    FIELDS = (
        ("channel_id", ID),
        ("submitter", ID),
        ("proof", Opt(Nested(BalanceProof))),
        ("signature", SIG_OR_EMPTY),
    )


@dataclass(frozen=True, slots=True)
class DisputeNotice(Signed):
    """The arbiter's word that a unilateral close is open and when its window ends.

    Sent to both parties: the other side learns it must hand in evidence before `deadline_ms`;
    the claimant learns when the payout will be decided.
    """

    channel_id: ChannelId
    claim: UnilateralClose
    deadline_ms: int
    signature: Signature

    TAG = 13
    DOMAIN = "dispute"
    FIELDS = (
        ("channel_id", ID),
        ("claim", Nested(UnilateralClose)),
        ("deadline_ms", TIME),
        ("signature", SIG_OR_EMPTY),
    )


@dataclass(frozen=True, slots=True)
class PayoutNotice(Signed):
    """The arbiter's word that the payouts are booked at its bank."""

    channel_id: ChannelId
    opener_payout: MinorUnits
    peer_payout: MinorUnits
    opener_reference: str
    peer_reference: str
    booked_ms: int
    signature: Signature

    TAG = 10
    DOMAIN = "payout"
    FIELDS = (
        ("channel_id", ID),
        ("opener_payout", AMOUNT),
        ("peer_payout", AMOUNT),
        ("opener_reference", REFERENCE),
        ("peer_reference", REFERENCE),
        ("booked_ms", TIME),
        ("signature", SIG_OR_EMPTY),
    )


TRANSFER_STATUSES = ("booked", "rejected", "returned")
MAX_STATUS_TRANSFERS = 32
"""Payout outcomes an EscrowStatus carries: the channel's latest ones."""


@dataclass(frozen=True, slots=True)
class TransferNotice(Signed):
    """The arbiter's word on one payout attempt's outcome at its bank (specs/0004 §9.4): the
    payout of checkpoint `checkpoint` (0: the final close) to `party`, attempt `attempt`,
    with end-to-end `reference`, was booked, rejected before booking (pain.002 RJCT, a
    rejected Open Banking payment) or returned after it (pacs.004, an ACH R-code return), for
    `reason` ("" when booked). Pushed to both parties and carried in EscrowStatus; a node
    keeps, per payout, the notice of the highest attempt and the latest outcome (ADR 0320)."""

    channel_id: ChannelId
    checkpoint: int
    party: NodeId
    amount: MinorUnits
    status: str
    reason: str
    attempt: int
    reference: str
    time_ms: int
    signature: Signature

    TAG = 22
    DOMAIN = "transfer"
    FIELDS = (
        ("channel_id", ID),
        ("checkpoint", CHECKPOINT_SEQ),
        ("party", ID),
        ("amount", AMOUNT),
        ("status", Text(8, r"booked|rejected|returned", min_len=6)),
        ("reason", Text(8, r"([A-Z0-9]{2,8})?")),
        ("attempt", UInt(8)),
        ("reference", REFERENCE),
        ("time_ms", TIME),
        ("signature", SIG_OR_EMPTY),
    )


@dataclass(frozen=True, slots=True)
class EscrowStatus(Signed):
    """The arbiter's signed answer to "what is this channel's state?" (specs/0005 §4).

    A node asks at an interval with a fresh `challenge` and learns of a unilateral close (the
    `dispute` notice), its deposits and its payouts even when no push reached it.
    """

    channel_id: ChannelId
    phase: str
    challenge: bytes
    """The requester's random bytes, echoed: a recorded old answer cannot be replayed."""
    funding: tuple[FundingConfirmation, ...]
    dispute: DisputeNotice | None
    payout: PayoutNotice | None
    time_ms: int
    transfers: tuple[TransferNotice, ...]
    """The channel's latest payout outcomes (at most MAX_STATUS_TRANSFERS), oldest first: a
    node that missed a TransferNotice push learns it here (specs/0004 §9.4)."""
    signature: Signature

    TAG = 18
    DOMAIN = "escrow-status"
    FIELDS = (
        ("channel_id", ID),
        ("phase", Text(16, r"[a-z]+", min_len=1)),
        ("challenge", CHALLENGE),
        ("funding", ListOf(Nested(FundingConfirmation), 0, 2)),
        ("dispute", Opt(Nested(DisputeNotice))),
        ("payout", Opt(Nested(PayoutNotice))),
        ("time_ms", TIME),
        ("transfers", ListOf(Nested(TransferNotice), 0, MAX_STATUS_TRANSFERS)),
        ("signature", SIG_OR_EMPTY),
    )


MAX_STATUS_BATCH = 16
"""Channels one `EscrowStatusQuery` may ask about (specs/0005 §4.1)."""


@dataclass(frozen=True, slots=True)
class EscrowStatusQuery(Message):
    """A node asks the arbiter for the status of up to MAX_STATUS_BATCH channels at once,
    with one fresh challenge (specs/0005 §4.1): 10,000 channels are 625 requests, not 10,000."""

    channel_ids: tuple[ChannelId, ...]
    challenge: bytes

    TAG = 30
    FIELDS = (
        ("channel_ids", ListOf(ID, 1, MAX_STATUS_BATCH)),
        ("challenge", CHALLENGE),
    )


@dataclass(frozen=True, slots=True)
class EscrowStatuses(Signed):
    """The arbiter's one signed answer to an `EscrowStatusQuery`: the status of each channel
    it holds (each echoing the challenge, unsigned: this signature covers them all), the ids
    it does not hold, and the ids it holds whose statuses did not fit into one message
    (`later`: at most MAX_MESSAGE_BYTES; a status carries up to 32 payout outcomes, so 16 full
    ones do not fit): the node asks for those again. At least one status is always answered,
    so asking again makes progress."""

    challenge: bytes
    statuses: tuple[EscrowStatus, ...]
    unknown: tuple[ChannelId, ...]
    later: tuple[ChannelId, ...]
    time_ms: int
    signature: Signature

    TAG = 31
    DOMAIN = "escrow-statuses"
    FIELDS = (
        ("challenge", CHALLENGE),
        ("statuses", ListOf(Nested(EscrowStatus), 0, MAX_STATUS_BATCH)),
        ("unknown", ListOf(ID, 0, MAX_STATUS_BATCH)),
        ("later", ListOf(ID, 0, MAX_STATUS_BATCH - 1)),
        ("time_ms", TIME),
        ("signature", SIG_OR_EMPTY),
    )


@dataclass(frozen=True, slots=True)
class TopUpConfirmation(Signed):
    """The arbiter saw a top-up by `depositor` booked on its escrow account (specs/0004 §8).

    `amount` is the depositor's cumulative top-ups so far (like a funding confirmation, the
    latest one is the whole truth); a node raises the depositor's capacity by it only on this
    signed word, never on the depositor's say-so.
    """

    channel_id: ChannelId
    depositor: NodeId
    amount: MinorUnits
    """Total top-ups confirmed for this depositor so far, in rail minor units."""
    bank_reference: str
    booked_ms: int
    signature: Signature

    TAG = 19
    DOMAIN = "topup"
    FIELDS = FundingConfirmation.FIELDS  # the same layout; the tag and domain tell them apart


@dataclass(frozen=True, slots=True)
class PayoutAccount(Signed):
    """`party` names the account its payouts on this channel go to from now on (specs/0004 §9),
    signed by that party: after a payout was rejected or returned, the arbiter pays again there.

    The arbiter keeps, per party, the one with the highest `issued_ms`: an older one (a replay)
    changes nothing, so nobody but the party can redirect its money.
    """

    channel_id: ChannelId
    party: NodeId
    account: BankAccount
    issued_ms: int
    signature: Signature

    TAG = 20
    DOMAIN = "payout-account"
    FIELDS = (
        ("channel_id", ID),
        ("party", ID),
        ("account", Nested(BankAccount)),
        ("issued_ms", TIME),
        ("signature", SIG_OR_EMPTY),
    )


@dataclass(frozen=True, slots=True)
class PayoutReturned(Signed):
    """The arbiter's word that its bank rejected or returned a payout to `party` (specs/0004
    §9): the payout with end-to-end `reference` came back for `reason` (AC04, AM04, R03…).
    Both parties are told; the payee names a corrected account (:class:`PayoutAccount`) and the
    arbiter pays again there under a new reference."""

    channel_id: ChannelId
    party: NodeId
    amount: MinorUnits
    reference: str
    reason: str
    returned_ms: int
    signature: Signature

    TAG = 21
    DOMAIN = "payout-returned"
    FIELDS = (
        ("channel_id", ID),
        ("party", ID),
        ("amount", AMOUNT),
        ("reference", REFERENCE),
        ("reason", Text(8, r"[A-Z0-9]{2,8}", min_len=2)),
        ("returned_ms", TIME),
        ("signature", SIG_OR_EMPTY),
    )


@dataclass(frozen=True, slots=True)
class NodeInfo(Signed):
    """A node's identity, address and bank account, signed by its own key (specs/0005 §3).

    Asked for with a fresh `challenge` (``GET /p2p/identity?challenge=HEX``), it proves the
    answering node holds the key it claims; `issued_ms` orders records, so a known peer's
    address changes only for a newer record signed by that peer.
    """

    node_id: NodeId
    name: str
    role: str
    url: str
    account: BankAccount | None
    issued_ms: int
    challenge: bytes
    signature: Signature

    TAG = 15
    DOMAIN = "node-info"
    FIELDS = (
        ("node_id", ID),
        ("name", Text(100, r"[\x20-\x7e]+", min_len=1)),
        ("role", Text(16, r"node|arbiter", min_len=4)),
        ("url", URL),
        ("account", Opt(Nested(BankAccount))),
        ("issued_ms", TIME),
        ("challenge", CHALLENGE),
        ("signature", SIG_OR_EMPTY),
    )


@dataclass(frozen=True, slots=True)
class Refusal(Signed):
    """A refusal signed by the node that refuses, bound to the request it refuses.

    Only a refusal whose `refuser` is the intended recipient, whose signature verifies and whose
    `request_digest` is SHA-256 of the exact bytes sent ends a delivery; anything else (an
    unsigned ``Error``, a proxy's 502 page, a timeout) is transient and retried (specs/0005 §2).
    """

    refuser: NodeId
    code: int
    message: str
    request_digest: bytes
    signature: Signature

    TAG = 14
    DOMAIN = "refusal"
    FIELDS = (
        ("refuser", ID),
        ("code", UInt(16)),
        ("message", Text(256)),
        ("request_digest", Bin(32)),
        ("signature", SIG_OR_EMPTY),
    )

    @classmethod
    def make(cls, signer: Signer, exc: ProtocolError, request: bytes) -> Refusal:
        text = exc.message.encode("utf-8")[:256].decode("utf-8", errors="ignore")
        return cls(signer.node_id, int(exc.code), text, hashlib.sha256(request).digest(),
                   EMPTY_SIGNATURE).signed_by(signer)

    def verify_for(self, recipient: bytes, request: bytes) -> None:
        """BAD_SIGNATURE unless `recipient` signed this refusal of exactly `request`."""
        if self.refuser != recipient or self.request_digest != hashlib.sha256(request).digest():
            raise RemoteProtocolError(ErrorCode.BAD_SIGNATURE, "a refusal of another request")
        self.verify_signature(recipient)


@dataclass(frozen=True, slots=True)
class Error(Message):
    """A typed refusal. Unsigned: it carries no authority and changes nothing."""

    code: int
    message: str
    channel_id: bytes

    TAG = 11
    FIELDS = (
        ("code", UInt(16)),
        ("message", Text(256)),
        ("channel_id", Bin(0, 32)),
    )

    @classmethod
    def make(cls, code: int, message: str, channel_id: bytes = b"") -> Error:
        """An Error whose message fits the wire limit (256 UTF-8 bytes, cut on a character)."""
        text = message.encode("utf-8")[:256].decode("utf-8", errors="ignore")
        return cls(code, text, channel_id)

    @classmethod
    def from_exception(cls, exc: ProtocolError, channel_id: bytes = b"") -> Error:
        return cls.make(int(exc.code), exc.message, channel_id)
