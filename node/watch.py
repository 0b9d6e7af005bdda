"""Pull, not only push: a node asks the arbiter for the signed status of each of its channels.

Nothing the arbiter pushes (funding confirmations, dispute notices, payout notices) has to reach
the node in time: every `[policy] watch_interval_ms` the node asks the arbiter of each channel
that is not settled yet for an `EscrowStatus`, signed by the arbiter over a fresh challenge of
ours, and feeds what it says into the channel machine through the same inputs a push would use.
A unilateral close is therefore seen within one watch interval plus one sweep of the node's
channels, whatever any callback does, and the evidence goes out at once (specs/0005 §4).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets

import structlog

from node.channels import ChannelService
from node.context import Context
from node.errors import NodeError
from protocol import channel as ch
from protocol.errors import ErrorCode, ProtocolError, RemoteProtocolError
from protocol.messages import EscrowStatus

log = structlog.get_logger()
WATCHED = frozenset({ch.Phase.ACCEPTED, ch.Phase.OPEN, ch.Phase.CLOSING, ch.Phase.CLOSED,
                     ch.Phase.DISPUTED})
"""Every phase in which the arbiter may know something the node must act on."""
FUNDABLE = frozenset(phase for phase, event in ch.TRANSITIONS if event is ch.ReceiveFunding)
"""Where the machine takes funding confirmations (0003 §4): read from its transition table."""
CONCURRENCY = 16
"""Status requests in flight at once (one slow arbiter answer never holds up a sweep)."""


class ArbiterWatch:
    def __init__(self, ctx: Context, channels: ChannelService) -> None:
        self.ctx = ctx
        self.channels = channels
        self._task: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(CONCURRENCY)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="arbiter-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        interval = self.ctx.config.policy.watch_interval_ms / 1000
        while True:
            await self.sweep()
            await asyncio.sleep(interval)

    async def sweep(self) -> None:
        """Ask about every watched channel once (concurrently, bounded)."""
        cids = [cid for cid, state in self.channels.states.items() if state.phase in WATCHED]
        await asyncio.gather(*(self._guarded(cid) for cid in cids))

    async def _guarded(self, cid: str) -> None:
        async with self._slots:
            try:
                await self.check(cid)
            except asyncio.CancelledError:
                raise
            except (ProtocolError, NodeError) as exc:
                log.info("watch.no_status", channel=cid[:16], error=str(exc)[:300])
            except Exception as exc:  # the next sweep tries again; the watch must not die
                log.warning("watch.failed", channel=cid[:16], error=str(exc)[:300])

    async def fetch(self, cid: str) -> EscrowStatus:
        """The arbiter's signed, fresh status of channel `cid` (verified)."""
        state = self.channels.get(cid)
        arbiter = await self.ctx.peer(state.terms.arbiter.hex())
        challenge = secrets.token_bytes(16)
        answer = await self.ctx.peers.fetch(
            f"{arbiter.url.rstrip('/')}/p2p/channels/{cid}/status?challenge={challenge.hex()}")
        if not isinstance(answer, EscrowStatus):
            raise RemoteProtocolError(ErrorCode.INVALID_FIELD,
                                      f"the arbiter answered {type(answer).__name__}")
        answer.verify_signature(state.terms.arbiter)
        if answer.channel_id != state.channel_id or answer.challenge != challenge:
            raise RemoteProtocolError(ErrorCode.BAD_SIGNATURE,
                                      "a status for another channel or another request")
        return answer

    async def check(self, cid: str) -> None:
        """Act on what the arbiter says, exactly as if it had been pushed to us (the machine
        takes a repeat as nothing new)."""
        status = await self.fetch(cid)
        if self.channels.get(cid).phase in FUNDABLE:
            for conf in status.funding:
                await self.channels.on_funding(conf)
        if status.dispute is not None:
            await self.channels.on_dispute(status.dispute)
        if status.payout is not None:
            await self.channels.on_payout(status.payout)
