"""What a daemon imports at start (issue 13: the restart is timed from the process start): the
optional parts load only when they are configured or needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

DEFERRED = ("aiomqtt", "paho", "alembic", "mako")
"""[ingest.mqtt]'s client, and the migrations (imported only when the schema is behind)."""


def test_the_node_starts_without_importing_its_optional_parts() -> None:
    code = ("import json, sys, node.app; "
            f"print(json.dumps(sorted(m for m in {DEFERRED!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_daemons_run_from_their_bytecode_cache_as_an_installed_node_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The cluster (bench, demo, tests) starts daemons with Python's bytecode cache on, even
    when the caller's environment turns it off: the restart the bench times is an installed
    node's, not one compiling its modules again."""
    from node.cluster import daemon_env

    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    env = daemon_env()
    assert "PYTHONDONTWRITEBYTECODE" not in env
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"] == os.environ["PATH"]
