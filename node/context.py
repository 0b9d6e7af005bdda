"""What every service of a running node shares: config, key, database, rail, peer client."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from node.config import Config
from node.errors import NotFound
from node.events import EventLog
from node.metrics import Metrics
from node.peerclient import PeerClient
from node.storage.models import Peer
from node.storage.repository import Repository
from protocol.crypto import Signer
from rails.port import Rail


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Context:
    config: Config
    signer: Signer
    engine: AsyncEngine
    db: async_sessionmaker[AsyncSession]
    peers: PeerClient
    rail: Rail | None
    metrics: Metrics = field(default_factory=Metrics)
    repo: Repository = field(init=False)
    events: EventLog = field(init=False)

    def __post_init__(self) -> None:
        self.repo = Repository(self.db)
        self.events = EventLog(self.db, self.config.limits.payment_event_interval_ms,
                               self.config.limits.event_retention_ms)

    @property
    def node_id(self) -> str:
        return self.signer.node_id.hex()

    async def peer(self, node_id: str) -> Peer:
        row = await self.repo.peer(node_id)
        if row is None:
            raise NotFound(
                f"unknown peer {node_id[:16]}…: add it first with `meterline peer add URL`",
                code="UNKNOWN_PEER",
            )
        return row

    async def all_peers(self) -> list[Peer]:
        return await self.repo.peers()
