"""The admin API's bearer token, against real nodes (``node.app.running`` on loopback).

Every admin route of both roles is called without a token and with wrong ones: each answer is a
401 JSON ``{"error": {"code": "UNAUTHORIZED", …}}`` and nothing in the node changes, although the
requests are ones that would change things (pay, force-close, accept, add a peer) if they got
through. ``/openapi.yaml`` and the dashboard's page, login form and assets (which hold no data:
tests/e2e/test_dashboard.py) are the only paths served without the token. The admin listener is
loopback only.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select
from yarl import URL

from node.api import admin
from node.app import running
from node.config import ConfigError, init_data_dir, load_config
from node.storage.models import Channel, HeldProposal, OutgoingProof, Peer, Usage
from node.storage.models import Outbox as OutboxRow
from protocol import channel as ch
from protocol.simulation import Simulation

from .conftest import KM, RunningNode, free_port, make_config, open_sim, seed

WRONG = [
    "",
    "Bearer",
    "Bearer ",
    "Bearer wrong-token",
    "Bearer {token}x",
    "Bearer x{token}",
    "{token}",
    "Basic {token}",
    "Token {token}",
    "Bearer {token} {token}",
]
"""Authorization headers that must not pass ("" means no header at all)."""


def route_calls(role: str, cid: str, held: str, peer_url: str) -> list[tuple[str, str, Any]]:
    """Every admin route of `role` as (method, path, body), with bodies that would change state
    if the request were let through."""
    bodies = {
        ("POST", "/api/peers"): {"url": peer_url},
        ("POST", "/api/channels"): {
            "peer": "a",
            "arbiter": "b",
            "deposit": "10.00 EUR",
            "tariff": ["km=0.01"],
        },
        ("POST", "/api/channels/{channel_id}/accept"): {},
        ("POST", "/api/channels/{channel_id}/reject"): {},
        ("POST", "/api/channels/{channel_id}/close"): {"force": True},
        ("POST", "/api/channels/{channel_id}/pay"): {"units": {"km": "1"}, "wait": False},
    }
    calls = []
    for route in admin.routes(role):
        info = route.path  # type: ignore[attr-defined]
        if info == "/openapi.yaml" or info.startswith("/dashboard"):
            continue  # served without the token; the dashboard's hold no data (test_dashboard)
        method = route.method  # type: ignore[attr-defined]
        path = info.replace("{channel_id}",
                            held if info.endswith(("/accept", "/reject")) else cid)
        calls.append((method, path, bodies.get((method, info))))
    return calls


SPEC = Path(__file__).resolve().parents[2] / "specs" / "admin-api.yaml"
METHODS = ("get", "post", "put", "patch", "delete")


def documented(role: str) -> int:
    """How many operations specs/admin-api.yaml gives `role` that need the token: the sweep
    must have called each (a route the code serves but the spec forgot, or the reverse, fails)."""
    paths = yaml.safe_load(SPEC.read_text())["paths"]
    return sum(1 for path, item in paths.items() for method, op in item.items()
               if method in METHODS and role in op.get("x-meterline-role", [])
               and path != "/openapi.yaml" and not path.startswith("/dashboard"))


async def snapshot(node: RunningNode) -> dict[str, Any]:
    n = node.node
    async with n.ctx.db() as session:
        tables = {}
        for model in (Channel, Peer, HeldProposal, Usage, OutboxRow, OutgoingProof):
            tables[model.__tablename__] = sorted(
                repr({c.name: getattr(row, c.key) for c in model.__table__.columns})
                for row in await session.scalars(select(model))
            )
    return {"tables": tables, "channels": dict(n.channels.states), "escrows": dict(n.escrow.states)}


async def call(
    node: RunningNode, method: str, path: str, body: Any, authorization: str | None
) -> tuple[int, str, Any]:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with node.http.request(
        method, URL(node.admin_url + path, encoded=True), json=body, headers=headers
    ) as resp:
        return resp.status, resp.content_type, await resp.json(content_type=None)


def assert_unauthorized(answer: tuple[int, str, Any], what: str) -> None:
    status, content_type, body = answer
    assert (status, content_type) == (401, "application/json"), what
    assert body["error"]["code"] == "UNAUTHORIZED", what
    assert "token" in body["error"]["message"], what


@pytest.fixture
async def node(tmp_path: Path, start_node: Callable[..., Any]) -> tuple[RunningNode, str, str]:
    """A node (key ``peer``) holding an OPEN channel with traffic and a held proposal."""
    sim = open_sim()
    sim.pay(0, (5_000, 1), reference="S-1")
    sim.pay(1, (0, 1))
    stranger = Simulation.create(
        tariff=(KM,),
        opener_deposit=1_000,
        salt=b"\x09" * 16,
        labels=("stranger", "peer", "arbiter"),
    )
    proposal = next(
        e.proposal
        for e in ch.propose(stranger.terms, stranger.opener, now_ms=1).effects
        if isinstance(e, ch.SendProposal)
    )
    config = make_config(tmp_path / "peer", sim.peer)
    await seed(
        config, [sim.states[1]], peers=[(sim.opener, f"http://127.0.0.1:{free_port()}", "node")]
    )
    running_node = await start_node(config)
    async with running_node.node.ctx.db() as session, session.begin():
        session.add(
            HeldProposal(
                id=stranger.terms.channel_id.hex(),
                opener_id=stranger.opener.node_id.hex(),
                proposal=proposal.encode(),
                received_ms=1,
            )
        )
    return running_node, sim.terms.channel_id.hex(), stranger.terms.channel_id.hex()


async def _sweep(node: RunningNode, role: str, cid: str, held: str, peer_url: str) -> int:
    before = await snapshot(node)
    checked = 0
    for method, path, body in route_calls(role, cid, held, peer_url):
        for template in WRONG:
            header = template.format(token=node.token) if template else None
            assert_unauthorized(
                await call(node, method, path, body, header),
                f"{method} {path} with {template or 'no'} Authorization",
            )
            checked += 1
    assert await snapshot(node) == before
    return checked


async def test_every_node_route_needs_the_token(node: tuple[RunningNode, str, str]) -> None:
    running_node, cid, held = node
    checked = await _sweep(running_node, "node", cid, held, running_node.peer_url)
    assert checked == len(WRONG) * documented("node")


async def test_the_right_token_gets_through(node: tuple[RunningNode, str, str]) -> None:
    """The control for the sweep: the same requests with the token are served."""
    running_node, cid, _ = node
    auth = f"Bearer {running_node.token}"
    status, _, body = await call(running_node, "GET", "/api/status", None, auth)
    assert status == 200
    assert body["channels"] == {"open": 1}
    status, _, body = await call(running_node, "GET", f"/api/channels/{cid}", None, auth)
    assert status == 200
    assert body["id"] == cid
    status, _, body = await call(running_node, "GET", "/api/channels", None, auth)
    assert status == 200
    assert len(body["proposals"]) == 1


async def test_every_arbiter_route_needs_the_token(
    tmp_path: Path, start_node: Callable[..., Any]
) -> None:
    sim = open_sim()
    config = make_config(tmp_path / "arbiter", sim.arbiter, role="arbiter")
    arbiter = await start_node(config)
    checked = await _sweep(arbiter, "arbiter", "", "", "http://127.0.0.1:9")
    assert checked == len(WRONG) * documented("arbiter")
    status, _, body = await call(arbiter, "GET", "/api/escrows", None, f"Bearer {arbiter.token}")
    assert (status, body) == (200, {"escrows": [], "unapplied_credits": []})


@pytest.mark.parametrize(
    "path",
    [
        "/nowhere",
        "/api",
        "/api/channels/zz",
        "/openapi.yaml/../api/status",
        "/api/status?/openapi.yaml",
        "/api/status#/openapi.yaml",
        "//openapi.yaml",
        "/openapi.yaml%2F..%2Fapi%2Fstatus",
        "/OPENAPI.YAML",
    ],
)
async def test_other_paths_need_the_token_too(
    node: tuple[RunningNode, str, str], path: str
) -> None:
    """No path but /openapi.yaml is answered without the token (not even with a 404 that
    tells which routes exist)."""
    running_node, _, _ = node
    for method in ("GET", "POST"):
        assert_unauthorized(await call(running_node, method, path, None, None), path)


async def test_openapi_yaml_is_the_one_path_served_without_a_token(
    node: tuple[RunningNode, str, str],
) -> None:
    running_node, _, _ = node
    async with running_node.http.get(running_node.admin_url + "/openapi.yaml") as resp:
        text = await resp.text()
        assert resp.status == 200, text
        assert "yaml" in resp.content_type
    assert text.lstrip().startswith("openapi:")
    # it describes the routes the token protects
    for route in admin.routes("node"):
        if route.path != "/openapi.yaml":  # type: ignore[attr-defined]
            assert route.path in text  # type: ignore[attr-defined]


# -- loopback only -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address", ["0.0.0.0:7802", "192.168.1.20:7802", "example.com:7802", "[::]:7802", ":::7802"]
)
def test_init_refuses_a_non_loopback_admin_address(tmp_path: Path, address: str) -> None:
    directory = tmp_path / "node"
    with pytest.raises(ConfigError, match="loopback"):
        init_data_dir(directory, name="n", admin=address)
    assert not directory.exists()  # nothing written, not even a key


@pytest.mark.parametrize("address", ["127.0.0.1:7802", "localhost:7802", "::1:7802"])
def test_init_accepts_a_loopback_admin_address(tmp_path: Path, address: str) -> None:
    init_data_dir(tmp_path / "node", name="n", admin=address)
    assert load_config(tmp_path / "node").admin[1] == 7802


def test_meterline_init_refuses_a_non_loopback_admin(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "node.cli",
            "init",
            "--data-dir",
            str(tmp_path / "n"),
            "--admin",
            "0.0.0.0:7802",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode != 0
    assert "loopback" in out.stderr
    assert not (tmp_path / "n" / "node.key").exists()


async def test_the_admin_listener_refuses_a_config_edited_to_a_non_loopback_address(
    tmp_path: Path,
) -> None:
    """init refuses it; an operator editing config.toml afterwards must not get an admin API
    on every interface either: loading the config or starting the node refuses."""
    sim = open_sim()
    config = make_config(tmp_path / "node", sim.peer)
    path = tmp_path / "node" / "config.toml"
    loopback = f'admin = "127.0.0.1:{config.admin[1]}"'
    assert loopback in path.read_text()
    path.write_text(path.read_text().replace(loopback, f'admin = "0.0.0.0:{free_port()}"'))
    with pytest.raises(ConfigError, match="loopback"):
        async with running(load_config(tmp_path / "node")):
            pass
