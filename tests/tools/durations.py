"""Refresh tests/durations.json from a run's ``--durations`` report.

    python -m pytest -q -n auto --durations=0 | tee /tmp/run.log
    python -m tests.tools.durations < /tmp/run.log

Setup, call and teardown of a test are added up; tests under ``MIN_S`` seconds are left out
(their order does not matter). tests/conftest.py runs the listed tests longest first.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

MIN_S = 5.0
LINE = re.compile(r"^\s*([0-9.]+)s\s+(setup|call|teardown)\s+(.+?)\s*$")
TARGET = Path(__file__).resolve().parents[1] / "durations.json"


def main() -> None:
    total: dict[str, float] = defaultdict(float)
    for line in sys.stdin:
        match = LINE.match(line)
        if match:
            total[match.group(3)] += float(match.group(1))
    kept = {k: round(v, 1) for k, v in sorted(total.items(), key=lambda kv: -kv[1])
            if v >= MIN_S}
    if not kept:
        sys.exit("no --durations lines on stdin: run pytest with --durations=0")
    TARGET.write_text(json.dumps(kept, indent=1) + "\n")
    print(f"{TARGET}: {len(kept)} tests of {MIN_S:g} s or more", file=sys.stderr)


if __name__ == "__main__":
    main()
