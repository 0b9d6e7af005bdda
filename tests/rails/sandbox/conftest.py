"""A real sandbox bank process on loopback, TPP parties, and OpenAPI validation of every exchange.

Validation uses ``openapi-core`` against the published OB files: it loads both v3.1.11 documents
as they are (relative ``servers``, ``x-namespaced-enum`` and all) and checks request parameters,
headers and bodies and response headers and bodies per operation and status code.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

from rails.ob_jws import generate_signing_key, key_id, public_jwk, sign_detached
from rails.ob_oauth import TokenClient
from rails.openbanking import Exchange, OpenBankingConfig, OpenBankingRail, generate_key_pair
from rails.port import Account, AccountScheme, PaymentInstruction
from tests.support import free_port, running, venv_bin

OB_DIR = Path(__file__).resolve().parent / "openbanking-uk"
"""The published OpenAPI files, shipped with the tests (their README names source and licence)."""
PISP = "/open-banking/v3.1/pisp"
AISP = "/open-banking/v3.1/aisp"


# -- OpenAPI ------------------------------------------------------------------------------------


@dataclass
class OBValidator:
    pisp: OpenAPI
    aisp: OpenAPI
    validated: int = 0
    seen: list[Exchange] = field(default_factory=list)

    def check(self, ex: Exchange, *, request: bool = True) -> None:
        """Validate one exchange's request and (when there is one) its response."""
        self.seen.append(ex)
        api = self.pisp if ex.path.startswith(PISP) else self.aisp
        headers = dict(ex.request_headers)
        req = MockRequest("http://127.0.0.1", ex.method.lower(), ex.path, args=ex.query,
                          headers=headers, data=ex.request_body,
                          content_type=headers.get("content-type", "application/json"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # oauth2 security: not checked
            if request:
                api.validate_request(req)
            if ex.status:
                resp = MockResponse(ex.response_body or b"", status_code=ex.status,
                                    headers=ex.response_headers,
                                    content_type=ex.response_headers.get("content-type"))
                api.validate_response(req, resp)
        self.validated += 1


@pytest.fixture(scope="session")
def ob_apis() -> tuple[OpenAPI, OpenAPI]:
    assert OB_DIR.is_dir(), OB_DIR
    return (OpenAPI.from_path(OB_DIR / "payment-initiation-v3.1.11.yaml"),
            OpenAPI.from_path(OB_DIR / "account-info-v3.1.11.yaml"))


@pytest.fixture
def ob(ob_apis: tuple[OpenAPI, OpenAPI]) -> OBValidator:
    return OBValidator(*ob_apis)


# -- the bank process ---------------------------------------------------------------------------


class Bank:
    """One sandbox bank data dir; start/stop/restart the real `meterline bank start` process."""

    def __init__(self, data_dir: Path, log_dir: Path, *, manual: bool = False) -> None:
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.manual = manual
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._stack: contextlib.ExitStack | None = None
        self.starts = 0

    def start(self) -> None:
        assert self._stack is None
        self.starts += 1
        argv = [venv_bin("meterline"), "bank", "start", "--data-dir", str(self.data_dir),
                "--listen", f"127.0.0.1:{self.port}", "--json-logs"]
        if self.manual:
            argv.append("--manual-approval")
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(
            running(argv, port=self.port, log=self.log_dir / f"bank-{self.starts}.log"))

    def stop(self) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {path}: {exc.code} {exc.read()!r}") from exc

    def balance(self, account_id: str) -> int:
        return int(self.admin("GET", f"/_sandbox/accounts/{account_id}")["balance_minor"])

    def transactions(self, account_id: str) -> list[dict[str, Any]]:
        return list(self.admin("GET", f"/_sandbox/accounts/{account_id}")["transactions"])

    def payments(self) -> list[dict[str, Any]]:
        return list(self.admin("GET", "/_sandbox/payments")["payments"])

    def fault(self, **spec: Any) -> None:
        self.admin("POST", "/_sandbox/faults", spec)


@pytest.fixture
def start_bank(tmp_path: Path) -> Iterator[Callable[..., Bank]]:
    banks: list[Bank] = []

    def start(*, manual: bool = False) -> Bank:
        bank = Bank(tmp_path / f"bank{len(banks)}", tmp_path, manual=manual)
        bank.start()
        banks.append(bank)
        return bank

    yield start
    for bank in banks:
        bank.stop()


@pytest.fixture
def bank(start_bank: Callable[..., Bank]) -> Bank:
    return start_bank()


# -- parties ------------------------------------------------------------------------------------


@dataclass
class Party:
    bank: Bank
    account_id: str
    account: Account
    client_id: str
    key_file: Path
    store_path: Path
    org_id: str = ""
    software_statement_id: str = ""

    @property
    def issuer(self) -> str:
        return f"{self.org_id}/{self.software_statement_id}"

    def config(self, **overrides: Any) -> OpenBankingConfig:
        values: dict[str, Any] = {
            "base_url": self.bank.url, "client_id": self.client_id,
            "org_id": self.org_id, "software_statement_id": self.software_statement_id,
            "key_file": self.key_file,
            "account_id": self.account_id, "store_path": self.store_path,
            "poll_interval_s": 0.05, "backoff_s": 0.05, "request_timeout_s": 5.0,
        }
        values.update(overrides)
        return OpenBankingConfig(**values)

    def rail(self, ob: OBValidator | None, **overrides: Any) -> OpenBankingRail:
        observer = ob.check if ob is not None else None
        return OpenBankingRail(self.config(**overrides), observer=observer)


def make_party(bank: Bank, tmp: Path, account_id: str, name: str, identification: str,
               balance: int, *, scheme: AccountScheme = AccountScheme.SORT_CODE,
               currency: str = "GBP") -> Party:
    ob_scheme = "UK.OBIE.IBAN" if scheme is AccountScheme.IBAN else scheme.value
    bank.admin("POST", "/_sandbox/accounts", {
        "account_id": account_id, "name": name, "currency": currency, "scheme": ob_scheme,
        "identification": identification, "opening_balance_minor": balance})
    key = generate_key_pair(tmp / f"{account_id}.pem")
    reg = bank.admin("POST", "/_sandbox/clients", {
        "name": name, "jwk": key.public_jwk, "account_ids": [account_id]})
    assert reg["kid"] == key.kid
    return Party(bank, account_id, Account(name, scheme, identification), reg["client_id"],
                 key.path, tmp / f"{account_id}-rail.sqlite3",
                 reg["org_id"], reg["software_statement_id"])


@pytest.fixture
def parties(bank: Bank, tmp_path: Path) -> tuple[Party, Party]:
    alice = make_party(bank, tmp_path, "acc-alice", "Alice Ltd", "40000012345678", 10_000)
    bob = make_party(bank, tmp_path, "acc-bob", "Bob Widgets", "40000087654321", 0)
    return alice, bob


def instruction(payer: Party, payee: Party, amount: int, key: str | None = None,
                reference: str = "ML CH1 CLOSE") -> PaymentInstruction:
    return PaymentInstruction(
        idempotency_key=key or f"ch-{uuid.uuid4().hex[:12]}:close",
        debtor=payer.account, creditor=payee.account, amount_minor=amount, currency="GBP",
        reference=reference)


@pytest.fixture
async def rails_for(ob: OBValidator) -> AsyncIterator[Callable[..., OpenBankingRail]]:
    """Build adapters that validate every exchange, and close them at the end."""
    made: list[OpenBankingRail] = []

    def build(party: Party, **overrides: Any) -> OpenBankingRail:
        rail = party.rail(ob, **overrides)
        made.append(rail)
        return rail

    yield build
    for rail in made:
        await rail.aclose()


# -- a raw OB client for the negative cases -----------------------------------------------------


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: Any


class RawClient:
    """Hand-made OB requests (to forge, omit or replay things); answers are validated."""

    def __init__(self, party: Party, ob: OBValidator) -> None:
        self.party = party
        self.ob = ob
        from rails.ob_jws import load_signing_key
        self.key = load_signing_key(party.key_file)
        self.kid = key_id(self.key)

    async def token(self) -> str:
        """A client-credentials token from the bank's token endpoint (private_key_jwt)."""
        async with aiohttp.ClientSession() as session:
            return await TokenClient(self.party.bank.url, self.party.client_id, self.key,
                                     self.kid, session=lambda: session).token()

    def sign(self, raw: bytes) -> str:
        return sign_detached(raw, self.key, kid=self.kid, issuer=self.party.issuer)

    async def request(self, method: str, path: str, body: Any = None, *,
                      idem_key: str | None = None, signature: str | bool | None = True,
                      query: dict[str, str] | None = None,
                      validate_request: bool = True, token: str | None = None) -> RawAnswer:
        raw = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {token or await self.token()}",
                   "x-fapi-interaction-id": str(uuid.uuid4())}
        if raw is not None:
            headers["Content-Type"] = "application/json"
            if signature is True:
                headers["x-jws-signature"] = self.sign(raw)
            elif isinstance(signature, str):
                headers["x-jws-signature"] = signature
        if idem_key is not None:
            headers["x-idempotency-key"] = idem_key
        async with aiohttp.ClientSession() as s, s.request(
                method, self.party.bank.url + path, data=raw, headers=headers,
                params=query) as resp:
            payload = await resp.read()
            resp_headers = {k.lower(): v for k, v in resp.headers.items()}
        assert resp_headers["x-fapi-interaction-id"] == headers["x-fapi-interaction-id"]
        self.ob.check(Exchange(method, path, dict(query or {}),
                               {k.lower(): v for k, v in headers.items()}, raw, resp.status,
                               resp_headers, payload), request=validate_request)
        return RawAnswer(resp.status, resp_headers, json.loads(payload) if payload else None)


def consent_body(payer: Party, payee: Party, amount: str = "12.34",
                 e2e: str = "E2E-RAW-1") -> dict[str, Any]:
    return {
        "Data": {"Initiation": {
            "InstructionIdentification": "INSTR-RAW-1",
            "EndToEndIdentification": e2e,
            "InstructedAmount": {"Amount": amount, "Currency": "GBP"},
            "DebtorAccount": {"SchemeName": "UK.OBIE.SortCodeAccountNumber",
                              "Identification": payer.account.identification,
                              "Name": payer.account.name},
            "CreditorAccount": {"SchemeName": "UK.OBIE.SortCodeAccountNumber",
                                "Identification": payee.account.identification,
                                "Name": payee.account.name},
            "RemittanceInformation": {"Reference": "RAW REF"},
        }},
        "Risk": {"PaymentContextCode": "PartyToParty"},
    }


__all__ = ["AISP", "PISP", "Bank", "OBValidator", "Party", "RawClient", "consent_body",
           "generate_signing_key", "instruction", "make_party", "public_jwk"]
