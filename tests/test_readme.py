"""README.md keeps its contract: the two commands first, a Quickstart that runs exactly as
written, and a CLI reference that is current."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from node import daemon
from node.cli.reference import README
from node.lockfile import holder

QUICKSTART_PORTS = (8700, 7701, 7702, 7711, 7712, 7721, 7722)
REPO = Path(__file__).resolve().parents[1]
FRESH_CLONE_TESTS = ("auto_approved_payment_books_both_sides or "
                     "readme_opens_with_the_two_commands or spec_diagram")
"""What block 2's `pytest -q` runs in the fresh clone (through PYTEST_ADDOPTS, so the block is
run as written): every test module is still collected (imported, its conftest loaded); these
run — one reads the Open Banking OpenAPI files shipped under tests/rails/sandbox, one .ci/run,
one specs/. The whole suite there would take the suite's time again (and include this test)."""


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
    assert "python -m pytest -q -n auto" in head
    assert "python -m pytest -q -n auto" in Path(".ci/run").read_text()


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _bash(block: str, cwd: Path, env: dict[str, str],
          timeout: float) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, (f"stdout:\n{proc.stdout[-3000:]}\n"
                                  f"stderr:\n{proc.stderr[-3000:]}")
    return proc


def _outside_the_repository(tmp_path: Path) -> Path:
    """An empty folder outside the repository's parent: pytest's own when it is (a checkout
    anywhere but /tmp), else a fresh one under /var/tmp or the home directory."""
    parent = REPO.parent.resolve()
    if not tmp_path.resolve().is_relative_to(parent):
        return tmp_path
    for base in (Path("/var/tmp"), Path.home()):
        if base.is_dir() and not base.resolve().is_relative_to(parent):
            return Path(tempfile.mkdtemp(prefix="meterline-fresh-", dir=base))
    pytest.skip(f"no writable folder outside {parent} for a fresh clone")


def test_a_fresh_clone_runs_the_first_two_blocks(tmp_path: Path) -> None:
    """`git clone` of this repository at HEAD into an empty folder outside the repository's
    parent, with nothing beside it; there the README's first block (set up and run the demo;
    set up and run the tests, limited as FRESH_CLONE_TESTS says) and its second, the
    Quickstart, exactly as written — no sleeps, no retries: each `start --detach` returns once
    its daemon listens."""
    if not (REPO / ".git").exists():
        pytest.skip(f"{REPO} is not a git checkout: there is no HEAD to clone")
    taken = [p for p in QUICKSTART_PORTS if _port_taken(p)]
    if taken:
        pytest.skip(f"the Quickstart's fixed ports {taken} are in use by another process here")
    tmp_path = _outside_the_repository(tmp_path)
    assert not tmp_path.resolve().is_relative_to(REPO.parent.resolve())
    clone = tmp_path / "meterline"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)],
                   check=True, capture_output=True, timeout=120)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meterline"]
    first, quickstart = code_blocks(README.read_text())[:2]
    assert quickstart == quickstart_block()
    env = {k: v for k, v in os.environ.items()
           if k not in ("METERLINE_HOME", "VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = ":".join(p for p in env.get("PATH", "").split(":")
                           if not p.startswith(sys.prefix))
    setup = _bash(first, clone, {**env, "PYTEST_ADDOPTS": f"-p no:cacheprovider -k "
                                                          f"'{FRESH_CLONE_TESTS}'"}, 480)
    assert "channel settled" in setup.stdout
    assert "done: daemons stopped" in setup.stdout
    summary = setup.stdout.strip().splitlines()[-1]
    assert re.search(r"\b([3-9]|\d\d+) passed", summary), summary
    assert "failed" not in summary
    assert "error" not in summary

    try:
        out = _bash(quickstart, clone, env, 300).stdout
    finally:
        for name in ("carrier", "manufacturer", "escrow", "bank"):
            directory = clone / "qs" / name
            if holder(directory) is not None:  # the block stopped half-way: clean up
                daemon.stop(directory, what=name)
    assert "awaiting-acceptance" in out  # the carrier saw the full terms before accepting
    assert "tariff    km=0.0123, container-hour=1.75 EUR per unit" in out
    assert "phase     settled" in out
    accounts = json.JSONDecoder().raw_decode(out[out.index('{"accounts"'):])[0]["accounts"]
    balances = {a["account_id"]: a["balance_minor"] for a in accounts}
    # 12.5 km + 1,000 × 1 km at 0.0123 EUR + 3.20 EUR = 15.6475 EUR, paid out rounded down
    assert balances == {"escrow": 0, "manufacturer": 1_000_000 - 1565, "carrier": 1565}
    assert "stopped the sandbox bank" in out
    assert "SHIPMENT-4711" in (clone / "qs" / "channel.csv").read_text()
