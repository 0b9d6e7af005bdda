"""The crash suite: kill -9 of the payer, the payee, the arbiter or the bank at seeded moments,
restart, and check after every cycle and at the end (tests/faults/crash.py says what)."""

from __future__ import annotations

import time
from pathlib import Path

from tests.faults.crash import CrashRun
from tests.faults.crash_logs import scan
from tests.faults.crash_moments import MOMENTS, one_cycle
from tests.faults.figures import record


def test_kill_nine_at_every_moment_loses_nothing(tmp_path: Path, crash_cycles: int,
                                                 crash_seed: int) -> None:
    run = CrashRun(tmp_path / "cluster", crash_seed)
    try:
        for number in range(1, crash_cycles + 1):
            started = time.monotonic()
            cycle = one_cycle(run, number)
            print(f"cycle {number:>3} {cycle.moment:<8} kill -9 {cycle.victim:<8} "
                  f"{time.monotonic() - started:5.1f} s  {cycle.detail}")
        run.finish()
    except BaseException:
        for name in ("bank", "arbiter", "manufacturer", "carrier"):
            log = run.root / f"{name}.log"
            if log.exists():
                print(f"===== {name}\n" + "\n".join(log.read_text().splitlines()[-25:]))
        raise
    finally:
        run.stop()
        record("crash", run.figures())
    figures = run.figures()
    # every line every daemon logged through the crashes, grepped for the run's secrets
    logs = scan(run.root)
    record("crash_logs", {"files": len(logs.files), "lines": logs.lines,
                          "secrets": logs.secrets, "leaks": len(logs.leaks)})
    assert len(logs.files) == 4
    assert logs.lines > 500
    assert logs.secrets > 12
    assert not logs.leaks, "\n".join(logs.leaks[:20])
    print(f"\ncrash suite seed {crash_seed}: {figures['cycles']} cycles in "
          f"{figures['seconds']} s over {figures['channels']} channels; "
          f"{figures['by_victim_and_moment']}")
    assert figures["cycles"] == crash_cycles
    assert (figures["lost_updates"], figures["double_payouts"],
            figures["server_errors"]) == (0, 0, 0)
    if crash_cycles >= 50:  # the run did meet every moment and every victim
        assert set(figures["by_moment"]) == set(MOMENTS), figures["by_moment"]
        assert set(figures["by_victim"]) == {"payer", "payee", "arbiter", "bank"}
