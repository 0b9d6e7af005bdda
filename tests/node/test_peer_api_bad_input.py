"""Bad input on the peer API of a real node (``node.app.running`` on loopback ports).

The node under test holds key ``peer`` of two OPEN channels (A and B) that the pure simulation
opened and funded; their states were committed into the node's SQLite database before it
started. The test plays the opener: it signs proofs with the opener's key and sends them over
HTTP and the WebSocket stream exactly as a peer node would. Every bad input must be answered with
the spec's code — a POST with a ``Refusal`` the node signed over the exact request bytes, a frame
or an over-limit body with an ``Error`` — and must change nothing: the admin API's view, the
database rows and the in-memory state are compared before and after.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
from sqlalchemy import select

from node.storage.models import Channel, HeldProposal, OutgoingProof, Usage
from node.storage.models import Outbox as OutboxRow
from protocol import PROTOCOL_VERSION
from protocol import channel as ch
from protocol.crypto import Signer, signing_input
from protocol.encoding import pack
from protocol.errors import ErrorCode
from protocol.messages import (
    EMPTY_SIGNATURE,
    BalanceProof,
    CooperativeClose,
    Error,
    FundingConfirmation,
    PayoutNotice,
    Receipt,
    Refusal,
)
from protocol.records import Message, decode_message
from protocol.simulation import Simulation
from protocol.types import Amount, Nonce, Quantity
from specs.tools import ed25519_edges as edges

from .conftest import Payer, RunningNode, free_port, make_config, open_sim, seed

MSGPACK = {"Content-Type": "application/msgpack"}
MALLORY = Signer.from_label("mallory")


@dataclasses.dataclass
class World:
    node: RunningNode
    a: Simulation
    b: Simulation
    payer: Payer
    """The opener of channel A, after one accepted proof (nonce 1) and its receipt."""
    first: BalanceProof
    receipt: Receipt

    @property
    def cid(self) -> str:
        return self.a.terms.channel_id.hex()

    @property
    def cid_b(self) -> str:
        return self.b.terms.channel_id.hex()

    def next_proof(
        self,
        quantities: tuple[int, ...] = (1_000, 1),
        *,
        direct: int = 0,
        reference: str = "",
        signer: Signer | None = None,
        state: ch.ChannelState | None = None,
    ) -> BalanceProof:
        """The opener's next proof for channel A (not applied to the payer), signed by
        `signer` (the opener by default), built without any validity checks."""
        base = state or self.payer.state
        event = ch.ActionPay(
            signer or self.a.opener,
            tuple(Quantity(q) for q in quantities),
            Amount(direct),
            reference,
        )
        return ch.build_proof(base, event, now_ms=self.payer.now_ms + 1)

    async def post(self, path: str, body: bytes) -> tuple[int, str, Message | None]:
        async with self.node.http.post(
            self.node.peer_url + path, data=body, headers=MSGPACK
        ) as resp:
            data = await resp.read()
            return resp.status, resp.content_type, decode_message(data) if data else None

    async def snapshot(self) -> dict[str, Any]:
        """Everything a bad input could have changed."""
        node = self.node.node
        async with node.ctx.db() as session:
            rows = {
                r.id: (r.phase, r.state, r.updated_ms)
                for r in await session.scalars(select(Channel))
            }
            usage = sorted(
                (
                    u.channel_id,
                    u.sender,
                    u.unit,
                    u.reference,
                    u.bucket_ms,
                    u.quantity,
                    u.amount,
                    u.updates,
                )
                for u in await session.scalars(select(Usage))
            )
            outbox = [
                (o.kind, o.target, o.payload) for o in await session.scalars(select(OutboxRow))
            ]
            extra = [
                len((await session.scalars(select(m))).all()) for m in (OutgoingProof, HeldProposal)
            ]
        admin = {}
        for cid in (self.cid, self.cid_b):
            status, admin[cid] = await self.node.admin("GET", f"/api/channels/{cid}")
            assert status == 200
        return {
            "rows": rows,
            "usage": usage,
            "outbox": outbox,
            "extra": extra,
            "admin": admin,
            "memory": dict(node.channels.states),
        }


@pytest.fixture
async def world(tmp_path: Path, start_node: Callable[..., Any]) -> World:
    a = open_sim(salt=b"\x0a" * 16)
    b = open_sim(salt=b"\x0b" * 16)
    config = make_config(tmp_path / "peer", a.peer)
    await seed(
        config,
        [a.states[1], b.states[1]],
        peers=[(a.opener, f"http://127.0.0.1:{free_port()}", "node")],
    )
    node = await start_node(config)
    payer = Payer(a)
    w = World(
        node,
        a,
        b,
        payer,
        payer.pay((2_000, 1), reference="SHIPMENT-1"),
        Receipt(a.terms.channel_id, a.peer.node_id, Nonce(0), Amount(0), EMPTY_SIGNATURE),
    )
    status, _, answer = await w.post("/p2p/proof", w.first.encode())
    assert status == 200
    assert isinstance(answer, Receipt)
    assert answer.nonce == 1
    w.receipt = answer
    return w


def _other_type(w: World) -> bytes:
    return w.receipt.encode()


def _replace_signed(proof: BalanceProof, signer: Signer, **changes: Any) -> BalanceProof:
    return dataclasses.replace(proof, **changes).signed_by(signer)


def _s_plus_l(w: World) -> bytes:
    """The opener's own valid next proof, its signature's S replaced by S + L (§4.1 rule 1)."""
    proof = w.next_proof()
    return dataclasses.replace(proof, signature=edges.plus_l(proof.signature)).encode()


def _identity_r(w: World) -> bytes:
    """The opener's next proof signed by the opener's key with R = identity (§4.1 rule 2)."""
    proof = w.next_proof()
    message = signing_input(BalanceProof.DOMAIN, proof.body())
    signature = edges.identity_r(w.a.opener.seed(), message)
    assert edges.equation_holds(w.a.opener.node_id, message, signature)
    return dataclasses.replace(proof, signature=signature).encode()


# (name, path, body builder, HTTP status, error code)
CASES: list[tuple[str, str, Callable[[World], bytes], int, ErrorCode]] = [
    (
        "malformed msgpack (reserved byte)",
        "/p2p/proof",
        lambda w: b"\xc1",
        400,
        ErrorCode.MALFORMED,
    ),
    (
        "malformed msgpack (truncated)",
        "/p2p/proof",
        lambda w: w.next_proof().encode()[:-7],
        400,
        ErrorCode.MALFORMED,
    ),
    ("empty body", "/p2p/proof", lambda w: b"", 400, ErrorCode.MALFORMED),
    ("not an array", "/p2p/proof", lambda w: msgpack.packb("hello"), 400, ErrorCode.MALFORMED),
    (
        "trailing bytes",
        "/p2p/proof",
        lambda w: w.next_proof().encode() + b"\x00",
        400,
        ErrorCode.TRAILING_BYTES,
    ),
    (
        "non-canonical integer",
        "/p2p/proof",
        lambda w: b"\x9c\xcd\x00\x04" + w.next_proof().encode()[2:],
        400,
        ErrorCode.NON_CANONICAL,
    ),
    (
        "unknown message type",
        "/p2p/proof",
        lambda w: pack([99, PROTOCOL_VERSION, 1, 2]),
        400,
        ErrorCode.UNKNOWN_MESSAGE_TYPE,
    ),
    (
        "unsupported version",
        "/p2p/proof",
        lambda w: pack([BalanceProof.TAG, 2, *w.next_proof().fields_to_wire()]),
        400,
        ErrorCode.UNSUPPORTED_VERSION,
    ),
    (
        "wrong message type for the endpoint (a receipt as a proof)",
        "/p2p/proof",
        _other_type,
        400,
        ErrorCode.INVALID_FIELD,
    ),
    (
        "wrong message type for the endpoint (a proof as funding)",
        "/p2p/funding",
        lambda w: w.next_proof().encode(),
        400,
        ErrorCode.INVALID_FIELD,
    ),
    (
        "wrong arity",
        "/p2p/proof",
        lambda w: pack(w.next_proof().to_wire()[:-1]),
        400,
        ErrorCode.WRONG_ARITY,
    ),
    (
        "over the wire limit (16 KiB)",
        "/p2p/proof",
        lambda w: pack([bytes(60)] * 300),
        400,
        ErrorCode.TOO_LARGE,
    ),
    (
        "forged signature",
        "/p2p/proof",
        lambda w: w.next_proof().signed_by(MALLORY).encode(),
        400,
        ErrorCode.BAD_SIGNATURE,
    ),
    (
        "the opener's signature with S + L (malleated)",
        "/p2p/proof",
        _s_plus_l,
        400,
        ErrorCode.BAD_SIGNATURE,
    ),
    (
        "the opener's key with a small-order R (the plain equation holds)",
        "/p2p/proof",
        _identity_r,
        400,
        ErrorCode.BAD_SIGNATURE,
    ),
    (
        "signed by a stranger",
        "/p2p/proof",
        lambda w: w.next_proof(signer=MALLORY).encode(),
        400,
        ErrorCode.NOT_A_PARTY,
    ),
    (
        "proof for a channel the node does not hold",
        "/p2p/proof",
        lambda w: _replace_signed(w.next_proof(), w.a.opener, channel_id=bytes(32)).encode(),
        404,
        ErrorCode.UNKNOWN_CHANNEL,
    ),
    (
        "nonce replay: another proof for the nonce already held",
        "/p2p/proof",
        lambda w: w.next_proof((3_000, 0), state=w.a.states[0]).encode(),
        400,
        ErrorCode.NONCE_REPLAY,
    ),
    (
        "forged proof for the nonce already held",
        "/p2p/proof",
        lambda w: w.next_proof((3_000, 0), state=w.a.states[0]).signed_by(MALLORY).encode(),
        400,
        ErrorCode.BAD_SIGNATURE,
    ),
    (
        "nonce gap",
        "/p2p/proof",
        lambda w: _replace_signed(w.next_proof(), w.a.opener, nonce=3).encode(),
        400,
        ErrorCode.NONCE_GAP,
    ),
    (
        "amount regression",
        "/p2p/proof",
        lambda w: _replace_signed(
            w.next_proof(), w.a.opener, quantities=(1_000, 1), amount=12
        ).encode(),
        400,
        ErrorCode.AMOUNT_REGRESSION,
    ),
    (
        "capacity overflow",
        "/p2p/proof",
        lambda w: w.next_proof((10_000_000, 0)).encode(),
        400,
        ErrorCode.CAPACITY_EXCEEDED,
    ),
    (
        "tariff mismatch: amount not the tariff's",
        "/p2p/proof",
        lambda w: _replace_signed(p := w.next_proof(), w.a.opener, amount=p.amount + 1).encode(),
        400,
        ErrorCode.TARIFF_MISMATCH,
    ),
    (
        "tariff mismatch: one quantity for two lines",
        "/p2p/proof",
        lambda w: _replace_signed(
            p := w.next_proof(), w.a.opener, quantities=p.quantities[:1]
        ).encode(),
        400,
        ErrorCode.TARIFF_MISMATCH,
    ),
    (
        "usage digest does not chain",
        "/p2p/proof",
        lambda w: _replace_signed(w.next_proof(), w.a.opener, usage_digest=bytes(32)).encode(),
        400,
        ErrorCode.USAGE_DIGEST_MISMATCH,
    ),
    (
        "forged funding confirmation",
        "/p2p/funding",
        lambda w: (
            FundingConfirmation(
                w.a.terms.channel_id, w.a.peer.node_id, 999_999, "REF", 1, EMPTY_SIGNATURE
            )
            .signed_by(MALLORY)
            .encode()
        ),
        400,
        ErrorCode.BAD_SIGNATURE,
    ),
    (
        "forged cooperative close",
        "/p2p/close",
        lambda w: (
            CooperativeClose(
                w.a.terms.channel_id,
                Nonce(0),
                Amount(0),
                Nonce(0),
                Amount(0),
                EMPTY_SIGNATURE,
                EMPTY_SIGNATURE,
            )
            .signed_by(MALLORY, "opener_signature")
            .encode()
        ),
        400,
        ErrorCode.BAD_SIGNATURE,
    ),
    (
        "payout notice for an open channel (and forged)",
        "/p2p/payout",
        lambda w: (
            PayoutNotice(w.a.terms.channel_id, 5_000, 10_000, "A", "B", 1, EMPTY_SIGNATURE)
            .signed_by(MALLORY)
            .encode()
        ),
        400,
        ErrorCode.BAD_SIGNATURE,
    ),
]


@pytest.mark.parametrize(
    ("path", "build", "status", "code"), [pytest.param(*c[1:], id=c[0]) for c in CASES]
)
async def test_bad_input_is_refused_with_its_code_and_changes_nothing(
    world: World, path: str, build: Callable[[World], bytes], status: int, code: ErrorCode
) -> None:
    body = build(world)
    before = await world.snapshot()
    got_status, content_type, answer = await world.post(path, body)
    assert isinstance(answer, Refusal), answer
    answer.verify_for(world.node.node.signer.node_id, body)
    assert (ErrorCode(answer.code), got_status, content_type) == (
        code,
        status,
        "application/msgpack",
    )
    assert await world.snapshot() == before


async def test_nonce_regression_is_refused_and_changes_nothing(world: World) -> None:
    """After nonce 2, a different (validly signed) proof for nonce 1."""
    second = world.payer.pay((1_000, 0))
    status, _, answer = await world.post("/p2p/proof", second.encode())
    assert status == 200
    assert isinstance(answer, Receipt)
    assert answer.nonce == 2
    older = world.next_proof((5, 5), state=world.a.states[0])
    assert older.nonce == 1
    assert older != world.first
    before = await world.snapshot()
    status, _, answer = await world.post("/p2p/proof", older.encode())
    assert isinstance(answer, Refusal), answer
    answer.verify_for(world.node.node.signer.node_id, older.encode())
    assert (status, ErrorCode(answer.code)) == (400, ErrorCode.NONCE_REPLAY)
    assert await world.snapshot() == before


async def test_an_oversized_body_is_413_too_large_and_changes_nothing(world: World) -> None:
    limit = world.node.config.limits.max_body_bytes
    before = await world.snapshot()
    status, content_type, answer = await world.post("/p2p/proof", b"\x00" * (limit + 1))
    assert isinstance(answer, Error), answer
    assert (status, content_type, ErrorCode(answer.code)) == (
        413,
        "application/msgpack",
        ErrorCode.TOO_LARGE,
    )
    assert await world.snapshot() == before


async def test_the_identical_proof_again_gets_the_same_receipt(world: World) -> None:
    """The control: a retransmission is accepted idempotently (so the refusals above are not
    just a node that refuses everything)."""
    before = await world.snapshot()
    status, _, answer = await world.post("/p2p/proof", world.first.encode())
    assert status == 200
    assert answer == world.receipt
    assert await world.snapshot() == before
    status, _, answer = await world.post("/p2p/proof", world.next_proof().encode())
    assert status == 200
    assert isinstance(answer, Receipt)
    assert answer.nonce == 2
    assert await world.snapshot() != before


# -- the WebSocket stream --------------------------------------------------------------------


async def _frames(
    ws: aiohttp.ClientWebSocketResponse, until: Callable[[Message], bool]
) -> list[Message]:
    """Frames from the node up to the first one `until` accepts."""
    out: list[Message] = []
    while True:
        frame = await ws.receive(timeout=10)
        assert frame.type is aiohttp.WSMsgType.BINARY, frame
        out.append(decode_message(frame.data))
        if until(out[-1]):
            return out


def _answer(m: Message) -> bool:
    """An error or a receipt: the node answered the frame (errors come before the receipt)."""
    return isinstance(m, Error | Receipt)


def _error(frames: list[Message]) -> Error:
    errors = [m for m in frames if isinstance(m, Error)]
    assert errors, f"no Error, only {frames}"
    return errors[0]


def _ws_url(w: World, cid: str) -> str:
    return w.node.peer_url.replace("http://", "ws://") + f"/p2p/channels/{cid}/stream"


async def test_stream_refuses_a_proof_for_another_channel(world: World) -> None:
    """Channel B's genuine first proof sent on channel A's stream: WRONG_CHANNEL, and it lands
    on neither channel."""
    proof_b = Payer(world.b).pay((1_000, 0))
    before = await world.snapshot()
    async with world.node.http.ws_connect(_ws_url(world, world.cid)) as ws:
        await ws.send_bytes(proof_b.encode())
        error = _error(await _frames(ws, _answer))
    assert (ErrorCode(error.code), error.channel_id) == (
        ErrorCode.WRONG_CHANNEL,
        world.a.terms.channel_id,
    )
    assert await world.snapshot() == before


@pytest.mark.parametrize(
    ("build", "code"),
    [
        pytest.param(lambda w: b"\xc1", ErrorCode.MALFORMED, id="malformed"),
        pytest.param(lambda w: w.receipt.encode(), ErrorCode.INVALID_FIELD, id="wrong type"),
        pytest.param(
            lambda w: pack([99, PROTOCOL_VERSION]),
            ErrorCode.UNKNOWN_MESSAGE_TYPE,
            id="unknown type",
        ),
        pytest.param(
            lambda w: w.next_proof().signed_by(MALLORY).encode(),
            ErrorCode.BAD_SIGNATURE,
            id="forged signature",
        ),
        pytest.param(_s_plus_l, ErrorCode.BAD_SIGNATURE, id="S + L"),
        pytest.param(_identity_r, ErrorCode.BAD_SIGNATURE, id="small-order R"),
        pytest.param(
            lambda w: w.next_proof((10_000_000, 0)).encode(),
            ErrorCode.CAPACITY_EXCEEDED,
            id="capacity",
        ),
        pytest.param(
            lambda w: w.next_proof((3_000, 0), state=w.a.states[0]).encode(),
            ErrorCode.NONCE_REPLAY,
            id="nonce replay",
        ),
    ],
)
async def test_stream_refuses_bad_frames_and_keeps_going(
    world: World, build: Callable[[World], bytes], code: ErrorCode
) -> None:
    before = await world.snapshot()
    async with world.node.http.ws_connect(_ws_url(world, world.cid)) as ws:
        await ws.send_bytes(build(world))
        error = _error(await _frames(ws, _answer))
        assert ErrorCode(error.code) is code
        assert await world.snapshot() == before
        # the stream is still usable: a good proof after the bad frame is acknowledged
        await ws.send_bytes(world.payer.pay((1, 0)).encode())
        await _frames(ws, lambda m: isinstance(m, Receipt) and m.nonce == 2)


async def test_stream_for_an_unknown_channel_is_404_unknown_channel(world: World) -> None:
    before = await world.snapshot()
    async with world.node.http.get(
        _ws_url(world, "ab" * 32).replace("ws://", "http://"),
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    ) as r:
        body = await r.read()
    answer = Error.decode(body)
    assert (r.status, ErrorCode(answer.code)) == (404, ErrorCode.UNKNOWN_CHANNEL)
    assert await world.snapshot() == before


async def test_stream_closes_on_an_oversized_frame_and_changes_nothing(world: World) -> None:
    limit = world.node.config.limits.max_body_bytes
    before = await world.snapshot()
    async with world.node.http.ws_connect(_ws_url(world, world.cid)) as ws:
        await ws.send_bytes(b"\x00" * (limit + 1))
        frame = await ws.receive(timeout=10)
        assert frame.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.CLOSING,
        )
        assert ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    assert await world.snapshot() == before
