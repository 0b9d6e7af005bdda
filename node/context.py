"""What every service of a running node shares: config, key, database, rail, peer client."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from node.config import Config
from node.errors import NotFound
from node.peerclient import PeerClient
from node.storage.models import Peer, Usage
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

    @property
    def node_id(self) -> str:
        return self.signer.node_id.hex()

    async def peer(self, node_id: str) -> Peer:
        async with self.db() as session:
            row = await session.get(Peer, node_id)
        if row is None:
            raise NotFound(
                f"unknown peer {node_id[:16]}…: add it first with `meterline peer add URL`",
                code="UNKNOWN_PEER",
            )
        return row

    async def all_peers(self) -> list[Peer]:
        async with self.db() as session:
            return list((await session.scalars(select(Peer).order_by(Peer.added_ms))).all())


def upsert_usage(session: AsyncSession, rows: dict[tuple[Any, ...], list[int]]) -> Any:
    """One statement adding (quantity, amount, updates) to the aggregated usage rows."""
    if not rows:
        return None
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    values = [
        {
            "channel_id": k[0],
            "sender": k[1],
            "unit": k[2],
            "reference": k[3],
            "bucket_ms": k[4],
            "quantity": v[0],
            "amount": v[1],
            "updates": v[2],
        }
        for k, v in rows.items()
    ]
    stmt = insert(Usage).values(values)
    return stmt.on_conflict_do_update(
        index_elements=["channel_id", "sender", "unit", "reference", "bucket_ms"],
        set_={
            "quantity": Usage.quantity + stmt.excluded.quantity,
            "amount": Usage.amount + stmt.excluded.amount,
            "updates": Usage.updates + stmt.excluded.updates,
        },
    )
