"""The vectors a live node is held to over HTTP (``specs/vectors/conformance.json``).

The node under test plays the *peer* of the vectors (key label ``peer``); the runner
(``specs/tools/conformance.py``) plays the opener and the arbiter. Every exchange is one HTTP
request with its exact body and what must come back: the status, and either the exact answer
bytes (the node's signatures are deterministic, so an acceptance, a receipt or a co-signed close
has one right encoding), a signed `Refusal` with its code, an unsigned `Error` with its code, or
an empty 202/204. The expected answers come from the reference machines of ``protocol/``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from protocol import arbiter as arb
from protocol import channel as ch
from protocol.encoding import MAX_MESSAGE_BYTES, pack
from protocol.errors import ProtocolError
from protocol.messages import (
    EMPTY_SIGNATURE,
    BalanceProof,
    ChannelProposal,
    DisputeNotice,
    FundingConfirmation,
    PayoutNotice,
    UnilateralClose,
)
from protocol.records import Message
from protocol.tariff import TariffLine
from protocol.types import Amount, MinorUnits, Quantity, Signature
from specs.tools.make_lifecycles import ARBITER, MALLORY, OPENER, PEER, only, resigned, world
from specs.tools.make_vectors import T0, example_terms, raw_wire

CHALLENGE = bytes(range(100, 116))
MAX_BODY_BYTES = 1024 * 1024
"""The largest receiver limit 0005 §2 allows: a body above it is refused with 413 anywhere."""


def conformance_terms() -> Any:
    """The example terms with no deposit from the peer (the node under test need not pay into
    escrow to be tested) and a salt of their own."""
    return replace(example_terms(), peer_deposit=MinorUnits(0), salt=bytes(range(16, 32)))


def _account(account: Any) -> dict[str, str]:
    return {"scheme": account.scheme, "identification": account.identification,
            "name": account.name}


REFERENCE: dict[str, Callable[[Any, bytes], object]] = {
    "/p2p/proposal": lambda _, b: ch.accept(ChannelProposal.decode(b), PEER, now_ms=T0),
    "/p2p/proof": lambda s, b: ch.step(s, ch.ReceiveProof(BalanceProof.decode(b)), now_ms=T0),
    "/p2p/funding": lambda s, b: ch.step(s, ch.ReceiveFunding(FundingConfirmation.decode(b)),
                                         now_ms=T0),
    "/p2p/dispute": lambda s, b: ch.step(s, ch.ReceiveDisputeNotice(DisputeNotice.decode(b)),
                                         now_ms=T0),
    "/p2p/payout": lambda s, b: ch.step(s, ch.ReceivePayout(PayoutNotice.decode(b)), now_ms=T0),
}
"""What the reference machine of the node under test does with a body POSTed to a path."""


class Exchanges:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.state: ch.ChannelState | None = None
        """The node's channel as the reference machine has it, once it has one."""

    def add(self, name: str, method: str, path: str, body: bytes | Message | None,
            status: int, answer: dict[str, Any] | None = None) -> None:
        data = body.encode() if isinstance(body, Message) else body
        entry: dict[str, Any] = {"name": name, "method": method, "path": path}
        if data is not None:
            entry["body"] = data.hex()
        entry["status"] = status
        entry["answer"] = answer or {"type": "empty"}
        self.items.append(entry)

    def _judge(self, name: str, path: str, data: bytes, code: str) -> None:
        judge = REFERENCE.get(path)
        if judge is None or (self.state is None and path != "/p2p/proposal"):
            return
        try:
            judge(self.state, data)
        except ProtocolError as exc:
            if exc.code.name != code:
                raise AssertionError(f"{name}: the reference says {exc.code.name}") from None
        else:
            raise AssertionError(f"{name}: the reference machine accepts it")

    def stream(self, name: str, path: str,
               frames: list[tuple[bytes, dict[str, Any], list[Message]]]) -> None:
        """A WebSocket exchange: each binary frame sent, then the frame that must come back;
        frames equal to one of the `skip` messages (the latest receipt repeated, which a
        receiver MAY send, 0003 §5.3) may come before it. An `Error` a frame must get is the
        reference machine's code for that proof (`self.state`: before the stream)."""
        for data, answer, _ in frames:
            if answer["type"] == "Error":
                self._judge(name, "/p2p/proof", data, answer["code"])
        self.items.append({"name": name, "method": "WEBSOCKET", "path": path, "frames": [
            {"send": data.hex(), "answer": answer, "skip": [m.encode().hex() for m in skip]}
            for data, answer, skip in frames]})

    def refused(self, name: str, path: str, body: bytes | Message, code: str,
                status: int = 400) -> None:
        """A refusal. Where the reference machine decides it (a proposal; a message on the
        channel once the node holds it: `self.state`), the machine must fail with `code`
        too: the vectors never state a code that protocol/ does not give."""
        data = body.encode() if isinstance(body, Message) else body
        self._judge(name, path, data, code)
        self.add(name, "POST", path, body, status, {"type": "Refusal", "code": code})

    def exact(self, name: str, path: str, body: bytes | Message | None, answer: Message,
              method: str = "POST") -> None:
        self.add(name, method, path, body, 200,
                 {"type": type(answer).__name__, "hex": answer.encode().hex()})


def conformance_vectors() -> dict[str, Any]:
    terms = conformance_terms()
    w = world(terms)
    cid = terms.channel_id.hex()
    p1, p2, p3 = w.proofs
    x = Exchanges()
    x.add("info", "GET", "/p2p/info", None, 200, {"type": "json", "json": {
        "node_id": PEER.node_id.hex(), "role": "node", "protocol_version": 1,
        "account": _account(terms.peer_account)}})
    x.add("identity", "GET", f"/p2p/identity?challenge={CHALLENGE.hex()}", None, 200,
          {"type": "NodeInfo", "node_id": PEER.node_id.hex(), "challenge": CHALLENGE.hex(),
           "role": "node", "account": _account(terms.peer_account)})
    for name, query in (("a challenge of 15 bytes", "?challenge=" + "ab" * 15),
                        ("a challenge that is not hex", "?challenge=" + "zz" * 16),
                        ("no challenge", "")):
        x.add(f"identity refuses {name}", "GET", f"/p2p/identity{query}", None, 400,
              {"type": "Error", "code": "INVALID_FIELD"})

    # decoding comes first, and a body the node kept is refused signed, over its bytes
    x.refused("an empty body", "/p2p/proposal", b"", "MALFORMED")
    x.refused("trailing bytes", "/p2p/proposal", w.proposal.encode() + b"\x00", "TRAILING_BYTES")
    x.refused("a receipt where a proposal belongs", "/p2p/proposal", w.peer_receipt,
              "INVALID_FIELD")
    x.refused("an unknown message type", "/p2p/proposal", bytes([0x92, 99, 1]),
              "UNKNOWN_MESSAGE_TYPE")
    x.refused("a message over 16 384 bytes (under the body limit)", "/p2p/proposal",
              b"\x91" + b"\xc0" * MAX_MESSAGE_BYTES, "TOO_LARGE")
    x.add("a body over any receiver's limit", "POST", "/p2p/proposal",
          bytes(MAX_BODY_BYTES + 1), 413, {"type": "Error", "code": "TOO_LARGE"})
    x.refused("a 63-byte signature is a decoding error", "/p2p/proposal",
              pack([*raw_wire(w.proposal)[:-1], bytes(63)]),
              "INVALID_FIELD")

    # proposals: addressing, then the signature, then the terms
    km = terms.tariff[0]
    for name, bad, signer, code in (
        ("a proposal for another peer", replace(terms, peer=MALLORY.node_id), OPENER,
         "NOT_A_PARTY"),
        ("a proposal not signed by its opener", terms, MALLORY, "BAD_SIGNATURE"),
        ("bad signature before invalid terms", replace(terms, arbiter=terms.opener), MALLORY,
         "BAD_SIGNATURE"),
        ("invalid terms: the opener is the arbiter", replace(terms, arbiter=terms.opener),
         OPENER, "INVALID_TERMS"),
        ("invalid terms: a dispute window under 1 s", replace(terms, dispute_window_ms=999),
         OPENER, "INVALID_TERMS"),
        ("an invalid tariff: one unit twice",
         replace(terms, tariff=(km, TariffLine(km.unit, 0, terms.tariff[1].tiers))), OPENER,
         "INVALID_TARIFF"),
    ):
        x.refused(name, "/p2p/proposal", ChannelProposal(bad, EMPTY_SIGNATURE).signed_by(signer),
                  code)
    x.refused("a proof on a channel the node does not hold", "/p2p/proof", p1,
              "UNKNOWN_CHANNEL", 404)
    x.add("the receipt of a channel the node does not hold", "GET",
          f"/p2p/channels/{cid}/receipt", None, 404, {"type": "Error", "code": "UNKNOWN_CHANNEL"})

    # the channel's life, the node co-signing and answering as the peer
    x.exact("the proposal is accepted at once (the opener is allow-listed)", "/p2p/proposal",
            w.proposal, w.acceptance)
    x.exact("the same proposal again: the same acceptance", "/p2p/proposal", w.proposal,
            w.acceptance)
    x.state = ch.accept(w.proposal, PEER, now_ms=T0).state
    x.refused("a proof before the deposits are confirmed", "/p2p/proof", p1, "INVALID_STATE")
    x.refused("a funding confirmation not signed by the arbiter", "/p2p/funding",
              resigned(w.funding[0], MALLORY), "BAD_SIGNATURE")
    x.add("the arbiter confirms the opener's deposit", "POST", "/p2p/funding", w.funding[0], 204)
    x.add("the same confirmation again", "POST", "/p2p/funding", w.funding[0], 204)
    x.add("no receipt yet", "GET", f"/p2p/channels/{cid}/receipt", None, 204)

    peer = x.state
    for conf in w.funding:
        peer = ch.step(peer, ch.ReceiveFunding(conf), now_ms=T0).state
    x.state = peer
    x.refused("a proof with a bad signature", "/p2p/proof",
              replace(p1, signature=Signature(p1.signature[:-1] + bytes([p1.signature[-1] ^ 1]))),
              "BAD_SIGNATURE")
    x.refused("a proof that skips a nonce", "/p2p/proof", p2, "NONCE_GAP")
    x.refused("a proof whose amount is not the tariff's", "/p2p/proof",
              resigned(p1, OPENER, amount=p1.amount + 1), "TARIFF_MISMATCH")
    over = ch.build_proof(w.opener, ch.ActionPay(OPENER, (Quantity(0), Quantity(0)),
                                                 Amount(w.opener.capacity(0) + 1)), now_ms=T0 + 90)
    x.refused("a proof over the opener's capacity", "/p2p/proof", over, "CAPACITY_EXCEEDED")
    x.refused("a proof by someone who is no party", "/p2p/proof",
              resigned(p1, MALLORY, sender=MALLORY.node_id), "NOT_A_PARTY")
    receipt = None
    for i, proof in enumerate((p1, p2, p3)):
        peer = ch.step(peer, ch.ReceiveProof(proof), now_ms=T0).state
        t = ch.step(peer, ch.ActionAcknowledge(PEER), now_ms=T0)
        peer, receipt = t.state, only(t.effects, ch.SendReceipt).receipt
        x.state = peer
        x.exact(f"proof {i + 1}: its receipt", "/p2p/proof", proof, receipt)
    assert receipt is not None
    x.exact("the same proof again: the same receipt", "/p2p/proof", p3, receipt)
    x.refused("an older proof", "/p2p/proof", p1, "NONCE_REPLAY")
    x.exact("the latest receipt", f"/p2p/channels/{cid}/receipt", None, receipt, method="GET")

    # the update stream (0005 §5): a proof in, its receipt out; a bad frame, an Error frame
    opener = replace(w.opener, flows=(peer.flows[0], w.opener.flows[1]))
    p4 = ch.build_proof(opener, ch.ActionPay(OPENER, (Quantity(500), Quantity(1)), Amount(0),
                                             "SHIPMENT-4714"), now_ms=T0 + 350)
    bad4 = replace(p4, signature=Signature(p4.signature[:-1] + bytes([p4.signature[-1] ^ 1])))
    latest = receipt
    peer = ch.step(peer, ch.ReceiveProof(p4), now_ms=T0).state
    t = ch.step(peer, ch.ActionAcknowledge(PEER), now_ms=T0)
    peer, receipt = t.state, only(t.effects, ch.SendReceipt).receipt
    x.stream("the stream: a bad frame, then the proof", f"/p2p/channels/{cid}/stream", [
        (bad4.encode(), {"type": "Error", "code": "BAD_SIGNATURE"}, [latest]),
        (b"\x91\x04", {"type": "Error", "code": "MALFORMED"}, [latest]),
        (p4.encode(), {"type": "Receipt", "hex": receipt.encode().hex()}, [latest]),
    ])
    x.state = peer
    x.exact("after the stream, the latest receipt", f"/p2p/channels/{cid}/receipt", None,
            receipt, method="GET")

    forged = DisputeNotice(terms.channel_id, UnilateralClose(
        terms.channel_id, OPENER.node_id, None, EMPTY_SIGNATURE).signed_by(OPENER), T0,
        EMPTY_SIGNATURE).signed_by(MALLORY)
    x.refused("a dispute notice not signed by the arbiter", "/p2p/dispute", forged,
              "BAD_SIGNATURE")
    request = _opener_close(w, peer)
    full = request.signed_by(PEER, "peer_signature")
    t = ch.step(ch.step(peer, ch.ReceiveClose(request), now_ms=T0).state, ch.ActionClose(PEER),
                now_ms=T0)
    assert only(t.effects, ch.SubmitClose).close == full
    x.state = t.state
    x.exact("the opener's close: co-signed at once (0003 §7)", "/p2p/close", request, full)
    x.exact("the same close again: the same answer", "/p2p/close", request, full)
    payout = _payout(w, full)
    x.refused("a payout notice that does not add up", "/p2p/payout",
              resigned(payout, ARBITER, peer_payout=payout.peer_payout + 1), "DEPOSIT_MISMATCH")
    x.add("the arbiter's payout notice", "POST", "/p2p/payout", payout, 204)
    x.add("the same notice again", "POST", "/p2p/payout", payout, 204)
    return {
        "node": {"label": "peer", "node_id": PEER.node_id.hex(), "role": "node",
                 "account": _account(terms.peer_account)},
        "opener": {"label": "opener", "node_id": OPENER.node_id.hex(),
                   "account": _account(terms.opener_account)},
        "arbiter": {"label": "arbiter", "node_id": ARBITER.node_id.hex(),
                    "account": _account(terms.escrow_account)},
        "channel_id": cid,
        "max_body_bytes": MAX_BODY_BYTES,
        "exchanges": x.items,
        "pushes": [
            {"to": "arbiter", "path": "/p2p/register", "type": "ChannelRegistration",
             "proposal": w.proposal.encode().hex(), "acceptance": w.acceptance.encode().hex()},
            {"to": "arbiter", "path": "/p2p/close", "type": "CooperativeClose",
             "hex": full.encode().hex()},
            {"to": "opener", "path": "/p2p/close", "type": "CooperativeClose",
             "hex": full.encode().hex()},
        ],
    }


def _opener_close(w: Any, peer: ch.ChannelState) -> Any:
    """The opener's close request on the state after its three proofs (no peer payment)."""
    opener = replace(w.opener, flows=(peer.flows[0], w.opener.flows[1]))
    return only(ch.step(opener, ch.ActionClose(OPENER), now_ms=T0).effects, ch.SendClose).close


def _payout(w: Any, close: Any) -> Any:
    """The arbiter's notice once the payouts of `close` are booked."""
    t = arb.step(w.escrow, arb.ReceiveCooperativeClose(close), now_ms=T0 + 600)
    for party in (0, 1):
        t = arb.step(t.state, arb.ObservePayoutBooked(ARBITER, party, T0 + 700), now_ms=T0 + 701)
    return only(t.effects, arb.SendPayoutNotice).notice
