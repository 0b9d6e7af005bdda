"""Run `meterline` as an operator would: a subprocess, its exit status, its words or JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from node import daemon
from node.lockfile import holder


def meterline(*args: str, status: int = 0, cwd: Path | None = None,
              env: dict[str, str] | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`meterline ARGS…`; asserts the exit status and that no traceback was printed."""
    base = {k: v for k, v in os.environ.items() if k != "METERLINE_HOME"}
    proc = subprocess.run([sys.executable, "-m", "node.cli", *args], capture_output=True,
                          text=True, cwd=cwd, env={**base, **(env or {})}, timeout=timeout,
                          check=False)
    assert proc.returncode == status, (
        f"meterline {' '.join(args)}: exit {proc.returncode}, wanted {status}\n"
        f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}")
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def json_error(*args: str, status: int, **kwargs: Any) -> dict[str, Any]:
    """The JSON error a failing `meterline ARGS… --json` prints on stderr."""
    proc = meterline(*args, "--json", status=status, **kwargs)
    error: dict[str, Any] = json.loads(proc.stderr)["error"]
    assert error["exit"] == status
    return error


def stop_all(*directories: Path) -> None:
    """Stop whatever still runs on these data directories (a test that failed half-way)."""
    for directory in directories:
        if holder(directory) is not None:
            daemon.stop(directory, what=str(directory))
