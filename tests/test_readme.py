"""README.md keeps its contract: the two commands first, a Quickstart that runs exactly as
written, and a CLI reference that is current."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from node import daemon
from node.cli.reference import README
from node.lockfile import holder

QUICKSTART_PORTS = (8700, 7701, 7702, 7711, 7712, 7721, 7722)


def code_blocks(text: str) -> list[str]:
    """The README's ```sh blocks, in order."""
    return [part.split("```", 1)[0] for part in text.split("```sh\n")[1:]]


def quickstart_block() -> str:
    text = README.read_text()
    return code_blocks(text[text.index("## Quickstart"):])[0]


def test_cli_reference_matches_help() -> None:
    # A fresh process: click caches each command's help option, and other tests in this
    # process invoke command groups on their own (without `meterline`'s -h setting).
    proc = subprocess.run([sys.executable, "-m", "node.cli.reference"], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_readme_opens_with_the_two_commands() -> None:
    head = README.read_text().split("```", 2)[1]
    assert "meterline demo" in head
    assert "python -m pytest -q" in head
    assert "python -m pytest -q" in Path(".ci/run").read_text()


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_quickstart_runs_exactly_as_written(tmp_path: Path) -> None:
    """The Quickstart block, pasted into bash from a folder whose .venv is this environment:
    no sleeps, no retries — each `start --detach` returns once its daemon listens."""
    taken = [p for p in QUICKSTART_PORTS if _port_taken(p)]
    if taken:
        pytest.skip(f"the Quickstart's fixed ports {taken} are in use by another process here")
    (tmp_path / ".venv").symlink_to(sys.prefix)
    script = tmp_path / "quickstart.sh"
    script.write_text(quickstart_block())
    env = {k: v for k, v in os.environ.items() if k != "METERLINE_HOME"}
    try:
        proc = subprocess.run(["bash", "-euo", "pipefail", str(script)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300, check=False)
    finally:
        for name in ("carrier", "manufacturer", "escrow", "bank"):
            directory = tmp_path / "qs" / name
            if holder(directory) is not None:  # the script stopped half-way: clean up
                daemon.stop(directory, what=name)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    out = proc.stdout
    assert "awaiting-acceptance" in out  # the carrier saw the full terms before accepting
    assert "tariff    km=0.0123, container-hour=1.75 EUR per unit" in out
    assert "phase     settled" in out
    accounts = json.JSONDecoder().raw_decode(out[out.index('{"accounts"'):])[0]["accounts"]
    balances = {a["account_id"]: a["balance_minor"] for a in accounts}
    # 12.5 km + 1,000 × 1 km at 0.0123 EUR + 3.20 EUR = 15.6475 EUR, paid out rounded down
    assert balances == {"escrow": 0, "manufacturer": 1_000_000 - 1565, "carrier": 1565}
    assert "stopped the sandbox bank" in out
    csv = (tmp_path / "qs" / "channel.csv").read_text()
    assert "SHIPMENT-4711" in csv
