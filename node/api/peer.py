"""Peer-to-peer API: msgpack messages, each signed by its author and verified here.

A refused POST is answered with a `Refusal` signed by this node over the SHA-256 of the exact
request body, so the sender can tell a final answer from us from a proxy's page or anyone
else's bytes (specs/0005 §2). GETs and the WebSocket stream answer with an unsigned `Error`.
Either way, nothing changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from aiohttp import WSCloseCode, WSMsgType, web
from sqlalchemy.exc import DBAPIError

from node import payout_returns
from node.context import now_ms
from node.errors import NodeError, NotFound
from node.keys import CHANNELS, CONFIG, CONTEXT, ESCROW, SIGNER, WEBSOCKETS
from node.peers import (
    RecordRefused,
    check_announcement,
    own_identity,
    parse_challenge,
    remember,
)
from node.roles import Role
from node.storage.db import StorageUnavailable, unavailable
from protocol import PROTOCOL_VERSION
from protocol import channel as ch
from protocol.errors import DecodeError, ErrorCode, ProtocolError, RemoteProtocolError
from protocol.messages import (
    BalanceProof,
    ChannelAcceptance,
    ChannelProposal,
    ChannelRegistration,
    Checkpoint,
    CooperativeClose,
    DisputeEvidence,
    DisputeNotice,
    Error,
    EscrowStatusQuery,
    FundingConfirmation,
    NodeInfo,
    PayoutAccount,
    PayoutNotice,
    PayoutReturned,
    Refusal,
    TopUpConfirmation,
    TransferNotice,
    UnilateralClose,
)
from protocol.records import Message

log = structlog.get_logger()
MSGPACK = "application/msgpack"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=Message)


def reply(message: Message | None, status: int = 200) -> web.Response:
    if message is None:
        return web.Response(status=204)
    return web.Response(body=message.encode(), status=status, content_type=MSGPACK)


def error_reply(exc: ProtocolError, status: int = 400) -> web.Response:
    return web.Response(
        body=Error.from_exception(exc).encode(),
        status=status,
        content_type=MSGPACK,
    )


async def refusal_reply(request: web.Request, exc: ProtocolError,
                        status: int = 400) -> web.Response:
    """A POST's refusal, signed over the request's exact bytes (read once: aiohttp caches
    them); any other request's, an unsigned `Error`."""
    if request.method != "POST":
        return error_reply(exc, status)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:  # its bytes were never held, so nothing to bind to
        return error_reply(exc, status)
    return web.Response(body=Refusal.make(request.app[SIGNER], exc, body).encode(),
                        status=status, content_type=MSGPACK)


@web.middleware
async def peer_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        request_id=uuid.uuid4().hex[:12],
        peer=request.headers.get("X-Meterline-Node", "")[:16],
        path=request.path,
    )
    if "channel_id" in request.match_info:
        structlog.contextvars.bind_contextvars(channel=request.match_info["channel_id"][:16])
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        # unsigned: the body over the limit was not kept, so a refusal could not name it
        return error_reply(RemoteProtocolError(ErrorCode.TOO_LARGE, "body over the limit"), 413)
    except ProtocolError as exc:
        log.info("peer.refused", code=exc.code.name, error=exc.message)
        return await refusal_reply(request, exc)
    except NotFound as exc:
        return await refusal_reply(
            request, RemoteProtocolError(ErrorCode.UNKNOWN_CHANNEL, exc.message), 404)
    except NodeError as exc:
        return await refusal_reply(
            request, RemoteProtocolError(ErrorCode.INVALID_STATE, exc.message), exc.status)
    except (DBAPIError, ConnectionError) as exc:  # storage away (ADR 0250): 503, say so
        storage = unavailable(request.app[CONTEXT].engine, exc)
        if storage is None:
            raise
        return error_reply(RemoteProtocolError(ErrorCode.INVALID_STATE, storage.message), 503)


async def body_as(request: web.Request, cls: type[M]) -> M:
    data = await request.read()
    if not data:
        raise DecodeError(ErrorCode.MALFORMED, "empty body")
    return cls.decode(data)


async def info(request: web.Request) -> web.Response:
    """Informational and unauthenticated (anyone can serve this JSON): nothing trusts it; peers
    are learnt from the signed `/p2p/identity`."""
    config = request.app[CONFIG]
    bank = config.bank
    account = (
        {"scheme": bank.scheme, "identification": bank.identification,
         "name": bank.name or config.name}
        if bank.identification else None
    )
    return web.json_response({
        "node_id": request.app[SIGNER].node_id.hex(),
        "name": config.name,
        "role": config.role,
        "protocol_version": PROTOCOL_VERSION,
        "account": account,
    })


async def identity(request: web.Request) -> web.Response:
    """This node's NodeInfo, signed, echoing the caller's fresh challenge: proof that whoever
    answers at this URL holds the key it names (``peer add``)."""
    challenge = parse_challenge(request.query.get("challenge", ""))
    return reply(own_identity(request.app[CONFIG], request.app[SIGNER], challenge=challenge,
                              issued_ms=now_ms()))


async def announce(request: web.Request) -> web.Response:
    """A known peer's unsolicited, signed, newer record (an address change); 204 when taken."""
    info = await body_as(request, NodeInfo)
    check_announcement(info, now=now_ms())
    try:
        await remember(request.app[CONTEXT], request.app[CHANNELS], info, url=info.url,
                       announced=True)
    except RecordRefused as exc:
        raise RemoteProtocolError(exc.reason, exc.message) from None
    return reply(None)


async def proposal(request: web.Request) -> web.Response:
    msg = await body_as(request, ChannelProposal)
    acceptance = await request.app[CHANNELS].on_proposal(msg)
    return reply(acceptance) if acceptance is not None else web.Response(status=202)


async def acceptance(request: web.Request) -> web.Response:
    await request.app[CHANNELS].on_acceptance(await body_as(request, ChannelAcceptance))
    return reply(None)


async def funding(request: web.Request) -> web.Response:
    await request.app[CHANNELS].on_funding(await body_as(request, FundingConfirmation))
    return reply(None)


async def proof(request: web.Request) -> web.Response:
    """Plain-POST fallback for one balance proof; answers with the cumulative receipt."""
    msg = await body_as(request, BalanceProof)
    receipt, errors = await request.app[CHANNELS].on_proofs(msg.channel_id.hex(), [msg])
    if errors:
        raise errors[0]
    return reply(receipt)


async def receipt(request: web.Request) -> web.Response:
    """Our latest receipt on a channel: a sender reads it before resuming its stream."""
    return reply(request.app[CHANNELS].latest_receipt(request.match_info["channel_id"]))


async def close(request: web.Request) -> web.Response:
    msg = await body_as(request, CooperativeClose)
    if request.app[CONFIG].role is Role.ARBITER:
        await request.app[ESCROW].on_close(msg)
        return reply(None)
    return reply(await request.app[CHANNELS].on_close(msg))


async def dispute(request: web.Request) -> web.Response:
    await request.app[CHANNELS].on_dispute(await body_as(request, DisputeNotice))
    return reply(None)


async def payout(request: web.Request) -> web.Response:
    await request.app[CHANNELS].on_payout(await body_as(request, PayoutNotice))
    return reply(None)


async def payout_returned(request: web.Request) -> web.Response:
    notice = await body_as(request, PayoutReturned)
    channels = request.app[CHANNELS]
    state = channels.states.get(notice.channel_id.hex())
    await payout_returns.record(request.app[CONTEXT], state, notice)
    return reply(None)


async def transfer_notice(request: web.Request) -> web.Response:
    """The arbiter's signed word on a payout's outcome at its bank (node.transfer_notices)."""
    await request.app[CHANNELS].checkpoints.notices.on_notice(
        await body_as(request, TransferNotice))
    return reply(None)


async def register(request: web.Request) -> web.Response:
    await request.app[ESCROW].on_register(await body_as(request, ChannelRegistration))
    return reply(None)


async def escrow_status(request: web.Request) -> web.Response:
    """The arbiter's signed status of one channel, echoing the asker's fresh challenge."""
    challenge = parse_challenge(request.query.get("challenge", ""))
    return reply(request.app[ESCROW].status(request.match_info["channel_id"], challenge))


async def escrow_statuses(request: web.Request) -> web.Response:
    """The arbiter's one signed answer for a batch of channels (specs/0005 §4.1)."""
    return reply(request.app[ESCROW].statuses(await body_as(request, EscrowStatusQuery)))


async def unilateral(request: web.Request) -> web.Response:
    await request.app[ESCROW].on_unilateral(await body_as(request, UnilateralClose))
    return reply(None)


async def checkpoint(request: web.Request) -> web.Response:
    """A checkpoint: the peer's proposal or co-signature (a node), or both signed (the
    arbiter, which pays what it owes)."""
    msg = await body_as(request, Checkpoint)
    if request.app[CONFIG].role is Role.ARBITER:
        await request.app[ESCROW].on_checkpoint(msg)
    else:
        await request.app[CHANNELS].checkpoints.on_checkpoint(msg)
    return reply(None)


async def topup(request: web.Request) -> web.Response:
    await request.app[CHANNELS].topups.on_topup(await body_as(request, TopUpConfirmation))
    return reply(None)


async def evidence(request: web.Request) -> web.Response:
    await request.app[ESCROW].on_evidence(await body_as(request, DisputeEvidence))
    return reply(None)


async def payout_account(request: web.Request) -> web.Response:
    await request.app[ESCROW].on_payout_account(await body_as(request, PayoutAccount))
    return reply(None)


Batch = tuple[list[BalanceProof], list[ch.CheckedProof | None], list[ProtocolError]]
"""Proofs decoded from the frames read together, their signatures checked ahead, and the
frames that did not decode."""


async def stream(request: web.Request) -> web.StreamResponse:
    """One WebSocket per channel: proofs in, cumulative receipts out, in three stages.

    A reader task queues frames; a checker task takes everything queued, decodes it and checks
    its signatures on the signing pool (node.signing) — batch N+1 while batch N commits; the
    committer takes each checked batch, validates and commits it in one transaction, and answers
    with one receipt covering all of it, only after the commit (specs/0003 §5.2).
    """
    service = request.app[CHANNELS]
    cid = request.match_info["channel_id"]
    service.get(cid)  # 404 before upgrading when the channel is unknown
    limits = request.app[CONFIG].limits
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=limits.max_body_bytes)
    await ws.prepare(request)
    inbound: dict[str, web.WebSocketResponse] = request.app[WEBSOCKETS]
    replaced, inbound[cid] = inbound.get(cid), ws
    if replaced is not None:
        # One inbound stream per channel: the sender keeps one (node.streams), so a second is
        # it reconnecting (the old socket half-dead) or someone holding sockets open to run the
        # node out of file descriptors, which its own deliveries (dispute evidence) need.
        # Closed in its own task: a peer that never answers the close holds nobody up.
        _closing.add(closing := asyncio.create_task(replaced.close(
            code=WSCloseCode.POLICY_VIOLATION, message=b"replaced by a newer stream")))
        closing.add_done_callback(_closing.discard)
    # bounded: a sender faster than verify-and-commit is slowed by TCP, not by our memory
    frames: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=2 * limits.max_batch)
    checked: asyncio.Queue[Batch | None] = asyncio.Queue()
    ahead = asyncio.Semaphore(1)  # one batch checked ahead; the frames behind it wait together

    async def read() -> None:
        try:
            async for frame in ws:
                if frame.type is WSMsgType.BINARY:
                    await frames.put(frame.data)
                elif frame.type is WSMsgType.ERROR:
                    break
        finally:
            await frames.put(None)

    async def check() -> None:
        while await ahead.acquire() and (batch := await _take(frames, limits.max_batch)):
            proofs: list[BalanceProof] = []
            errors: list[ProtocolError] = []
            for data in batch:
                try:
                    proofs.append(BalanceProof.decode(data))
                except ProtocolError as exc:
                    errors.append(exc)
            await checked.put((proofs, await service.signing.check(proofs), errors))
        await checked.put(None)

    tasks = [asyncio.create_task(read()), asyncio.create_task(check())]
    try:
        while (item := await checked.get()) is not None:
            ahead.release()
            proofs, signatures, undecoded = item
            for exc in undecoded:
                await ws.send_bytes(Error.from_exception(exc).encode())
            if not proofs:
                continue
            try:
                receipt, errors = await service.on_proofs(cid, proofs, signatures)
            except StorageUnavailable as exc:  # nothing committed: no receipt; the sender
                log.warning("stream.storage_unavailable", error=exc.message)  # resends
                await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"storage unavailable")
                break
            for error in errors:
                await ws.send_bytes(Error.from_exception(error, bytes.fromhex(cid)).encode())
            if receipt is not None:
                await ws.send_bytes(receipt.encode())
    finally:
        if inbound.get(cid) is ws:
            del inbound[cid]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await ws.close()
    return ws


_closing: set[asyncio.Task[bool]] = set()
"""Closes of replaced streams under way (held: a task only weakly referenced may vanish)."""


async def _take(queue: asyncio.Queue[bytes | None], most: int) -> list[bytes] | None:
    """Everything queued (at least one frame, at most `most`); None once the reader ended."""
    first = await queue.get()
    if first is None:
        return None
    taken = [first]
    while not queue.empty() and len(taken) < most:
        nxt = queue.get_nowait()
        if nxt is None:
            queue.put_nowait(None)
            break
        taken.append(nxt)
    return taken


async def close_streams(app: web.Application) -> None:
    """on_shutdown: close inbound streams (senders reconnect and resume from our receipt)."""
    streams: dict[str, web.WebSocketResponse] = app[WEBSOCKETS]
    for ws in [*streams.values()]:
        await ws.close(code=1001, message=b"node shutting down")


def routes(role: Role) -> list[web.RouteDef]:
    common = [web.get("/p2p/info", info), web.get("/p2p/identity", identity),
              web.post("/p2p/announce", announce), web.post("/p2p/close", close),
              web.post("/p2p/checkpoint", checkpoint)]
    if role == Role.ARBITER:
        return [*common, web.post("/p2p/register", register),
                web.post("/p2p/unilateral", unilateral), web.post("/p2p/evidence", evidence),
                web.post("/p2p/payout-account", payout_account),
                web.get("/p2p/channels/{channel_id}/status", escrow_status),
                web.post("/p2p/status", escrow_statuses)]
    return [
        *common,
        web.post("/p2p/proposal", proposal),
        web.post("/p2p/acceptance", acceptance),
        web.post("/p2p/funding", funding),
        web.post("/p2p/proof", proof),
        web.get("/p2p/channels/{channel_id}/stream", stream),
        web.get("/p2p/channels/{channel_id}/receipt", receipt),
        web.post("/p2p/dispute", dispute),
        web.post("/p2p/payout", payout),
        web.post("/p2p/payout-returned", payout_returned),
        web.post("/p2p/transfer-notice", transfer_notice),
        web.post("/p2p/topup", topup),
    ]
