"""The group-commit writer and the acknowledgement waiters of the channels we pay on.

Concurrent payments on one channel are coalesced: one writer task signs everything queued (on
the signing pool, node.signing), commits it in one transaction, then hands it to the stream
(group commit on the sender side, DESIGN §5). Callers that wait are released when the peer's
receipts cover their last update.

Receipts take no lock (ADR 0306): one is checked on the signing pool and applied in memory at
once, even while the writer commits; a commit that lands after it re-applies it
(:meth:`Writer.with_receipts_since`), so none is lost. It is written with the writer's next
commit, or by the flusher within a moment when the channel is idle: the peer holds it too, and
a restarted sender reads it back (ADR 0002).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections import defaultdict, deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from node.config import Limits
from node.context import now_ms
from node.errors import Conflict, NodeError
from node.storage.db import StorageUnavailable
from node.storage.repository import UsageRows, usage_rows
from protocol import channel as ch
from protocol.errors import ProtocolError
from protocol.messages import Receipt
from protocol.types import Amount, Quantity

if TYPE_CHECKING:
    from node.channels import ChannelService

STORAGE_RETRY_S = 1.0
"""How soon receipts held in memory are written again after the storage failed."""

Request = tuple[ch.ActionPay, int, "asyncio.Future[int]"]
"""One payment call: the action, how many updates of it, and its result (the last nonce)."""


def _usage() -> UsageRows:
    return defaultdict(lambda: [0, 0, 0])


Signed = tuple[ch.ChannelState, list[tuple[int, bytes]], UsageRows, list["int | ProtocolError"]]


def sign_requests(state: ch.ChannelState, requests: Sequence[tuple[ch.ActionPay, int]],
                  stamp: int) -> Signed:
    """The machine's proofs for each request (`n` updates of one action), in order: the new
    state, the proofs encoded (nonce, wire bytes: stored and streamed as they are), their
    usage rows and per request its last nonce or the error that refused it (that request only:
    the others go on). Pure; run on the signing pool."""
    proofs: list[tuple[int, bytes]] = []
    rows = _usage()
    results: list[int | ProtocolError] = []
    for action, n in requests:
        try:
            after, signed = ch.pay_many(state, action, n, now_ms=stamp)
        except ProtocolError as exc:  # this request only: the state is as before it
            results.append(exc)
            continue
        for before, proof in signed:
            usage_rows(after, before, proof, rows)
            proofs.append((proof.nonce, proof.encode()))
        state = after
        results.append(state.sent.nonce)
    return state, proofs, rows, results


class Writer:
    def __init__(self, service: ChannelService) -> None:
        self.service = service
        self.pending: defaultdict[str, deque[Request]] = defaultdict(deque)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.ack_waiters: defaultdict[str, list[tuple[int, int, asyncio.Future[None]]]] = (
            defaultdict(list))
        self._tiebreak = itertools.count()
        self.dirty: set[str] = set()
        self.flusher: asyncio.Task[None] | None = None
        self.flushing = asyncio.Lock()
        """One flush at a time: a flush that starts while another is committing a channel it
        took from `dirty` waits for it, so that its return means the receipts are written."""
        self.pruned: dict[str, int] = {}
        """Per channel, the acknowledged nonce our stored proofs were last pruned up to."""

    @property
    def limits(self) -> Limits:
        return self.service.ctx.config.limits

    async def pay(self, cid: str, *, quantities: Sequence[int], direct_amount: int = 0,
                  reference: str = "", repeat: int = 1, wait: bool = True,
                  timeout_s: float = 30.0) -> ch.ChannelState:
        """Sign `repeat` updates of `quantities` (+ `direct_amount`) each, stream them, and with
        `wait` return once the peer's receipts cover the last one."""
        service = self.service
        if not 1 <= repeat <= 1_000_000:
            raise NodeError("repeat must be between 1 and 1,000,000")
        phase = service.get(cid).phase
        if phase is not ch.Phase.OPEN:
            raise Conflict(f"cannot pay: the channel is {phase.value}, not open",
                           code="INVALID_STATE")
        await service.streams.open(cid)
        action = ch.ActionPay(
            service.ctx.signer, tuple(Quantity(q) for q in quantities), Amount(direct_amount),
            reference)
        chunk = max(1, min(self.limits.max_batch, self.limits.max_inflight // 2))
        remaining, last = repeat, 0
        while remaining:
            n = min(remaining, chunk)
            last = await self._enqueue(cid, action, n, timeout_s)
            remaining -= n
        if wait:
            await self.wait_acked(cid, last, timeout_s)
        return service.states[cid]

    async def _enqueue(self, cid: str, action: ch.ActionPay, n: int, timeout_s: float) -> int:
        """Queue `n` updates for the channel's writer; returns the last nonce once committed
        and handed to the stream."""
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pending[cid].append((action, n, done))
        task = self.tasks.get(cid)
        if task is None or task.done():
            self.tasks[cid] = asyncio.create_task(self._write(cid, timeout_s),
                                                  name=f"writer {cid[:16]}")
        return await done

    async def _write(self, cid: str, timeout_s: float) -> None:
        """Sign and commit whatever is queued, as few transactions as the window allows."""
        service = self.service
        window = self.limits.max_inflight
        queue = self.pending[cid]
        while queue:
            try:
                await self._wait_room(cid, window - queue[0][1], timeout_s)
            except NodeError as exc:
                for _, _, done in queue:
                    if not done.done():
                        done.set_exception(exc)
                queue.clear()
                return
            async with service.lock(cid):
                state = service.get(cid)
                room = window - (state.sent.nonce - state.sent.acked_nonce)
                taken: list[Request] = []
                # the head fits (we waited for it); take more while the window has room
                while queue and queue[0][1] <= room:
                    taken.append(queue.popleft())
                    room -= taken[-1][1]
                state, proofs, rows, results = await service.signing.run(
                    sign_requests, state, [(a, n) for a, n, _ in taken], now_ms(),
                    work=sum(n for _, n, _ in taken))
                signed: list[tuple[int, asyncio.Future[int]]] = []
                for (_, _, done), result in zip(taken, results, strict=True):
                    if isinstance(result, ProtocolError):
                        if not done.done():  # (a caller that gave up: nothing to tell)
                            done.set_exception(result)
                    else:
                        signed.append((result, done))
                if proofs:
                    try:
                        await service.commit(state, usage=rows, outgoing=proofs,
                                             prune_upto=self.prune_upto(state))
                    except Exception as exc:
                        for _, done in signed:
                            if not done.done():
                                done.set_exception(exc)
                        continue
            await service.streams.send(cid, proofs)
            for nonce, done in signed:
                if not done.done():
                    done.set_result(nonce)

    def prune_upto(self, state: ch.ChannelState) -> int | None:
        """How far to prune our stored proofs with this commit: only when receipts moved
        since the last prune (None: nothing new to delete)."""
        cid, acked = state.channel_id.hex(), state.sent.acked_nonce
        if acked <= self.pruned.get(cid, -1):
            return None
        self.pruned[cid] = acked  # a failed commit leaves rows the next prune (<=) removes
        return acked

    def busy(self, cid: str) -> bool:
        """Whether the channel's writer will commit again soon (and write our receipts)."""
        task = self.tasks.get(cid)
        return bool(self.pending.get(cid)) or (task is not None and not task.done())

    async def _wait_room(self, cid: str, inflight: int, timeout_s: float) -> None:
        """Until at most `inflight` of our proofs are unacknowledged."""
        await self.wait_acked(cid, self.service.get(cid).sent.nonce - max(0, inflight),
                              timeout_s, what="acknowledged nothing")

    async def wait_acked(self, cid: str, nonce: int, timeout_s: float, *,
                         what: str = "not acknowledged") -> None:
        if self.service.get(cid).sent.acked_nonce >= nonce:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heap = self.ack_waiters[cid]
        if len(heap) > 1024:  # drop waiters that gave up, while the peer stays away
            heap[:] = [w for w in heap if not w[2].done()]
            heapq.heapify(heap)
        heapq.heappush(heap, (nonce, next(self._tiebreak), waiter))
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout_s)
        except TimeoutError:
            waiter.cancel()
            raise NodeError(
                f"the peer has {what} update {nonce} within {timeout_s:.0f} s; what was signed "
                "is stored and will be resent when it is back",
                code="NOT_ACKNOWLEDGED",
                status=504,
            ) from None

    def _release_waiters(self, cid: str) -> None:
        acked = self.service.get(cid).sent.acked_nonce
        heap = self.ack_waiters[cid]
        while heap and heap[0][0] <= acked:
            _, _, waiter = heapq.heappop(heap)
            if not waiter.done():
                waiter.set_result(None)

    async def on_receipt(self, receipt: Receipt) -> None:
        """A receipt moves our acknowledged nonce: checked on the signing pool, kept in memory
        at once without the channel's lock, written with the next commit or by the flusher."""
        service = self.service
        cid = receipt.channel_id.hex()
        state = service.get(cid)
        stamp = now_ms()
        t = await service.signing.run(ch.step, state, ch.ReceiveReceipt(receipt), now_ms=stamp)
        if t.state is state:
            return  # older or repeated: also for whatever is held now (acks only rise)
        held = service.get(cid)
        if held is not state:  # it moved while the receipt was checked: the machine again
            state, t = held, ch.step(held, ch.ReceiveReceipt(receipt), now_ms=stamp)
            if t.state is state:
                return
        service.ctx.metrics.acknowledged(cid, state.sent.acked_nonce, t.state.sent.acked_nonce)
        service.states[cid] = t.state
        self.dirty.add(cid)
        self._release_waiters(cid)
        self._flush_later()

    def with_receipts_since(self, state: ch.ChannelState, held: ch.ChannelState | None
                            ) -> ch.ChannelState:
        """`state`, just committed, as it replaces `held` in memory: with the receipt that
        landed in memory after `state` was computed, re-applied by the machine (that receipt
        stays to be written: the channel stays dirty)."""
        cid = state.channel_id.hex()
        if held is None or held.sent.acked_nonce <= state.sent.acked_nonce \
                or held.sent.receipt is None:
            self.dirty.discard(cid)
            return state
        try:
            t = ch.step(state, ch.ReceiveReceipt(held.sent.receipt), now_ms=now_ms())
        except ProtocolError:  # not for this state (a phase without receipts): nothing to keep
            self.dirty.discard(cid)
            return state
        self.dirty.add(cid)
        self._flush_later()
        return t.state

    def _flush_later(self, delay_s: float = 0.05) -> None:
        if self.flusher is None or self.flusher.done():
            self.flusher = asyncio.create_task(self._flush_soon(delay_s), name="receipt flusher")

    async def _flush_soon(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        await self.flush()

    async def flush(self, *, everything: bool = False) -> None:
        """Write receipts held only in memory (and prune what they acknowledge). A busy
        channel is left to its writer's next commit; when the storage is away they stay dirty
        and the flusher tries again (the peer holds them too)."""
        async with self.flushing:
            service = self.service
            left: set[str] = set()
            while self.dirty - left:
                cid = (self.dirty - left).pop()
                if not everything and self.busy(cid):
                    left.add(cid)
                    continue
                self.dirty.discard(cid)  # a receipt landing during the commit marks it again
                try:
                    async with service.lock(cid):
                        state = service.get(cid)
                        await service.commit(state, prune_upto=self.prune_upto(state))
                except StorageUnavailable:
                    self.dirty.add(cid)
                    self.flusher = asyncio.create_task(self._flush_soon(STORAGE_RETRY_S),
                                                       name="receipt flusher")
                    return
                except BaseException:  # cancelled (stop) or failed mid-commit: still to write
                    self.dirty.add(cid)
                    raise
            if left:
                self.flusher = asyncio.create_task(self._flush_soon(0.05),
                                                   name="receipt flusher")

    async def stop(self) -> None:
        for task in list(self.tasks.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 5)
        if self.flusher is not None:  # cancelled mid-commit, it marks its channel dirty again
            self.flusher.cancel()
            await asyncio.gather(self.flusher, return_exceptions=True)
        await self.flush(everything=True)
