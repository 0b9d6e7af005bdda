"""node.signing (ADR 0324): work under INLINE_BELOW signatures runs on the event loop's own
thread (a hop costs more than the work), larger work on the pool's threads; a closed pool runs
everything on the loop."""

from __future__ import annotations

import threading

from node.signing import INLINE_BELOW, SigningPool


async def test_small_work_stays_on_the_loop_and_batches_go_to_the_pool() -> None:
    pool = SigningPool()
    loop_thread = threading.get_ident()
    try:
        assert await pool.run(threading.get_ident) == loop_thread  # one receipt: work=1
        assert await pool.run(threading.get_ident, work=INLINE_BELOW - 1) == loop_thread
        assert await pool.run(threading.get_ident, work=INLINE_BELOW) != loop_thread
        assert await pool.run(threading.get_ident, work=500) != loop_thread
    finally:
        pool.close()
    assert await pool.run(threading.get_ident, work=500) == loop_thread  # stopping
