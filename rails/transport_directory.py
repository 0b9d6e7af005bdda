"""A file channel over two folders: how host-to-host SFTP and EBICS gateways hand files to a
company, and the production :class:`~rails.transport.FileTransport`.

- **Outgoing** files are written to the *outbox* folder atomically: to a hidden temporary name
  in the same folder, flushed and ``fsync``-ed, renamed to the final name, and the folder
  ``fsync``-ed, so whatever collects them (the SFTP client, the EBICS gateway, the bank) never
  sees a half-written file and a crash leaves either the whole file or none. The name is the
  adapter's, the same for every retry of one payment: a retry rewrites identical bytes under
  the same name (a different body under a name already sent is refused, never overwritten).
- **Incoming** files (status reports, notifications, statements, returns) are read from the
  *inbox* folder. Hidden files and the usual temporary suffixes (``.tmp``, ``.part``,
  ``.filepart``) are never read, nor a file modified less than `settle_s` ago (a sender that
  does not rename). Each file is *first* recorded in a small SQLite journal (name, digest,
  type, body), *then* moved to ``inbox/processed/``: a crash in between leaves a file the next
  pass finds already journalled and only moves, so no file is ever read twice, and a file that
  cannot be moved is not read again while its journal entry stands. Files larger than
  `max_file_bytes` or that cannot be classified go to ``inbox/failed/`` with a
  ``.reason.txt`` beside them, and are never read.
- :meth:`DirectoryTransport.messages` answers from the journal, so a restarted adapter sees
  every message again (the adapters fold all of them into a status), in arrival order.

A message's type is read from its content where the format names itself (an ISO 20022
document's namespace: ``camt.054.001.08``), else from the file name's first ``-``-separated part
(``bai2.statement-….bai2``, ``nacha.ack-….ach``): ``docs/file-channel.md`` says how to name
files for a gateway that renames them.

Nothing here talks to a network: connecting the folders to the bank is the gateway's job
(``docs/file-channel.md``). This channel gives no synchronous answer (:meth:`send` returns
None) and cannot be asked about one payment (:meth:`payment` returns None).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from rails.errors import BankProtocolError, IdempotencyConflict, RailError
from rails.transport import BankMessage, PostAnswer

PROCESSED = "processed"
FAILED = "failed"
IGNORED_SUFFIXES = (".tmp", ".part", ".filepart", ".writing", ".swp", ".processing")
MAX_FILE_BYTES = 16 * 1024 * 1024
"""The largest bank file read (a month's camt.053 of a busy account is a few MiB)."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ISO_NS = re.compile(
    rb'xmlns(?::\w+)?="urn:iso:std:iso:20022:tech:xsd:([a-z]{4}\.\d{3}\.\d{3}\.\d{2})"')

_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbound (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    type TEXT NOT NULL,
    body BLOB NOT NULL,
    received_ms INTEGER NOT NULL,
    UNIQUE (name, digest)
);
CREATE TABLE IF NOT EXISTS outbound (
    name TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    sent_ms INTEGER NOT NULL
);
"""


class TransportError(RailError):
    """The folders are not usable (missing, not writable, the same folder twice)."""


def classify(name: str, body: bytes) -> str | None:
    """The message type: an ISO 20022 namespace in the first 4 KiB, else the name's first part
    (``bai2.statement``, ``nacha.ack``); None when neither says anything."""
    found = _ISO_NS.search(body[:4096])
    if found:
        return found.group(1).decode("ascii")
    head = name.split("-", 1)[0]
    if "-" in name and re.fullmatch(r"[a-z0-9]+(\.[a-z0-9]+)+", head):
        return head
    return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirectoryTransport:
    """:class:`~rails.transport.FileTransport` over an outbox and an inbox folder.

    `journal_path` is the SQLite file that records what was read and sent (give each rail its
    own). The folders are created when missing; the same folder for both, or one inside the
    other, is refused (the channel would read its own files back).
    """

    def __init__(self, outbox: str | Path, inbox: str | Path, journal_path: str | Path, *,
                 settle_s: float = 0.2, max_file_bytes: int = MAX_FILE_BYTES) -> None:
        self.outbox = Path(outbox).resolve()
        self.inbox = Path(inbox).resolve()
        for a, b in ((self.outbox, self.inbox), (self.inbox, self.outbox)):
            if a == b or b in a.parents:
                raise TransportError(f"outbox {self.outbox} and inbox {self.inbox} must be "
                                     "separate folders, neither inside the other")
        try:
            for folder in (self.outbox, self.inbox, self.inbox / PROCESSED,
                           self.inbox / FAILED):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TransportError(f"cannot create the channel's folders: {exc}") from exc
        self.settle_s = settle_s
        self.max_file_bytes = max_file_bytes
        self._db = sqlite3.connect(str(journal_path), check_same_thread=False,
                                   isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    # -- outgoing ----------------------------------------------------------------------------

    async def send(self, name: str, data: bytes, content_type: str) -> PostAnswer | None:
        await asyncio.to_thread(self._send, name, data)
        return None

    def _send(self, name: str, data: bytes) -> None:
        if not _NAME.fullmatch(name) or name.endswith(IGNORED_SUFFIXES):
            raise TransportError(f"{name!r} is not a file name this channel sends")
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            row = self._db.execute("SELECT digest FROM outbound WHERE name = ?",
                                   (name,)).fetchone()
            if row is not None and row[0] != digest:
                raise IdempotencyConflict(f"a different file was already sent as {name}")
            if row is not None:
                return  # sent before (the bank may have taken it already): never twice
            final = self.outbox / name
            temporary = self.outbox / f".{name}.{os.getpid()}.tmp"
            try:
                with open(temporary, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, final)
                _fsync_dir(self.outbox)
            except OSError as exc:
                temporary.unlink(missing_ok=True)
                raise TransportError(f"cannot write {name} to {self.outbox}: {exc}") from exc
            self._db.execute("INSERT INTO outbound (name, digest, sent_ms) VALUES (?, ?, ?)",
                             (name, digest, int(time.time() * 1000)))

    # -- incoming ----------------------------------------------------------------------------

    async def messages(self, type_prefix: str, after_id: int = 0) -> list[BankMessage]:
        return await asyncio.to_thread(self._messages, type_prefix, after_id)

    def _messages(self, type_prefix: str, after_id: int) -> list[BankMessage]:
        with self._lock:
            self._collect()
            rows = self._db.execute(
                "SELECT id, type, body FROM inbound WHERE id > ? AND substr(type, 1, ?) = ? "
                "ORDER BY id", (after_id, len(type_prefix), type_prefix)).fetchall()
        return [BankMessage(id=int(i), type=str(t), account=None, body=bytes(b))
                for i, t, b in rows]

    def _ready(self) -> list[Path]:
        now = time.time()
        ready = []
        for path in sorted(self.inbox.iterdir()):
            if (path.name.startswith(".") or path.name.endswith(IGNORED_SUFFIXES)
                    or path.name.endswith(".reason.txt") or not path.is_file()):
                continue
            if now - path.stat().st_mtime < self.settle_s:
                continue  # perhaps still being written by a sender that does not rename
            ready.append(path)
        return ready

    def _collect(self) -> None:
        """Journal every ready inbox file, then move it aside (see the module)."""
        for path in self._ready():
            try:
                size = path.stat().st_size
                body = path.read_bytes() if size <= self.max_file_bytes else None
            except OSError:
                continue  # gone (another reader) or unreadable: the next pass sees
            kind = classify(path.name, body) if body is not None else None
            if body is None or kind is None:
                why = (f"{size} bytes, more than {self.max_file_bytes}" if body is None
                       else "neither an ISO 20022 document nor a name that says its type")
                self._move(path, FAILED)
                (self.inbox / FAILED / f"{path.name}.reason.txt").write_text(why + "\n")
                continue
            digest = hashlib.sha256(body).hexdigest()
            self._db.execute(
                "INSERT OR IGNORE INTO inbound (name, digest, type, body, received_ms) "
                "VALUES (?, ?, ?, ?, ?)",
                (path.name, digest, kind, body, int(time.time() * 1000)))
            self._move(path, PROCESSED)

    def _move(self, path: Path, folder: str) -> None:
        target = self.inbox / folder / path.name
        n = 1
        while target.exists():
            target = self.inbox / folder / f"{path.name}.{n}"
            n += 1
        try:
            os.replace(path, target)
        except OSError as exc:
            raise BankProtocolError(f"cannot move {path.name} out of the inbox: {exc}") from exc

    async def payment(self, end_to_end_id: str) -> dict[str, Any] | None:
        return None

    async def aclose(self) -> None:
        with self._lock:
            self._db.close()
