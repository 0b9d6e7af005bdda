"""A real node daemon whose rail is the Open Banking adapter on a real sandbox bank, and the real
``meterline rails ...`` CLI against it (the consent and reconciliation tests share these).

The node runs in the test's event loop (``node.app.running`` on loopback, real SQLite); the CLI
runs in a subprocess, so it is awaited, never blocking the node that answers it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import protocol.messages  # noqa: F401  (registers every message type with the decoder)
from node.app import Node, running
from node.cluster import free_port, meterline_argv
from node.config import init_data_dir, load_config
from protocol.crypto import Signer
from rails.openbanking import OpenBankingRail
from rails.store import SqliteIdempotencyStore
from tests.rails.sandbox.conftest import Party


@dataclass
class Cli:
    """``meterline rails COMMAND --data-dir DIR [--json] ARGS``."""

    data_dir: Path
    command: str

    async def __call__(self, *args: str, as_json: bool = True) -> tuple[int, Any, str]:
        """(exit status, what it printed: JSON parsed, or the text; stderr)."""
        proc = await asyncio.create_subprocess_exec(
            *meterline_argv(), "rails", self.command, "--data-dir", str(self.data_dir),
            *(["--json"] if as_json else []), *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        shown: Any = out.decode()
        if as_json and out.strip():
            shown = json.loads(out)
        return proc.returncode, shown, err.decode()


def error_code(stderr: str) -> str:
    """The admin API's code in the CLI's JSON error (ADR 0141)."""
    return str(json.loads(stderr)["error"]["code"])


@asynccontextmanager
async def node_daemon(directory: Path) -> AsyncIterator[Node]:
    """A running arbiter daemon (it pays payouts, so it is the one that meets the bank)."""
    init_data_dir(directory, name="escrow", role="arbiter", listen=f"127.0.0.1:{free_port()}",
                  admin=f"127.0.0.1:{free_port()}", seed=Signer(b"\x05" * 32).seed())
    async with running(load_config(directory)) as node:
        yield node


def attach(node: Node, payer: Party, store_path: Path, **config: Any) -> OpenBankingRail:
    """Give the running node `payer`'s Open Banking rail (config overrides as given)."""
    rail = OpenBankingRail(replace(payer.config(), **config),
                           store=SqliteIdempotencyStore(store_path))
    node.ctx.rail = rail
    return rail
