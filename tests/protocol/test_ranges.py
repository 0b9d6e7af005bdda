"""Every range check, one test each (issue 8: "every time and amount field is range-checked
before it reaches arithmetic or storage").

The wire: for every bounded field of every message (a ``UInt`` limit, a ``Bin`` size, a
``Text`` length or pattern, a ``ListOf`` length), the largest (and smallest) value decodes and
the first value past it is refused with ``DecodeError`` — ``INVALID_FIELD``, or ``TOO_LARGE``
where it is past the decoder's own string/bytes/array limits, which come first (specs/0002
§2.2 step 3). The tables below name the limit each field must have; the fields are discovered
from each message class's ``FIELDS``, and the tables must cover exactly those, so a new bounded
field cannot go untested.

Then the checks that are not decoding: a node's (and the arbiter's) dispute-window policy,
deposits at the channel scale, the arbiter's bank observations, and cumulative proof totals.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import msgpack
import pytest

from protocol import arbiter as arb
from protocol import channel as ch
from protocol.encoding import MAX_ARRAY_LEN, MAX_BIN_BYTES, MAX_STR_BYTES
from protocol.errors import (
    DecodeError,
    ErrorCode,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from protocol.messages import (
    EMPTY_SIGNATURE,
    CallbackAddress,
    Checkpoint,
    DisputeEvidence,
    DisputeNotice,
    Error,
    EscrowStatus,
    EscrowStatuses,
    EscrowStatusQuery,
    NodeInfo,
    PayoutAccount,
    PayoutReturned,
    Refusal,
    TopUpConfirmation,
    TransferNotice,
    UnilateralClose,
)
from protocol.records import (
    Bin,
    Kind,
    ListOf,
    Message,
    Nested,
    Opt,
    Record,
    Text,
    UInt,
    message_types,
)
from protocol.simulation import Simulation
from protocol.tariff import TariffLine, TariffTier
from protocol.types import (
    MAX_AMOUNT,
    MAX_DISPUTE_WINDOW_MS,
    MAX_TIME_MS,
    U64_MAX,
    Amount,
    MinorUnits,
    Quantity,
)

from .conftest import KM

# ---------------------------------------------------------------------------------------------
# What each bounded field must be. A path is ``Record.field`` (``[]``: an item of a list).

A, T, U8, U16 = MAX_AMOUNT, MAX_TIME_MS, 2**8 - 1, 2**16 - 1

UINT_MAX: dict[str, int] = {
    "ChannelTerms.scale": U8,
    "ChannelTerms.opener_deposit": A,
    "ChannelTerms.peer_deposit": A,
    "ChannelTerms.dispute_window_ms": MAX_DISPUTE_WINDOW_MS,
    "TariffLine.quantity_scale": U8,
    "TariffTier.up_to": U64_MAX,
    "TariffTier.price": U64_MAX,
    "CallbackAddress.issued_ms": T,
    "FundingConfirmation.amount": A,
    "FundingConfirmation.booked_ms": T,
    "BalanceProof.nonce": A,
    "BalanceProof.amount": A,
    "BalanceProof.direct_amount": A,
    "BalanceProof.quantities[]": A,
    "BalanceProof.time_ms": T,
    "Receipt.nonce": A,
    "Receipt.amount": A,
    "Checkpoint.seq": 2**32 - 1,
    "TopUpConfirmation.amount": A,
    "TopUpConfirmation.booked_ms": T,
    "PayoutAccount.issued_ms": T,
    "PayoutReturned.amount": A,
    "PayoutReturned.returned_ms": T,
    "TransferNotice.checkpoint": 2**32 - 1,
    "TransferNotice.amount": A,
    "TransferNotice.attempt": 255,
    "TransferNotice.time_ms": T,
    "Checkpoint.opener_nonce": A,
    "Checkpoint.opener_amount": A,
    "Checkpoint.peer_nonce": A,
    "Checkpoint.peer_amount": A,
    "CooperativeClose.opener_nonce": A,
    "CooperativeClose.opener_amount": A,
    "CooperativeClose.peer_nonce": A,
    "CooperativeClose.peer_amount": A,
    "DisputeNotice.deadline_ms": T,
    "PayoutNotice.opener_payout": A,
    "PayoutNotice.peer_payout": A,
    "PayoutNotice.booked_ms": T,
    "EscrowStatus.time_ms": T,
    "EscrowStatuses.time_ms": T,
    "NodeInfo.issued_ms": T,
    "Refusal.code": U16,
    "Error.code": U16,
}
"""The largest value of every unsigned field. Tariff prices and bounds are full u64: they are
never stored or summed as such (a proof's amount, which is, is ≤ 2⁶³−1)."""


def _sized(sizes: tuple[int, ...], *paths: str) -> dict[str, tuple[int, ...]]:
    return dict.fromkeys(paths, sizes)


_IDS = ("ChannelAcceptance.channel_id", "CallbackAddress.channel_id", "CallbackAddress.party",
        "FundingConfirmation.channel_id", "FundingConfirmation.depositor",
        "BalanceProof.channel_id", "BalanceProof.sender", "BalanceProof.usage_digest",
        "Receipt.channel_id", "Receipt.receiver", "Checkpoint.channel_id",
        "CooperativeClose.channel_id", "UnilateralClose.channel_id", "UnilateralClose.claimant",
        "DisputeEvidence.channel_id", "DisputeEvidence.submitter", "DisputeNotice.channel_id",
        "PayoutNotice.channel_id", "EscrowStatus.channel_id", "NodeInfo.node_id",
        "Refusal.refuser", "Refusal.request_digest", "ChannelTerms.opener", "ChannelTerms.peer",
        "ChannelTerms.arbiter", "TopUpConfirmation.channel_id", "TopUpConfirmation.depositor",
        "PayoutAccount.channel_id", "PayoutAccount.party", "PayoutReturned.channel_id",
        "PayoutReturned.party", "TransferNotice.channel_id", "TransferNotice.party",
        "EscrowStatusQuery.channel_ids[]", "EscrowStatuses.unknown[]",
        "EscrowStatuses.later[]")
_SIGNATURES = ("ChannelProposal.signature", "ChannelAcceptance.signature",
               "CallbackAddress.signature", "FundingConfirmation.signature",
               "BalanceProof.signature", "Receipt.signature", "Checkpoint.opener_signature",
               "Checkpoint.peer_signature", "CooperativeClose.opener_signature",
               "CooperativeClose.peer_signature", "UnilateralClose.signature",
               "DisputeEvidence.signature", "DisputeNotice.signature", "PayoutNotice.signature",
               "EscrowStatus.signature", "EscrowStatuses.signature", "NodeInfo.signature",
               "Refusal.signature",
               "TopUpConfirmation.signature", "PayoutAccount.signature",
               "PayoutReturned.signature", "TransferNotice.signature")
BIN_SIZES: dict[str, tuple[int, ...]] = {
    **_sized((32,), *_IDS),
    **_sized((0, 64), *_SIGNATURES),
    **_sized((0, 16, 32), "EscrowStatus.challenge", "NodeInfo.challenge",
             "EscrowStatusQuery.challenge", "EscrowStatuses.challenge"),
    "ChannelTerms.salt": (16,),
    "Error.channel_id": (0, 32),
}
"""The lengths every byte-string field may have (signatures: 64, or empty while unsigned)."""

LIST_LENGTHS: dict[str, tuple[int, int]] = {
    "ChannelTerms.tariff": (1, 16),
    "TariffLine.tiers": (1, 8),
    "BalanceProof.quantities": (1, 16),
    "EscrowStatus.funding": (0, 2),
    "EscrowStatusQuery.channel_ids": (1, 16),
    "EscrowStatuses.statuses": (0, 16),
    "EscrowStatuses.unknown": (0, 16),
    "EscrowStatuses.later": (0, 15),
    "EscrowStatus.transfers": (0, 32),
}


@dataclass(frozen=True)
class TextCase:
    """A text field's limits, as values: the longest and shortest that decode, and what not."""

    longest: str
    shortest: str
    too_long: str
    too_short: str | None = None
    """None when the empty string is allowed."""
    off_pattern: str | None = None
    """A value of an allowed length the pattern refuses (None: the field has no pattern)."""

    @classmethod
    def filled(cls, char: str, max_len: int, min_len: int = 0, *, off_pattern: str | None,
               prefix: str = "") -> TextCase:
        def make(n: int) -> str:
            return prefix + char * (n - len(prefix))

        return cls(make(max_len), make(min_len), make(max_len + 1),
                   make(min_len - 1) if min_len else None, off_pattern)


def _url() -> TextCase:
    return TextCase.filled("a", 256, 8, off_pattern="ftp://carrier.example", prefix="http://")


def _reference() -> TextCase:
    return TextCase.filled("R", 64, off_pattern="SHIPMENT\t4711")


TEXT: dict[str, TextCase] = {
    "ChannelTerms.currency": TextCase("EUR", "EUR", "EURO", "EU", "eur"),
    "BankAccount.scheme": TextCase.filled("A", 40, 1, off_pattern="UK OBIE"),
    "BankAccount.identification": TextCase.filled("1", 64, 1, off_pattern="DE89 3704"),
    "BankAccount.name": TextCase.filled("N", 70, 1, off_pattern="Gro\u00dfhandel GmbH"),
    "TariffLine.unit": TextCase.filled("k", 32, 1, off_pattern="Km"),
    "CallbackAddress.url": _url(),
    "FundingConfirmation.bank_reference": _reference(),
    "TopUpConfirmation.bank_reference": _reference(),
    "PayoutReturned.reference": _reference(),
    "PayoutReturned.reason": TextCase.filled("R", 8, 2, off_pattern="ac04"),
    "TransferNotice.status": TextCase("rejected", "booked", "returned1", "booke", "paid00"),
    "TransferNotice.reason": TextCase.filled("R", 8, off_pattern="ac04"),
    "TransferNotice.reference": _reference(),
    "BalanceProof.reference": _reference(),
    "PayoutNotice.opener_reference": _reference(),
    "PayoutNotice.peer_reference": _reference(),
    "EscrowStatus.phase": TextCase.filled("a", 16, 1, off_pattern="Open"),
    "NodeInfo.name": TextCase.filled("n", 100, 1, off_pattern="carrier\x00"),
    "NodeInfo.role": TextCase("arbiter", "node", "a" * 17, "nod", "admin"),
    "NodeInfo.url": _url(),
    "Refusal.message": TextCase.filled("m", 256, off_pattern=None),
    "Error.message": TextCase.filled("m", 256, off_pattern=None),
}

# ---------------------------------------------------------------------------------------------
# Discovery


def _records(cls: type[Record], seen: dict[str, type[Record]]) -> None:
    if cls.__name__ in seen:
        return
    seen[cls.__name__] = cls
    for _, kind in cls.FIELDS:
        while isinstance(kind, Opt | ListOf):
            kind = kind.inner
        if isinstance(kind, Nested):
            _records(kind.cls, seen)


def all_records() -> dict[str, type[Record]]:
    """Every message type and every record nested in one, by name."""
    seen: dict[str, type[Record]] = {}
    for cls in message_types().values():
        _records(cls, seen)
    return seen


def bounded_fields() -> Iterator[tuple[str, Kind]]:
    """(path, kind) of every bound: each UInt, Bin and Text (also inside Opt and ListOf), and
    each ListOf's length."""
    for name, cls in sorted(all_records().items()):
        for field, kind in cls.FIELDS:
            path = f"{name}.{field}"
            while isinstance(kind, Opt):
                kind = kind.inner
            if isinstance(kind, ListOf):
                yield path, kind
                kind, path = kind.inner, path + "[]"
            if isinstance(kind, UInt | Bin | Text):
                yield path, kind


def test_the_tables_cover_every_bounded_field() -> None:
    found = dict(bounded_fields())
    tables: list[tuple[type[Kind], set[str]]] = [
        (UInt, set(UINT_MAX)), (Bin, set(BIN_SIZES)), (Text, set(TEXT)),
        (ListOf, set(LIST_LENGTHS))]
    for kind_type, table in tables:
        discovered = {p for p, k in found.items() if isinstance(k, kind_type)}
        assert discovered == table, (
            f"{kind_type.__name__}: not in the table {sorted(discovered - table)}, "
            f"no such field {sorted(table - discovered)}")


@pytest.mark.parametrize("path", sorted(UINT_MAX))
def test_unsigned_limit_is_the_specified_one(path: str) -> None:
    kind = dict(bounded_fields())[path]
    assert isinstance(kind, UInt)
    assert kind.max_value == UINT_MAX[path]


@pytest.mark.parametrize("path", sorted(BIN_SIZES))
def test_byte_string_sizes_are_the_specified_ones(path: str) -> None:
    kind = dict(bounded_fields())[path]
    assert isinstance(kind, Bin)
    assert tuple(sorted(kind.sizes)) == BIN_SIZES[path]


@pytest.mark.parametrize("path", sorted(TEXT))
def test_text_limits_are_the_specified_ones(path: str) -> None:
    kind = dict(bounded_fields())[path]
    case = TEXT[path]
    assert isinstance(kind, Text)
    assert kind.max_len == len(case.too_long) - 1
    assert kind.min_len == (0 if case.too_short is None else len(case.too_short) + 1)
    assert (kind.pattern is None) == (case.off_pattern is None)


@pytest.mark.parametrize("path", sorted(LIST_LENGTHS))
def test_list_lengths_are_the_specified_ones(path: str) -> None:
    kind = dict(bounded_fields())[path]
    assert isinstance(kind, ListOf)
    assert (kind.min_len, kind.max_len) == LIST_LENGTHS[path]


# ---------------------------------------------------------------------------------------------
# One valid message of every type, and a field changed on it


@functools.cache
def samples() -> dict[str, Message]:
    """A valid instance of every message type, from a real lifecycle (signatures stale once a
    field is changed: decoding does not verify them)."""
    s = Simulation.create(tariff=(KM,), opener_deposit=10_000, peer_deposit=5_000)
    s.open()
    s.pay(0, (1_500,), direct=17, reference="SHIPMENT-4711")
    s.pay(1, (2_000,))
    cid = s.terms.channel_id
    funding = s.states[0].funding[0]
    proof = s.states[1].received.proof
    receipt = s.states[0].sent.receipt
    proposal = ch.propose(s.terms, s.opener, now_ms=1).effects[0]
    assert isinstance(proposal, ch.SendProposal)
    acceptance = ch.accept(proposal.proposal, s.peer, now_ms=2).effects[0]
    assert isinstance(acceptance, ch.SendAcceptance)
    claim = UnilateralClose(cid, s.peer.node_id, proof, EMPTY_SIGNATURE).signed_by(s.peer)
    evidence = DisputeEvidence(cid, s.opener.node_id, s.states[0].received.proof,
                               EMPTY_SIGNATURE).signed_by(s.opener)
    dispute = DisputeNotice(cid, claim, 86_400_000, EMPTY_SIGNATURE).signed_by(s.arbiter)
    s.settle(s.close(0))
    close, notice = s.states[0].close, s.states[0].payout
    assert funding is not None
    assert proof is not None
    assert receipt is not None
    assert close is not None
    assert notice is not None
    checkpoint = Checkpoint(cid, 1, close.opener_nonce, close.opener_amount, close.peer_nonce,
                            close.peer_amount, close.opener_signature, close.peer_signature)
    callback = CallbackAddress(cid, s.peer.node_id, "https://carrier.example:7721", 1_000,
                               EMPTY_SIGNATURE).signed_by(s.peer)
    transfer = TransferNotice(cid, 1, s.peer.node_id, MinorUnits(900), "returned", "AC04", 1,
                              "ML0123456789ABCDEF", 2_800, EMPTY_SIGNATURE).signed_by(s.arbiter)
    status = EscrowStatus(cid, "settled", bytes(range(16)), (funding,), dispute, notice, 3_000,
                          (transfer,), EMPTY_SIGNATURE).signed_by(s.arbiter)
    info = NodeInfo(s.peer.node_id, "carrier", "node", "https://carrier.example:7721",
                    s.terms.peer_account, 2_000, bytes(range(16)),
                    EMPTY_SIGNATURE).signed_by(s.peer)
    refusal = Refusal.make(s.peer, RemoteProtocolError(ErrorCode.CLOSE_MISMATCH, "no"), b"\x01")
    error = Error.make(int(ErrorCode.NONCE_GAP), "nonce 3 skips past 2", cid)
    topup = TopUpConfirmation(cid, s.opener.node_id, MinorUnits(700), "ML0123456789ABCDEF",
                              2_500, EMPTY_SIGNATURE).signed_by(s.arbiter)
    account = PayoutAccount(cid, s.peer.node_id, s.terms.peer_account, 2_600,
                            EMPTY_SIGNATURE).signed_by(s.peer)
    returned = PayoutReturned(cid, s.peer.node_id, MinorUnits(900), "ML0123456789ABCDEF",
                              "AC04", 2_700, EMPTY_SIGNATURE).signed_by(s.arbiter)
    query = EscrowStatusQuery((cid,), bytes(range(16)))
    # a quiet channel's status inside (16 full ones are over the message limit: the arbiter
    # then answers some `later`, tests/protocol/test_batched_status.py)
    quiet = replace(status, transfers=(), signature=EMPTY_SIGNATURE)
    statuses = EscrowStatuses(bytes(range(16)), (quiet,), (cid,), (cid,), 3_000,
                              EMPTY_SIGNATURE).signed_by(s.arbiter)
    messages: list[Message] = [
        s.terms, proposal.proposal, acceptance.acceptance, callback, funding, proof, receipt,
        checkpoint, close, claim, evidence, dispute, notice, status, info, refusal, error,
        topup, account, returned, transfer, query, statuses,
    ]
    return {type(m).__name__: m for m in messages}


HOSTS: dict[str, tuple[str, tuple[str | int, ...]]] = {
    "BankAccount": ("ChannelTerms", ("opener_account",)),
    "TariffLine": ("ChannelTerms", ("tariff", 0)),
    "TariffTier": ("ChannelTerms", ("tariff", 0, "tiers", 0)),
}
"""Where a record that is not a message is tried: inside a message that carries one."""


def _with(value: Any, path: Sequence[str | int], new: object) -> Any:
    head, rest = path[0], path[1:]
    if isinstance(head, int):
        items = list(value)
        items[head] = _with(items[head], rest, new) if rest else new
        return tuple(items)
    inner = getattr(value, head)
    return replace(value, **{head: _with(inner, rest, new) if rest else new})


def _locate(path: str) -> tuple[Message, tuple[str | int, ...]]:
    """The sample message to change and the attribute path to the field `path` names."""
    owner, field = path.split(".")
    steps: tuple[str | int, ...] = (field.removesuffix("[]"),)
    if field.endswith("[]"):
        steps += (0,)
    if owner in HOSTS:
        owner, prefix = HOSTS[owner]
        steps = prefix + steps
    return samples()[owner], steps


def decoded(path: str, value: object) -> Message:
    """The sample with the field at `path` set to `value`, encoded and decoded again."""
    message, steps = _locate(path)
    changed = _with(message, steps, value)
    return type(message).decode(changed.encode())


def refused(path: str, value: object) -> ErrorCode:
    with pytest.raises(DecodeError) as info:
        decoded(path, value)
    return info.value.code


def test_every_message_type_has_a_sample() -> None:
    # a registration is only nested messages: it has no bounds of its own
    assert set(samples()) | {"ChannelRegistration"} == {
        c.__name__ for c in message_types().values()}
    assert set(HOSTS) | set(samples()) >= {p.split(".")[0] for p, _ in bounded_fields()}


# ---------------------------------------------------------------------------------------------
# The decode boundaries


@pytest.mark.parametrize("path", sorted(UINT_MAX))
def test_unsigned_maximum_decodes_and_one_more_is_refused(path: str) -> None:
    limit = UINT_MAX[path]
    message = decoded(path, limit)
    assert _value_at(message, path) == limit
    assert _value_at(decoded(path, 0), path) == 0
    if limit == U64_MAX:  # the largest integer the wire can carry at all
        with pytest.raises(OverflowError):
            msgpack.packb(limit + 1)
        return
    assert refused(path, limit + 1) is ErrorCode.INVALID_FIELD


def _value_at(message: Message, path: str) -> object:
    value: Any = message
    for step in _locate(path)[1]:
        value = value[step] if isinstance(step, int) else getattr(value, step)
    return value


def _too_long(length: int, limit: int) -> ErrorCode:
    """The code for a value past a field's limit: the decoder's own limit is checked first."""
    return ErrorCode.TOO_LARGE if length > limit else ErrorCode.INVALID_FIELD


@pytest.mark.parametrize("path", sorted(BIN_SIZES))
def test_byte_string_sizes_decode_and_no_other(path: str) -> None:
    sizes = BIN_SIZES[path]
    for size in sizes:
        assert _value_at(decoded(path, bytes(size)), path) == bytes(size)
    wrong = {max(sizes) + 1} | {s - 1 for s in sizes if s > 0} - set(sizes)
    for size in sorted(wrong):
        assert refused(path, bytes(size)) is _too_long(size, MAX_BIN_BYTES), size


@pytest.mark.parametrize("path", sorted(TEXT))
def test_text_longest_decodes(path: str) -> None:
    longest = TEXT[path].longest
    assert _value_at(decoded(path, longest), path) == longest


@pytest.mark.parametrize("path", sorted(TEXT))
def test_text_shortest_decodes(path: str) -> None:
    shortest = TEXT[path].shortest
    assert _value_at(decoded(path, shortest), path) == shortest


@pytest.mark.parametrize("path", sorted(TEXT))
def test_text_past_its_limits_is_refused(path: str) -> None:
    case = TEXT[path]
    assert refused(path, case.too_long) is _too_long(len(case.too_long.encode()), MAX_STR_BYTES)
    if case.too_short is not None:
        assert refused(path, case.too_short) is ErrorCode.INVALID_FIELD
    if case.off_pattern is not None:
        assert refused(path, case.off_pattern) is ErrorCode.INVALID_FIELD


@pytest.mark.parametrize("path", sorted(LIST_LENGTHS))
def test_list_longest_and_shortest_decode_and_no_other(path: str) -> None:
    low, high = LIST_LENGTHS[path]
    items = _value_at(_locate(path)[0], path)
    assert isinstance(items, tuple)
    item = items[0]
    for n in (low, high):
        assert _value_at(decoded(path, (item,) * n), path) == (item,) * n
    assert refused(path, (item,) * (high + 1)) is _too_long(high + 1, MAX_ARRAY_LEN)
    if low:
        assert refused(path, ()) is ErrorCode.INVALID_FIELD


# ---------------------------------------------------------------------------------------------
# The checks that are not decoding

HOUR, DAY = 3_600_000, 86_400_000
POLICY = ch.TermsBounds(min_dispute_window_ms=HOUR, max_dispute_window_ms=14 * DAY)
"""The default node policy ([policy] in node/config.py)."""
WINDOWS = [(HOUR - 1, False), (HOUR, True), (14 * DAY, True), (14 * DAY + 1, False)]
WINDOW_IDS = ["below-the-policy", "the-policy-minimum", "the-policy-maximum", "above-the-policy"]


def _terms(**changes: Any) -> Simulation:
    return Simulation.create(tariff=(KM,), opener_deposit=changes.pop("opener_deposit", 10_000),
                             peer_deposit=changes.pop("peer_deposit", 5_000), **changes)


@pytest.mark.parametrize(("window", "allowed"), WINDOWS, ids=WINDOW_IDS)
def test_terms_bounds_check(window: int, allowed: bool) -> None:
    if allowed:
        POLICY.check(window)
        return
    with pytest.raises(RemoteProtocolError) as info:
        POLICY.check(window)
    assert info.value.code is ErrorCode.INVALID_TERMS


@pytest.mark.parametrize(("window", "allowed"), WINDOWS, ids=WINDOW_IDS)
def test_every_party_applies_its_window_policy(window: int, allowed: bool) -> None:
    """The opener proposing, the peer accepting and the arbiter registering."""
    s = _terms(dispute_window_ms=window)
    proposal = ch.propose(s.terms, s.opener, now_ms=1).effects[0]
    assert isinstance(proposal, ch.SendProposal)
    acceptance = ch.accept(proposal.proposal, s.peer, now_ms=2).effects[0]
    assert isinstance(acceptance, ch.SendAcceptance)
    attempts: list[tuple[type[ProtocolError], Callable[[], object]]] = [
        (LocalProtocolError, lambda: ch.propose(s.terms, s.opener, now_ms=3, bounds=POLICY)),
        (RemoteProtocolError, lambda: ch.accept(proposal.proposal, s.peer, now_ms=3,
                                                bounds=POLICY)),
        (RemoteProtocolError, lambda: arb.register(proposal.proposal, acceptance.acceptance,
                                                   s.arbiter.node_id, now_ms=3, bounds=POLICY)),
    ]
    for error, attempt in attempts:
        if allowed:
            attempt()
            continue
        with pytest.raises(error) as info:
            attempt()
        assert info.value.code is ErrorCode.INVALID_TERMS


@pytest.mark.parametrize(("window", "allowed"), [(999, False), (1_000, True),
                                                 (MAX_DISPUTE_WINDOW_MS, True)],
                         ids=["under-1-s", "1-s", "366-days"])
def test_the_protocols_own_window_limits(window: int, allowed: bool) -> None:
    """Whatever a policy says, a window is at least 1 s (and the wire caps it at 366 days)."""
    terms = _terms(dispute_window_ms=window).terms
    if allowed:
        ch.check_terms(terms)
        return
    with pytest.raises(RemoteProtocolError) as info:
        ch.check_terms(terms)
    assert info.value.code is ErrorCode.INVALID_TERMS


LARGEST_AT_SCALE_12 = MAX_AMOUNT // 10**10
"""The largest deposit (EUR cents) that fits 2⁶³−1 at scale 12, where a cent is 10¹⁰ units."""


@pytest.mark.parametrize(("opener", "peer", "allowed"), [
    (LARGEST_AT_SCALE_12, 0, True),
    (LARGEST_AT_SCALE_12 + 1, 0, False),
    (LARGEST_AT_SCALE_12 // 2, LARGEST_AT_SCALE_12 - LARGEST_AT_SCALE_12 // 2, True),
    (LARGEST_AT_SCALE_12 // 2 + 1, LARGEST_AT_SCALE_12 - LARGEST_AT_SCALE_12 // 2, False),
], ids=["one-deposit-at-the-limit", "one-deposit-past-it", "both-at-the-limit",
        "both-past-it"])
def test_deposits_fit_2_63_at_the_channel_scale(opener: int, peer: int, allowed: bool) -> None:
    terms = _terms(scale=12, opener_deposit=opener, peer_deposit=peer).terms
    if allowed:
        ch.check_terms(terms)
        return
    with pytest.raises(RemoteProtocolError) as info:
        ch.check_terms(terms)
    assert info.value.code is ErrorCode.INVALID_TERMS


def _funding_escrow() -> tuple[Simulation, arb.ArbiterState]:
    s = _terms()
    proposal = ch.propose(s.terms, s.opener, now_ms=1).effects[0]
    assert isinstance(proposal, ch.SendProposal)
    acceptance = ch.accept(proposal.proposal, s.peer, now_ms=2).effects[0]
    assert isinstance(acceptance, ch.SendAcceptance)
    return s, arb.register(proposal.proposal, acceptance.acceptance, s.arbiter.node_id, now_ms=3)


def _deposit(s: Simulation, escrow: arb.ArbiterState, amount: int, *, booked_ms: int = 1_000,
             depositor: int = 0, entry: str = "entry-1") -> arb.ArbiterState:
    return arb.step(escrow, arb.ObserveDeposit(s.arbiter, depositor, MinorUnits(amount), entry,
                                               "REF", booked_ms), now_ms=4).state


@pytest.mark.parametrize(("amount", "booked_ms", "depositor", "code"), [
    (1, 1_000, 0, None),
    (MAX_AMOUNT, MAX_TIME_MS, 0, None),
    (0, 1_000, 0, ErrorCode.INVALID_AMOUNT),
    (MAX_AMOUNT + 1, 1_000, 0, ErrorCode.INVALID_AMOUNT),
    (1, MAX_TIME_MS + 1, 0, ErrorCode.INVALID_FIELD),
    (1, 1_000, 2, ErrorCode.INVALID_AMOUNT),
], ids=["one-cent", "the-largest-at-the-latest-time", "zero", "above-2-63",
        "booked-after-year-9999", "no-such-depositor"])
def test_the_arbiter_range_checks_a_deposit(amount: int, booked_ms: int, depositor: int,
                                            code: ErrorCode | None) -> None:
    s, escrow = _funding_escrow()
    if code is None:
        after = _deposit(s, escrow, amount, booked_ms=booked_ms, depositor=depositor)
        assert after.deposited[depositor] == amount
        return
    with pytest.raises(LocalProtocolError) as info:
        _deposit(s, escrow, amount, booked_ms=booked_ms, depositor=depositor)
    assert info.value.code is code


def test_the_arbiter_refuses_deposits_that_add_up_past_2_63() -> None:
    s, escrow = _funding_escrow()
    escrow = _deposit(s, escrow, MAX_AMOUNT - 1)
    escrow = _deposit(s, escrow, 1, entry="entry-2")
    assert escrow.deposited[0] == MAX_AMOUNT
    with pytest.raises(LocalProtocolError) as info:
        _deposit(s, escrow, 1, entry="entry-3")
    assert info.value.code is ErrorCode.INVALID_AMOUNT


def test_the_arbiter_range_checks_a_booked_payout() -> None:
    s = _terms()
    s.open()
    escrow = s.close(0).state
    with pytest.raises(LocalProtocolError) as info:
        arb.step(escrow, arb.ObservePayoutBooked(s.arbiter, 2, 1_000), now_ms=s.tick())
    assert info.value.code is ErrorCode.INVALID_FIELD


BIG = TariffLine("unit", 0, (TariffTier(None, Amount(MAX_AMOUNT)),))
"""2⁶³−1 per unit: two units cost more than any amount may be."""
FREE = TariffLine("unit", 0, (TariffTier(None, Amount(0)),))


@pytest.mark.parametrize(("tariff", "payments"), [
    ((BIG,), [((2,), 0)]),
    ((KM,), [((0,), MAX_AMOUNT + 1)]),
    ((KM,), [((0,), 5), ((0,), MAX_AMOUNT)]),
    ((KM,), [((MAX_AMOUNT // 12,), 0)]),
    ((FREE,), [((5,), 0), ((MAX_AMOUNT,), 0)]),
], ids=["tariff-amount", "direct-amount", "cumulative-amount", "amount-of-a-quantity",
        "cumulative-quantity"])
def test_a_proof_past_2_63_is_refused(tariff: tuple[TariffLine, ...],
                                      payments: list[tuple[tuple[int, ...], int]]) -> None:
    """By its sender (INVALID_AMOUNT, before the capacity check), by a receiver handed the
    proof (INVALID_AMOUNT), and on the wire (the decode refusal)."""
    s = Simulation.create(tariff=tariff, opener_deposit=10_000, peer_deposit=5_000)
    s.open()
    *before, (quantities, direct) = payments
    for q, d in before:
        s.pay(0, q, direct=d)
    pay = ch.ActionPay(s.opener, tuple(Quantity(q) for q in quantities), Amount(direct))
    with pytest.raises(LocalProtocolError) as ours:
        ch.step(s.states[0], pay, now_ms=s.tick())
    assert ours.value.code is ErrorCode.INVALID_AMOUNT
    proof = ch.build_proof(s.states[0], pay, now_ms=s.now_ms)  # a sender that does not check
    with pytest.raises(RemoteProtocolError) as theirs:
        ch.step(s.states[1], ch.ReceiveProof(proof), now_ms=s.now_ms)
    assert theirs.value.code is ErrorCode.INVALID_AMOUNT
    with pytest.raises(DecodeError) as wire:
        type(proof).decode(proof.encode())
    assert wire.value.code is ErrorCode.INVALID_FIELD


@pytest.mark.parametrize(("quantity", "direct"), [(MAX_AMOUNT, 0), (0, U64_MAX + 1)],
                         ids=["a-quantity-costing-over-2-64", "a-direct-amount-over-2-64"])
def test_our_own_payment_past_2_64_is_a_typed_refusal(quantity: int, direct: int) -> None:
    s = Simulation.create(tariff=(KM,), opener_deposit=10_000, peer_deposit=5_000)
    s.open()
    pay = ch.ActionPay(s.opener, (Quantity(quantity),), Amount(direct))
    with pytest.raises(LocalProtocolError) as info:
        ch.step(s.states[0], pay, now_ms=s.tick())
    assert info.value.code is ErrorCode.INVALID_AMOUNT
