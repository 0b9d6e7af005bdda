"""Where an adapter keeps its idempotency keys and answers, so a retry never pays twice.

The write order is the whole point:

1. :meth:`IdempotencyStore.reserve` records the key, a digest of the instruction and the ids the
   adapter derived from it, *before* anything is sent to the bank;
2. the adapter submits, reusing the derived ids (the bank de-duplicates on them);
3. :meth:`IdempotencyStore.save` records the answer.

A crash between 1 and 3 leaves a reserved key with no answer; the adapter's next submit with the
same key re-sends the *same* request (same MsgId / EndToEndId / x-idempotency-key), which the bank
recognises, instead of inventing a new payment.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from rails.errors import IdempotencyConflict
from rails.port import PaymentInstruction, PaymentRecord, PaymentStatus


def instruction_digest(instruction: PaymentInstruction) -> str:
    """SHA-256 over a canonical JSON of the instruction (dates as ISO strings)."""
    body = asdict(instruction)
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, default=str, separators=(",", ":")).encode()
    ).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredSubmission:
    idempotency_key: str
    digest: str
    instruction: dict[str, Any]
    meta: dict[str, Any]
    """Adapter-specific ids derived before submission (MsgId, consent id, ...)."""
    record: PaymentRecord | None
    """None while the submission is reserved but unanswered."""


class IdempotencyStore(Protocol):
    def reserve(
        self, instruction: PaymentInstruction, meta: dict[str, Any]
    ) -> StoredSubmission: ...
    def get(self, key: str) -> StoredSubmission | None: ...
    def update_meta(self, key: str, meta: dict[str, Any]) -> None: ...
    def save(self, record: PaymentRecord) -> None: ...
    def all(self) -> list[StoredSubmission]: ...
    def close(self) -> None: ...


def _record_to_json(record: PaymentRecord) -> str:
    return json.dumps(asdict(record), sort_keys=True)


def _record_from_json(text: str | None) -> PaymentRecord | None:
    if text is None:
        return None
    data = json.loads(text)
    data["status"] = PaymentStatus(data["status"])
    return PaymentRecord(**data)


class SqliteIdempotencyStore:
    """The adapter's own SQLite file (or ``:memory:`` for tests that do not restart).

    Writes are synchronous and committed before returning: the reservation must be on disk
    before the bank hears of the payment.
    """

    def __init__(self, path: str | Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS rail_submission ("
            " idempotency_key TEXT PRIMARY KEY,"
            " digest TEXT NOT NULL,"
            " instruction TEXT NOT NULL,"
            " meta TEXT NOT NULL,"
            " record TEXT)"
        )

    def reserve(self, instruction: PaymentInstruction, meta: dict[str, Any]) -> StoredSubmission:
        """Record the key (first time) or return what is stored (same instruction again).

        Raises IdempotencyConflict when the key was used for a different instruction.
        """
        digest = instruction_digest(instruction)
        with self._lock:
            existing = self._get(instruction.idempotency_key)
            if existing is not None:
                if existing.digest != digest:
                    raise IdempotencyConflict(
                        f"idempotency key {instruction.idempotency_key!r} was already used "
                        "for a different payment"
                    )
                return existing
            body = json.dumps(asdict(instruction), sort_keys=True, default=str)
            self._db.execute(
                "INSERT INTO rail_submission (idempotency_key, digest, instruction, meta)"
                " VALUES (?, ?, ?, ?)",
                (instruction.idempotency_key, digest, body, json.dumps(meta, sort_keys=True)),
            )
            return StoredSubmission(
                instruction.idempotency_key, digest, json.loads(body), dict(meta), None
            )

    def get(self, key: str) -> StoredSubmission | None:
        with self._lock:
            return self._get(key)

    def _get(self, key: str) -> StoredSubmission | None:
        row = self._db.execute(
            "SELECT idempotency_key, digest, instruction, meta, record"
            " FROM rail_submission WHERE idempotency_key = ?",
            (key,),
        ).fetchone()
        if row is None:
            return None
        return StoredSubmission(
            row[0], row[1], json.loads(row[2]), json.loads(row[3]), _record_from_json(row[4])
        )

    def update_meta(self, key: str, meta: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE rail_submission SET meta = ? WHERE idempotency_key = ?",
                (json.dumps(meta, sort_keys=True), key),
            )

    def save(self, record: PaymentRecord) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE rail_submission SET record = ? WHERE idempotency_key = ?",
                (_record_to_json(record), record.idempotency_key),
            )

    def all(self) -> list[StoredSubmission]:
        with self._lock:
            keys = [
                r[0]
                for r in self._db.execute(
                    "SELECT idempotency_key FROM rail_submission ORDER BY rowid"
                ).fetchall()
            ]
            return [s for k in keys if (s := self._get(k)) is not None]

    def close(self) -> None:
        with self._lock:
            self._db.close()
