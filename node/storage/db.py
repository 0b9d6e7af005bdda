"""Engine, sessions and migrations.

SQLite (the embedded default) runs in WAL mode with ``synchronous=FULL``: every commit is
fsynced, so an acknowledged update survives a power cut, and commits are grouped (one transaction
per batch of updates that arrived together) so durability does not cost a sync per unit.
PostgreSQL (``postgresql+asyncpg://…``) uses the same schema and migrations.

Storage health (ADR 0250): every error the database driver raises that means the storage is
away — a full or failing disk, a server restarted or its connection killed — marks the engine's
:class:`StorageHealth` unavailable with the driver's words, and a transaction that meets one
raises :class:`StorageUnavailable` (``STORAGE_UNAVAILABLE``, 503): nothing in it was committed,
so nothing is acknowledged. The next transaction that commits marks the storage ok again; there
is no separate probe, so the state shown is that of the last write.
"""

from __future__ import annotations

import contextlib
import re
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection, Engine, ExceptionContext
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from node.errors import NodeError

log = structlog.get_logger()

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


class StorageUnavailable(NodeError):
    """The database could not commit: nothing of the request was stored or acknowledged."""

    status = 503
    code = "STORAGE_UNAVAILABLE"


@dataclass(slots=True)
class StorageHealth:
    """Whether the last write reached the storage, and if not since when and why."""

    backend: str
    ok: bool = True
    error: str = ""
    since_ms: int = 0
    """When the current state began (0: ok since the start)."""
    failures: int = 0
    """Storage errors since the storage was last ok."""
    _last: object = None
    """The driver's exception last counted (the engine's hook and the transaction see it)."""

    def failed(self, exc: BaseException) -> str:
        orig = getattr(exc, "orig", None) or exc
        text = (str(orig).strip().splitlines() or [type(orig).__name__])[0][:200]
        if orig is self._last:
            return f"storage unavailable ({self.backend}): {text}; nothing was committed"
        self._last = orig
        if self.ok:
            self.since_ms = time.time_ns() // 1_000_000
            log.error("storage.unavailable", backend=self.backend, error=text)
        self.ok, self.error = False, text
        self.failures += 1
        return f"storage unavailable ({self.backend}): {text}; nothing was committed"

    def recovered(self) -> None:
        if not self.ok:
            log.warning("storage.recovered", backend=self.backend, failures=self.failures,
                        down_ms=time.time_ns() // 1_000_000 - self.since_ms)
            self.ok, self.error, self.failures, self._last = True, "", 0, None
            self.since_ms = time.time_ns() // 1_000_000

    def json(self) -> dict[str, Any]:
        return {"backend": self.backend, "state": "ok" if self.ok else "unavailable",
                "since_ms": self.since_ms, "error": self.error, "failures": self.failures}


_HEALTH: weakref.WeakKeyDictionary[Engine, StorageHealth] = weakref.WeakKeyDictionary()


def health(engine: AsyncEngine | Engine) -> StorageHealth:
    sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    found = _HEALTH.get(sync)
    if found is None:
        found = _HEALTH[sync] = StorageHealth(sync.dialect.name)
    return found


def storage_failure(exc: BaseException) -> bool:
    """Whether `exc` says the storage is away (not that a statement was wrong)."""
    if isinstance(exc, DBAPIError):
        # no statement: connecting or committing failed (a server refusing connections, a
        # database that accepts none), not a statement the storage refused
        return (exc.connection_invalidated or exc.statement is None
                or isinstance(exc, OperationalError | InterfaceError))
    return isinstance(exc, ConnectionError)  # a PostgreSQL server that refuses connections


def unavailable(engine: AsyncEngine, exc: BaseException) -> StorageUnavailable | None:
    """`exc` as StorageUnavailable when it is a storage failure (for the APIs' error
    middleware: a read that met one answers 503, not 500), else None."""
    if isinstance(exc, StorageUnavailable):
        return exc
    if not storage_failure(exc):
        return None
    return StorageUnavailable(health(engine).failed(exc))


@contextlib.asynccontextmanager
async def transaction(maker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One transaction; a storage failure in it is :class:`StorageUnavailable`."""
    engine = maker.kw["bind"]
    try:
        async with maker() as session, session.begin():
            yield session
    except (DBAPIError, ConnectionError) as exc:
        if not storage_failure(exc):
            raise
        raise StorageUnavailable(health(engine).failed(exc)) from exc
    health(engine).recovered()


def _watch(engine: AsyncEngine) -> None:
    """Every storage error the engine meets marks its health, whoever's session it was."""

    @event.listens_for(engine.sync_engine, "handle_error")
    def _failed(context: ExceptionContext) -> None:
        if not isinstance(context.original_exception, Exception):
            return  # a cancelled task (shutdown), not the storage
        if storage_failure(context.sqlalchemy_exception or context.original_exception) \
                or context.is_disconnect:
            health(engine).failed(context.original_exception)


def make_engine(url: str) -> AsyncEngine:
    engine = _make_engine(url)
    _watch(engine)
    return engine


POOL_SIZE = 10
POOL_OVERFLOW = 10
"""Connections kept, and how many more under a burst: an admin read waiting for a connection
must not queue the commits behind it (issue 13). Safe with SQLite's WAL: readers never block the
one writer, writers take the database lock in turn (each waits up to the 30 s busy timeout), and
every connection gets ``synchronous=FULL`` when it opens (`_pragmas`), so none commits without
the fsync."""


SQLITE_TIMEOUT_S = 30
"""How long a SQLite writer waits for the database lock another connection holds."""
PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA foreign_keys=ON")
"""Every SQLite connection's settings (the pool's and node.storage.direct's)."""


def _make_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": SQLITE_TIMEOUT_S},
                                     pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            for pragma in PRAGMAS:
                cursor.execute(pragma)
            cursor.close()

        return engine
    return create_async_engine(url, pool_size=5, max_overflow=5, pool_pre_ping=True)


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


_REVISION = re.compile(r'^(down_)?revision\s*=\s*"([^"]*)"', re.MULTILINE)


def head_revision(versions: Path = MIGRATIONS / "versions") -> str:
    """The latest migration's revision, read from the files (no alembic import: about 0.9 s
    of a daemon's startup, mako and pygments with it)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in versions.glob("*.py"):
        for down, value in _REVISION.findall(path.read_text(encoding="utf-8")):
            (parents if down else revisions).add(value)
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"the migrations have {len(heads)} heads: {sorted(heads)}")
    return heads.pop()


async def at_head(engine: AsyncEngine) -> bool:
    """Whether the schema is at the latest revision already (one small query)."""
    async with engine.connect() as conn:
        if not await conn.run_sync(lambda sync: inspect(sync).has_table("alembic_version")):
            return False  # a new database
        current = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
    return [row[0] for row in current] == [head_revision()]


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the latest Alembic revision; alembic is imported only when there is
    something to migrate (a daemon restarted on its own schema skips it, issue 13)."""
    if await at_head(engine):
        return
    from alembic import command
    from alembic.config import Config as AlembicConfig

    def upgrade(connection: Connection) -> None:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")

    async with engine.begin() as conn:
        await conn.run_sync(upgrade)
