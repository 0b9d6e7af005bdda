"""Playing the interbank side of mock-bank for the SEPA end-to-end test.

mock-bank books the *debit* side of a credit transfer only: a payment from one account it holds to
another takes the money out of the first and never puts it into the second. Between two real
banks a clearing system carries the payment across; here the test does, with three pieces:

- :class:`BankClient`, a small JSON client for mock-bank's control plane (``/_mock/...``);
- :class:`Gateway`, a transparent HTTP relay in front of mock-bank that the nodes are pointed
  at. It forwards every request unchanged and keeps a copy of every payment file posted to
  ``POST /payments`` — the interbank message a clearing system would receive. mock-bank 0.9.0
  keeps no payment's remittance information (``GET /_mock/payments`` has no reference field, and
  the debit ``camt.054`` carries none), so the files are where the reference to relay comes from;
  they are also what the test re-validates;
- :class:`Clearing`, a background thread that watches ``GET /_mock/payments``, advances bank time
  (``POST /_mock/advance``) when an accepted payment is due on a later day, and relays each booked
  debit to an account the bank holds as one ``POST /_mock/credits`` to the creditor, carrying the
  payment's remittance and EndToEndId — exactly once per payment.

The same pieces serve the NACHA run: a posted file that starts with a file header (``101``) is
read by :func:`read_nacha` instead of :func:`read_pain001`, and each booked ACH credit entry is
relayed with its individual identification number (mock-bank's EndToEndId) and the payment
related information of its 05 addenda as the note to payee.
"""

from __future__ import annotations

import json
import threading
import traceback
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

PAIN001_NS = "urn:iso:std:iso:20022:tech:xsd:pain.001.001.09"


def iban(country: str, bban: str) -> str:
    """An IBAN with valid ISO 13616 mod-97 check digits for `country` and `bban`."""
    digits = "".join(str(int(c, 36)) for c in (bban + country + "00").upper())
    return f"{country}{98 - int(digits) % 97:02d}{bban}"


class BankError(Exception):
    pass


class BankClient:
    """JSON over HTTP to mock-bank, blocking (urllib), for the test thread and the clearing."""

    def __init__(self, base_url: str, *, timeout_s: float = 10.0) -> None:
        self.base = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def raw(self, method: str, path: str, data: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        status, payload = self.raw(method, path, data, {"Content-Type": "application/json"})
        if status >= 300:
            raise BankError(f"{method} {path}: HTTP {status}: "
                            f"{payload.decode(errors='replace')[:500]}")
        return json.loads(payload) if payload else None

    def accounts(self) -> dict[str, dict[str, Any]]:
        return {a["id"]: a for a in self.call("GET", "/_mock/accounts")}

    def balances(self) -> dict[str, int]:
        return {k: int(a["balance"]) for k, a in self.accounts().items()}

    def payments(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/_mock/payments"))

    def credits(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/_mock/credits"))

    def messages(self, type_prefix: str) -> list[dict[str, Any]]:
        return list(self.call("GET", "/_mock/messages?type=" + quote(type_prefix, safe="")))

    def advance_to(self, day: str) -> Any:
        return self.call("POST", "/_mock/advance?to=" + quote(day))

    def validate(self, data: bytes, content_type: str = "application/xml") -> tuple[int, str]:
        status, body = self.raw("POST", "/_mock/validate", data,
                                {"Content-Type": content_type})
        return status, body.decode(errors="replace")


# -- the gateway the nodes talk to ---------------------------------------------------------


class Gateway:
    """Forward every request to mock-bank unchanged; keep each ``POST /payments`` body."""

    def __init__(self, bank_url: str) -> None:
        self.bank_url = bank_url.rstrip("/")
        self.files: list[bytes] = []
        self.lock = threading.Lock()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if self.command == "POST" and self.path.split("?")[0] == "/payments" and body:
                    with gateway.lock:
                        gateway.files.append(body)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("content-type", "accept", "authorization")}
                request = urllib.request.Request(gateway.bank_url + self.path, data=body,
                                                 method=self.command, headers=headers)
                try:
                    with urllib.request.urlopen(request, timeout=30) as resp:
                        status, ctype, payload = (resp.status, resp.headers.get("Content-Type"),
                                                  resp.read())
                except urllib.error.HTTPError as exc:
                    status, ctype, payload = exc.code, exc.headers.get("Content-Type"), exc.read()
                except OSError as exc:
                    status, ctype, payload = 502, "text/plain", str(exc).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype or "application/octet-stream")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="bank-gateway",
                                       daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> Gateway:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def posted(self) -> list[bytes]:
        with self.lock:
            return list(self.files)


# -- reading a pain.001 as the clearing system would ------------------------------------------


@dataclass(frozen=True)
class Transfer:
    """One CdtTrfTxInf of a posted pain.001, with what the creditor's bank is to be told."""

    msg_id: str
    end_to_end_id: str
    debtor_name: str
    debtor_iban: str
    debtor_bic: str
    creditor_iban: str
    amount_minor: int
    currency: str
    unstructured: tuple[str, ...]
    structured_ref: str | None

    @property
    def reference(self) -> str:
        return self.structured_ref or " ".join(self.unstructured)


def _t(el: ET.Element | None, *path: str) -> str:
    for step in path:
        if el is None:
            return ""
        el = el.find(f"{{{PAIN001_NS}}}{step}")
    return (el.text or "").strip() if el is not None else ""


def read_pain001(data: bytes) -> list[Transfer]:
    root = ET.fromstring(data)
    init = root.find(f"{{{PAIN001_NS}}}CstmrCdtTrfInitn")
    if init is None:
        raise ValueError("not a pain.001.001.09 credit transfer initiation")
    msg_id = _t(init, "GrpHdr", "MsgId")
    out = []
    for pmt in init.findall(f"{{{PAIN001_NS}}}PmtInf"):
        for tx in pmt.findall(f"{{{PAIN001_NS}}}CdtTrfTxInf"):
            amt = tx.find(f"{{{PAIN001_NS}}}Amt/{{{PAIN001_NS}}}InstdAmt")
            assert amt is not None
            assert amt.text is not None
            units, _, cents = amt.text.strip().partition(".")
            rmt = tx.find(f"{{{PAIN001_NS}}}RmtInf")
            ustrd = tuple((u.text or "").strip() for u in (
                rmt.findall(f"{{{PAIN001_NS}}}Ustrd") if rmt is not None else []))
            out.append(Transfer(
                msg_id=msg_id, end_to_end_id=_t(tx, "PmtId", "EndToEndId"),
                debtor_name=_t(pmt, "Dbtr", "Nm"), debtor_iban=_t(pmt, "DbtrAcct", "Id", "IBAN"),
                debtor_bic=_t(pmt, "DbtrAgt", "FinInstnId", "BICFI"),
                creditor_iban=_t(tx, "CdtrAcct", "Id", "IBAN"),
                amount_minor=int(units) * 100 + int((cents + "00")[:2]),
                currency=amt.get("Ccy", ""), unstructured=ustrd,
                structured_ref=_t(rmt, "Strd", "CdtrRefInf", "Ref") or None))
    return out


# -- reading a NACHA file as the clearing system would ---------------------------------------


@dataclass(frozen=True)
class AchEntry:
    """One credit entry detail (6) of a posted NACHA file with its 05 addenda, read by column.

    Deliberately independent of ``rails.nacha``: the clearing reads the wire, not our writer.
    """

    msg_id: str
    """mock-bank's id for the file: immediate origin, ``-``, creation date, time, modifier."""
    end_to_end_id: str
    """The individual identification number (mock-bank's EndToEndId)."""
    trace: str
    company_name: str
    company_id: str
    """The originator: for mock-bank, the debtor's account number."""
    sec: str
    transaction_code: str
    receiver_routing: str
    receiver_account: str
    receiver_name: str
    amount_minor: int
    payment_info: str
    """The 05 addenda's payment related information (columns 4-83), trailing spaces off."""
    currency: str = "USD"

    @property
    def reference(self) -> str:
        return self.payment_info


def _col(line: str, start: int, end: int) -> str:
    """Columns `start`..`end`, 1-based and inclusive, as NACHA's layouts number them."""
    return line[start - 1:end]


def is_nacha(data: bytes) -> bool:
    return data.lstrip()[:3] == b"101"


def read_nacha(data: bytes) -> list[AchEntry]:
    lines = [raw.rstrip("\r") for raw in data.decode("ascii").split("\n") if raw.strip()]
    if not lines or not lines[0].startswith("101"):
        raise ValueError("not a NACHA file: no file header (101)")
    head = lines[0]
    msg_id = f"{_col(head, 14, 23).strip()}-{_col(head, 24, 34)}"
    out: list[AchEntry] = []
    batch = ""
    entry = ""
    addenda: list[str] = []

    def close() -> None:
        if not entry:
            return
        info = [_col(a, 4, 83).rstrip() for a in addenda if _col(a, 2, 3) == "05"]
        out.append(AchEntry(
            msg_id=msg_id, end_to_end_id=_col(entry, 40, 54).strip(),
            trace=_col(entry, 80, 94), company_name=_col(batch, 5, 20).strip(),
            company_id=_col(batch, 41, 50).strip(), sec=_col(batch, 51, 53),
            transaction_code=_col(entry, 2, 3), receiver_routing=_col(entry, 4, 12),
            receiver_account=_col(entry, 13, 29).strip(),
            receiver_name=_col(entry, 55, 76).strip(), amount_minor=int(_col(entry, 30, 39)),
            payment_info=" ".join(info)))

    for line in lines[1:]:
        kind = line[0]
        if kind == "5":
            batch = line
        elif kind == "6":
            close()
            entry, addenda = line, []
        elif kind == "7":
            addenda.append(line)
        elif kind == "8":
            close()
            entry, addenda = "", []
    return out


def read_payment_file(data: bytes) -> list[Transfer] | list[AchEntry]:
    """A posted file as the clearing reads it: NACHA by its file header, else a pain.001."""
    return read_nacha(data) if is_nacha(data) else read_pain001(data)


# -- the clearing ----------------------------------------------------------------------------


@dataclass
class Clearing:
    """A background thread that carries each booked debit across as a credit, once."""

    bank: BankClient
    gateway: Gateway | DropFolder
    """Where the payment files the nodes sent are read from."""
    interval_s: float = 0.05
    relayed: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    """(MsgId, EndToEndId) of each payment carried across -> the credit mock-bank booked."""
    advanced: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._started = 0
        """Passes begun so far."""
        self._last_idle = 0
        """The number of the latest pass that found nothing to do."""
        self._thread = threading.Thread(target=self._run, name="clearing", daemon=True)

    def start(self) -> Clearing:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def wait_idle(self, timeout_s: float) -> bool:
        """Until a pass *begun after this call* found nothing left to do: every booked debit
        relayed, every credit booked."""
        with self._cond:
            after = self._started
            return self._cond.wait_for(lambda: self._last_idle > after, timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                self._started += 1
                number = self._started
            try:
                idle = self.step() == 0
            except Exception:  # keep clearing; the test reads the errors
                self.errors.append(traceback.format_exc(limit=4))
                idle = False
            if idle:
                with self._cond:
                    self._last_idle = number
                    self._cond.notify_all()
            self._stop.wait(self.interval_s)

    def _advance(self, day: str) -> None:
        """Move bank time to midnight on `day` (a no-op once there; it still releases)."""
        self.bank.advance_to(day)
        if not self.advanced or day > self.advanced[-1]:
            self.advanced.append(day)

    def step(self) -> int:
        """One pass; returns how many things it did (0 means idle)."""
        done = 0
        held = {a["iban"]: a for a in self.bank.accounts().values()}
        transfers: dict[tuple[str, str], Transfer | AchEntry] = {
            (t.msg_id, t.end_to_end_id): t
            for data in self.gateway.posted() for t in read_payment_file(data)}
        for p in sorted(self.bank.payments(), key=lambda p: p["id"]):
            if p["status"] != "accepted":
                continue
            key = (p["msg_id"], p["end_to_end_id"])
            if p["booked_at"] is None:
                # Accepted for a later day: move bank time there so it settles.
                self._advance(p["settlement_date"])
                done += 1
                continue
            if key in self.relayed or p["creditor_iban"] not in held:
                continue
            t = transfers.get(key)
            if t is None:  # posted (and booked) after the snapshot above: read the files again
                transfers.update(((f.msg_id, f.end_to_end_id), f)
                                 for data in self.gateway.posted()
                                 for f in read_payment_file(data))
                t = transfers.get(key)
            if t is None:
                self.errors.append(f"booked payment {key} is in no file the nodes posted")
                self.relayed[key] = {}
                continue
            body = (self._ach_credit(p, t, held[p["creditor_iban"]])
                    if isinstance(t, AchEntry) else self._sepa_credit(p, t))
            # Marked before the POST: a failure is reported, never retried into a second credit.
            self.relayed[key] = {}
            self.relayed[key] = credit = self.bank.call("POST", "/_mock/credits", body)
            done += 1
            if credit.get("booked_at") is None:
                self._advance(credit["booking_date"])
        for credit in self.bank.credits():
            if credit.get("booked_at") is None:
                self._advance(credit["booking_date"])
                done += 1
        return done

    def _sepa_credit(self, p: dict[str, Any], t: Transfer) -> dict[str, Any]:
        if (t.amount_minor, t.currency, t.creditor_iban) != (
                p["amount"], p["currency"], p["creditor_iban"]):
            self.errors.append(f"payment {(p['msg_id'], p['end_to_end_id'])} at the bank "
                               f"differs from its file: {p} {t}")
        body: dict[str, Any] = {
            "account": p["creditor_iban"], "amount": p["amount"],
            "currency": p["currency"], "end_to_end_id": p["end_to_end_id"],
            "debtor": {"name": t.debtor_name, "iban": t.debtor_iban,
                       **({"bic": t.debtor_bic} if t.debtor_bic else {})},
        }
        if t.unstructured:
            body["note"] = list(t.unstructured)
        if t.structured_ref:
            body["reference"] = t.structured_ref
        return body

    def _ach_credit(self, p: dict[str, Any], t: AchEntry, creditor: dict[str, Any]
                    ) -> dict[str, Any]:
        """An ACH credit entry as the RDFI posts it: to the account its DFI account number
        names, with the originator's company name and the 05 addenda as the note."""
        if (t.amount_minor, t.currency, t.receiver_account, t.receiver_routing) != (
                p["amount"], p["currency"], creditor.get("account_number"),
                p.get("creditor_clearing_id")):
            self.errors.append(f"payment {(p['msg_id'], p['end_to_end_id'])} at the bank "
                               f"differs from its file: {p} {t}")
        body: dict[str, Any] = {
            "account": p["creditor_iban"], "amount": p["amount"],
            "currency": p["currency"], "end_to_end_id": p["end_to_end_id"],
            "debtor": {"name": t.company_name},
        }
        if t.payment_info:
            body["note"] = [t.payment_info]
        return body


# -- the folder channel -----------------------------------------------------------------------


class DropFolder:
    """mock-bank's drop folder as the clearing reads it: every payment file the nodes wrote
    there, still waiting or already taken into ``processed/`` (what :class:`Gateway` keeps for
    the HTTP door)."""

    def __init__(self, drop: Path) -> None:
        self.drop = drop

    def posted(self) -> list[bytes]:
        """Every file, wherever mock-bank has it: waiting, claimed (``<name>.processing``, which
        it may book before moving it) or processed. Looked for in that order, so a file that
        moves on while we look is found further along; one that vanishes mid-read is read
        where it went."""
        found: dict[str, bytes] = {}
        for folder in (self.drop, self.drop / "processed"):
            if not folder.is_dir():
                continue
            for p in sorted(folder.iterdir()):
                name = p.name.removesuffix(".processing")
                if (name.startswith(".") or not name.endswith((".xml", ".ach"))
                        or name in found):
                    continue
                try:
                    found[name] = p.read_bytes()
                except FileNotFoundError:
                    moved = self.drop / "processed" / name
                    if moved.exists():
                        found[name] = moved.read_bytes()
        return [found[n] for n in sorted(found)]


class Postman:
    """The bank's host-to-host server, played by a thread: each file mock-bank writes into its
    pickup folder is delivered into the inbox folder of the customer whose account it names
    (``{type}-{account}-{id}.xml``; a file naming no account goes to every customer), written
    to a temporary name and renamed, as an SFTP server's upload completes; then it is moved
    into ``pickup/delivered/`` so it is delivered once."""

    def __init__(self, pickup: Path, inboxes: dict[str, Path], interval_s: float = 0.05
                 ) -> None:
        self.pickup = pickup
        self.inboxes = inboxes
        self.interval_s = interval_s
        self.delivered: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="postman", daemon=True)

    def start(self) -> Postman:
        (self.pickup / "delivered").mkdir(parents=True, exist_ok=True)
        for inbox in self.inboxes.values():
            inbox.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:
                self.errors.append(traceback.format_exc(limit=4))
            self._stop.wait(self.interval_s)

    def step(self) -> None:
        for path in sorted(self.pickup.iterdir()):
            if not path.is_file() or path.name.startswith(".") or path.name.endswith(".tmp"):
                continue
            parts = path.name.split("-")
            owner = parts[1] if len(parts) >= 3 else "bank"
            targets = [owner] if owner in self.inboxes else list(self.inboxes)
            data = path.read_bytes()
            for who in targets:
                temporary = self.inboxes[who] / f".{path.name}.tmp"
                temporary.write_bytes(data)
                temporary.replace(self.inboxes[who] / path.name)
                self.delivered.append((who, path.name))
            path.replace(self.pickup / "delivered" / path.name)
