"""The sandbox bank's ledger: one SQLite file (WAL), synchronous, committed before answering.

Every state change runs inside :meth:`BankDB.transaction` (``BEGIN IMMEDIATE`` … ``COMMIT``), so
the idempotency check, the new resource, the booked legs and the idempotency record become durable
together or not at all. The calls are short and local; the bank runs them on the event loop
thread, which also serialises them (no two requests interleave inside a transaction).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS account (
    account_id      TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    currency        TEXT NOT NULL,
    scheme          TEXT NOT NULL,
    identification  TEXT NOT NULL,
    balance_minor   INTEGER NOT NULL,
    opened_at       TEXT NOT NULL,
    UNIQUE (scheme, identification)
);
CREATE TABLE IF NOT EXISTS client (
    client_id       TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    kid             TEXT NOT NULL,
    jwk             TEXT NOT NULL,
    token_sha256    TEXT NOT NULL UNIQUE,
    created_at      TEXT NOT NULL,
    org_id          TEXT NOT NULL DEFAULT '',
    software_statement_id TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS client_account (
    client_id       TEXT NOT NULL REFERENCES client (client_id),
    account_id      TEXT NOT NULL REFERENCES account (account_id),
    PRIMARY KEY (client_id, account_id)
);
CREATE TABLE IF NOT EXISTS consent (
    consent_id          TEXT PRIMARY KEY,
    client_id           TEXT NOT NULL,
    status              TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    status_updated_at   TEXT NOT NULL,
    initiation          TEXT NOT NULL,
    risk                TEXT NOT NULL,
    debtor_account_id   TEXT NOT NULL,
    creditor_account_id TEXT NOT NULL,
    amount_minor        INTEGER NOT NULL,
    currency            TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS payment (
    payment_id          TEXT PRIMARY KEY,
    consent_id          TEXT NOT NULL UNIQUE REFERENCES consent (consent_id),
    client_id           TEXT NOT NULL,
    status              TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    status_updated_at   TEXT NOT NULL,
    reason_code         TEXT,
    reason              TEXT
);
CREATE TABLE IF NOT EXISTS txn (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    transaction_id      TEXT NOT NULL UNIQUE,
    account_id          TEXT NOT NULL REFERENCES account (account_id),
    indicator           TEXT NOT NULL CHECK (indicator IN ('Credit', 'Debit')),
    amount_minor        INTEGER NOT NULL CHECK (amount_minor > 0),
    currency            TEXT NOT NULL,
    booked_at           TEXT NOT NULL,
    reference           TEXT,
    information         TEXT,
    counterparty_scheme TEXT,
    counterparty_id     TEXT,
    counterparty_name   TEXT,
    end_to_end_id       TEXT,
    payment_id          TEXT,
    balance_after_minor INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS txn_account_time ON txn (account_id, booked_at);
CREATE TABLE IF NOT EXISTS idempotency (
    client_id       TEXT NOT NULL,
    operation       TEXT NOT NULL,
    idem_key        TEXT NOT NULL,
    body_sha256     TEXT NOT NULL,
    resource_id     TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (client_id, operation, idem_key)
);
"""


def utcnow() -> str:
    """ISO 8601 UTC with microseconds: sorts lexicographically, parses as an OB date-time."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class AccountRow:
    account_id: str
    name: str
    currency: str
    scheme: str
    identification: str
    balance_minor: int
    opened_at: str


@dataclass(frozen=True, slots=True)
class ClientRow:
    client_id: str
    name: str
    kid: str
    jwk: dict[str, Any]
    account_ids: tuple[str, ...]
    org_id: str = ""
    software_statement_id: str = ""

    @property
    def issuer(self) -> str:
        """What the client's signatures must name as ``iss`` (``{org-id}/{ssid}``)."""
        return f"{self.org_id}/{self.software_statement_id}"


@dataclass(frozen=True, slots=True)
class ConsentRow:
    consent_id: str
    client_id: str
    status: str
    created_at: str
    status_updated_at: str
    initiation: dict[str, Any]
    risk: dict[str, Any]
    debtor_account_id: str
    creditor_account_id: str
    amount_minor: int
    currency: str


@dataclass(frozen=True, slots=True)
class PaymentRow:
    payment_id: str
    consent_id: str
    client_id: str
    status: str
    created_at: str
    status_updated_at: str
    reason_code: str | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class TxnRow:
    transaction_id: str
    account_id: str
    indicator: str
    amount_minor: int
    currency: str
    booked_at: str
    reference: str | None
    information: str | None
    counterparty_scheme: str | None
    counterparty_id: str | None
    counterparty_name: str | None
    end_to_end_id: str | None
    payment_id: str | None
    balance_after_minor: int


@dataclass(frozen=True, slots=True)
class Leg:
    """One side of a booking."""

    account_id: str
    indicator: str
    amount_minor: int
    reference: str | None = None
    information: str | None = None
    counterparty_scheme: str | None = None
    counterparty_id: str | None = None
    counterparty_name: str | None = None
    end_to_end_id: str | None = None
    payment_id: str | None = None


class InsufficientFunds(Exception):
    pass


class BankDB:
    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        columns = {r["name"] for r in self._db.execute("PRAGMA table_info(client)")}
        for column in ("org_id", "software_statement_id"):  # a ledger from before they existed
            if column not in columns:
                self._db.execute(f"ALTER TABLE client ADD COLUMN {column} TEXT NOT NULL "
                                 "DEFAULT ''")

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # accounts -----------------------------------------------------------------------------

    def create_account(self, row: AccountRow) -> None:
        self._db.execute(
            "INSERT INTO account VALUES (?, ?, ?, ?, ?, ?, ?)",
            (row.account_id, row.name, row.currency, row.scheme, row.identification,
             row.balance_minor, row.opened_at),
        )

    def account(self, account_id: str) -> AccountRow | None:
        r = self._db.execute("SELECT * FROM account WHERE account_id = ?", (account_id,)).fetchone()
        return AccountRow(**dict(r)) if r else None

    def account_by_identification(self, scheme: str, identification: str) -> AccountRow | None:
        r = self._db.execute(
            "SELECT * FROM account WHERE scheme = ? AND identification = ?",
            (scheme, identification),
        ).fetchone()
        return AccountRow(**dict(r)) if r else None

    def accounts(self) -> list[AccountRow]:
        rows = self._db.execute("SELECT * FROM account ORDER BY account_id").fetchall()
        return [AccountRow(**dict(r)) for r in rows]

    def book(self, legs: list[Leg], *, currency: str, booked_at: str) -> list[TxnRow]:
        """Book every leg or none (the caller holds :meth:`transaction`).

        A debit that would take its account below zero raises InsufficientFunds.
        """
        out: list[TxnRow] = []
        for leg in legs:
            acct = self.account(leg.account_id)
            if acct is None:
                raise KeyError(leg.account_id)
            delta = leg.amount_minor if leg.indicator == "Credit" else -leg.amount_minor
            balance = acct.balance_minor + delta
            if balance < 0:
                raise InsufficientFunds(leg.account_id)
            self._db.execute("UPDATE account SET balance_minor = ? WHERE account_id = ?",
                             (balance, leg.account_id))
            row = TxnRow(new_id("txn"), leg.account_id, leg.indicator, leg.amount_minor,
                         currency, booked_at, leg.reference, leg.information,
                         leg.counterparty_scheme, leg.counterparty_id, leg.counterparty_name,
                         leg.end_to_end_id, leg.payment_id, balance)
            self._db.execute(
                "INSERT INTO txn (transaction_id, account_id, indicator, amount_minor, currency,"
                " booked_at, reference, information, counterparty_scheme, counterparty_id,"
                " counterparty_name, end_to_end_id, payment_id, balance_after_minor)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row.transaction_id, row.account_id, row.indicator, row.amount_minor,
                 row.currency, row.booked_at, row.reference, row.information,
                 row.counterparty_scheme, row.counterparty_id, row.counterparty_name,
                 row.end_to_end_id, row.payment_id, row.balance_after_minor),
            )
            out.append(row)
        return out

    def transactions(self, account_id: str, *, from_booked: str | None = None,
                     to_booked: str | None = None) -> list[TxnRow]:
        sql = "SELECT * FROM txn WHERE account_id = ?"
        args: list[Any] = [account_id]
        if from_booked is not None:
            sql += " AND booked_at >= ?"
            args.append(from_booked)
        if to_booked is not None:
            sql += " AND booked_at <= ?"
            args.append(to_booked)
        rows = self._db.execute(sql + " ORDER BY seq", args).fetchall()
        out = []
        for r in rows:
            fields = dict(r)
            del fields["seq"]
            out.append(TxnRow(**fields))
        return out

    # clients ------------------------------------------------------------------------------

    def create_client(self, row: ClientRow, token_sha256: str) -> None:
        self._db.execute(
            "INSERT INTO client (client_id, name, kid, jwk, token_sha256, created_at, org_id,"
            " software_statement_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (row.client_id, row.name, row.kid, json.dumps(row.jwk), token_sha256, utcnow(),
             row.org_id, row.software_statement_id),
        )
        self._db.executemany(
            "INSERT INTO client_account VALUES (?, ?)",
            [(row.client_id, a) for a in row.account_ids],
        )

    def client(self, client_id: str) -> ClientRow | None:
        r = self._db.execute("SELECT * FROM client WHERE client_id = ?",
                             (client_id,)).fetchone()
        if r is None:
            return None
        accounts = tuple(a[0] for a in self._db.execute(
            "SELECT account_id FROM client_account WHERE client_id = ? ORDER BY account_id",
            (r["client_id"],)).fetchall())
        return ClientRow(r["client_id"], r["name"], r["kid"], json.loads(r["jwk"]), accounts,
                         r["org_id"], r["software_statement_id"])

    def client_exists(self, client_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM client WHERE client_id = ?",
                                (client_id,)).fetchone() is not None

    # consents and payments ----------------------------------------------------------------

    def create_consent(self, row: ConsentRow) -> None:
        self._db.execute(
            "INSERT INTO consent VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row.consent_id, row.client_id, row.status, row.created_at, row.status_updated_at,
             json.dumps(row.initiation), json.dumps(row.risk), row.debtor_account_id,
             row.creditor_account_id, row.amount_minor, row.currency),
        )

    def consent(self, consent_id: str) -> ConsentRow | None:
        r = self._db.execute("SELECT * FROM consent WHERE consent_id = ?",
                             (consent_id,)).fetchone()
        if r is None:
            return None
        d = dict(r)
        d["initiation"] = json.loads(d["initiation"])
        d["risk"] = json.loads(d["risk"])
        return ConsentRow(**d)

    def set_consent_status(self, consent_id: str, status: str) -> None:
        self._db.execute(
            "UPDATE consent SET status = ?, status_updated_at = ? WHERE consent_id = ?",
            (status, utcnow(), consent_id),
        )

    def create_payment(self, row: PaymentRow) -> None:
        self._db.execute(
            "INSERT INTO payment VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (row.payment_id, row.consent_id, row.client_id, row.status, row.created_at,
             row.status_updated_at, row.reason_code, row.reason),
        )

    def set_payment_status(self, payment_id: str, status: str, reason_code: str | None = None,
                           reason: str | None = None) -> None:
        self._db.execute(
            "UPDATE payment SET status = ?, status_updated_at = ?, reason_code = ?, reason = ? "
            "WHERE payment_id = ?", (status, utcnow(), reason_code, reason, payment_id))

    def payment(self, payment_id: str) -> PaymentRow | None:
        r = self._db.execute("SELECT * FROM payment WHERE payment_id = ?",
                             (payment_id,)).fetchone()
        return PaymentRow(**dict(r)) if r else None

    def payments(self) -> list[PaymentRow]:
        rows = self._db.execute("SELECT * FROM payment ORDER BY created_at").fetchall()
        return [PaymentRow(**dict(r)) for r in rows]

    # idempotency --------------------------------------------------------------------------

    def idempotency(self, client_id: str, operation: str, key: str) -> tuple[str, str] | None:
        """(body digest, resource id) stored under the key, if any."""
        r = self._db.execute(
            "SELECT body_sha256, resource_id FROM idempotency"
            " WHERE client_id = ? AND operation = ? AND idem_key = ?",
            (client_id, operation, key),
        ).fetchone()
        return (str(r[0]), str(r[1])) if r else None

    def remember(self, client_id: str, operation: str, key: str, digest: str,
                 resource_id: str) -> None:
        self._db.execute(
            "INSERT INTO idempotency VALUES (?, ?, ?, ?, ?, ?)",
            (client_id, operation, key, digest, resource_id, utcnow()),
        )
