"""The node's background loops end one way: cancelled, then awaited, so nothing of theirs runs
after the database or the rail they use is closed; and a pass over every channel lets the loop
serve between its steps."""

from __future__ import annotations

import asyncio

import structlog

log = structlog.get_logger()

YIELD_EVERY = 8
"""Channels handled between two turns of the event loop in a pass over all of them: about
2 ms of decoding states at most, so a payment waits that long behind a pass, not the 13 ms
of 64 (a restarted node with 10,000 channels serves its first update during the first passes,
issue 13). A turn costs a few microseconds."""


async def take_turns(i: int) -> None:
    """Called with the index of each channel of a pass: every YIELD_EVERY-th, the loop runs
    whatever waits (a payment, a receipt) before the pass goes on."""
    if i % YIELD_EVERY == YIELD_EVERY - 1:
        await asyncio.sleep(0)


async def stop_tasks(*tasks: asyncio.Task[None] | None) -> None:
    """Cancel every task given (None: never started) and wait until each has ended; a task that
    had already failed is logged, not raised, since shutdown must go on."""
    running = [t for t in tasks if t is not None]
    for task in running:
        task.cancel()
    for task in running:
        try:
            await task
        except asyncio.CancelledError:
            continue
        except Exception as exc:
            log.warning("task.failed", task=task.get_name(), error=repr(exc)[:300])
