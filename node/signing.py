"""The signing pool: Ed25519 work of the per-update path, off the event loop (ADR 0305).

libsodium (PyNaCl, through cffi) releases the GIL while it signs or verifies, so two threads
use both cores: the writer's batches of proofs are signed here, the receiver's receipts are
signed here, and the signatures of a received batch are checked here while the previous batch
commits. The pool runs only pure functions of the protocol on immutable values; every state it
returns is taken (or refused) back on the event loop, under the rules of the caller.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from protocol import channel as ch
from protocol.errors import ProtocolError
from protocol.messages import BalanceProof

T = TypeVar("T")

THREADS = 2
"""One per core of the machine the targets are set on; more only queue on the GIL."""
SPLIT_AT = 32
"""A batch of at least this many proofs is checked by both threads, half each."""
INLINE_BELOW = 4
"""Work of fewer signatures than this runs on the event loop: handing it to a thread and back
costs more (about 0.2-0.3 ms of wake-ups on the project's machine, measured with
node.bench's single updates) than signing or verifying it (40 / 80 µs each). A single event
then pays for no thread hop; the pool is for batches."""


def _check_all(proofs: Sequence[BalanceProof]) -> list[ch.CheckedProof | None]:
    """Each proof checked, or None when its signature fails: the machine then checks it
    itself and answers with the error the spec's precedence names (0003 §5.2)."""
    out: list[ch.CheckedProof | None] = []
    for proof in proofs:
        try:
            out.append(ch.check_signature(proof))
        except ProtocolError:
            out.append(None)
    return out


class SigningPool:
    def __init__(self, threads: int = THREADS) -> None:
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="ed25519")
        self.threads = threads
        self.closed = False

    async def run(self, fn: Callable[..., T], *args: Any, work: int = 1, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` on a pool thread (a pure function: it touches no node state);
        `work`: about how many signatures it makes or checks (below INLINE_BELOW it runs on
        the loop)."""
        if self.closed or work < INLINE_BELOW:  # (stopping: what still runs runs here)
            return fn(*args, **kwargs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    async def check(self, proofs: Sequence[BalanceProof]) -> list[ch.CheckedProof | None]:
        """The signatures of a received batch, checked on the pool (split across its threads
        when the batch is large)."""
        if len(proofs) < SPLIT_AT or self.threads < 2:
            return await self.run(_check_all, proofs, work=len(proofs))
        half = len(proofs) // 2
        first, second = await asyncio.gather(self.run(_check_all, proofs[:half], work=half),
                                             self.run(_check_all, proofs[half:], work=half))
        return first + second

    def close(self) -> None:
        self.closed = True
        self.executor.shutdown(wait=True, cancel_futures=True)
