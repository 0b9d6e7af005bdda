"""The admin API against ``specs/admin-api.yaml``, on a real cluster.

A sandbox bank, an arbiter and two companies (a manufacturer and its carrier) run as separate
``meterline`` processes on loopback, once for the module (``node.cluster``). The tests drive the
admin API through a channel's whole life — status, peers, open, show, list, pay by units and by
amount, statement, close, settled — plus a proposal held for the operator and the error answers,
and validate **every request and every response** against the OpenAPI document.

Validator: ``openapi-core`` (``openapi_core.OpenAPI.validate_request`` /
``OpenAPI.validate_response``, with ``openapi_core.testing.MockRequest`` / ``MockResponse`` as
the request and response adapters). Each exchange is checked twice:

* *strict* — ``Config(additional_properties_default_policy="forbid")``: every object schema that
  leaves ``additionalProperties`` unset is read as ``false``, so a member the node sends but the
  document does not describe fails, as does a missing ``required`` one;
* *published* — the document as clients read it (objects open, a tolerant reader).

The document itself is checked with ``openapi-spec-validator`` (OpenAPI 3.1), and the copy the
node serves at ``/openapi.yaml`` must be the file byte for byte.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
import yaml
from openapi_core import Config, OpenAPI
from openapi_core.exceptions import OpenAPIError
from openapi_core.testing import MockRequest, MockResponse
from openapi_core.validation.request.exceptions import SecurityValidationError
from openapi_core.validation.response.exceptions import InvalidData
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from werkzeug.datastructures import ImmutableMultiDict

from node.cluster import Cluster, NodeHandle
from node.provision import open_sandbox_account
from protocol.references import Purpose, idempotency_key
from tests.e2e import monitoring_spec

SPEC_PATH = Path(__file__).resolve().parents[2] / "specs" / "admin-api.yaml"
HTTP_METHODS = ("get", "put", "post", "delete", "patch")
TARIFF = ["km=0.0123", "container-hour=1.75"]


# -- validation ---------------------------------------------------------------------------------


@dataclass
class Exchange:
    method: str
    path: str
    request_headers: dict[str, str]
    request_body: bytes | None
    status: int
    response_headers: dict[str, str]
    response_body: bytes

    def json(self) -> Any:
        return json.loads(self.response_body)


@dataclass
class SpecCheck:
    """The admin document loaded twice (strict and as published) and what it has validated."""

    document: dict[str, Any]
    strict: OpenAPI
    published: OpenAPI
    exercised: set[tuple[str, str]] = field(default_factory=set)
    validated: int = 0

    def operation(self, method: str, path: str) -> tuple[str, str]:
        """(method, path template) of the documented operation a concrete request hits."""
        path = path.partition("?")[0]
        for template, item in self.document["paths"].items():
            pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
            if re.fullmatch(pattern, path) and method.lower() in item:
                return method.lower(), template
        raise AssertionError(f"{method} {path} is not in the document")

    def operations(self) -> set[tuple[str, str]]:
        return {(m, p) for p, item in self.document["paths"].items()
                for m in item if m in HTTP_METHODS}

    def check(self, ex: Exchange, *, request_valid: bool = True) -> None:
        path, _, query = ex.path.partition("?")
        req = MockRequest("http://127.0.0.1:" + ex.request_headers["Host"].rsplit(":", 1)[1],
                          ex.method, path, headers=ex.request_headers,
                          data=ex.request_body, args=ImmutableMultiDict(parse_qsl(query)),
                          content_type=ex.request_headers.get("Content-Type", ""))
        resp = MockResponse(ex.response_body, status_code=ex.status,
                            headers=ex.response_headers,
                            content_type=ex.response_headers.get("Content-Type", ""))
        for api in (self.strict, self.published):
            if request_valid:
                api.validate_request(req)
            else:  # a request the node refuses: the document must refuse it too
                with pytest.raises(OpenAPIError):
                    api.validate_request(req)
            api.validate_response(req, resp)
        self.exercised.add(self.operation(ex.method, path))
        self.validated += 1


def load_spec_check() -> SpecCheck:
    document = yaml.safe_load(SPEC_PATH.read_text())
    # application/yaml would be read as bytes; the schema says it is a (UTF-8) string
    yaml_text = {"application/yaml": lambda value, **_: value.decode("utf-8")}
    strict = Config(additional_properties_default_policy="forbid",
                    extra_media_type_deserializers=yaml_text)
    return SpecCheck(
        document=document,
        strict=OpenAPI.from_dict(copy.deepcopy(document), config=strict),
        published=OpenAPI.from_dict(copy.deepcopy(document),
                                    config=Config(extra_media_type_deserializers=yaml_text)))


@pytest.fixture(scope="module")
def spec() -> SpecCheck:
    return load_spec_check()


# -- the cluster --------------------------------------------------------------------------------


@dataclass
class Admin:
    """One daemon's admin API; every call is validated against the document."""

    node: NodeHandle
    spec: SpecCheck

    @property
    def node_id(self) -> str:
        return self.node.node_id

    def exchange(self, method: str, path: str, body: Any = None, *,
                 token: str | None = None, auth: bool = True) -> Exchange:
        host = f"127.0.0.1:{self.node.admin_port}"
        headers = {"Host": host}
        if auth:
            headers["Authorization"] = f"Bearer {token or self.node.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(f"http://{host}{path}", data=data, method=method,
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=120) as resp:
                status, resp_headers, raw = resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            status, resp_headers, raw = exc.code, dict(exc.headers), exc.read()
        return Exchange(method, path, headers, data, status, resp_headers, raw)

    def call(self, method: str, path: str, body: Any = None, *, status: int = 200,
             request_valid: bool = True, **kwargs: Any) -> Any:
        """Send, check the status, validate both ways, return the JSON answer."""
        ex = self.exchange(method, path, body, **kwargs)
        assert ex.status == status, (
            f"{self.node.name} {method} {path}: {ex.status} {ex.response_body[:500]!r}")
        self.spec.check(ex, request_valid=request_valid)
        return ex.json()

    def wait_phase(self, cid: str, phase: str, *, timeout_s: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            channel = self.call("GET", f"/api/channels/{cid[:12]}")
            if channel["phase"] == phase or time.monotonic() > deadline:
                assert channel["phase"] == phase, channel
                return dict(channel)
            time.sleep(0.1)


@dataclass
class Companies:
    arbiter: Admin
    manufacturer: Admin
    carrier: Admin


@pytest.fixture(scope="module")
def companies(tmp_path_factory: pytest.TempPathFactory,
              spec: SpecCheck) -> Iterator[Companies]:
    root = tmp_path_factory.mktemp("admin-openapi")
    cluster = Cluster(root)
    try:
        cluster.start_bank()

        async def accounts() -> list[dict[str, Any]]:
            return [await open_sandbox_account(
                bank_url=cluster.bank_url, directory=root / f"keys-{account}",
                account_id=account, name=name, identification=ident,
                opening_balance_minor=balance)
                for account, name, ident, balance in (
                    ("escrow", "Escrow Agent", "40000100000001", 0),
                    ("manu", "Manufacturer", "40000100000002", 1_000_000),
                    ("carrier", "Carrier", "40000100000003", 100_000))]

        escrow, manu, carrier = asyncio.run(accounts())
        arb = cluster.add_node("arbiter", role="arbiter", bank=escrow)
        man = cluster.add_node("manufacturer", bank=manu)
        car = cluster.add_node("carrier", bank=carrier, allowed=[
            {"node_id": man.node_id, "max_peer_deposit": "100.00 EUR"}])
        for handle in (arb, man, car):
            handle.start()
        yield Companies(Admin(arb, spec), Admin(man, spec), Admin(car, spec))
    except BaseException:
        for daemon in [*cluster.nodes.values(), cluster.bank]:
            if daemon is not None:
                print(f"===== {daemon.name}\n{daemon.tail(20)}")
        raise
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def peered(companies: Companies) -> Companies:
    """Each company knows the arbiter and the other company."""
    arb, man, car = companies.arbiter, companies.manufacturer, companies.carrier
    for admin, other in ((man, arb), (car, arb), (man, car), (car, man)):
        peer = admin.call("POST", "/api/peers", {"url": other.node.url}, status=201)
        assert peer["node_id"] == other.node_id
        assert peer["url"] == other.node.url
    return companies


@dataclass
class Lifecycle:
    cid: str
    answers: dict[str, Any]


@pytest.fixture(scope="module")
def lifecycle(peered: Companies) -> Lifecycle:
    """Open, pay both ways, read the statement, close, wait for the payouts: every answer kept."""
    arb, man, car = peered.arbiter, peered.manufacturer, peered.carrier
    got: dict[str, Any] = {}
    got["open"] = man.call("POST", "/api/channels", {
        "peer": car.node_id, "arbiter": arb.node_id[:8], "deposit": "5000.00 EUR",
        "peer_deposit": "100.00 EUR", "tariff": TARIFF, "dispute_window": "24h",
    }, status=201)
    cid = got["open"]["id"]
    got["opened"] = man.wait_phase(cid, "open")
    got["list"] = man.call("GET", "/api/channels")
    got["pay_units"] = man.call("POST", f"/api/channels/{cid[:10]}/pay", {
        "units": {"km": "12.5"}, "reference": "SHIPMENT-4711", "repeat": 1})
    got["pay_amount"] = man.call("POST", f"/api/channels/{cid}/pay", {"amount": "3.20 EUR"})
    got["carrier_pays"] = car.call("POST", f"/api/channels/{cid}/pay", {
        "units": {"container-hour": "1"}, "reference": "DEMURRAGE-7", "repeat": 4})
    got["statement"] = man.call("GET", f"/api/channels/{cid}/statement")
    got["payments"] = man.call("GET", f"/api/channels/{cid}/payments?limit=2")
    got["payments_rest"] = man.call("GET", f"/api/channels/{cid}/payments?offset=2&limit=500")
    got["payments_ref"] = car.call("GET", f"/api/channels/{cid}/payments?reference=DEMURRAGE-7")
    got["payments_bad"] = man.call("GET", f"/api/channels/{cid}/payments?limit=0", status=400,
                                   request_valid=False)
    event = {"id": "OA-1", "units": {"km": "1"}, "ref": "SHIPMENT-4711",
             "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    got["events"] = man.call("POST", f"/api/channels/{cid}/events", {"events": [
        event, event, {**event, "id": "OA-2", "time": "2000-01-01T00:00:00Z"}]})
    got["info"] = man.call("GET", "/api/info")
    got["close"] = man.call("POST", f"/api/channels/{cid}/close", {})
    got["settled"] = man.wait_phase(cid, "settled")
    got["carrier_statement"] = car.call("GET", f"/api/channels/{cid}/statement")
    got["escrows"] = arb.call("GET", "/api/escrows")
    return Lifecycle(cid, got)


# -- the document -------------------------------------------------------------------------------


def test_document_is_valid_openapi_3_1() -> None:
    document = yaml.safe_load(SPEC_PATH.read_text())
    assert document["openapi"].startswith("3.1.")
    validate(document, cls=OpenAPIV31SpecValidator)


def test_node_serves_the_document(companies: Companies) -> None:
    for admin in (companies.manufacturer, companies.arbiter):
        ex = admin.exchange("GET", "/openapi.yaml", auth=False)
        assert ex.status == 200
        assert ex.response_headers["Content-Type"].startswith("application/yaml")
        assert ex.response_body == SPEC_PATH.read_bytes()
        admin.spec.check(ex)


# -- status and peers ---------------------------------------------------------------------------


def test_status_by_role(companies: Companies) -> None:
    node = companies.manufacturer.call("GET", "/api/status")
    assert node["role"] == "node"
    assert node["node_id"] == companies.manufacturer.node_id
    assert node["bank"]["account"] == "40000100000002"
    assert "channels" in node
    arbiter = companies.arbiter.call("GET", "/api/status")
    assert arbiter["role"] == "arbiter"
    assert "escrows" in arbiter


def test_peers_list(peered: Companies) -> None:
    man, car = peered.manufacturer, peered.carrier
    peers = {p["node_id"]: p for p in man.call("GET", "/api/peers")["peers"]}
    arbiter = peers[peered.arbiter.node_id]
    assert arbiter["role"] == "arbiter"
    assert arbiter["account"]["identification"] == "40000100000001"
    assert peers[car.node_id]["allowed"] is False
    assert {p["node_id"]: p for p in car.call("GET", "/api/peers")["peers"]}[
        man.node_id]["allowed"] is True


def test_add_peer_again_refreshes(peered: Companies) -> None:
    again = peered.manufacturer.call("POST", "/api/peers", {"url": peered.carrier.node.url},
                                     status=200)
    assert again["node_id"] == peered.carrier.node_id
    assert (again["status"], again["changed"]) == ("unchanged", [])


def test_add_peer_with_a_wrong_pin(peered: Companies) -> None:
    wrong = peered.manufacturer.call("POST", "/api/peers", {
        "url": peered.carrier.node.url, "id": peered.arbiter.node_id}, status=409)
    assert wrong["error"]["code"] == "PEER_ID_MISMATCH"


# -- a channel's life ---------------------------------------------------------------------------


def test_open_show_list(lifecycle: Lifecycle, peered: Companies) -> None:
    got, cid = lifecycle.answers, lifecycle.cid
    assert got["open"]["phase"] in ("accepted", "open")
    assert got["open"]["deposit"]["ours"] == {"amount": "5000.00", "currency": "EUR"}
    assert got["open"]["dispute_window_ms"] == 24 * 3_600_000
    assert [line["unit"] for line in got["open"]["tariff"]] == ["km", "container-hour"]
    assert got["opened"]["funded"]["peer"] == {"amount": "100.00", "currency": "EUR"}
    assert got["opened"]["arbiter"] == peered.arbiter.node_id
    assert cid in [c["id"] for c in got["list"]["channels"]]


def test_pay_units_and_amount(lifecycle: Lifecycle) -> None:
    got = lifecycle.answers
    units = got["pay_units"]
    assert units["sent"] == {"amount": "0.15", "precise": "0.15375", "currency": "EUR"}
    assert units["units"]["sent"] == {"km": "12.5", "container-hour": "0"}
    assert units["acked_nonce_sent"] == units["nonce_sent"] == 1
    amount = got["pay_amount"]
    assert amount["sent"]["precise"] == "3.35375"
    assert amount["nonce_sent"] == 2
    assert got["carrier_pays"]["sent"]["precise"] == "7.00"


def test_usage_events_accepted_duplicate_refused(lifecycle: Lifecycle) -> None:
    events = lifecycle.answers["events"]
    assert [(e["status"], e.get("code")) for e in events["events"]] == [
        ("accepted", None), ("duplicate", None), ("refused", "EVENT_TOO_OLD")]
    assert events["events"][0]["amount"] == events["events"][1]["amount"] == {
        "amount": "0.01", "precise": "0.0123", "currency": "EUR"}


def test_statement(lifecycle: Lifecycle) -> None:
    st = lifecycle.answers["statement"]
    assert st["channel"] == lifecycle.cid
    by_ref = {(i["direction"], i["unit"], i["reference"]): i for i in st["items"]}
    km = by_ref[("sent", "km", "SHIPMENT-4711")]
    assert (km["quantity"], km["unit_price"], km["updates"]) == ("12.5", "0.0123", 1)
    direct = by_ref[("sent", "amount", "")]
    assert direct["quantity"] is None
    assert direct["amount"]["amount"] == "3.20"
    assert by_ref[("received", "container-hour", "DEMURRAGE-7")]["updates"] == 4
    assert st["net"] == {"amount": "3.64", "precise": "3.64625", "currency": "EUR"}
    carrier = lifecycle.answers["carrier_statement"]
    assert carrier["net"]["precise"] == "-3.63395"  # the usage event OA-1 (0.0123) came after


def test_payments_history_pages_the_usage(lifecycle: Lifecycle) -> None:
    got = lifecycle.answers
    first, rest = got["payments"], got["payments_rest"]
    assert first["total"] == 3  # km for SHIPMENT-4711, the plain amount, the carrier's hours
    assert (len(first["items"]), first["next_offset"]) == (2, 2)
    assert (len(rest["items"]), rest["next_offset"]) == (1, None)
    rows = {(i["direction"], i["unit"], i["reference"]): i for i in first["items"] + rest["items"]}
    km = rows[("sent", "km", "SHIPMENT-4711")]
    assert (km["quantity"], km["amount"]["precise"], km["updates"]) == ("12.5", "0.15375", 1)
    assert rows[("sent", "amount", "")]["quantity"] is None
    assert rows[("received", "container-hour", "DEMURRAGE-7")]["updates"] == 4
    (ours,) = got["payments_ref"]["items"]
    assert (ours["direction"], ours["quantity"], ours["amount"]["amount"]) == (
        "sent", "4", "7.00")
    assert error_of(got["payments_bad"]) == "BAD_QUERY"


def test_info_counts_channels_and_totals(lifecycle: Lifecycle, peered: Companies) -> None:
    info = lifecycle.answers["info"]
    assert (info["node_id"], info["role"]) == (peered.manufacturer.node_id, "node")
    assert {p["name"] for p in info["peers"]} == {"arbiter", "carrier"}
    assert info["channels"].get("open", 0) >= 1
    (eur,) = info["totals"]
    sent = Decimal(lifecycle.answers["pay_amount"]["sent"]["precise"])
    assert Decimal(eur["sent_precise"]) >= sent
    assert eur["sent"].endswith(" EUR")


def test_close_and_settle(lifecycle: Lifecycle) -> None:
    got = lifecycle.answers
    assert got["close"]["phase"] in ("closing", "closed", "settled")
    settled = got["settled"]
    payouts = {t["party"]: t for t in settled["settlement"] if t["purpose"] == "payout"}
    assert {p["status"] for p in payouts.values()} == {"booked"}
    assert sum(Decimal(p["amount"]["amount"]) for p in payouts.values()) == Decimal("5100.00")
    (escrow,) = [e for e in got["escrows"]["escrows"] if e["id"] == lifecycle.cid]
    assert escrow["phase"] == "settled"
    deposited = sum(Decimal(v["amount"]) for v in escrow["deposited"].values())
    paid_out = sum(Decimal(v["amount"]) for v in escrow["payouts"].values())
    assert paid_out == deposited == Decimal("5100.00")


def test_reconcile_shows_the_settled_channel_booked_on_the_statement(
    lifecycle: Lifecycle, peered: Companies
) -> None:
    # The arbiter's payouts and each company's deposit are on their accounts' transactions.
    arb = peered.arbiter.call("GET", "/api/rails/reconcile")
    assert arb["rail"] == "openbanking"
    assert arb["differences"] == []
    assert arb["outstanding"] == []
    channel = bytes.fromhex(lifecycle.cid)
    payout_keys = {idempotency_key(channel, Purpose.PAYOUT, party) for party in (0, 1)}
    payouts = [m for m in arb["matches"] if m["key"] in payout_keys]
    assert len(payouts) == 2
    assert {m["outcome"] for m in payouts} == {"booked"}
    assert sum(int(m["entry"]["amount_minor"]) for m in payouts) == 510_000
    man = peered.manufacturer.call("GET", "/api/rails/reconcile")
    deposit = idempotency_key(channel, Purpose.DEPOSIT, 0)
    assert [m["outcome"] for m in man["matches"] if m["key"] == deposit] == ["booked"]
    later = peered.manufacturer.call("GET", "/api/rails/reconcile?since=2999-01-01")
    assert (later["matches"], later["differences"]) == ([], [])
    # not a date: the document refuses it too; a period that ends before it starts: the node
    for bad, valid in (("since=yesterday", False), ("until=2026-1-1", False),
                       ("since=2026-10-02&until=2026-10-01", True)):
        err = peered.manufacturer.call("GET", f"/api/rails/reconcile?{bad}", status=400,
                                       request_valid=valid)
        assert err["error"]["code"] == "INVALID_PERIOD"


@pytest.fixture(scope="module")
def held(peered: Companies) -> dict[str, Any]:
    """The manufacturer has no allow-list: the carrier's proposal waits for `accept`."""
    man, car = peered.manufacturer, peered.carrier
    got: dict[str, Any] = {}
    got["proposed"] = car.call("POST", "/api/channels", {
        "peer": "manufacturer", "arbiter": "arbiter", "deposit": "10.00 EUR",
        "tariff": "pallet=2.50"}, status=201)
    got["list"] = man.call("GET", "/api/channels")
    got["terms"] = man.call("GET", f"/api/proposals/{got['proposed']['id'][:16]}")
    got["accepted"] = man.call("POST", f"/api/channels/{got['proposed']['id'][:16]}/accept")
    got["terms_after"] = man.call("GET", f"/api/proposals/{got['proposed']['id']}", status=409)
    return got


def test_held_proposal_is_accepted_by_the_operator(peered: Companies,
                                                   held: dict[str, Any]) -> None:
    man, car = peered.manufacturer, peered.carrier
    proposed, accepted = held["proposed"], held["accepted"]
    assert proposed["phase"] == "proposed"
    (listed,) = [p for p in held["list"]["proposals"] if p["id"] == proposed["id"]]
    assert (listed["peer"], listed["phase"]) == (car.node_id, "awaiting-acceptance")
    assert listed["reason"] == "the opener is not on the allow-list"
    assert listed["deposit"] == {"ours": {"amount": "0.00", "currency": "EUR"},
                                 "peer": {"amount": "10.00", "currency": "EUR"}}
    terms = held["terms"]  # the full terms, before anything is signed
    assert (terms["id"], terms["peer"], terms["arbiter"]) == (
        proposed["id"], car.node_id, peered.arbiter.node_id)
    assert terms["deposit"] == listed["deposit"]
    assert [(t["unit"], t["tiers"][0]["price"]) for t in terms["tariff"]] == [("pallet", "2.5")]
    assert terms["dispute_window_ms"] == listed["dispute_window_ms"]
    assert terms["accounts"]["ours"]["identification"] == "40000100000002"
    assert error_of(held["terms_after"]) == "ALREADY_ACCEPTED"
    assert accepted["phase"] == "accepted"
    assert accepted["role"] == "peer"
    assert accepted["deposit"]["peer"] == {"amount": "10.00", "currency": "EUR"}
    man.call("POST", f"/api/channels/{proposed['id']}/accept", status=409)


@pytest.fixture(scope="module")
def rejected(peered: Companies) -> dict[str, Any]:
    """The manufacturer's operator rejects a proposal the carrier made."""
    man, car = peered.manufacturer, peered.carrier
    got: dict[str, Any] = {}
    got["proposed"] = car.call("POST", "/api/channels", {
        "peer": "manufacturer", "arbiter": "arbiter", "deposit": "20.00 EUR",
        "tariff": "pallet=2.50"}, status=201)
    cid = got["proposed"]["id"]
    got["rejected"] = man.call("POST", f"/api/channels/{cid[:16]}/reject")
    got["list"] = man.call("GET", "/api/channels")
    got["again"] = man.call("POST", f"/api/channels/{cid}/reject", status=404)
    return got


def test_held_proposal_is_rejected_by_the_operator(peered: Companies,
                                                   rejected: dict[str, Any]) -> None:
    cid = rejected["proposed"]["id"]
    assert rejected["rejected"] == {"id": cid, "peer": peered.carrier.node_id,
                                    "phase": "rejected"}
    assert cid not in [p["id"] for p in rejected["list"]["proposals"]]
    assert cid not in [c["id"] for c in rejected["list"]["channels"]]
    assert error_of(rejected["again"]) == "UNKNOWN_CHANNEL"


def test_an_allowed_opener_asking_more_than_its_allowance_waits(peered: Companies) -> None:
    """The carrier allows the manufacturer to ask 100.00 EUR of it; 100.01 EUR waits."""
    man, car = peered.manufacturer, peered.carrier
    opened = man.call("POST", "/api/channels", {
        "peer": "carrier", "arbiter": "arbiter", "deposit": "1.00 EUR",
        "peer_deposit": "100.01 EUR", "tariff": ["km=0.01"]}, status=201)
    assert opened["phase"] == "proposed"
    (listed,) = [p for p in car.call("GET", "/api/channels")["proposals"]
                 if p["id"] == opened["id"]]
    assert "100.01 EUR" in listed["reason"]
    assert "100.00 EUR" in listed["reason"]
    car.call("POST", f"/api/channels/{opened['id']}/reject")


# -- errors -------------------------------------------------------------------------------------


def error_of(body: Any) -> str:
    return str(body["error"]["code"])


def test_unknown_channel_prefix_is_404(lifecycle: Lifecycle, peered: Companies) -> None:
    other = "0123" if not lifecycle.cid.startswith("0123") else "3210"
    for path in (f"/api/channels/{other}", f"/api/channels/{other}/statement"):
        body = peered.manufacturer.call("GET", path, status=404)
        assert error_of(body) == "UNKNOWN_CHANNEL"


def test_channel_id_that_is_not_hex_is_400(peered: Companies) -> None:
    # the document's path pattern rejects it as well
    body = peered.manufacturer.call("GET", "/api/channels/xyz", status=400,
                                    request_valid=False)
    assert error_of(body) == "BAD_CHANNEL_ID"


@pytest.mark.parametrize(("tariff", "code"), [
    (["km=free"], "INVALID_TARIFF"),
    (["km=0.0123", "km=0.02"], "INVALID_TARIFF"),
    ([], "INVALID_TARIFF"),
])
def test_bad_tariff_is_400(peered: Companies, tariff: list[str], code: str) -> None:
    body = peered.manufacturer.call("POST", "/api/channels", {
        "peer": peered.carrier.node_id, "arbiter": peered.arbiter.node_id,
        "deposit": "5000.00 EUR", "tariff": tariff}, status=400, request_valid=bool(tariff))
    assert error_of(body) == code


def test_unknown_peer_is_404(peered: Companies) -> None:
    body = peered.manufacturer.call("POST", "/api/channels", {
        "peer": "nobody", "arbiter": "arbiter", "deposit": "1.00 EUR", "tariff": TARIFF},
        status=404)
    assert error_of(body) == "UNKNOWN_PEER"


@pytest.mark.parametrize("path", ["/api/status", "/api/channels", "/api/peers"])
def test_no_token_is_401(companies: Companies, path: str) -> None:
    man = companies.manufacturer
    ex = man.exchange("GET", path, auth=False)
    assert ex.status == 401
    assert error_of(ex.json()) == "UNAUTHORIZED"
    # the document requires the bearer token: openapi-core refuses the request as well
    with pytest.raises(SecurityValidationError):
        man.spec.strict.validate_request(MockRequest(
            f"http://127.0.0.1:{man.node.admin_port}", "get", path, headers=ex.request_headers))
    man.spec.check(ex, request_valid=False)
    wrong = man.call("GET", path, status=401, token="not-the-token")
    assert error_of(wrong) == "UNAUTHORIZED"


def test_pay_on_a_settled_channel_is_409(lifecycle: Lifecycle, peered: Companies) -> None:
    body = peered.manufacturer.call("POST", f"/api/channels/{lifecycle.cid}/pay",
                                    {"units": {"km": "1"}}, status=409)
    assert error_of(body) == "INVALID_STATE"
    body = peered.manufacturer.call("POST", f"/api/channels/{lifecycle.cid}/close", {},
                                    status=409)
    assert error_of(body) == "INVALID_STATE"


@pytest.mark.parametrize(("body", "code"), [
    ({"units": {"pallet": "1"}}, "UNKNOWN_UNIT"),
    ({"amount": "1.00 USD"}, "WRONG_CURRENCY"),
    ({"units": {"km": "0"}}, "NOTHING_TO_PAY"),
])
def test_bad_payment_is_400(lifecycle: Lifecycle, peered: Companies, body: dict[str, Any],
                            code: str) -> None:
    answer = peered.manufacturer.call("POST", f"/api/channels/{lifecycle.cid}/pay", body,
                                      status=400)
    assert error_of(answer) == code


@pytest.mark.parametrize(("route", "body", "code"), [
    ("close", {"force": "false"}, "BAD_FORCE"),
    ("close", {"force": True, "now": True}, "UNKNOWN_FIELD"),
    ("pay", {"units": {"km": "1"}, "wait": "false"}, "BAD_WAIT"),
    ("pay", {"units": {"km": "1"}, "repeat": 0}, "BAD_REPEAT"),
    ("pay", {"units": {"km": 1}}, "BAD_UNITS"),
    ("open", {"scale": 10**7}, "BAD_SCALE"),
    ("open", {"tariff": 5}, "INVALID_TARIFF"),
    ("open", {"dispute_window": "9" * 400 + "h"}, "BAD_DURATION"),
    ("open", {"peer_deposit": 100}, "INVALID_AMOUNT"),
    ("open", {"colour": "blue"}, "UNKNOWN_FIELD"),
])
def test_a_malformed_body_is_refused_by_the_node_and_the_document(
    lifecycle: Lifecycle, peered: Companies, spec: SpecCheck, route: str, body: dict[str, Any],
    code: str,
) -> None:
    """Strict input: what the document refuses, the node refuses, with a documented 400, and
    no channel changes or appears."""
    man, car = peered.manufacturer, peered.carrier
    if route == "open":
        path, body = "/api/channels", {"peer": car.node_id, "arbiter": "arbiter",
                                       "deposit": "5000.00 EUR", "tariff": TARIFF, **body}
    else:
        path = f"/api/channels/{lifecycle.cid}/{route}"
    before = man.call("GET", "/api/channels")
    answer = man.call("POST", path, body, status=400, request_valid=False)
    assert error_of(answer) == code
    assert spec.document["x-error-codes"][code][0] == 400
    assert man.call("GET", "/api/channels") == before


def test_every_error_code_answered_is_in_the_table(spec: SpecCheck) -> None:
    codes = spec.document["x-error-codes"]
    assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", c) for c in codes)
    assert all(isinstance(s, int) and 400 <= s < 600 and isinstance(m, str)
               for s, m in codes.values())


def test_escrow_operations_and_a_payout_account(lifecycle: Lifecycle, peered: Companies) -> None:
    """The arbiter's escrow detail and credit routes, and a payee naming a payout account
    (the refund of a real credit: tests/e2e/test_escrow_refunds.py)."""
    arb, man = peered.arbiter, peered.manufacturer
    shown = arb.call("GET", f"/api/escrows/{lifecycle.cid[:12]}")
    assert shown["id"] == lifecycle.cid
    assert {(a["party"], a["status"]) for a in shown["payout_attempts"]} == {
        ("opener", "booked"), ("peer", "booked")}
    assert arb.call("GET", "/api/credits/no-such-entry", status=404)["error"]["code"] == (
        "UNKNOWN_CREDIT")
    refused = arb.call("POST", "/api/credits/no-such-entry/refund", {}, status=404)
    assert refused["error"]["code"] == "UNKNOWN_CREDIT"
    bad = arb.call("POST", "/api/credits/no-such-entry/refund", {"scheme": "IBAN x"},
                   status=400, request_valid=False)
    assert bad["error"]["code"] == "BAD_ACCOUNT"
    named = man.call("POST", f"/api/channels/{lifecycle.cid[:12]}/payout-account",
                     {"identification": "40000100000002", "name": "Manufacturer"})
    assert named["account"]["scheme"] == "UK.OBIE.SortCodeAccountNumber"
    assert man.call("GET", f"/api/channels/{lifecycle.cid}")["returned_payouts"] == []
# -- long-lived channels (issue 9): checkpoint, schedule, top-up ---------------------------------


@pytest.fixture(scope="module")
def longlived(peered: Companies) -> dict[str, Any]:
    """A second channel, settled without closing, scheduled, run at a given time, topped up."""
    arb, man, car = peered.arbiter, peered.manufacturer, peered.carrier
    got: dict[str, Any] = {}
    cid = man.call("POST", "/api/channels", {
        "peer": car.node_id, "arbiter": arb.node_id[:8], "deposit": "100.00 EUR",
        "peer_deposit": "10.00 EUR", "tariff": TARIFF}, status=201)["id"]
    man.wait_phase(cid, "open")
    man.call("POST", f"/api/channels/{cid}/pay", {"units": {"km": "100"}, "reference": "CP"})
    got["settle"] = man.call("POST", f"/api/channels/{cid}/settle", {"wait": True})
    got["again"] = man.call("POST", f"/api/channels/{cid}/settle", {}, status=409)
    got["schedule"] = car.call("POST", f"/api/channels/{cid}/schedule",
                               {"every": "1d", "threshold": "5.00 EUR"})
    got["bad_schedule"] = car.call("POST", f"/api/channels/{cid}/schedule",
                                   {"threshold": "5.00 USD"}, status=400)
    got["run"] = car.call("POST", "/api/schedule/run",
                          {"at_ms": got["schedule"]["schedule"]["next_checkpoint_ms"] + 1})
    got["bad_run"] = car.call("POST", "/api/schedule/run", {"at_ms": -1}, status=400,
                              request_valid=False)
    got["topup"] = man.call("POST", f"/api/channels/{cid}/topup",
                            {"amount": "10.00 EUR", "wait": True})
    got["bad_topup"] = man.call("POST", f"/api/channels/{cid}/topup", {"amount": "10.001 EUR"},
                                status=400)
    got["carrier"] = car.call("GET", f"/api/channels/{cid}")
    got["statement"] = car.call("GET", f"/api/channels/{cid}/statement")
    return got


def test_checkpoint_schedule_and_topup_routes_answer_their_schema(
        longlived: dict[str, Any]) -> None:
    got = longlived
    assert got["settle"]["checkpoint"]["seq"] == 1
    assert got["settle"]["phase"] == "open"
    assert error_of(got["again"]) == "NOTHING_TO_SETTLE"
    assert got["schedule"]["schedule"]["every_ms"] == 86_400_000
    assert got["schedule"]["schedule"]["threshold"]["amount"] == "5.00"
    assert error_of(got["bad_schedule"]) == "WRONG_CURRENCY"
    assert got["run"]["proposed"] == []  # due by time, but nothing new to pay since #1
    assert error_of(got["bad_run"]) == "BAD_TIME"
    assert got["topup"]["topped_up"]["ours"]["amount"] == "10.00"
    assert error_of(got["bad_topup"]) == "INVALID_AMOUNT"
    assert got["carrier"]["topped_up"]["peer"]["amount"] == "10.00"
    ((one,),) = [got["carrier"]["settlements"]]
    assert (one["checkpoint"], one["party"], one["amount"]["amount"]) == (1, "peer", "1.23")
    assert got["statement"]["settlements"] == got["carrier"]["settlements"]


# -- the checks themselves ----------------------------------------------------------------------


def test_every_documented_operation_was_exercised(
    spec: SpecCheck, lifecycle: Lifecycle, held: dict[str, Any], rejected: dict[str, Any],
    peered: Companies, longlived: dict[str, Any]
) -> None:
    # the fixtures alone reach every channel route; status, peers, escrows and the document
    # itself are asked here so that this test holds when it runs on its own (-k)
    for admin in (peered.manufacturer, peered.arbiter):
        admin.call("GET", "/api/status")
        admin.call("GET", "/api/info")
        admin.call("GET", "/api/peers")
        admin.call("GET", "/api/outbox")
        admin.call("GET", "/api/rails/reconcile")
        # these nodes' Open Banking rail has no redirect_uri: no PSU step (409)
        assert admin.call("GET", "/api/rails/consents", status=409)["error"]["code"] == \
            "NO_REDIRECT_URI"
        assert admin.call("POST", "/api/rails/consents/authorise",
                          {"redirect": "https://tpp.example/cb?state=s&code=c"},
                          status=409)["error"]["code"] == "NO_REDIRECT_URI"
        admin.call("GET", "/api/events?limit=500")
        admin.call("GET", "/api/events/types")
        hook = admin.call("POST", "/api/webhooks", {"url": "http://127.0.0.1:9/hook",
                                                     "events": ["channel.*"]}, status=201)
        admin.call("GET", "/api/webhooks")
        assert admin.call("POST", f"/api/webhooks/{hook['id']}/test")["delivered"] is False
        admin.call("DELETE", f"/api/webhooks/{hook['id']}")
        spec.check(admin.exchange("GET", "/openapi.yaml", auth=False))
        monitoring_spec.exercise(admin)
    assert spec.operations() - spec.exercised == set()
    assert spec.validated >= 20


def test_strict_check_catches_undocumented_and_missing_members(
    spec: SpecCheck, lifecycle: Lifecycle, peered: Companies
) -> None:
    """The strict validator fails on a member the document does not name, anywhere, and on a
    missing required one; the published document stays a tolerant reader's."""
    man = peered.manufacturer
    real = man.exchange("GET", f"/api/channels/{lifecycle.cid}")
    spec.check(real)
    req = MockRequest(f"http://127.0.0.1:{man.node.admin_port}", "get",
                      f"/api/channels/{lifecycle.cid}", headers=real.request_headers)

    def answer(body: dict[str, Any]) -> MockResponse:
        return MockResponse(json.dumps(body).encode(), status_code=200,
                            content_type="application/json")

    extra_top = {**real.json(), "fees": "0.00"}
    extra_nested = real.json()
    extra_nested["settlement"][0]["bank_fee"] = "0.10"
    extra_money = real.json()
    extra_money["balance"]["minor"] = 123
    for body in (extra_top, extra_nested, extra_money):
        with pytest.raises(InvalidData):
            spec.strict.validate_response(req, answer(body))
        spec.published.validate_response(req, answer(body))
    missing = real.json()
    del missing["settlement"]
    wrong = real.json()
    wrong["sent"]["amount"] = 3.35
    for body in (missing, wrong):
        for api in (spec.strict, spec.published):
            with pytest.raises(InvalidData):
                api.validate_response(req, answer(body))
