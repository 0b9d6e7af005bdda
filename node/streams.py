"""The outbound streams: one WebSocket per channel we pay on, carrying our proofs to the peer.

A stream that (re)connects first learns what the peer already holds (its latest receipt — lost
if it crashed after committing), then resends only what is newer, from the proofs we stored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from node.context import Context
from node.errors import PeerUnavailable
from node.peerclient import OutboundStream
from protocol import channel as ch
from protocol.errors import ProtocolError
from protocol.messages import Receipt
from protocol.records import Message

log = structlog.get_logger()


class Streams:
    def __init__(self, ctx: Context, get: Callable[[str], ch.ChannelState],
                 on_receipt: Callable[[Receipt], Awaitable[None]]) -> None:
        self.ctx = ctx
        self.get = get
        self.on_receipt = on_receipt
        self.streams: dict[str, OutboundStream] = {}

    def __contains__(self, cid: object) -> bool:
        return cid in self.streams

    async def open(self, cid: str) -> OutboundStream:
        """The channel's stream, started on first use."""
        stream = self.streams.get(cid)
        if stream is None:
            state = self.get(cid)
            peer = await self.ctx.peer(state.terms.parties()[state.them].hex())
            stream = self.streams.get(cid)  # another caller's, started while we read the peer:
            if stream is not None:  # one stream per channel (two would resend to each other's
                return stream  # peer what it holds, refused as replays, reconnecting for ever)
            url = f"{peer.url.rstrip('/')}/p2p/channels/{cid}/stream"
            stream = OutboundStream(
                url=url.replace("http://", "ws://", 1).replace("https://", "wss://", 1),
                session=self.ctx.peers.session,
                on_message=self._on_message,
                resend=lambda after: self.unacked(cid, after),
                max_msg_size=self.ctx.config.limits.max_body_bytes,
            )
            self.streams[cid] = stream
            stream.start()
        return stream

    async def send(self, cid: str, proofs: list[tuple[int, bytes]]) -> None:
        """Hand committed proofs to the channel's stream, if it has one."""
        stream = self.streams.get(cid)
        if stream is not None:
            for nonce, body in proofs:
                await stream.send(nonce, body)

    async def unacked(self, cid: str, after: int = 0) -> list[tuple[int, bytes]]:
        """What to (re)send after the stream connects: first learn what the peer already holds
        (its latest receipt — lost if it crashed after committing), then only what is newer."""
        state = self.get(cid)
        if not after:
            peer = await self.ctx.peer(state.terms.parties()[state.them].hex())
            try:
                receipt = await self.ctx.peers.fetch(
                    f"{peer.url.rstrip('/')}/p2p/channels/{cid}/receipt")
            except (PeerUnavailable, ProtocolError) as exc:
                log.info("stream.no_receipt", channel=cid[:16], error=str(exc))
                receipt = None
            if isinstance(receipt, Receipt):
                try:
                    await self.on_receipt(receipt)
                except ProtocolError as exc:
                    log.warning("stream.bad_receipt", channel=cid[:16], error=str(exc))
        start = max(self.get(cid).sent.acked_nonce, after)
        return await self.ctx.repo.outgoing_after(cid, start)

    async def _on_message(self, message: Message) -> None:
        if isinstance(message, Receipt):
            await self.on_receipt(message)
        else:
            log.warning("stream.peer_error", message=repr(message)[:300])

    async def close(self, cid: str) -> None:
        stream = self.streams.pop(cid, None)
        if stream is not None:
            await stream.stop()

    async def close_all(self) -> None:
        for cid in list(self.streams):
            await self.close(cid)
