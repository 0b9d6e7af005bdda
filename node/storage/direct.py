"""A channel commit that writes only the channel's own rows, in one call on one SQLite thread.

Through SQLAlchemy's aiosqlite adapter every statement is three round trips between the event
loop and aiosqlite's thread (cursor, execute, close), each 0.15-0.3 ms of wake-ups whatever the
work; a channel commit (BEGIN, the UPDATE, the usage upsert, the proofs' INSERT and DELETE,
COMMIT, the pool's reset) made about ten of them: 5-7 ms for what SQLite itself does in well
under 1 ms (issue 13, ADR 0325). The commit of an update or a receipt touches nothing but the
channel's rows (no phase change, no delivery, no event row), so it runs here instead:

- the very Core statements the session path runs (node.storage.repository's
  `channel_writes`), compiled once for SQLite;
- executed by `sqlite3` on one connection of this module's own thread, opened with the pragmas
  of every pooled connection (WAL, ``synchronous=FULL``, foreign keys), in ``BEGIN IMMEDIATE``
  … ``COMMIT``: one hop there and back, and the commit is fsynced before the call returns;
- a driver error comes back as the DBAPIError class SQLAlchemy would have raised, and one that
  means the storage is away is :class:`~node.storage.db.StorageUnavailable` with the engine's
  health marked, exactly as :func:`node.storage.db.transaction` does: nothing was committed.

The connection is another writer on the same database file; SQLite's lock takes writers in turn
(the 30 s busy timeout of the pool's connections) and WAL readers never wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

from node.storage.db import PRAGMAS, SQLITE_TIMEOUT_S, StorageUnavailable, health, storage_failure

_DIALECT = sqlite.dialect(paramstyle="qmark")


_COMPILED: dict[tuple[Any, tuple[str, ...]], tuple[str, tuple[str, ...]]] = {}
"""(statement, parameter names) → its SQL for SQLite and the order of its parameters: the
channel commit's few constant statements (node.storage.repository), compiled once each."""


def _compiled(statement: Any, keys: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    found = _COMPILED.get((statement, keys))
    if found is None:
        compiled = statement.compile(dialect=_DIALECT, column_keys=list(keys))
        found = _COMPILED[(statement, keys)] = (str(compiled), tuple(compiled.positiontup or ()))
    return found


Writes = list[tuple[Any, list[dict[str, Any]]]]
"""Constant Core statements with their parameter sets (all with the same names), run in order
in one transaction."""


def direct_path(engine: AsyncEngine) -> str | None:
    """The database file a direct connection may open beside `engine` (None: not SQLite, or an
    in-memory or URI database no second connection would share)."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.query:
        return None
    path = url.database
    return None if not path or path == ":memory:" else path


class DirectCommits:
    """One thread, one connection: :meth:`run` executes a transaction's writes there."""

    def __init__(self, engine: AsyncEngine, path: str) -> None:
        self.engine = engine
        self.path = path
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="sqlite-direct")
        self._conn: sqlite3.Connection | None = None
        self.on_commit: list[Callable[[], None]] = []
        """Called on the thread after each commit (tests count transactions with it)."""
        self._closed = False

    async def run(self, writes: Writes) -> None:
        """The writes in one transaction, committed (fsynced) when this returns."""
        if self._closed:
            raise StorageUnavailable("storage unavailable (sqlite): the node is stopping; "
                                     "nothing was committed")
        prepared = [(*_compiled(statement, tuple(rows[0])), rows) for statement, rows in writes]
        failed = await asyncio.get_running_loop().run_in_executor(self._pool, self._write,
                                                                  prepared)
        if failed is None:
            health(self.engine).recovered()
            return
        if storage_failure(failed):
            raise StorageUnavailable(health(self.engine).failed(failed)) from failed
        raise failed

    def _write(self, writes: list[tuple[str, tuple[str, ...], list[dict[str, Any]]]]
               ) -> StatementError | None:
        """On the thread: the transaction, or the driver's error as SQLAlchemy's class."""
        statement: str = "BEGIN IMMEDIATE"
        rows: list[dict[str, Any]] = [{}]
        conn = self._conn
        try:
            if conn is None:
                conn = self._conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            for statement, keys, rows in writes:
                conn.executemany(statement, [tuple(row[k] for k in keys) for row in rows])
            statement, rows = "COMMIT", [{}]
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._abandon(conn, exc)
            return DBAPIError.instance(statement, rows, exc, sqlite3.Error,
                                       hide_parameters=True, dialect=_DIALECT)
        for call in self.on_commit:
            call()
        return None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=SQLITE_TIMEOUT_S, isolation_level=None)
        for pragma in PRAGMAS:
            conn.execute(pragma)
        return conn

    def _abandon(self, conn: sqlite3.Connection | None, exc: sqlite3.Error) -> None:
        """Roll back; a connection that met anything but a refused statement is closed and
        opened afresh by the next transaction (a full disk or an I/O error can leave it
        unusable)."""
        if conn is None:
            return
        with contextlib.suppress(sqlite3.Error):
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        if not isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError):
            with contextlib.suppress(sqlite3.Error):
                conn.close()
            self._conn = None

    def close(self) -> None:
        """Close the connection on its thread, and the thread (waits for a commit under way)."""
        if self._closed:
            return
        self._closed = True

        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        self._pool.submit(shut)
        self._pool.shutdown(wait=True)
