"""Pull, not only push: a node asks the arbiter for the signed status of each of its channels.

Nothing the arbiter pushes (funding confirmations, dispute notices, payout notices) has to reach
the node in time: every `[policy] watch_interval_ms` the node asks the arbiter of each channel
that is not settled yet for an `EscrowStatus`, signed by the arbiter over a fresh challenge of
ours, and feeds what it says into the channel machine through the same inputs a push would use.
One request asks about up to MAX_STATUS_BATCH channels of one arbiter (`POST /p2p/status`, an
`EscrowStatusQuery` answered by one signed `EscrowStatuses`, ADR 0315): 10,000 channels are 625
requests a sweep, not 10,000. Statuses that do not fit into one answer (each carries up to 32
payout outcomes) come back as `later` and are asked for at once.
A unilateral close is therefore seen within one watch interval plus one sweep of the node's
channels, whatever any callback does, and the evidence goes out at once (specs/0005 §4).
"""

from __future__ import annotations

import asyncio
import secrets
from collections import defaultdict
from collections.abc import Sequence

import structlog

from node.background import stop_tasks, take_turns
from node.channels import ChannelService
from node.context import Context
from node.errors import NodeError
from protocol import channel as ch
from protocol.errors import ErrorCode, ProtocolError, RemoteProtocolError
from protocol.messages import MAX_STATUS_BATCH, EscrowStatus, EscrowStatuses, EscrowStatusQuery
from protocol.types import ChannelId

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
        await stop_tasks(self._task)

    async def _run(self) -> None:
        interval = self.ctx.config.policy.watch_interval_ms / 1000
        while True:
            await self.sweep()
            await asyncio.sleep(interval)

    async def sweep(self) -> None:
        """Ask about every watched channel, and every channel we proposed that has no answer
        yet, once: MAX_STATUS_BATCH channels of one arbiter a request, CONCURRENCY requests
        in flight."""
        by_arbiter: defaultdict[str, list[str]] = defaultdict(list)
        states = self.channels.states
        for i, (cid, phase) in enumerate(states.phases()):
            await take_turns(i)
            if (phase in WATCHED or phase is ch.Phase.PROPOSED) and cid in states:
                by_arbiter[states.arbiter(cid)].append(cid)  # no state decoded (ADR 0316)
        await asyncio.gather(*(
            self._guarded(arbiter, cids[i:i + MAX_STATUS_BATCH])
            for arbiter, cids in by_arbiter.items()
            for i in range(0, len(cids), MAX_STATUS_BATCH)))

    async def _guarded(self, arbiter: str, cids: Sequence[str]) -> None:
        async with self._slots:
            try:
                answer = await self.fetch(arbiter, cids)
            except asyncio.CancelledError:
                raise
            except (ProtocolError, NodeError) as exc:
                log.info("watch.no_status", arbiter=arbiter[:16], channels=len(cids),
                         error=str(exc)[:300])
                return
            except Exception as exc:  # the next sweep tries again; the watch must not die
                log.warning("watch.failed", arbiter=arbiter[:16], error=str(exc)[:300])
                return
        for i, status in enumerate(answer.statuses):
            await take_turns(i)  # an answer covers up to MAX_STATUS_BATCH channels
            cid = status.channel_id.hex()
            try:
                if self.channels.phase(cid) is ch.Phase.PROPOSED:
                    await self.check_proposed(cid)
                else:
                    await self.check(cid, status)
            except asyncio.CancelledError:
                raise
            except (ProtocolError, NodeError) as exc:
                log.info("watch.no_status", channel=cid[:16], error=str(exc)[:300])
            except Exception as exc:
                log.warning("watch.failed", channel=cid[:16], error=str(exc)[:300])
        if answer.later:  # statuses that did not fit into one answer: ask for them now
            await self._guarded(arbiter, [cid.hex() for cid in answer.later])

    async def fetch(self, arbiter_id: str, cids: Sequence[str]) -> EscrowStatuses:
        """The arbiter's one signed, fresh answer about channels `cids` (verified: its
        signature, our challenge, and only channels we asked about)."""
        arbiter = await self.ctx.peer(arbiter_id)
        challenge = secrets.token_bytes(16)
        asked = [ChannelId(bytes.fromhex(cid)) for cid in cids]
        answer = await self.ctx.peers.send(arbiter.url, "/p2p/status",
                                           EscrowStatusQuery(tuple(asked), challenge))
        if not isinstance(answer, EscrowStatuses):
            raise RemoteProtocolError(ErrorCode.INVALID_FIELD,
                                      f"the arbiter answered {type(answer).__name__}")
        answer.verify_signature(bytes.fromhex(arbiter_id))
        if answer.challenge != challenge or any(
                s.challenge != challenge or s.channel_id not in asked for s in answer.statuses):
            raise RemoteProtocolError(ErrorCode.BAD_SIGNATURE,
                                      "statuses for other channels or another request")
        answered = {s.channel_id for s in answer.statuses}
        if answer.later and (not answer.statuses or len(set(answer.later)) < len(answer.later)
                             or any(c not in asked or c in answered for c in answer.later)):
            # each re-ask is of fewer channels than the one before: the asking ends
            raise RemoteProtocolError(ErrorCode.INVALID_FIELD,
                                      "`later` without a status, twice the same, or naming "
                                      "channels not asked or answered already")
        return answer

    async def check_proposed(self, cid: str) -> None:
        """A channel we proposed that the arbiter knows was accepted: the peer registers a
        channel only after committing its acceptance, so an acceptance that came in the answer
        to our proposal and was lost (we crashed before committing it, the answer was cut)
        is asked for again by sending the proposal again (ADR 0240). A proposal the peer
        holds for its operator, or never got, is not registered: the arbiter lists it as
        unknown and nothing is sent."""
        await self.channels.propose_again(cid)

    async def check(self, cid: str, status: EscrowStatus) -> None:
        """Act on what the arbiter says, exactly as if it had been pushed to us (the machine
        takes a repeat as nothing new). A quiet channel's state is not decoded to find that
        nothing is new: its phase is known without it."""
        if self.channels.phase(cid) in FUNDABLE:
            funded = self.channels.states.funded(cid)
            for conf in status.funding:
                # the machine takes a confirmation of no more than the deposit it holds as
                # nothing new (protocol.channel._on_funding): not decoded to learn that
                if conf.amount > funded.get(conf.depositor, -1):
                    await self.channels.on_funding(conf)
        if status.dispute is not None:
            await self.channels.on_dispute(status.dispute)
        await self.channels.checkpoints.notices.on_status(status)  # payout outcomes (cpnotice)
        if status.payout is not None:
            await self.channels.on_payout(status.payout)
