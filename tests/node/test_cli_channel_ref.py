"""A channel id on the command line is a channel id: checked by the CLI before it becomes part
of an admin API path, so text after it cannot make the command call another route."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import RunningNode, free_port, make_config, open_sim, seed


@pytest.fixture
async def node(tmp_path: Path, start_node: Callable[..., Any]) -> tuple[RunningNode, str]:
    sim = open_sim()
    config = make_config(tmp_path / "peer", sim.peer)
    await seed(config, [sim.states[1]],
               peers=[(sim.opener, f"http://127.0.0.1:{free_port()}", "node")])
    return await start_node(config), sim.terms.channel_id.hex()


async def meterline(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a thread: the node it calls runs on this test's event loop."""
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "node.cli", *args], capture_output=True,
        text=True, timeout=120, check=False)


@pytest.mark.parametrize(
    ("command", "suffix"),
    [(("channel", "settle"), "/close?"), (("channel", "show"), "/../../peers"),
     (("channel", "reject"), "/close?"), (("channel", "topup"), "#")],
)
async def test_text_after_a_channel_id_is_a_usage_error_and_calls_nothing(
    node: tuple[RunningNode, str], command: tuple[str, ...], suffix: str
) -> None:
    running, cid = node
    extra = ["1.00 EUR"] if command[-1] == "topup" else []
    out = await meterline(*command, cid + suffix, *extra, "--data-dir",
                          str(running.config.data_dir))
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "channel id" in out.stderr
    status, body = await running.admin("GET", f"/api/channels/{cid}")
    assert (status, body["phase"]) == (200, "open")
