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
channels, whatever any callback does, and the evidence goes out at once (specs/0005 §4). Each
arbiter is asked in a task of its own, so one that answers slowly or never (each request just
under the timeout, `later` shrinking one channel at a time) holds up only the channels it
holds; and in each answer the channels the arbiter holds are acted on before proposals asked
again of their peers.
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
"""Status requests in flight at once to one arbiter. Each arbiter is asked on its own: a slow
(or hostile) arbiter holds up only the channels it holds, never another arbiter's."""


class ArbiterWatch:
    def __init__(self, ctx: Context, channels: ChannelService) -> None:
        self.ctx = ctx
        self.channels = channels
        self._task: asyncio.Task[None] | None = None
        self._slots: defaultdict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(CONCURRENCY))
        self._asking: dict[str, asyncio.Task[None]] = {}
        """Per arbiter, its part of a sweep still under way (the loop's next sweep skips it)."""

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="arbiter-watch")

    async def stop(self) -> None:
        await stop_tasks(self._task, *self._asking.values())

    async def _run(self) -> None:
        interval = self.ctx.config.policy.watch_interval_ms / 1000
        while True:
            await self.sweep(wait=False)
            await asyncio.sleep(interval)

    async def sweep(self, *, wait: bool = True) -> None:
        """Ask about every watched channel, and every channel we proposed that has no answer
        yet, once: MAX_STATUS_BATCH channels of one arbiter a request, CONCURRENCY requests
        in flight per arbiter, each arbiter in a task of its own. With `wait` (False for the
        loop), until every arbiter answered (one still on an earlier sweep is waited for,
        then asked again); without, an arbiter still answering an earlier sweep is left to
        it, and the others are asked at once."""
        by_arbiter: defaultdict[str, list[str]] = defaultdict(list)
        states = self.channels.states
        for i, (cid, phase) in enumerate(states.phases()):
            await take_turns(i)
            if (phase in WATCHED or phase is ch.Phase.PROPOSED) and cid in states:
                by_arbiter[states.arbiter(cid)].append(cid)  # no state decoded (ADR 0316)
        started: list[asyncio.Task[None]] = []
        for arbiter, cids in by_arbiter.items():
            running = self._asking.get(arbiter)
            if running is not None and not running.done():
                if not wait:
                    continue  # still on the last sweep's channels: left to it
                await asyncio.wait([running])  # then asked again, about every channel now
            started.append(task := asyncio.create_task(self._ask(arbiter, cids),
                                                       name=f"watch {arbiter[:16]}"))
            self._asking[arbiter] = task
        if wait:
            await asyncio.gather(*started)

    async def _ask(self, arbiter: str, cids: Sequence[str]) -> None:
        await asyncio.gather(*(self._guarded(arbiter, cids[i:i + MAX_STATUS_BATCH])
                               for i in range(0, len(cids), MAX_STATUS_BATCH)))

    async def _guarded(self, arbiter: str, cids: Sequence[str]) -> None:
        async with self._slots[arbiter]:
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
        # the channels the arbiter holds first: a proposal asked again (a peer that may take
        # its 10 s to answer) never delays a dispute's evidence behind it
        statuses = sorted(answer.statuses, key=self._proposed)
        for i, status in enumerate(statuses):
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

    def _proposed(self, status: EscrowStatus) -> bool:
        cid = status.channel_id.hex()
        return cid in self.channels.states and self.channels.phase(cid) is ch.Phase.PROPOSED

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
