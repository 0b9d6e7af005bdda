"""The node's background loops end one way: cancelled, then awaited, so nothing of theirs runs
after the database or the rail they use is closed."""

from __future__ import annotations

import asyncio

import structlog

log = structlog.get_logger()


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
