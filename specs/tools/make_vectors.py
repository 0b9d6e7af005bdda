"""Write the JSON test vectors of ``specs/vectors/`` from the reference implementation.

Deterministic: keys come from fixed seeds (``Signer.from_label``: seed = SHA-256(label)), times
and salts are constants, and Ed25519 signatures are deterministic (RFC 8032). Integers of kind
``u64`` and every amount are written as decimal strings; bytes as lowercase hex.
``specs/vectors/README.md`` describes every field.

    python -m specs.tools.make_vectors          # rewrite specs/vectors/*.json
    python -m specs.tools.make_vectors --check  # exit 1 when a file is stale
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import msgpack

from protocol import PROTOCOL_VERSION
from protocol import arbiter as arb
from protocol import channel as ch
from protocol.crypto import (
    BACKENDS,
    DOMAIN_PREFIX,
    Signer,
    ed25519_public,
    ed25519_sign,
    signing_input,
)
from protocol.encoding import MAX_MESSAGE_BYTES, pack
from protocol.errors import DecodeError, ErrorCode, ProtocolError, RemoteProtocolError
from protocol.messages import (
    EMPTY_SIGNATURE,
    BalanceProof,
    BankAccount,
    CallbackAddress,
    ChannelAcceptance,
    ChannelRegistration,
    ChannelTerms,
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
    Receipt,
    Refusal,
    Signed,
    TopUpConfirmation,
    TransferNotice,
    next_usage_digest,
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
from protocol.records import Bin, Kind, ListOf, Message, Nested, Opt, Record, Text, UInt
from protocol.references import (
    Purpose,
    bank_reference,
    idempotency_key,
    payout_seq,
    refund_idempotency_key,
    refund_reference,
)
from protocol.simulation import Simulation
from protocol.tariff import TariffLine, TariffTier, check_tariff, parse_tariff_line
from protocol.types import MAX_AMOUNT, U64_MAX, Amount, ChannelId, MinorUnits, Quantity
from specs.tools import ed25519_edges
from specs.tools.blocks import SPECS

VECTORS = SPECS / "vectors"
T0 = 1_700_000_000_000
"""Every time in the vectors is T0 plus a few milliseconds."""
LABELS = ("opener", "peer", "arbiter")

# ---------------------------------------------------------------------------------------------
# JSON form of wire values


def value_json(kind: Kind, value: Any) -> Any:
    if isinstance(kind, UInt):
        return str(value) if kind.bits > 32 else value
    if isinstance(kind, Bin):
        return bytes(value).hex()
    if isinstance(kind, Text):
        return value
    if isinstance(kind, Opt):
        return None if value is None else value_json(kind.inner, value)
    if isinstance(kind, ListOf):
        return [value_json(kind.inner, v) for v in value]
    if isinstance(kind, Nested):
        return record_json(value)
    raise TypeError(kind)


def record_json(record: Record) -> dict[str, Any]:
    return {name: value_json(kind, getattr(record, name)) for name, kind in record.FIELDS}


def error_json(exc: ProtocolError) -> dict[str, Any]:
    return {"error": exc.code.name, "code": int(exc.code)}


def refusal_json(exc: ProtocolError) -> dict[str, Any]:
    """A refusal of text a person typed: the code and the sentence they are shown."""
    return {**error_json(exc), "message": exc.message}


def attempt(fn: Callable[[], Any]) -> tuple[Any, ProtocolError | None]:
    try:
        return fn(), None
    except ProtocolError as exc:
        return None, exc


# ---------------------------------------------------------------------------------------------
# keys.json

RFC8032 = (
    # RFC 8032 §7.1, TEST 1–3: (secret key, public key, message, signature)
    (
        "TEST 1",
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "TEST 2",
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "TEST 3",
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
)


def keys_vectors() -> dict[str, Any]:
    rfc = []
    for name, seed, public, message, signature in RFC8032:
        # The RFC's values are the expectation; protocol.crypto must reproduce them.
        assert ed25519_public(bytes.fromhex(seed)).hex() == public
        assert ed25519_sign(bytes.fromhex(seed), bytes.fromhex(message)).hex() == signature
        rfc.append(
            {
                "name": name,
                "seed": seed,
                "public_key": public,
                "message": message,
                "signature": signature,
            }
        )
    labelled = []
    for label in (*LABELS, "mallory"):
        signer = Signer.from_label(label)
        labelled.append(
            {"label": label, "seed": signer.seed().hex(), "node_id": signer.node_id.hex()}
        )
    signing = []
    opener = Signer.from_label("opener")
    for domain, body in (
        ("balance-proof", b""),
        ("receipt", pack([5, PROTOCOL_VERSION, bytes(32)])),
        ("terms", b"\x90"),
    ):
        signing.append(
            {
                "signer": "opener",
                "domain": domain,
                "body": body.hex(),
                "signing_input": signing_input(domain, body).hex(),
                "signature": opener.sign(domain, body).hex(),
            }
        )
    return {
        "domain_prefix": DOMAIN_PREFIX.decode(),
        "protocol_version": PROTOCOL_VERSION,
        "rfc8032": rfc,
        "labelled": labelled,
        "signing": signing,
        "edge_cases": edge_case_vectors(),
    }


EDGE_DOMAIN = "balance-proof"


def edge_case_vectors() -> list[dict[str, Any]]:
    """Signatures at the edges of §4's rule, each satisfying the plain equation; every backend
    must give the listed answer (checked here, and again by the tests from the JSON)."""
    out = []
    seed = Signer.from_label("mallory").seed()
    for case in ed25519_edges.edge_cases(seed, lambda body: signing_input(EDGE_DOMAIN, body)):
        public, body, sig = case["public_key"], case["body"], case["signature"]
        message = signing_input(EDGE_DOMAIN, body)
        assert ed25519_edges.equation_holds(public, message, sig), case["name"]
        for backend in BACKENDS.values():
            assert backend.verify(public, message, sig) is case["valid"], (
                case["name"], backend.name)
        vector: dict[str, Any] = {
            "name": case["name"],
            "why": case["why"],
            "public_key": public.hex(),
            "domain": EDGE_DOMAIN,
            "body": body.hex(),
            "signing_input": message.hex(),
            "signature": sig.hex(),
            "equation_holds": True,
            "valid": case["valid"],
        }
        if not case["valid"]:
            vector |= {"error": ErrorCode.BAD_SIGNATURE.name,
                       "code": int(ErrorCode.BAD_SIGNATURE)}
        out.append(vector)
    return out


# ---------------------------------------------------------------------------------------------
# messages.json: one channel's life, message by message


def example_tariff() -> tuple[TariffLine, ...]:
    return (
        parse_tariff_line("km=0.015:1000,0.0123", scale=6, quantity_scale=3),
        parse_tariff_line("message=0.0001", scale=6, quantity_scale=0),
    )


def example_terms() -> ChannelTerms:
    opener, peer, arbiter = (Signer.from_label(label) for label in LABELS)
    return ChannelTerms(
        opener.node_id,
        peer.node_id,
        arbiter.node_id,
        "EUR",
        6,
        MinorUnits(500_000),
        MinorUnits(100_000),
        example_tariff(),
        86_400_000,
        BankAccount("IBAN", "DE89370400440532013000", "Opener GmbH"),
        BankAccount("IBAN", "FR1420041010050500013M02606", "Peer SA"),
        BankAccount("IBAN", "NL91ABNA0417164300", "Escrow Agent BV"),
        bytes(range(16)),
    )


def _only(effects: tuple[Any, ...], kind: type) -> Any:
    (found,) = [e for e in effects if isinstance(e, kind)]
    return found


def example_messages() -> list[tuple[str, Message]]:
    """Every message type, produced by the reference state machines where they produce it."""
    opener, peer, arbiter = (Signer.from_label(label) for label in LABELS)
    terms = example_terms()
    cid = terms.channel_id
    out: list[tuple[str, Message]] = [("channel-terms", terms)]

    proposed = ch.propose(terms, opener, now_ms=T0)
    proposal = _only(proposed.effects, ch.SendProposal).proposal
    accepted = ch.accept(proposal, peer, now_ms=T0 + 1)
    acceptance = _only(accepted.effects, ch.SendAcceptance).acceptance
    out += [("channel-proposal", proposal), ("channel-acceptance", acceptance)]
    out.append(("channel-registration", ChannelRegistration(proposal, acceptance)))
    callback = CallbackAddress(cid, peer.node_id, "https://carrier.example:7721", T0 + 1,
                               EMPTY_SIGNATURE).signed_by(peer)
    out.append(("callback-address", callback))
    out.append(("channel-registration-with-callback",
                ChannelRegistration(proposal, acceptance, callback)))
    states = [
        ch.step(proposed.state, ch.ReceiveAcceptance(acceptance), now_ms=T0 + 2).state,
        accepted.state,
    ]
    escrow = arb.register(proposal, acceptance, arbiter.node_id, now_ms=T0 + 3)
    for party, entry in ((0, "E-0001"), (1, "E-0002")):
        deposited = arb.step(
            escrow,
            arb.ObserveDeposit(
                arbiter,
                party,
                terms.deposits()[party],
                entry,
                bank_reference(cid, Purpose.DEPOSIT, party),
                T0 + 10 + party,
            ),
            now_ms=T0 + 20 + party,
        )
        escrow = deposited.state
        confirmation = _only(deposited.effects, arb.SendFundingConfirmation).confirmation
        if party == 0:
            out.append(("funding-confirmation", confirmation))
        states = [ch.step(s, ch.ReceiveFunding(confirmation), now_ms=T0 + 30).state for s in states]
    assert all(s.phase is ch.Phase.OPEN for s in states)

    def pay(sender: int, quantities: tuple[int, ...], direct: int, ref: str, now: int) -> None:
        signer = (opener, peer)[sender]
        paid = ch.step(
            states[sender],
            ch.ActionPay(signer, tuple(Quantity(q) for q in quantities), Amount(direct), ref),
            now_ms=now,
        )
        states[sender] = paid.state
        proof = _only(paid.effects, ch.SendProof).proof
        states[1 - sender] = ch.step(states[1 - sender], ch.ReceiveProof(proof), now_ms=now).state

    pay(0, (12_500, 3), 0, "SHIPMENT-4711", T0 + 100)
    out.append(("balance-proof-1", states[0].sent.proof))
    pay(0, (1_000_000, 0), 0, "SHIPMENT-4712", T0 + 200)
    out.append(("balance-proof-2-tier-crossing", states[0].sent.proof))
    pay(1, (0, 0), 2_500_000, "CREDIT-NOTE-17", T0 + 300)
    out.append(("balance-proof-direct", states[1].sent.proof))

    acked = ch.step(states[1], ch.ActionAcknowledge(peer), now_ms=T0 + 400)
    states[1] = acked.state
    receipt = _only(acked.effects, ch.SendReceipt).receipt
    out.append(("receipt", receipt))
    states[0] = ch.step(states[0], ch.ReceiveReceipt(receipt), now_ms=T0 + 400).state
    boundary = Receipt(cid, peer.node_id, 2**32, MAX_AMOUNT, EMPTY_SIGNATURE).signed_by(peer)
    out.append(("receipt-amount-boundary", boundary))

    flows = states[0].flows
    checkpoint = Checkpoint(
        cid,
        1,
        flows[0].nonce,
        flows[0].amount,
        flows[1].nonce,
        flows[1].amount,
        EMPTY_SIGNATURE,
        EMPTY_SIGNATURE,
    )
    checkpoint = checkpoint.signed_by(opener, "opener_signature").signed_by(peer, "peer_signature")
    out.append(("checkpoint", checkpoint))
    topup = TopUpConfirmation(cid, peer.node_id, MinorUnits(20_000),
                              bank_reference(cid, Purpose.TOPUP, 1), T0 + 450,
                              EMPTY_SIGNATURE).signed_by(arbiter)
    out.append(("topup-confirmation", topup))
    account = PayoutAccount(cid, peer.node_id,
                            BankAccount("IBAN", "FR7630006000011234567890189", "Carrier SA"),
                            T0 + 460, EMPTY_SIGNATURE).signed_by(peer)
    out.append(("payout-account", account))
    returned = PayoutReturned(cid, peer.node_id, MinorUnits(10_000),
                              bank_reference(cid, Purpose.PAYOUT, 1), "AC04", T0 + 470,
                              EMPTY_SIGNATURE).signed_by(arbiter)
    out.append(("payout-returned", returned))
    transfer = TransferNotice(cid, 1, peer.node_id, MinorUnits(10_000), "rejected", "AC04", 0,
                              bank_reference(cid, Purpose.PAYOUT, 1, payout_seq(1)), T0 + 470,
                              EMPTY_SIGNATURE).signed_by(arbiter)
    out.append(("transfer-notice", transfer))

    # Cooperative close, started by the opener.
    first = ch.step(states[0], ch.ActionClose(opener), now_ms=T0 + 500)
    request = _only(first.effects, ch.SendClose).close
    received = ch.step(states[1], ch.ReceiveClose(request), now_ms=T0 + 500)
    cosigned = ch.step(received.state, ch.ActionClose(peer), now_ms=T0 + 501)
    full = _only(cosigned.effects, ch.SubmitClose).close
    out.append(("cooperative-close", full))
    decided = arb.step(escrow, arb.ReceiveCooperativeClose(full), now_ms=T0 + 600)
    booked = decided.state
    notices = []
    for party in (0, 1):
        step = arb.step(booked, arb.ObservePayoutBooked(arbiter, party, T0 + 700), now_ms=T0 + 701)
        booked = step.state
        notices += [e.notice for e in step.effects if isinstance(e, arb.SendPayoutNotice)]
    out.append(("payout-notice", notices[0]))

    # Unilateral close instead (from the same open state): the peer closes on the opener's proof.
    forced = ch.step(states[1], ch.ActionForceClose(peer), now_ms=T0 + 800)
    claim = _only(forced.effects, ch.SubmitUnilateralClose).claim
    out.append(("unilateral-close", claim))
    disputed = ch.step(states[0], ch.ReceiveUnilateralClose(claim), now_ms=T0 + 801)
    evidence = _only(
        ch.step(disputed.state, ch.ActionSubmitEvidence(opener), now_ms=T0 + 802).effects,
        ch.SubmitEvidence,
    ).evidence
    out.append(("dispute-evidence", evidence))
    notice = DisputeNotice(cid, claim, T0 + 800 + terms.dispute_window_ms, EMPTY_SIGNATURE)
    out.append(("dispute-notice", notice.signed_by(arbiter)))
    empty = DisputeEvidence(cid, peer.node_id, None, EMPTY_SIGNATURE).signed_by(peer)
    out.append(("dispute-evidence-nil", empty))

    status = EscrowStatus(cid, "dispute", bytes(range(16)), (confirmation,),
                          notice.signed_by(arbiter), None, T0 + 900, (transfer,),
                          EMPTY_SIGNATURE).signed_by(arbiter)
    out.append(("escrow-status", status))
    asked = (cid, ChannelId(bytes(32)))
    out.append(("escrow-status-query", EscrowStatusQuery(asked, bytes(range(16)))))
    batch = EscrowStatuses(bytes(range(16)), (replace(status, signature=EMPTY_SIGNATURE),),
                           (asked[1],), (), T0 + 900, EMPTY_SIGNATURE).signed_by(arbiter)
    out.append(("escrow-statuses", batch))
    info = NodeInfo(peer.node_id, "carrier", "node", "https://carrier.example:7721",
                    terms.peer_account, T0, bytes(range(16)), EMPTY_SIGNATURE).signed_by(peer)
    out.append(("node-info", info))
    refused = Refusal.make(peer, RemoteProtocolError(ErrorCode.CLOSE_MISMATCH,
                                                     "the channel closed on another state"),
                           full.encode())
    out.append(("refusal", refused))

    error = Error.from_exception(
        RemoteProtocolError(ErrorCode.NONCE_GAP, "nonce 5 skips past 3"), cid
    )
    out.append(("error", error))
    out.append(("error-no-channel", Error(int(ErrorCode.UNKNOWN_MESSAGE_TYPE), "", b"")))
    return out


def _signer_label(node_id: bytes) -> str:
    for label in LABELS:
        if Signer.from_label(label).node_id == node_id:
            return label
    raise KeyError(node_id.hex())


def _signed_bytes(message: Signed) -> bytes:
    if isinstance(message, ChannelAcceptance):
        return example_terms().encode()
    return message.body()


def _signatures(message: Message) -> list[dict[str, Any]]:
    if not isinstance(message, Signed):
        return []
    terms = example_terms()
    signers = {
        "ChannelProposal": {"signature": terms.opener},
        "ChannelAcceptance": {"signature": terms.peer},
        "FundingConfirmation": {"signature": terms.arbiter},
        "PayoutNotice": {"signature": terms.arbiter},
        "DisputeNotice": {"signature": terms.arbiter},
        "EscrowStatus": {"signature": terms.arbiter},
        "EscrowStatuses": {"signature": terms.arbiter},
        "NodeInfo": {"signature": terms.peer},
        "Refusal": {"signature": terms.peer},
        "Checkpoint": {"opener_signature": terms.opener, "peer_signature": terms.peer},
        "TopUpConfirmation": {"signature": terms.arbiter},
        "PayoutReturned": {"signature": terms.arbiter},
        "TransferNotice": {"signature": terms.arbiter},
        "CooperativeClose": {"opener_signature": terms.opener, "peer_signature": terms.peer},
    }
    by_field = signers.get(type(message).__name__)
    out = []
    for field in message.SIGNATURE_FIELDS:
        if by_field is not None:
            node_id = by_field[field]
        else:  # signed by the node named in the message's first id field after channel_id
            node_id = getattr(message, message.FIELDS[1][0])
        body = _signed_bytes(message)
        out.append(
            {
                "field": field,
                "signer": _signer_label(node_id),
                "domain": message.DOMAIN,
                "signed_bytes": body.hex(),
                "signing_input": signing_input(message.DOMAIN, body).hex(),
            }
        )
    return out


def messages_vectors() -> dict[str, Any]:
    entries = []
    for name, message in example_messages():
        entry: dict[str, Any] = {
            "name": name,
            "type": type(message).__name__,
            "tag": message.TAG,
            "fields": record_json(message),
            "encoded": message.encode().hex(),
            "signatures": _signatures(message),
        }
        if isinstance(message, ChannelTerms):
            entry["channel_id"] = message.channel_id.hex()
        entries.append(entry)
    terms = example_terms()
    digests = []
    previous = terms.channel_id
    for name, message in example_messages():
        if isinstance(message, BalanceProof) and message.sender == terms.opener:
            preimage = pack(
                [
                    message.nonce,
                    message.amount,
                    message.direct_amount,
                    list(message.quantities),
                    message.reference,
                    message.time_ms,
                ]
            )
            digest = next_usage_digest(
                previous,
                nonce=message.nonce,
                amount=message.amount,
                direct_amount=message.direct_amount,
                quantities=message.quantities,
                reference=message.reference,
                time_ms=message.time_ms,
            )
            assert digest == message.usage_digest == hashlib.sha256(previous + preimage).digest()
            digests.append(
                {
                    "proof": name,
                    "previous": previous.hex(),
                    "usage": preimage.hex(),
                    "digest": digest.hex(),
                }
            )
            previous = digest
    return {
        "protocol_version": PROTOCOL_VERSION,
        "domain_prefix": DOMAIN_PREFIX.decode(),
        "messages": entries,
        "usage_digests": digests,
    }


# ---------------------------------------------------------------------------------------------
# tariff.json


def _line(unit: str, quantity_scale: int, *tiers: tuple[int | None, int]) -> TariffLine:
    return TariffLine(
        unit,
        quantity_scale,
        tuple(TariffTier(Quantity(u) if u else None, Amount(p)) for u, p in tiers),  # type: ignore[arg-type]
    )


def tariff_vectors() -> dict[str, Any]:
    km = _line("km", 3, (1_000_000, 15_000), (None, 12_300))
    msg = _line("message", 0, (None, 100))
    hours = _line("container-hour", 2, (2_400, 500_000), (16_800, 450_000), (None, 400_000))
    kwh = _line("kwh", 3, (None, 333))
    cases = [
        ("flat, one whole unit", (msg,), (1,)),
        ("flat, zero", (msg,), (0,)),
        ("first tier, 12.5 km", (km,), (12_500,)),
        ("exactly on the tier bound, 1000 km", (km,), (1_000_000,)),
        ("one metre past the bound", (km,), (1_000_001,)),
        ("across the bound, 1012.5 km", (km,), (1_012_500,)),
        ("three tiers, 20 h", (hours,), (2_000,)),
        ("three tiers, 100 h", (hours,), (10_000,)),
        ("three tiers, 200 h", (hours,), (20_000,)),
        ("floor: 1 Wh at 0.000333 per kWh", (kwh,), (1,)),
        ("floor: 3 Wh", (kwh,), (3,)),
        ("floor on the cumulative total: 3004 Wh", (kwh,), (3_004,)),
        ("two lines", (km, msg), (12_500, 3)),
        ("large cumulative quantity", (km, msg), (10**12, 10**9)),
    ]
    amounts = []
    for name, lines, quantities in cases:
        check_tariff(lines)
        amounts.append(
            {
                "name": name,
                "tariff": [record_json(line) for line in lines],
                "quantities": [str(q) for q in quantities],
                "line_amounts": [
                    str(line.amount(q)) for line, q in zip(lines, quantities, strict=True)
                ],
                "amount": str(
                    sum(line.amount(q) for line, q in zip(lines, quantities, strict=True))
                ),
            }
        )
    parse_cases = [
        ("km=0.0123", 6, 3),
        ("km=0.015:1000,0.0123", 6, 3),
        ("container-hour=5:24,4.5:168,4", 6, 2),
        ("message=0.0001", 6, 0),
        ("kwh=0.21", 2, 3),
    ]
    parsed = [
        {
            "text": text,
            "scale": scale,
            "quantity_scale": qscale,
            "line": record_json(parse_tariff_line(text, scale=scale, quantity_scale=qscale)),
        }
        for text, scale, qscale in parse_cases
    ]
    bad_texts = [
        ("km", 6, 3),
        ("KM=0.01", 6, 3),
        ("km=0.0000001", 6, 3),
        ("km=0.01:1000", 6, 3),
        ("km=0.02:1000,0.01:500,0.005", 6, 3),
        ("km=0.01:1000.0001,0.005", 6, 3),
        ("km=-1", 6, 3),
        ("km=1e3", 6, 3),
        ("km=0,0123", 6, 3),
        ("km=0.015:1,000,0.0123", 6, 3),
    ]
    invalid_texts = []
    for text, scale, qscale in bad_texts:
        _, exc = attempt(
            lambda t=text, s=scale, q=qscale: parse_tariff_line(t, scale=s, quantity_scale=q)
        )  # type: ignore[misc]
        assert exc is not None, text
        invalid_texts.append(
            {"text": text, "scale": scale, "quantity_scale": qscale, **error_json(exc)}
        )
    bad_tariffs = [
        ("no lines", ()),
        ("a unit twice", (msg, msg)),
        ("unbounded tier before the last", (_line("km", 3, (None, 1), (None, 2)),)),
        ("last tier bounded", (_line("km", 3, (1000, 1)),)),
        ("bounds do not rise", (_line("km", 3, (1000, 2), (1000, 1), (None, 1)),)),
        ("quantity scale above 9", (_line("km", 10, (None, 1)),)),
        ("nine tiers", (_line("km", 0, *[(i + 1, 1) for i in range(8)], (None, 1)),)),
    ]
    invalid_tariffs = []
    for name, lines in bad_tariffs:
        _, exc = attempt(lambda ls=lines: check_tariff(ls))  # type: ignore[misc]
        assert exc is not None, name
        invalid_tariffs.append(
            {"name": name, "tariff": [record_json(line) for line in lines], **error_json(exc)}
        )
    return {
        "amounts": amounts,
        "parse": parsed,
        "invalid_text": invalid_texts,
        "invalid_tariff": invalid_tariffs,
    }


# ---------------------------------------------------------------------------------------------
# money.json


def money_vectors() -> dict[str, Any]:
    exponents = []
    for code in (
        "EUR",
        "USD",
        "GBP",
        "CHF",
        "JPY",
        "KRW",
        "KWD",
        "BHD",
        "CLF",
        "XAU",
        "ZZZ",
        "eur",
    ):
        value, exc = attempt(lambda c=code: currency_exponent(c))  # type: ignore[misc]
        exponents.append(
            {"currency": code, **({"exponent": value} if exc is None else error_json(exc))}
        )
    decimals = []
    for text, scale in (
        ("12", 2),
        ("12.5", 2),
        ("0.0123", 6),
        ("12.50", 1),
        ("1.230000", 2),
        ("00012.3", 3),
        ("99999999999999999999", 0),
        ("0.000001", 6),
        ("5000.00", 6),
        ("1.001", 2),
        ("-1", 2),
        ("1e3", 2),
        ("1,5", 2),
        (".5", 2),
        ("5.", 2),
        ("", 2),
        ("1 000", 2),
        ("+1", 2),
        ("1,000.00", 2),
        ("1E3", 0),
        ("012.50", 1),
        ("9223372036854775807", 0),
        ("9223372036854775808", 0),
        ("18446744073709551616", 0),
        ("9223372.036854775807", 12),
        ("9223372.036854775808", 12),
        ("١٢", 2),
        ("  7.10  ", 2),
    ):
        value, exc = attempt(lambda t=text, s=scale: parse_decimal(t, s))  # type: ignore[misc]
        decimals.append(
            {
                "text": text,
                "scale": scale,
                **({"value": str(value)} if exc is None else refusal_json(exc)),
            }
        )
    monies = []
    for text, scale in (
        ("5000.00 EUR", 6),
        ("5000 eur", 6),
        ("12.345 KWD", 6),
        ("1500 JPY", 0),
        ("0.5 JPY", 6),
        ("0.5 JPY", 0),
        ("1.00 EUR", 1),
        ("1.00 EUR", 13),
        ("1.00 XAU", 6),
        ("EUR 1.00", 6),
        ("0.001 EUR", 6),
        ("3.205 EUR", 6),
        ("3.205 EUR", 2),
        ("1,5 EUR", 6),
        ("5000.00", 6),
        ("1.5 bhd", 6),
    ):
        value, exc = attempt(lambda t=text, s=scale: parse_money(t, s))  # type: ignore[misc]
        monies.append(
            {
                "text": text,
                "scale": scale,
                **(
                    {"amount": str(value.amount), "currency": value.currency}
                    if exc is None
                    else refusal_json(exc)
                ),
            }
        )
    rail_monies = []
    for text in ("5000.00 EUR", "5000 eur", "0.001 EUR", "3.205 EUR", "3.200 EUR", "1500 JPY",
                 "0.5 JPY", "12.345 KWD", "12.3456 BHD", "1e3 EUR"):
        value, exc = attempt(lambda t=text: parse_rail_money(t))  # type: ignore[misc]
        rail_monies.append(
            {
                "text": text,
                **(
                    {"minor_units": str(value.amount), "currency": value.currency}
                    if exc is None
                    else refusal_json(exc)
                ),
            }
        )
    minor = []
    for amount, scale, exponent in (
        (153_750, 6, 2),
        (999_999, 6, 2),
        (1_000_000, 6, 2),
        (0, 6, 2),
        (12_345_678, 6, 3),
        (1_999_999, 6, 0),
        (1234, 2, 2),
        (U64_MAX, 12, 0),
    ):
        minor.append(
            {
                "amount": str(amount),
                "scale": scale,
                "exponent": exponent,
                "minor_units": str(to_minor_units(Amount(amount), scale, exponent)),
            }
        )
    formats = []
    for amount, currency, scale, precise in (
        (153_750, "EUR", 6, False),
        (153_750, "EUR", 6, True),
        (5_000_000_000, "EUR", 6, False),
        (12_345_678, "KWD", 6, False),
        (1_999_999, "JPY", 6, False),
        (1_999_999, "JPY", 6, True),
        (7, "EUR", 2, False),
    ):
        formats.append(
            {
                "amount": str(amount),
                "currency": currency,
                "scale": scale,
                "precise": precise,
                "text": format_money(amount, currency, scale, precise=precise),
            }
        )
    payout_cases = [
        ("nothing sent: each gets its deposit", 500_000, 100_000, 0, 0, 6, 2),
        ("opener paid 0.15375 EUR: peer is payee, rounded down", 500_000, 0, 153_750, 0, 6, 2),
        ("both paid, opener is net payee", 500_000, 100_000, 1_000_000, 3_456_789, 6, 2),
        ("exact to the cent: no residual", 500_000, 0, 1_230_000, 0, 6, 2),
        ("payee short of one cent gets 0", 500_000, 0, 9_999, 0, 6, 2),
        ("sent more than deposit + received: floored at 0", 100, 0, 5_000_000, 0, 6, 2),
        ("claims beyond the total: capped", 100, 100, 0, 9_000_000, 6, 2),
        ("JPY, exponent 0", 10_000, 0, 1_234_567_891, 0, 6, 0),
        ("KWD, exponent 3", 5_000, 2_000, 2_345_678, 1_000_001, 6, 3),
        ("scale equals exponent: nothing to round", 1_000, 0, 250, 0, 2, 2),
        ("u64 edge at scale 12", 10_000, 0, 1_234_567_890_123, 0, 12, 2),
    ]
    payouts = []
    for name, od, pd, os_, ps, scale, exponent in payout_cases:
        result = cumulative_shares(
            opener_deposit=MinorUnits(od),
            peer_deposit=MinorUnits(pd),
            opener_sent=Amount(os_),
            peer_sent=Amount(ps),
            scale=scale,
            exponent=exponent,
        )
        assert result.opener + result.peer == od + pd
        payouts.append(
            {
                "name": name,
                "opener_deposit": str(od),
                "peer_deposit": str(pd),
                "opener_sent": str(os_),
                "peer_sent": str(ps),
                "scale": scale,
                "exponent": exponent,
                "opener_payout": str(result.opener),
                "peer_payout": str(result.peer),
                "residual": str(result.residual),
            }
        )
    return {
        "exponents": exponents,
        "parse_decimal": decimals,
        "parse_money": monies,
        "parse_rail_money": rail_monies,
        "to_minor_units": minor,
        "format_money": formats,
        "payouts": payouts,
        "arbiter_payouts": arbiter_payout_vectors(),
    }


def arbiter_state(
    currency: str, scale: int, deposits: tuple[int, int], deposited: tuple[int, int], opened: bool
) -> arb.ArbiterState:
    """An escrow state with the given deposits (the parts decide_payouts reads)."""
    terms = replace(
        example_terms(),
        currency=currency,
        scale=scale,
        opener_deposit=MinorUnits(deposits[0]),
        peer_deposit=MinorUnits(deposits[1]),
    )
    proposal = ch.propose(terms, Signer.from_label("opener"), now_ms=T0).effects[0].proposal  # type: ignore[union-attr]
    acceptance = ChannelAcceptance.for_terms(terms, Signer.from_label("peer"))
    state = arb.register(proposal, acceptance, terms.arbiter, now_ms=T0)
    return replace(
        state,
        phase=arb.ArbiterPhase.OPEN if opened else arb.ArbiterPhase.FUNDING,
        deposited=(MinorUnits(deposited[0]), MinorUnits(deposited[1])),
        opened=opened,
    )


def arbiter_payout_vectors() -> list[dict[str, Any]]:
    cases = [
        (
            "opened, exact deposits",
            "EUR",
            6,
            (500_000, 100_000),
            (500_000, 100_000),
            True,
            153_750,
            0,
        ),
        (
            "opened, opener over-deposited 1.00 EUR: refunded",
            "EUR",
            6,
            (500_000, 0),
            (500_100, 0),
            True,
            153_750,
            0,
        ),
        (
            "never opened, partial deposit: refund what arrived",
            "EUR",
            6,
            (500_000, 100_000),
            (250_000, 0),
            False,
            0,
            0,
        ),
        (
            "never opened, proofs ignored",
            "EUR",
            6,
            (500_000, 100_000),
            (500_000, 0),
            False,
            153_750,
            0,
        ),
        ("JPY, opened", "JPY", 6, (10_000, 0), (10_000, 0), True, 1_234_567_891, 0),
    ]
    out = []
    for name, currency, scale, deposits, deposited, opened, opener_sent, peer_sent in cases:
        state = arbiter_state(currency, scale, deposits, deposited, opened)
        result = arb.decide_payouts(state, opener_sent, peer_sent)
        assert result.opener + result.peer == sum(deposited)
        out.append(
            {
                "name": name,
                "currency": currency,
                "scale": scale,
                "opener_deposit": str(deposits[0]),
                "peer_deposit": str(deposits[1]),
                "opener_deposited": str(deposited[0]),
                "peer_deposited": str(deposited[1]),
                "opened": opened,
                "opener_sent": str(opener_sent),
                "peer_sent": str(peer_sent),
                "opener_payout": str(result.opener),
                "peer_payout": str(result.peer),
                "residual": str(result.residual),
            }
        )
    return out


# ---------------------------------------------------------------------------------------------
# references.json


def references_vectors() -> dict[str, Any]:
    cid = example_terms().channel_id
    out = []
    for purpose, party, seq in (
        (Purpose.DEPOSIT, 0, 0),
        (Purpose.DEPOSIT, 1, 0),
        (Purpose.PAYOUT, 0, 0),
        (Purpose.PAYOUT, 1, 0),
        (Purpose.TOPUP, 0, 1),
        (Purpose.TOPUP, 1, 2**64 - 1),
        (Purpose.TOPUP, 0, 0),
        (Purpose.PAYOUT, 1, payout_seq(1)),
        (Purpose.PAYOUT, 1, payout_seq(365)),
        (Purpose.PAYOUT, 1, payout_seq(3, 1)),
        (Purpose.PAYOUT, 0, payout_seq(0, 2)),
    ):
        material = (
            b"meterline/ref\x00"
            + cid
            + purpose.value.encode()
            + bytes([party])
            + seq.to_bytes(8, "big")
        )
        digest = hashlib.sha256(material).digest()
        reference = bank_reference(cid, purpose, party, seq)
        key = idempotency_key(cid, purpose, party, seq)
        assert reference == "ML" + digest[:8].hex().upper()
        assert key == "ml-" + digest[8:24].hex()
        out.append(
            {
                "channel_id": cid.hex(),
                "purpose": purpose.value,
                "party": party,
                "seq": str(seq),
                "material": material.hex(),
                "digest": digest.hex(),
                "bank_reference": reference,
                "idempotency_key": key,
            }
        )
    refunds = []
    for credit_id, attempt in (("2026-12-01-000042", 0), ("NTRY/4711", 0),
                               ("2026-12-01-000042", 1), ("2026-12-01-000042", 15)):
        material = b"meterline/refund\x00" + credit_id.encode()
        if attempt:  # a retry after the bank rejected the refund (ADR 0322)
            material += b"\x00" + bytes([attempt])
        digest = hashlib.sha256(material).digest()
        assert refund_reference(credit_id, attempt) == "ML" + digest[:8].hex().upper()
        assert refund_idempotency_key(credit_id, attempt) == "ml-" + digest[8:24].hex()
        refunds.append({"credit_id": credit_id, "attempt": attempt, "material": material.hex(),
                        "digest": digest.hex(),
                        "bank_reference": refund_reference(credit_id, attempt),
                        "idempotency_key": refund_idempotency_key(credit_id, attempt)})
    return {"references": out, "refunds": refunds}


# ---------------------------------------------------------------------------------------------
# checkpoints.json


def checkpoint_vectors() -> dict[str, Any]:
    """Scenarios run through the machines: per checkpoint the co-signed totals, what each party
    may have withdrawn in total, and what the arbiter pays; then the final close."""
    km = TariffLine("km", 3, (TariffTier(None, Amount(12_300)),))
    scenarios = []
    for name, deposits, days in (
        ("three days, the opener pays 7 trips of 1.337 km a day", (10_000, 0),
         [[(0, 1_337, 0)] * 7] * 3),
        ("flow reverses: the peer is paid, then pays most of it back", (10_000, 5_000),
         [[(0, 0, 12_345_678)], [(1, 0, 10_000_000)], [(0, 0, 1)]]),
    ):
        sim = Simulation.create(tariff=(km,), opener_deposit=deposits[0],
                                peer_deposit=deposits[1])
        sim.open()
        steps = []
        for day in days:
            for sender, metres, direct in day:
                sim.pay(sender, (metres,), direct=direct)
            decided = sim.checkpoint(0)
            assert sim.escrow is not None
            taken = sim.escrow.checkpoint
            assert taken is not None
            paid = {e.party: e for e in decided.effects if isinstance(e, arb.SubmitPayout)}
            steps.append({
                "seq": taken.seq,
                "opener_sent": str(taken.opener_amount),
                "peer_sent": str(taken.peer_amount),
                "opener_withdrawn": str(sim.escrow.withdrawn[0]),
                "peer_withdrawn": str(sim.escrow.withdrawn[1]),
                "opener_payout": str(paid[0].amount if 0 in paid else 0),
                "peer_payout": str(paid[1].amount if 1 in paid else 0),
                "payout_references": {str(p): e.reference for p, e in sorted(paid.items())},
            })
            sim.book(decided)
        final = sim.close(0)
        payouts = final.state.payouts
        assert payouts is not None
        scenarios.append({
            "name": name,
            "currency": "EUR",
            "scale": 6,
            "opener_deposit": str(deposits[0]),
            "peer_deposit": str(deposits[1]),
            "checkpoints": steps,
            "final": {
                "opener_sent": str(sim.states[0].flows[0].amount),
                "peer_sent": str(sim.states[0].flows[1].amount),
                "opener_payout": str(payouts.opener),
                "peer_payout": str(payouts.peer),
            },
        })
    return {"scenarios": scenarios}


# ---------------------------------------------------------------------------------------------
# decode-errors.json


def decode_error_inputs() -> list[tuple[str, str, bytes]]:
    """(name, decoder, bytes): decoder ``any`` is decode_message, else ``Type.decode``."""
    proof = next(m for n, m in example_messages() if n == "balance-proof-1")
    receipt = next(m for n, m in example_messages() if n == "receipt")
    terms = example_terms()
    good = receipt.to_wire()

    def with_field(index: int, value: object) -> bytes:
        wire = list(good)
        wire[index] = value
        return pack(wire)

    raw_proof = proof.encode()
    return [
        ("empty input", "any", b""),
        ("reserved byte 0xc1", "any", b"\xc1"),
        ("truncated array", "any", b"\x93\x05\x01"),
        ("top level is an integer", "any", b"\x05"),
        ("top level is nil", "any", b"\xc0"),
        ("empty array", "any", b"\x90"),
        ("tag only", "any", b"\x91\x05"),
        ("invalid UTF-8 in a string", "any", b"\x93\x0b\x01\xa1\xff"),
        ("a value at depth 9 in a registration otherwise valid", "any", _deep_registration(2)),
        ("a value at depth 8 where an integer belongs (not too deep)", "any",
         _deep_registration(1)),
        ("unknown tag 99", "any", pack([99, 1])),
        ("tag 0 is not a message", "any", pack([0, 1])),
        ("tag is a string", "any", pack(["receipt", 1, b"", 0])),
        ("nested terms with an unknown tag", "any", pack([1, 1, [17, 1], b""])),
        ("nested terms whose tag is an array", "any", pack([1, 1, [[16], 1], b""])),
        (
            "nested proof with another message's tag",
            "any",
            pack([9, 1, bytes(32), bytes(32), [5, 1], b""]),
        ),
        ("version 2", "any", with_field(1, 2)),
        ("version 0", "any", with_field(1, 0)),
        ("receipt without its signature", "any", pack(good[:-1])),
        ("receipt with an extra field", "any", pack([*good, b""])),
        ("channel id of 31 bytes", "any", with_field(2, bytes(31))),
        ("nonce is a string", "any", with_field(4, "1")),
        ("amount is bytes", "any", with_field(5, b"\x01")),
        ("signature of 63 bytes", "any", with_field(6, bytes(63))),
        ("a Receipt where a BalanceProof is expected", "BalanceProof", receipt.encode()),
        (
            "currency in lower case",
            "any",
            pack([*terms.to_wire()[:3], *terms.to_wire()[3:5], "eur", *terms.to_wire()[6:]]),
        ),
        ("scale does not fit u8", "any", pack([*terms.to_wire()[:6], 256, *terms.to_wire()[7:]])),
        ("salt of 15 bytes", "any", pack([*terms.to_wire()[:-1], bytes(15)])),
        ("no tariff line", "any", pack([*terms.to_wire()[:9], [], *terms.to_wire()[10:]])),
        ("error code does not fit u16", "any", pack([11, 1, 65_536, "", b""])),
        (
            "reference with a control character",
            "any",
            pack([*raw_wire(proof)[:9], "A\nB", *raw_wire(proof)[10:]]),
        ),
        (
            "reference with a bidirectional override",
            "any",
            pack([*raw_wire(proof)[:9], "INV-\u202e71", *raw_wire(proof)[10:]]),
        ),
        ("boolean field", "any", b"\x93\x0b\x01\xc3"),
        ("negative integer", "any", b"\x93\x05\x01\xff"),
        ("float", "any", b"\x92\x05\xca\x3f\x80\x00\x00"),
        ("empty map", "any", b"\x92\x05\x80"),
        ("non-empty map", "any", b"\x81\x01\x02"),
        ("extension type", "any", b"\x92\x05\xd4\x01\x00"),
        ("trailing byte", "any", raw_proof + b"\x00"),
        ("two messages back to back", "any", receipt.encode() + receipt.encode()),
        ("nonce as uint8 where fixint fits", "any", _non_canonical_nonce(receipt.encode())),
        ("array16 header for 7 items", "any", b"\xdc\x00\x07" + receipt.encode()[1:]),
        ("str8 header for a short string", "any", b"\x95\x0b\x01\x01\xd9\x01x\xc4\x00"),
        ("bin16 header for a 32-byte id", "any", _bin16_channel_id(receipt.encode())),
        ("string over 256 bytes", "any", pack([11, 1, 1, "x" * 257, b""])),
        ("bytes over 64", "any", pack([11, 1, 1, "", bytes(65)])),
        ("array over 64 items", "any", pack([11, 1, *([0] * 63)])),
        ("message over 16384 bytes", "any", b"\x91" + b"\xc0" * MAX_MESSAGE_BYTES),
    ]


def _deep_registration(levels: int) -> bytes:
    """The example ChannelRegistration, the deepest message there is (its first tariff tier's
    `up_to` sits at depth 7), with that `up_to` wrapped in `levels` arrays: at 2 the integer is
    at depth 9, refused by the depth rule alone (MALFORMED); at 1 it is at depth 8, which the
    depth rule allows and the field's kind refuses (INVALID_FIELD)."""
    wire = raw_wire(next(m for n, m in example_messages() if n == "channel-registration"))
    tier = wire[2][2][9][0][2][0]
    for _ in range(levels):
        tier[0] = [tier[0]]
    return pack(wire)


def raw_wire(message: Message) -> list[Any]:
    out: list[Any] = msgpack.unpackb(message.encode(), raw=False)
    return out


def _non_canonical_nonce(encoded: bytes) -> bytes:
    # Receipt: 0x97 0x05 0x01 0xc4 0x20 <32> 0xc4 0x20 <32> <nonce fixint> ...
    head = 1 + 1 + 1 + 34 + 34
    assert encoded[head] < 0x80
    return encoded[:head] + b"\xcc" + encoded[head : head + 1] + encoded[head + 1 :]


def _bin16_channel_id(encoded: bytes) -> bytes:
    assert encoded[3:5] == b"\xc4\x20"
    return encoded[:3] + b"\xc5\x00\x20" + encoded[5:]


def decode_error_vectors() -> dict[str, Any]:
    from protocol.records import decode_message, message_types

    by_name = {cls.__name__: cls for cls in message_types().values()}
    out = []
    for name, decoder, data in decode_error_inputs():
        try:
            if decoder == "any":
                decode_message(data)
            else:
                by_name[decoder].decode(data)
        except DecodeError as exc:
            out.append({"name": name, "decoder": decoder, "hex": data.hex(), **error_json(exc)})
            continue
        raise AssertionError(f"{name}: decoded")
    return {"max_message_bytes": MAX_MESSAGE_BYTES, "cases": out}


# ---------------------------------------------------------------------------------------------

FILES: dict[str, Callable[[], dict[str, Any]]] = {
    "keys.json": keys_vectors,
    "messages.json": messages_vectors,
    "tariff.json": tariff_vectors,
    "money.json": money_vectors,
    "references.json": references_vectors,
    "checkpoints.json": checkpoint_vectors,
    "decode-errors.json": decode_error_vectors,
    "lifecycles.json": lambda: _lifecycles(),
    "conformance.json": lambda: _conformance(),
}


def _conformance() -> dict[str, Any]:
    from specs.tools.make_conformance import conformance_vectors  # it builds on this module

    return conformance_vectors()


def _lifecycles() -> dict[str, Any]:
    from specs.tools.make_lifecycles import lifecycles_vectors  # it builds on this module

    return lifecycles_vectors()


def render(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def generate() -> dict[str, str]:
    return {name: render(make()) for name, make in FILES.items()}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    VECTORS.mkdir(exist_ok=True)
    for name, text in generate().items():
        path = VECTORS / name
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(name)
        if not check:
            path.write_text(text, encoding="utf-8")
    if check and stale:
        print(f"stale: {', '.join(stale)}; run python -m specs.tools.make_vectors", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
