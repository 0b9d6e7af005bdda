"""What a daemon imports at start (issue 13: the restart is timed from the process start): the
optional parts load only when they are configured or needed."""

from __future__ import annotations

import json
import subprocess
import sys

DEFERRED = ("aiomqtt", "paho", "alembic", "mako")
"""[ingest.mqtt]'s client, and the migrations (imported only when the schema is behind)."""


def test_the_node_starts_without_importing_its_optional_parts() -> None:
    code = ("import json, sys, node.app; "
            f"print(json.dumps(sorted(m for m in {DEFERRED!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
