"""The JSON test vectors of specs/vectors/, checked against protocol/ in both directions.

Building a value from a vector's fields must give its bytes; decoding the bytes must give the
fields; every signature must verify; every malformed input must raise the typed DecodeError with
the listed code. The JSON is read here with its own small reader (below), not with the generator's
writer, so a mistake in one does not hide in the other.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from protocol import PROTOCOL_VERSION
from protocol import arbiter as arb
from protocol import checkpoint as checkpoint_rules
from protocol.crypto import (
    BACKENDS,
    DOMAIN_PREFIX,
    Signer,
    ed25519_public,
    ed25519_sign,
    ed25519_verify,
    signing_input,
    verify,
)
from protocol.encoding import pack
from protocol.errors import DecodeError, ErrorCode, ProtocolError, RemoteProtocolError
from protocol.messages import (
    EMPTY_SIGNATURE,
    BalanceProof,
    ChannelAcceptance,
    ChannelTerms,
    Checkpoint,
    Signed,
)
from protocol.money import (
    currency_exponent,
    format_money,
    parse_decimal,
    parse_money,
    parse_rail_money,
    to_minor_units,
)
from protocol.payout import cumulative_shares
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
    decode_message,
    message_types,
)
from protocol.references import (
    Purpose,
    bank_reference,
    idempotency_key,
    payout_seq,
    refund_idempotency_key,
    refund_reference,
)
from protocol.simulation import Simulation
from protocol.tariff import TariffLine, check_tariff, parse_tariff_line, tariff_amount
from protocol.types import Amount, MinorUnits, Nonce

from .conftest import KM

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "specs" / "vectors"


def load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


def ids(cases: list[dict[str, Any]], key: str = "name") -> list[str]:
    return [str(case[key]) for case in cases]


# ---------------------------------------------------------------------------------------------
# The JSON form, read and written by Kind (README: u64 as decimal strings, bytes as hex).


def from_json(kind: Kind, value: Any) -> Any:
    if isinstance(kind, UInt):
        if kind.bits > 32:
            assert isinstance(value, str), f"u{kind.bits} is a decimal string in the vectors"
            assert value.isdigit()
            assert value == "0" or not value.startswith("0")
        else:
            assert isinstance(value, int)
        return int(value)
    if isinstance(kind, Bin):
        assert value == value.lower()
        return bytes.fromhex(value)
    if isinstance(kind, Text):
        assert isinstance(value, str)
        return value
    if isinstance(kind, Opt):
        return None if value is None else from_json(kind.inner, value)
    if isinstance(kind, ListOf):
        return tuple(from_json(kind.inner, item) for item in value)
    if isinstance(kind, Nested):
        return record_from_json(kind.cls, value)
    raise TypeError(kind)


def record_from_json(cls: type[Record], fields: dict[str, Any]) -> Any:
    assert list(fields) == [name for name, _ in cls.FIELDS], f"{cls.__name__}: field order"
    return cls(**{name: from_json(kind, fields[name]) for name, kind in cls.FIELDS})


def to_json(kind: Kind, value: Any) -> Any:
    if isinstance(kind, UInt):
        return str(value) if kind.bits > 32 else value
    if isinstance(kind, Bin):
        return value.hex()
    if isinstance(kind, Opt):
        return None if value is None else to_json(kind.inner, value)
    if isinstance(kind, ListOf):
        return [to_json(kind.inner, item) for item in value]
    if isinstance(kind, Nested):
        return {name: to_json(k, getattr(value, name)) for name, k in value.FIELDS}
    return value


def message_json(message: Message) -> dict[str, Any]:
    return to_json(Nested(type(message)), message)  # type: ignore[no-any-return]


def assert_error(exc: ProtocolError, case: dict[str, Any]) -> None:
    assert exc.code is ErrorCode[case["error"]]
    assert int(exc.code) == case["code"]


# ---------------------------------------------------------------------------------------------
# The committed files are what the generator writes today.


def test_vector_files_are_current() -> None:
    from specs.tools import make_vectors

    generated = make_vectors.generate()
    committed = {path.name for path in VECTORS.glob("*.json")}
    assert committed == set(generated), "run python -m specs.tools.make_vectors"
    for name, text in generated.items():
        assert (VECTORS / name).read_text(encoding="utf-8") == text, (
            f"{name} is stale: run python -m specs.tools.make_vectors"
        )


def test_readme_describes_every_file() -> None:
    readme = (VECTORS / "README.md").read_text(encoding="utf-8")
    for path in VECTORS.glob("*.json"):
        assert f"`{path.name}`" in readme


# ---------------------------------------------------------------------------------------------
# keys.json

KEYS = load("keys.json")


@pytest.mark.parametrize("case", KEYS["rfc8032"], ids=ids(KEYS["rfc8032"]))
def test_rfc8032(case: dict[str, Any]) -> None:
    seed, message = bytes.fromhex(case["seed"]), bytes.fromhex(case["message"])
    public, signature = bytes.fromhex(case["public_key"]), bytes.fromhex(case["signature"])
    assert ed25519_public(seed) == public
    assert Signer(seed).node_id == public
    assert ed25519_sign(seed, message) == signature
    assert ed25519_verify(public, message, signature)
    assert not ed25519_verify(public, message + b"\x00", signature)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("case", KEYS["rfc8032"], ids=ids(KEYS["rfc8032"]))
def test_rfc8032_through_each_backend(case: dict[str, Any], backend: str) -> None:
    lib = BACKENDS[backend]
    seed, message = bytes.fromhex(case["seed"]), bytes.fromhex(case["message"])
    public, signature = bytes.fromhex(case["public_key"]), bytes.fromhex(case["signature"])
    assert lib.public(seed) == public
    assert lib.sign(seed, message) == signature
    assert lib.signing_key(seed)(message) == signature
    assert lib.verify(public, message, signature)
    assert not lib.verify(public, message + b"\x00", signature)


EDGES = KEYS["edge_cases"]


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("case", EDGES, ids=ids(EDGES))
def test_signature_edge_case(case: dict[str, Any], backend: str) -> None:
    from specs.tools.ed25519_edges import equation_holds

    public, signature = bytes.fromhex(case["public_key"]), bytes.fromhex(case["signature"])
    body = bytes.fromhex(case["body"])
    message = signing_input(case["domain"], body)
    assert message.hex() == case["signing_input"]
    # the plain equation holds, so what answers is §4.1's rule, not a broken signature
    assert case["equation_holds"] is equation_holds(public, message, signature) is True
    assert BACKENDS[backend].verify(public, message, signature) is case["valid"]
    if case["valid"]:
        verify(public, case["domain"], body, signature)
        return
    with pytest.raises(RemoteProtocolError) as info:
        verify(public, case["domain"], body, signature)
    assert info.value.code is ErrorCode[case["error"]]
    assert int(info.value.code) == case["code"]


def test_edge_cases_cover_the_rule() -> None:
    names = {case["name"] for case in EDGES}
    assert {"S + L", "small-order R", "non-canonical public key"} <= names
    assert {f"order-{n} public key" for n in (1, 2, 4, 8)} <= names
    assert [c["name"] for c in EDGES if c["valid"]] == ["mixed-order public key"]


@pytest.mark.parametrize("case", KEYS["labelled"], ids=ids(KEYS["labelled"], "label"))
def test_labelled_keys(case: dict[str, Any]) -> None:
    seed = hashlib.sha256(case["label"].encode()).digest()
    assert seed.hex() == case["seed"]
    signer = Signer.from_label(case["label"])
    assert signer.seed() == seed
    assert signer.node_id.hex() == case["node_id"]


@pytest.mark.parametrize("case", KEYS["signing"], ids=ids(KEYS["signing"], "domain"))
def test_domain_separated_signing(case: dict[str, Any]) -> None:
    body = bytes.fromhex(case["body"])
    expected = (
        KEYS["domain_prefix"].encode()
        + case["domain"].encode()
        + b"\x00"
        + bytes([KEYS["protocol_version"]])
        + body
    )
    assert expected.hex() == case["signing_input"]
    assert signing_input(case["domain"], body) == expected
    signer = Signer.from_label(case["signer"])
    assert signer.sign(case["domain"], body).hex() == case["signature"]
    for lib in BACKENDS.values():
        assert lib.verify(signer.node_id, expected, bytes.fromhex(case["signature"])), lib.name


# ---------------------------------------------------------------------------------------------
# messages.json

MESSAGES = load("messages.json")
BY_NAME = {cls.__name__: cls for cls in message_types().values()}
NODE_IDS = {case["label"]: bytes.fromhex(case["node_id"]) for case in KEYS["labelled"]}


def test_every_message_type_has_a_vector() -> None:
    assert MESSAGES["protocol_version"] == PROTOCOL_VERSION
    assert MESSAGES["domain_prefix"] == DOMAIN_PREFIX.decode()
    covered = {case["type"] for case in MESSAGES["messages"]}
    assert covered == set(BY_NAME)


@pytest.mark.parametrize("case", MESSAGES["messages"], ids=ids(MESSAGES["messages"]))
def test_message_encodes_to_its_bytes(case: dict[str, Any]) -> None:
    cls = BY_NAME[case["type"]]
    assert case["tag"] == cls.TAG
    message = record_from_json(cls, case["fields"])
    encoded = message.encode()
    assert encoded.hex() == case["encoded"]
    assert encoded[1:2] == bytes([case["tag"]])
    assert encoded[2:3] == bytes([PROTOCOL_VERSION])
    if "channel_id" in case:
        assert hashlib.sha256(encoded).hexdigest() == case["channel_id"]
        assert message.channel_id.hex() == case["channel_id"]


@pytest.mark.parametrize("case", MESSAGES["messages"], ids=ids(MESSAGES["messages"]))
def test_message_decodes_to_its_fields(case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["encoded"])
    message = decode_message(data)
    assert type(message).__name__ == case["type"]
    assert message_json(message) == case["fields"]
    assert BY_NAME[case["type"]].decode(data) == message


def _terms() -> ChannelTerms:
    (case,) = [c for c in MESSAGES["messages"] if c["type"] == "ChannelTerms"]
    terms: ChannelTerms = record_from_json(ChannelTerms, case["fields"])
    return terms


@pytest.mark.parametrize("case", MESSAGES["messages"], ids=ids(MESSAGES["messages"]))
def test_message_signatures_verify(case: dict[str, Any]) -> None:
    message = decode_message(bytes.fromhex(case["encoded"]))
    if not isinstance(message, Signed):
        assert case["signatures"] == []
        return
    assert [s["field"] for s in case["signatures"]] == list(message.SIGNATURE_FIELDS)
    for sig in case["signatures"]:
        assert sig["domain"] == message.DOMAIN
        signed = bytes.fromhex(sig["signed_bytes"])
        if isinstance(message, ChannelAcceptance):
            assert signed == _terms().encode()
        else:
            assert signed == message.body()
        expected = DOMAIN_PREFIX + sig["domain"].encode() + b"\x00" + bytes([1]) + signed
        assert expected.hex() == sig["signing_input"]
        node_id = NODE_IDS[sig["signer"]]
        signature = getattr(message, sig["field"])
        assert ed25519_verify(node_id, expected, signature)
        assert all(lib.verify(node_id, expected, signature) for lib in BACKENDS.values())
        # and the same check through the message API (a re-sign gives the same bytes)
        if isinstance(message, ChannelAcceptance):
            message.verify_for(_terms())
        else:
            message.verify_signature(node_id, sig["field"])
            resigned = message.signed_by(Signer.from_label(sig["signer"]), sig["field"])
            assert resigned == message
        # any change to the signed bytes breaks it
        assert not ed25519_verify(node_id, expected[:-1] + bytes([expected[-1] ^ 1]), signature)
    proof = getattr(message, "proof", None)
    if isinstance(proof, BalanceProof):
        proof.verify_signature(proof.sender)


def test_unsigned_body_excludes_signature_fields() -> None:
    (case,) = [c for c in MESSAGES["messages"] if c["name"] == "cooperative-close"]
    message = decode_message(bytes.fromhex(case["encoded"]))
    assert isinstance(message, Signed)
    wire = message.to_wire()
    assert message.body() == pack(wire[: -len(message.SIGNATURE_FIELDS)])


@pytest.mark.parametrize(
    "case", MESSAGES["usage_digests"], ids=ids(MESSAGES["usage_digests"], "proof")
)
def test_usage_digest_chain(case: dict[str, Any]) -> None:
    (vector,) = [c for c in MESSAGES["messages"] if c["name"] == case["proof"]]
    proof = decode_message(bytes.fromhex(vector["encoded"]))
    assert isinstance(proof, BalanceProof)
    usage = pack(
        [
            proof.nonce,
            proof.amount,
            proof.direct_amount,
            list(proof.quantities),
            proof.reference,
            proof.time_ms,
        ]
    )
    assert usage.hex() == case["usage"]
    digest = hashlib.sha256(bytes.fromhex(case["previous"]) + usage).digest()
    assert digest.hex() == case["digest"] == proof.usage_digest.hex()
    if proof.nonce == 1:  # the chain starts from the channel id
        assert case["previous"] == proof.channel_id.hex()


def test_proof_amounts_follow_the_tariff() -> None:
    terms = _terms()
    for case in MESSAGES["messages"]:
        if case["type"] == "BalanceProof":
            proof = decode_message(bytes.fromhex(case["encoded"]))
            assert isinstance(proof, BalanceProof)
            expected = tariff_amount(terms.tariff, proof.quantities) + proof.direct_amount
            assert proof.amount == expected


# ---------------------------------------------------------------------------------------------
# decode-errors.json

DECODE = load("decode-errors.json")


@pytest.mark.parametrize("case", DECODE["cases"], ids=ids(DECODE["cases"]))
def test_decode_error(case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["hex"])
    decode = decode_message if case["decoder"] == "any" else BY_NAME[case["decoder"]].decode
    with pytest.raises(DecodeError) as info:
        decode(data)
    assert_error(info.value, case)
    assert 1 <= info.value.code <= 19


def test_decode_errors_cover_every_decoding_code() -> None:
    decoding = {code.name for code in ErrorCode if 1 <= code <= 19}
    assert {case["error"] for case in DECODE["cases"]} == decoding


# ---------------------------------------------------------------------------------------------
# tariff.json

TARIFF = load("tariff.json")


def lines_from_json(lines: list[dict[str, Any]]) -> tuple[TariffLine, ...]:
    return tuple(record_from_json(TariffLine, line) for line in lines)


@pytest.mark.parametrize("case", TARIFF["amounts"], ids=ids(TARIFF["amounts"]))
def test_tariff_amount(case: dict[str, Any]) -> None:
    lines = lines_from_json(case["tariff"])
    check_tariff(lines)
    quantities = [int(q) for q in case["quantities"]]
    for line, q, amount in zip(lines, quantities, case["line_amounts"], strict=True):
        assert line.amount(q) == int(amount)
    assert tariff_amount(lines, quantities) == int(case["amount"])


@pytest.mark.parametrize("case", TARIFF["parse"], ids=ids(TARIFF["parse"], "text"))
def test_tariff_parse(case: dict[str, Any]) -> None:
    line = parse_tariff_line(
        case["text"], scale=case["scale"], quantity_scale=case["quantity_scale"]
    )
    assert line == record_from_json(TariffLine, case["line"])
    assert to_json(Nested(TariffLine), line) == case["line"]


@pytest.mark.parametrize("case", TARIFF["invalid_text"], ids=ids(TARIFF["invalid_text"], "text"))
def test_tariff_parse_rejects(case: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_tariff_line(case["text"], scale=case["scale"], quantity_scale=case["quantity_scale"])
    assert_error(info.value, case)


@pytest.mark.parametrize("case", TARIFF["invalid_tariff"], ids=ids(TARIFF["invalid_tariff"]))
def test_tariff_check_rejects(case: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as info:
        check_tariff(lines_from_json(case["tariff"]))
    assert_error(info.value, case)


# ---------------------------------------------------------------------------------------------
# money.json

MONEY = load("money.json")


@pytest.mark.parametrize("case", MONEY["exponents"], ids=ids(MONEY["exponents"], "currency"))
def test_currency_exponent(case: dict[str, Any]) -> None:
    if "error" in case:
        with pytest.raises(ProtocolError) as info:
            currency_exponent(case["currency"])
        assert_error(info.value, case)
    else:
        assert currency_exponent(case["currency"]) == case["exponent"]


@pytest.mark.parametrize("case", MONEY["parse_decimal"], ids=ids(MONEY["parse_decimal"], "text"))
def test_parse_decimal(case: dict[str, Any]) -> None:
    if "error" in case:
        with pytest.raises(ProtocolError) as info:
            parse_decimal(case["text"], case["scale"])
        assert_error(info.value, case)
    else:
        assert parse_decimal(case["text"], case["scale"]) == int(case["value"])


@pytest.mark.parametrize("case", MONEY["parse_money"], ids=ids(MONEY["parse_money"], "text"))
def test_parse_money(case: dict[str, Any]) -> None:
    if "error" in case:
        with pytest.raises(ProtocolError) as info:
            parse_money(case["text"], case["scale"])
        assert_error(info.value, case)
    else:
        money = parse_money(case["text"], case["scale"])
        assert (money.amount, money.currency, money.scale) == (
            int(case["amount"]),
            case["currency"],
            case["scale"],
        )


@pytest.mark.parametrize(
    "case", MONEY["parse_rail_money"], ids=ids(MONEY["parse_rail_money"], "text")
)
def test_parse_rail_money(case: dict[str, Any]) -> None:
    if "error" in case:
        with pytest.raises(ProtocolError) as info:
            parse_rail_money(case["text"])
        assert_error(info.value, case)
        assert info.value.message == case["message"]
    else:
        money = parse_rail_money(case["text"])
        assert (money.amount, money.currency) == (int(case["minor_units"]), case["currency"])
        assert money.scale == currency_exponent(money.currency)


REFUSALS = [(fn, c) for fn, key in ((parse_decimal, "parse_decimal"), (parse_money, "parse_money"))
            for c in MONEY[key] if "message" in c]


@pytest.mark.parametrize(("fn", "case"), REFUSALS, ids=[repr(c["text"]) for _, c in REFUSALS])
def test_refusal_sentences(fn: Any, case: dict[str, Any]) -> None:
    """The sentence a person is shown for a refused text is part of the grammar (0001 §2.1)."""
    with pytest.raises(ProtocolError) as info:
        fn(case["text"], case["scale"])
    assert info.value.message == case["message"]


@pytest.mark.parametrize(
    "case", MONEY["to_minor_units"], ids=ids(MONEY["to_minor_units"], "amount")
)
def test_to_minor_units(case: dict[str, Any]) -> None:
    minor = to_minor_units(Amount(int(case["amount"])), case["scale"], case["exponent"])
    assert minor == int(case["minor_units"])


@pytest.mark.parametrize("case", MONEY["format_money"], ids=ids(MONEY["format_money"], "text"))
def test_format_money(case: dict[str, Any]) -> None:
    text = format_money(
        int(case["amount"]), case["currency"], case["scale"], precise=case["precise"]
    )
    assert text == case["text"]


@pytest.mark.parametrize("case", MONEY["payouts"], ids=ids(MONEY["payouts"]))
def test_payouts(case: dict[str, Any]) -> None:
    result = cumulative_shares(
        opener_deposit=MinorUnits(int(case["opener_deposit"])),
        peer_deposit=MinorUnits(int(case["peer_deposit"])),
        opener_sent=Amount(int(case["opener_sent"])),
        peer_sent=Amount(int(case["peer_sent"])),
        scale=case["scale"],
        exponent=case["exponent"],
    )
    assert (result.opener, result.peer, result.residual) == (
        int(case["opener_payout"]),
        int(case["peer_payout"]),
        int(case["residual"]),
    )
    # the spec's rule, restated: the payouts add up to the deposits exactly
    assert result.opener + result.peer == int(case["opener_deposit"]) + int(case["peer_deposit"])
    assert 0 <= result.residual < 10 ** (case["scale"] - case["exponent"])


@pytest.mark.parametrize("case", MONEY["arbiter_payouts"], ids=ids(MONEY["arbiter_payouts"]))
def test_arbiter_payouts(case: dict[str, Any]) -> None:
    from dataclasses import replace

    terms = replace(
        _terms(),
        currency=case["currency"],
        scale=case["scale"],
        opener_deposit=MinorUnits(int(case["opener_deposit"])),
        peer_deposit=MinorUnits(int(case["peer_deposit"])),
    )
    opener, peer = Signer.from_label("opener"), Signer.from_label("peer")
    from protocol.messages import EMPTY_SIGNATURE, ChannelProposal

    proposal = ChannelProposal(terms, EMPTY_SIGNATURE).signed_by(opener)
    acceptance = ChannelAcceptance.for_terms(terms, peer)
    state = arb.register(proposal, acceptance, terms.arbiter, now_ms=0)
    state = replace(
        state,
        deposited=(
            MinorUnits(int(case["opener_deposited"])),
            MinorUnits(int(case["peer_deposited"])),
        ),
        opened=case["opened"],
    )
    result = arb.decide_payouts(state, int(case["opener_sent"]), int(case["peer_sent"]))
    assert (result.opener, result.peer, result.residual) == (
        int(case["opener_payout"]),
        int(case["peer_payout"]),
        int(case["residual"]),
    )
    assert result.opener + result.peer == state.held()


# ---------------------------------------------------------------------------------------------
# references.json

REFERENCES = load("references.json")["references"]


@pytest.mark.parametrize(
    "case", REFERENCES, ids=[f"{c['purpose']}-{c['party']}-{c['seq']}" for c in REFERENCES]
)
def test_references(case: dict[str, Any]) -> None:
    cid = bytes.fromhex(case["channel_id"])
    purpose, party, seq = Purpose(case["purpose"]), case["party"], int(case["seq"])
    material = (
        b"meterline/ref\x00"
        + cid
        + purpose.value.encode()
        + bytes([party])
        + seq.to_bytes(8, "big")
    )
    assert material.hex() == case["material"]
    digest = hashlib.sha256(material).digest()
    assert digest.hex() == case["digest"]
    assert bank_reference(cid, purpose, party, seq) == case["bank_reference"]
    assert idempotency_key(cid, purpose, party, seq) == case["idempotency_key"]
    assert case["bank_reference"] == "ML" + digest[:8].hex().upper()
    assert case["idempotency_key"] == "ml-" + digest[8:24].hex()
    assert len(case["bank_reference"]) == 18
    assert len(case["idempotency_key"]) == 35


REFUNDS = load("references.json")["refunds"]


@pytest.mark.parametrize("case", REFUNDS,
                         ids=[f"{c['credit_id']}#{c['attempt']}" for c in REFUNDS])
def test_refund_references(case: dict[str, Any]) -> None:
    material = b"meterline/refund\x00" + case["credit_id"].encode()
    if case["attempt"]:  # a retry after a rejection (specs/0004 §10, ADR 0322)
        material += b"\x00" + bytes([case["attempt"]])
    assert material.hex() == case["material"]
    digest = hashlib.sha256(material).digest()
    assert digest.hex() == case["digest"]
    assert refund_reference(case["credit_id"], case["attempt"]) == case["bank_reference"]
    assert refund_idempotency_key(case["credit_id"], case["attempt"]) == case["idempotency_key"]


# ---------------------------------------------------------------------------------------------
# checkpoints.json

CHECKPOINTS = load("checkpoints.json")["scenarios"]


@pytest.mark.parametrize("case", CHECKPOINTS, ids=[c["name"][:40] for c in CHECKPOINTS])
def test_checkpoint_scenario(case: dict[str, Any]) -> None:
    """The vector's numbers follow from the rules of specs/0004 §7 alone, and every checkpoint's
    payouts plus the close's add up to the deposits: nothing rounded away, nothing paid twice."""
    terms = replace(Simulation.create(tariff=(KM,), opener_deposit=1).terms,
                    currency=case["currency"], scale=case["scale"],
                    opener_deposit=MinorUnits(int(case["opener_deposit"])),
                    peer_deposit=MinorUnits(int(case["peer_deposit"])))
    withdrawn = (MinorUnits(0), MinorUnits(0))
    paid = [0, 0]
    for step in case["checkpoints"]:
        sent = (int(step["opener_sent"]), int(step["peer_sent"]))
        body = Checkpoint(terms.channel_id, step["seq"], Nonce(1), Amount(sent[0]), Nonce(1),
                          Amount(sent[1]), EMPTY_SIGNATURE, EMPTY_SIGNATURE)
        pay = checkpoint_rules.payouts_at(terms, withdrawn, body)
        withdrawn = checkpoint_rules.withdrawn_after(terms, withdrawn, body)
        assert (str(pay[0]), str(pay[1])) == (step["opener_payout"], step["peer_payout"])
        assert (str(withdrawn[0]), str(withdrawn[1])) == (step["opener_withdrawn"],
                                                          step["peer_withdrawn"])
        for party, reference in step["payout_references"].items():
            assert reference == bank_reference(terms.channel_id, Purpose.PAYOUT, int(party),
                                               payout_seq(step["seq"]))
        paid = [paid[0] + pay[0], paid[1] + pay[1]]
    final = case["final"]
    rest = checkpoint_rules.remaining_payouts(terms, (MinorUnits(0), MinorUnits(0)), withdrawn,
                                              int(final["opener_sent"]), int(final["peer_sent"]))
    assert (str(rest.opener), str(rest.peer)) == (final["opener_payout"], final["peer_payout"])
    assert sum(paid) + rest.opener + rest.peer == sum(terms.deposits())
    whole = cumulative_shares(opener_deposit=terms.opener_deposit, peer_deposit=terms.peer_deposit,
                            opener_sent=Amount(int(final["opener_sent"])),
                            peer_sent=Amount(int(final["peer_sent"])), scale=terms.scale,
                            exponent=2)
    assert (paid[0] + rest.opener, paid[1] + rest.peer) == (whole.opener, whole.peer)
