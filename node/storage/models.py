"""SQLAlchemy 2 typed models. Growth is bounded: per channel one state row, the in-flight window
of our unacknowledged proofs, and usage aggregated per (direction, unit, reference, hour).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Index, Integer, LargeBinary, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Peer(Base):
    __tablename__ = "peer"

    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    """Lowercase hex Ed25519 public key."""
    url: Mapped[str] = mapped_column(String(300))
    name: Mapped[str] = mapped_column(String(100), default="")
    role: Mapped[str] = mapped_column(String(16), default="node")
    info: Mapped[str] = mapped_column(Text, default="{}")
    """The peer's signed NodeInfo as JSON (an arbiter's escrow account lives here): only ever
    written from a record that verified against `node_id`."""
    added_ms: Mapped[int] = mapped_column(BigInteger)
    issued_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    """`issued_ms` of the signed NodeInfo held: only a newer one, signed by the peer, replaces
    its address or account."""


class Channel(Base):
    __tablename__ = "channel"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    peer_id: Mapped[str] = mapped_column(String(64), index=True)
    phase: Mapped[str] = mapped_column(String(16))
    state: Mapped[bytes] = mapped_column(LargeBinary)
    """protocol.channel.ChannelState through node.storage.codec."""
    created_ms: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class HeldProposal(Base):
    """A proposal from a peer not on the allow-list, waiting for the operator."""

    __tablename__ = "held_proposal"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    opener_id: Mapped[str] = mapped_column(String(64))
    proposal: Mapped[bytes] = mapped_column(LargeBinary)
    received_ms: Mapped[int] = mapped_column(BigInteger)


class OutgoingProof(Base):
    """Our signed proofs the peer has not acknowledged yet (at most the stream window)."""

    __tablename__ = "outgoing_proof"

    channel_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    nonce: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    proof: Mapped[bytes] = mapped_column(LargeBinary)


class Usage(Base):
    """Usage aggregated per (channel, direction, unit, reference, hour)."""

    __tablename__ = "usage"

    channel_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sender: Mapped[int] = mapped_column(Integer, primary_key=True)
    unit: Mapped[str] = mapped_column(String(32), primary_key=True)
    """A tariff unit, or ``amount`` for plain-amount payments."""
    reference: Mapped[str] = mapped_column(String(64), primary_key=True)
    bucket_ms: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    quantity: Mapped[int] = mapped_column(BigInteger, default=0)
    """At the tariff line's quantity scale."""
    amount: Mapped[int] = mapped_column(BigInteger, default=0)
    """At the channel's amount scale."""
    updates: Mapped[int] = mapped_column(BigInteger, default=0)


class Escrow(Base):
    """Arbiter mode: one row per channel held in escrow."""

    __tablename__ = "escrow"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    phase: Mapped[str] = mapped_column(String(16))
    state: Mapped[bytes] = mapped_column(LargeBinary)
    opener_url: Mapped[str] = mapped_column(String(300), default="")
    peer_url: Mapped[str] = mapped_column(String(300), default="")
    opener_url_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    """`issued_ms` of the opener's signed callback held (a newer one replaces it)."""
    peer_url_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class Transfer(Base):
    """A bank transfer this node asked its rail for (deposits, payouts)."""

    __tablename__ = "transfer"

    idempotency_key: Mapped[str] = mapped_column(String(40), primary_key=True)
    channel_id: Mapped[str] = mapped_column(String(64), index=True)
    purpose: Mapped[str] = mapped_column(String(16))
    party: Mapped[int] = mapped_column(Integer)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    reference: Mapped[str] = mapped_column(String(35))
    creditor: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    reason: Mapped[str] = mapped_column(String(200), default="")
    end_to_end_id: Mapped[str] = mapped_column(String(40), default="")
    created_ms: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class Outbox(Base):
    """Effects committed with the state that produced them; a worker carries them out.

    Per (channel, recipient, purpose) only the latest row is pending: a newer one replaces it.
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_dedup", "channel_id", "recipient", "purpose"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    channel_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(300), default="")
    recipient: Mapped[str] = mapped_column(String(64), default="")
    """The node id (hex) the delivery is for, whose signed refusal alone ends it; "" for the
    bank."""
    purpose: Mapped[str] = mapped_column(String(64), default="")
    """What the delivery is for (``close``, ``evidence``, ``funding:0``…): the dedup key."""
    urgent: Mapped[bool] = mapped_column(Boolean, default=False)
    """Time-critical (dispute evidence and notices, close answers, payout notices): never
    waits behind another delivery."""
    refused: Mapped[bool] = mapped_column(Boolean, default=False)
    """Ended by a refusal signed by the recipient (kept, with `last_error`, for the operator)."""
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    next_attempt_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    """A failing row waits on its own backoff; the others are not held up by it."""


class Cursor(Base):
    __tablename__ = "cursor"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class UnappliedCredit(Base):
    """A credit on the escrow account no channel could take (yet): never silently dropped.

    A deposit that arrives before its channel is registered is applied when the registration
    comes; one that arrives too late (a decided channel) stays here for the operator to refund.
    """

    __tablename__ = "unapplied_credit"

    entry_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    reference: Mapped[str] = mapped_column(String(140), default="", index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    debtor: Mapped[str] = mapped_column(String(200), default="")
    booked_ms: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text, default="")
    applied: Mapped[bool] = mapped_column(Boolean, default=False)
    kind: Mapped[str] = mapped_column(String(16), default="unmatched")
    """Why no channel took it: ``unmatched``, ``late`` or ``early`` (protocol.refunds)."""
    status: Mapped[str] = mapped_column(String(16), default="held")
    """``held``, ``refunding`` (the refund submitted), ``refunded`` (the bank booked it)."""
    channel_id: Mapped[str] = mapped_column(String(64), default="")
    """The channel its reference names ("" for an unmatched credit)."""
    sender: Mapped[str] = mapped_column(Text, default="")
    """Where it came from, a BankAccount as JSON ("" when the bank named no account)."""
    refund_account: Mapped[str] = mapped_column(Text, default="")
    """Where the refund goes, once decided (a BankAccount as JSON)."""
    refund_attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """The live refund attempt: 0, or the how-manieth after the bank rejected (ADR 0322)."""


class Event(Base):
    """The event log the ERP reads (node.events): appended in the transaction of the state change
    that causes it; `id` is the stable, monotonic event id (commit order, ADR 0210)."""

    __tablename__ = "event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    type: Mapped[str] = mapped_column(String(32), index=True)
    channel_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    created_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    data: Mapped[str] = mapped_column(Text, default="{}")
    """The event's payload, JSON (amounts as decimal strings with their currency)."""


class PaymentReport(Base):
    """Per channel, what the last `payment.received` event covered (its aggregation cursor)."""

    __tablename__ = "payment_report"

    channel_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    nonce: Mapped[int] = mapped_column(BigInteger, default=0)
    amount: Mapped[int] = mapped_column(BigInteger, default=0)
    quantities: Mapped[str] = mapped_column(Text, default="[]")
    reported_ms: Mapped[int] = mapped_column(BigInteger, default=0)


class WebhookEndpoint(Base):
    """A webhook receiver (node.webhooks): events after `cursor` are owed to it, in order.

    Its signing secret is a private file in the data directory, never a column."""

    __tablename__ = "webhook_endpoint"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(String(300))
    events: Mapped[str] = mapped_column(Text, default="*")
    """Comma-separated event types (``channel.*`` a prefix, ``*`` every type)."""
    cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    """The last event id the receiver acknowledged (a 2xx)."""
    created_ms: Mapped[int] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    """Failed attempts in a row at the event after `cursor`."""
    next_attempt_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    delivered: Mapped[int] = mapped_column(BigInteger, default=0)


class PayoutReturn(Base):
    """Node mode: a payout the arbiter's bank rejected or returned, as the arbiter signed it
    (a PayoutReturned notice, specs/0004 §9). Kept for `channel show` and the statement."""

    __tablename__ = "payout_return"

    channel_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    reference: Mapped[str] = mapped_column(String(64), primary_key=True)
    party: Mapped[str] = mapped_column(String(64))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(8))
    returned_ms: Mapped[int] = mapped_column(BigInteger)
    notice: Mapped[bytes] = mapped_column(LargeBinary)


class SettleSchedule(Base):
    """A channel's checkpoint schedule: this node's policy (specs/adr/0110), not the terms."""

    __tablename__ = "settle_schedule"

    channel_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    every_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    threshold: Mapped[int] = mapped_column(BigInteger, default=0)
    """At channel scale."""


class Settlement(Base):
    """One party's payout at one fully signed checkpoint, as this node counts it (written in
    the transaction that stores the checkpoint). Bounded like the checkpoints: one row per
    party and checkpoint that pays at least one rail unit. Checkpoint 0 is the final close's
    payout, written when the arbiter first tells its outcome (node.transfer_notices)."""

    __tablename__ = "settlement"

    channel_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    party: Mapped[int] = mapped_column(Integer, primary_key=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    reference: Mapped[str] = mapped_column(String(35))
    """The live attempt's bank reference (the first attempt's until the arbiter says more)."""
    signed_ms: Mapped[int] = mapped_column(BigInteger)
    # what the arbiter's TransferNotices said of it (node.transfer_notices, migration 0009)
    status: Mapped[str] = mapped_column(String(16), default="submitted",
                                        server_default="submitted")
    reason: Mapped[str] = mapped_column(String(8), default="", server_default="")
    attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    changed_ms: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class TopUp(Base):
    """A top-up this node asked its rail to pay into escrow (the n-th of its channel)."""

    __tablename__ = "topup"

    channel_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    idempotency_key: Mapped[str] = mapped_column(String(40))
    requested_ms: Mapped[int] = mapped_column(BigInteger)
