"""Canonical msgpack and message decoding (specs/0002-wire.md §2, §5, §6).

Whatever bytes arrive, `decode_message` returns a valid message or raises `DecodeError` with a
decoding code (1–19): never any other exception.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import arbiter as arb
from protocol import channel as ch
from protocol.encoding import MAX_MESSAGE_BYTES, pack, unpack
from protocol.errors import DecodeError, ErrorCode, RemoteProtocolError
from protocol.messages import (
    EMPTY_SIGNATURE,
    BalanceProof,
    CallbackAddress,
    ChannelProposal,
    ChannelRegistration,
    ChannelTerms,
    CooperativeClose,
    DisputeEvidence,
    DisputeNotice,
    Error,
    EscrowStatus,
    EscrowStatuses,
    EscrowStatusQuery,
    NodeInfo,
    PayoutAccount,
    PayoutReturned,
    Receipt,
    Refusal,
    TransferNotice,
    UnilateralClose,
)
from protocol.records import Message, decode_message, message_types
from protocol.simulation import Simulation
from protocol.types import ChannelId

from .conftest import KM_GRADUATED, MSG

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@functools.cache
def samples() -> tuple[Message, ...]:
    """One valid instance of (almost) every message type, taken from a real lifecycle."""
    s = Simulation.create(tariff=(KM_GRADUATED, MSG), opener_deposit=10_000, peer_deposit=5_000)
    proposal = ch.propose(s.terms, s.opener, now_ms=1).effects[0]
    assert isinstance(proposal, ch.SendProposal)
    accepted = ch.accept(proposal.proposal, s.peer, now_ms=2).effects[0]
    assert isinstance(accepted, ch.SendAcceptance)
    s.open()
    funding = s.states[0].funding[0]
    s.pay(0, (1_500, 3), direct=17, reference="SHIPMENT-4711")
    s.pay(1, (2_000, 0))
    proof = s.states[1].received.proof
    receipt = s.states[0].sent.receipt
    s.acknowledge(0)
    s.checkpoint(1)
    checkpoint = s.states[0].checkpoint
    topped = s.topup(1, 700)
    (topup,) = [e.confirmation for e in topped.effects if isinstance(e, arb.SendTopUpConfirmation)]
    account = PayoutAccount(s.terms.channel_id, s.peer.node_id, s.terms.peer_account, 4_000,
                            EMPTY_SIGNATURE).signed_by(s.peer)
    returned = PayoutReturned(s.terms.channel_id, s.peer.node_id, 10_000, "MLPAYOUT", "AC04",
                              4_100, EMPTY_SIGNATURE).signed_by(s.arbiter)
    assert checkpoint
    claim = UnilateralClose(s.terms.channel_id, s.peer.node_id, proof, EMPTY_SIGNATURE).signed_by(
        s.peer
    )
    evidence = DisputeEvidence(
        s.terms.channel_id, s.opener.node_id, s.states[0].received.proof, EMPTY_SIGNATURE
    ).signed_by(s.opener)
    dispute = DisputeNotice(s.terms.channel_id, claim, 86_400_000, EMPTY_SIGNATURE).signed_by(
        s.arbiter
    )
    decided = s.close(0)
    close = s.states[0].close
    s.settle(decided)
    notice = s.states[0].payout
    assert funding
    assert proof
    assert receipt
    assert close
    assert notice
    error = Error.from_exception(
        RemoteProtocolError(ErrorCode.NONCE_GAP, "nonce 3 skips past 2"), s.terms.channel_id
    )
    cid = s.terms.channel_id
    callback = CallbackAddress(cid, s.peer.node_id, "https://carrier.example:7721", 1_000,
                               EMPTY_SIGNATURE).signed_by(s.peer)
    transfer = TransferNotice(cid, 1, s.peer.node_id, 900, "booked", "", 0,
                              "MLPAYOUT", 2_900, EMPTY_SIGNATURE).signed_by(s.arbiter)
    status = EscrowStatus(cid, "settled", bytes(range(16)), (funding,), dispute, notice, 3_000,
                          (transfer,), EMPTY_SIGNATURE).signed_by(s.arbiter)
    query = EscrowStatusQuery((cid, bytes(32)), bytes(range(16)))
    statuses = EscrowStatuses(bytes(range(16)), (replace(status, signature=EMPTY_SIGNATURE),),
                              (ChannelId(bytes(32)),), (), 3_000,
                              EMPTY_SIGNATURE).signed_by(s.arbiter)
    info = NodeInfo(s.peer.node_id, "carrier", "node", "https://carrier.example:7721",
                    s.terms.peer_account, 2_000, bytes(range(16)),
                    EMPTY_SIGNATURE).signed_by(s.peer)
    refusal = Refusal.make(s.peer, RemoteProtocolError(ErrorCode.CLOSE_MISMATCH, "no"), b"\x01")
    return (
        s.terms,
        proposal.proposal,
        accepted.acceptance,
        ChannelRegistration(proposal.proposal, accepted.acceptance),
        ChannelRegistration(proposal.proposal, accepted.acceptance, callback),
        callback,
        status,
        query,
        statuses,
        info,
        refusal,
        funding,
        checkpoint,
        topup,
        account,
        returned,
        transfer,
        proof,
        receipt,
        close,
        claim,
        evidence,
        dispute,
        notice,
        error,
    )


def decodes_or_refuses(data: bytes) -> None:
    """The property: a valid message, or a DecodeError with a decoding code."""
    try:
        message = decode_message(data)
    except DecodeError as exc:
        code = exc.code
    else:
        assert isinstance(message, Message)
        assert message.encode() == data  # only canonical bytes decode
        return
    assert 1 <= code <= 19, code


def code_of(data: bytes) -> ErrorCode:
    with pytest.raises(DecodeError) as info:
        decode_message(data)
    return info.value.code


# -- round trips ------------------------------------------------------------------------------


def test_every_registered_type_has_a_sample() -> None:
    sampled = {type(m) for m in samples()}
    missing = set(message_types().values()) - sampled
    assert not missing


@pytest.mark.parametrize("message", samples(), ids=lambda m: type(m).__name__)
def test_round_trip(message: Message) -> None:
    data = message.encode()
    assert decode_message(data) == message
    assert type(message).decode(data) == message
    assert unpack(data) == message.to_wire()
    assert data[0] & 0xF0 == 0x90 or data[0] == 0xDC  # a msgpack array
    assert unpack(data)[:2] == [type(message).TAG, 1]


def test_balance_proof_is_small() -> None:
    proof = next(m for m in samples() if isinstance(m, BalanceProof))
    assert len(proof.encode()) < 300


def test_decode_as_the_wrong_type() -> None:
    proof = next(m for m in samples() if isinstance(m, BalanceProof))
    with pytest.raises(DecodeError) as info:
        Receipt.decode(proof.encode())
    assert info.value.code is ErrorCode.INVALID_FIELD


# -- targeted refusals ------------------------------------------------------------------------


def receipt_wire() -> list[Any]:
    receipt = next(m for m in samples() if isinstance(m, Receipt))
    return receipt.to_wire()


def test_unknown_type() -> None:
    assert code_of(pack([99, 1])) is ErrorCode.UNKNOWN_MESSAGE_TYPE
    assert code_of(pack([0, 1, b""])) is ErrorCode.UNKNOWN_MESSAGE_TYPE
    assert code_of(pack(["receipt", 1])) is ErrorCode.UNKNOWN_MESSAGE_TYPE
    assert code_of(pack([[5], 1])) is ErrorCode.UNKNOWN_MESSAGE_TYPE


def test_wrong_version() -> None:
    wire = receipt_wire()
    wire[1] = 2
    assert code_of(pack(wire)) is ErrorCode.UNSUPPORTED_VERSION
    wire[1] = 0
    assert code_of(pack(wire)) is ErrorCode.UNSUPPORTED_VERSION


def test_wrong_arity() -> None:
    wire = receipt_wire()
    assert code_of(pack(wire[:-1])) is ErrorCode.WRONG_ARITY
    assert code_of(pack([*wire, b""])) is ErrorCode.WRONG_ARITY
    assert code_of(pack(wire[:1])) is ErrorCode.MALFORMED  # no version at all


def test_wrong_field_type() -> None:
    wire = receipt_wire()
    for index, bad in [
        (2, "not-bytes"),
        (2, b"\x00" * 31),
        (4, b"\x01"),
        (4, None),
        (6, 7),
        (6, b"\x00" * 63),
    ]:
        mutated = list(wire)
        mutated[index] = bad
        assert code_of(pack(mutated)) is ErrorCode.INVALID_FIELD, (index, bad)


def test_nested_field_checks() -> None:
    terms = next(m for m in samples() if isinstance(m, ChannelTerms))
    wire = terms.to_wire()
    lowercase = [*wire[:5], "eur", *wire[6:]]
    assert code_of(pack(lowercase)) is ErrorCode.INVALID_FIELD
    too_big_scale = [*wire[:6], 256, *wire[7:]]
    assert code_of(pack(too_big_scale)) is ErrorCode.INVALID_FIELD
    # the terms embedded in a proposal carry their own tag and version
    proposal = next(m for m in samples() if isinstance(m, ChannelProposal))
    pwire = proposal.to_wire()
    for tag in ([16], "terms", 5, 99):
        nested = [pwire[0], pwire[1], [tag, *pwire[2][1:]], pwire[3]]
        code = code_of(pack(nested))
        expected = ErrorCode.INVALID_FIELD if tag == 5 else ErrorCode.UNKNOWN_MESSAGE_TYPE
        assert code is expected, tag


def test_trailing_bytes() -> None:
    data = next(m for m in samples() if isinstance(m, Receipt)).encode()
    assert code_of(data + b"\x00") is ErrorCode.TRAILING_BYTES
    assert code_of(data + data) is ErrorCode.TRAILING_BYTES


def test_non_canonical_encodings() -> None:
    # [5, 1] with 5 as a uint8 instead of a positive fixint
    assert code_of(b"\x92\xcc\x05\x01") is ErrorCode.NON_CANONICAL
    # the same array behind an array16 header
    assert code_of(b"\xdc\x00\x02\x05\x01") is ErrorCode.NON_CANONICAL
    # a short string as str8
    assert code_of(b"\x92\xd9\x01x\x01") is ErrorCode.NON_CANONICAL
    # a real receipt whose nonce is written as a uint64
    wire = receipt_wire()
    fields = [pack(v) for v in wire]
    assert pack(wire) == b"\x97" + b"".join(fields)
    fields[4] = b"\xcf" + wire[4].to_bytes(8, "big")
    data = b"\x97" + b"".join(fields)
    assert msgpack.unpackb(data, raw=False) == wire  # the same value, just longer
    assert code_of(data) is ErrorCode.NON_CANONICAL


def test_a_map_is_refused() -> None:
    assert code_of(msgpack.packb({})) is ErrorCode.INVALID_FIELD
    assert code_of(msgpack.packb([5, 1, {1: 2}])) is ErrorCode.INVALID_FIELD
    assert code_of(msgpack.packb({"tag": 5})) is ErrorCode.INVALID_FIELD


def test_a_float_is_refused() -> None:
    assert code_of(msgpack.packb([5, 1, 1.5])) is ErrorCode.INVALID_FIELD
    assert code_of(msgpack.packb([5, 1.0])) is ErrorCode.INVALID_FIELD
    assert code_of(msgpack.packb(1.0, use_single_float=True)) is ErrorCode.INVALID_FIELD


def test_other_wire_types_are_refused() -> None:
    assert code_of(msgpack.packb([5, 1, -1])) is ErrorCode.INVALID_FIELD
    assert code_of(msgpack.packb([5, 1, True])) is ErrorCode.INVALID_FIELD
    assert code_of(msgpack.packb([5, 1, msgpack.ExtType(1, b"x")])) is ErrorCode.INVALID_FIELD
    assert code_of(b"") is ErrorCode.MALFORMED
    assert code_of(pack(5)) is ErrorCode.MALFORMED
    assert code_of(pack(b"abc")) is ErrorCode.MALFORMED
    assert code_of(b"\xc1") is ErrorCode.MALFORMED  # never used
    assert code_of(b"\x92\x05") is ErrorCode.MALFORMED  # truncated
    assert code_of(b"\x92\xa2\xff\xfe\x01") is ErrorCode.MALFORMED  # invalid UTF-8
    deep: list[Any] = [5, 1]
    for _ in range(10):
        deep = [deep]
    assert code_of(pack([5, 1, deep])) is ErrorCode.MALFORMED


def test_oversized_input() -> None:
    assert code_of(b"\x90" + bytes(MAX_MESSAGE_BYTES)) is ErrorCode.TOO_LARGE
    assert code_of(pack([5, 1, b"x" * 65])) is ErrorCode.TOO_LARGE
    assert code_of(pack([5, 1, "x" * 257])) is ErrorCode.TOO_LARGE
    assert code_of(pack([5, 1, *([0] * 65)])) is ErrorCode.TOO_LARGE


def test_unpack_refuses_non_bytes() -> None:
    with pytest.raises(DecodeError) as info:
        unpack("not bytes")  # type: ignore[arg-type]
    assert info.value.code is ErrorCode.MALFORMED


def test_close_body_excludes_signatures() -> None:
    close = next(m for m in samples() if isinstance(m, CooperativeClose))
    assert close.fully_signed()
    bare = CooperativeClose(*close.to_wire()[2:7], EMPTY_SIGNATURE, EMPTY_SIGNATURE)
    assert bare.body() == close.body()
    assert bare.encode() != close.encode()


# -- fuzzing ----------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_only_ever_raise_decode_error(data: bytes) -> None:
    decodes_or_refuses(data)


@FUZZ
@given(st.sampled_from([0x90 + i for i in range(16)] + [0xDC]), st.binary(max_size=300))
def test_random_array_bodies_only_ever_raise_decode_error(header: int, body: bytes) -> None:
    decodes_or_refuses(bytes([header]) + body)


@st.composite
def mutated_encodings(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(samples())).encode())
    kind = draw(st.sampled_from(["flip", "truncate", "append", "insert", "delete", "set"]))
    at = draw(st.integers(0, len(data) - 1))
    if kind == "flip":
        data[at] ^= 1 << draw(st.integers(0, 7))
    elif kind == "truncate":
        del data[at:]
    elif kind == "append":
        data += draw(st.binary(min_size=1, max_size=8))
    elif kind == "insert":
        data[at:at] = draw(st.binary(min_size=1, max_size=4))
    elif kind == "delete":
        del data[at : at + draw(st.integers(1, 4))]
    else:
        data[at] = draw(st.integers(0, 255))
    return bytes(data)


@FUZZ
@given(mutated_encodings())
def test_mutated_encodings_only_ever_raise_decode_error(data: bytes) -> None:
    decodes_or_refuses(data)


wire_values = st.recursive(
    st.none()
    | st.integers(0, 2**64 - 1)
    | st.binary(max_size=70)
    | st.text(max_size=12)
    | st.sampled_from([0, 1, 5, 16, b"\x00" * 32, b"\x00" * 64, "EUR", "km"]),
    lambda inner: st.lists(inner, max_size=6),
    max_leaves=16,
)


def replace_at(tree: Any, path: list[int], value: Any) -> Any:
    if not path or not isinstance(tree, list) or not tree:
        return value
    i = path[0] % len(tree)
    return [*tree[:i], replace_at(tree[i], path[1:], value), *tree[i + 1 :]]


@FUZZ
@given(
    st.sampled_from(samples()),
    st.lists(st.integers(0, 20), min_size=1, max_size=5),
    wire_values,
)
def test_valid_messages_with_a_subtree_replaced(
    message: Message, path: list[int], value: Any
) -> None:
    """Structurally valid msgpack of the wrong shape anywhere in a real message."""
    decodes_or_refuses(pack(replace_at(message.to_wire(), path, value)))


@FUZZ
@given(st.sampled_from(sorted(message_types())), st.lists(wire_values, max_size=14))
def test_known_tags_with_arbitrary_fields(tag: int, fields: list[Any]) -> None:
    decodes_or_refuses(pack([tag, 1, *fields]))


def test_regression_list_where_the_nested_terms_tag_goes() -> None:
    """Found by the fuzzer: a list as the embedded terms' tag raised TypeError (unhashable)."""
    proposal = next(m for m in samples() if isinstance(m, ChannelProposal))
    wire = proposal.to_wire()
    bad = [wire[0], wire[1], [[1], *wire[2][1:]], wire[3]]
    assert code_of(pack(bad)) is ErrorCode.UNKNOWN_MESSAGE_TYPE
