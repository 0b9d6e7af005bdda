"""Fixtures for the node suites: real SQLite and PostgreSQL databases, services built on a real
engine, channels opened by the pure protocol simulation, and in-process daemons on loopback.

PostgreSQL runs only when ``METERLINE_TEST_PG_URL`` names a server
(``postgresql+asyncpg://postgres@127.0.0.1:5432/postgres``): the session creates its own database
``meterline_test_<random>`` there, every test starts from an empty ``public`` schema, and the
database is dropped when the session ends, so two runs never share state.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from sqlalchemy import event, func, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

import protocol.messages  # noqa: F401  (registers every message type with the decoder)
from node.app import Node, running
from node.channels import ChannelService
from node.cluster import free_port
from node.config import Config, init_data_dir, load_config
from node.context import Context
from node.escrow import EscrowService
from node.outbox import Outbox
from node.peerclient import PeerClient
from node.storage.db import make_engine, migrate, sessionmaker
from node.storage.models import Channel, Peer, Usage
from node.storage.models import Outbox as OutboxRow
from node.transfers import Transfers
from protocol import channel as ch
from protocol.crypto import Signer
from protocol.messages import BalanceProof, ChannelRegistration
from protocol.simulation import Simulation
from protocol.tariff import TariffLine, TariffTier
from protocol.types import Amount, Quantity

PG_ENV = "METERLINE_TEST_PG_URL"
PG_SKIP = "METERLINE_TEST_PG_URL is not set: PostgreSQL storage tests skipped"

KM = TariffLine("km", 3, (TariffTier(None, Amount(12_300)),))
"""0.0123 EUR per km at amount scale 6; quantities in metres (quantity scale 3)."""
MSG = TariffLine("message", 0, (TariffTier(None, Amount(7)),))
"""0.000007 EUR per message."""


# -- databases ---------------------------------------------------------------------------------


def _asyncpg_dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[URL | None]:
    """A database of its own on the server named by METERLINE_TEST_PG_URL (None when unset)."""
    raw = os.environ.get(PG_ENV)
    if not raw:
        yield None
        return
    server = make_url(raw)
    name = f"meterline_test_{secrets.token_hex(6)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(_asyncpg_dsn(server))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path, pg_database: URL | None) -> str:
    """An empty database: a new SQLite file, or the session's PostgreSQL database with a fresh
    ``public`` schema."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'meterline.sqlite'}"
    if pg_database is None:
        pytest.skip(PG_SKIP)
    conn = await asyncpg.connect(_asyncpg_dsn(pg_database))
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()
    return pg_database.render_as_string(hide_password=False)


# -- configs and services ----------------------------------------------------------------------


def make_config(
    directory: Path,
    signer: Signer,
    *,
    db_url: str | None = None,
    role: str = "node",
    limits: dict[str, int] | None = None,
    allow: list[str] | None = None,
) -> Config:
    """A real data directory (config.toml, key, token) through init_data_dir, on free ports."""
    init_data_dir(
        directory,
        name=directory.name,
        role=role,
        listen=f"127.0.0.1:{free_port()}",
        admin=f"127.0.0.1:{free_port()}",
        db=db_url,
        seed=signer.seed(),
        allow=allow,
    )
    if limits:
        with (directory / "config.toml").open("a") as f:
            f.write("\n[limits]\n" + "".join(f"{k} = {v}\n" for k, v in limits.items()))
    return load_config(directory)


@dataclass
class Services:
    """What Node.__init__ assembles, minus the HTTP apps: services over one real engine."""

    ctx: Context
    outbox: Outbox
    channels: ChannelService
    escrow: EscrowService
    handled: list[OutboxRow] = field(default_factory=list)
    """Rows the outbox worker handed to the ``send`` handler (the edge of the node)."""
    failing: bool = False
    """When set, the ``send`` handler fails (a peer that is down)."""

    @property
    def engine(self) -> AsyncEngine:
        return self.ctx.engine

    async def _send(self, row: OutboxRow) -> None:
        if self.failing:
            raise ConnectionError("peer unreachable")
        self.handled.append(row)

    async def close(self) -> None:
        await self.channels.stop()
        await self.outbox.stop()
        await self.escrow.stop()
        await self.ctx.peers.close()
        self.ctx.repo.close()
        await self.ctx.engine.dispose()

    # reading the database directly

    async def count(self, model: Any) -> int:
        async with self.ctx.db() as session:
            return int(await session.scalar(select(func.count()).select_from(model)) or 0)

    async def channel_row(self, cid: str) -> Channel | None:
        async with self.ctx.db() as session:
            return await session.get(Channel, cid)

    async def usage(self, cid: str) -> list[tuple[Any, ...]]:
        async with self.ctx.db() as session:
            rows = await session.scalars(select(Usage).where(Usage.channel_id == cid))
            return sorted(
                (u.sender, u.unit, u.reference, u.bucket_ms, u.quantity, u.amount, u.updates)
                for u in rows
            )

    def count_commits(self, *, direct: bool = True) -> Callable[[], int]:
        """Count transactions committed on this engine from now on (with `direct`, those of
        node.storage.direct's connection too)."""
        commits = [0]

        def on_commit(_conn: Any) -> None:
            commits[0] += 1

        event.listen(self.engine.sync_engine, "commit", on_commit)
        if direct and self.ctx.repo.direct is not None:  # a channel's rows alone
            self.ctx.repo.direct.on_commit.append(lambda: on_commit(None))
        return lambda: commits[0]


ServicesFactory = Callable[[Config], Awaitable[Services]]


@pytest.fixture
async def services() -> AsyncIterator[ServicesFactory]:
    """Build (and at teardown close) Services for a config: a new engine on its database,
    migrated. Calling it twice on one config is a restart."""
    made: list[Services] = []

    async def build(config: Config) -> Services:
        engine = make_engine(config.db_url)
        await migrate(engine)
        signer = Signer(bytes.fromhex(config.key_path.read_text().strip()))
        ctx = Context(
            config=config,
            signer=signer,
            engine=engine,
            db=sessionmaker(engine),
            peers=PeerClient(node_id=signer.node_id.hex()),
            rail=None,
        )
        outbox = Outbox(ctx)
        transfers = Transfers(ctx)
        svc = Services(
            ctx, outbox, ChannelService(ctx, outbox), EscrowService(ctx, outbox, transfers)
        )
        outbox.handlers["send"] = svc._send
        outbox.handlers["deposit"] = transfers.submit_row
        made.append(svc)
        return svc

    yield build
    for svc in reversed(made):
        await svc.close()


PEER_URL, ARBITER_URL, OPENER_URL = "http://peer.test", "http://arbiter.test", "http://opener.test"


async def node_with_peers(tmp_path: Path, services: ServicesFactory, us: int, *,
                          db_url: str | None = None,
                          limits: dict[str, int] | None = None) -> Services:
    """The opener's (us=0) or the peer's (us=1) services of an `open_sim` channel, knowing the
    other two (at the unreachable ``*.test`` URLs); the simulation is ``svc.sim``."""
    sim = open_sim()
    signer = (sim.opener, sim.peer)[us]
    svc = await services(make_config(tmp_path / f"n{us}", signer, db_url=db_url,
                                     limits=limits))
    async with svc.ctx.db() as session, session.begin():
        for key, url, role in ((sim.opener, OPENER_URL, "node"), (sim.peer, PEER_URL, "node"),
                               (sim.arbiter, ARBITER_URL, "arbiter")):
            if key is not signer:
                session.add(Peer(node_id=key.node_id.hex(), url=url, name=role, role=role,
                                 info="{}", added_ms=1))
    svc.sim = sim  # type: ignore[attr-defined]
    return svc


# -- channels built by the pure simulation ----------------------------------------------------


def open_sim(
    *,
    salt: bytes = bytes(16),
    tariff: tuple[TariffLine, ...] = (KM, MSG),
    opener_deposit: int = 10_000,
    peer_deposit: int = 5_000,
) -> Simulation:
    """An OPEN channel (opener 100.00 EUR, peer 50.00 EUR) between the labelled keys
    ``opener``, ``peer`` and ``arbiter``, funded by the simulation's arbiter."""
    sim = Simulation.create(
        tariff=tariff, opener_deposit=opener_deposit, peer_deposit=peer_deposit, salt=salt
    )
    sim.open()
    assert sim.states[0].phase is ch.Phase.OPEN
    assert sim.states[1].phase is ch.Phase.OPEN
    return sim


class Payer:
    """The opener's side of a simulated channel, signing proofs for a node under test."""

    def __init__(self, sim: Simulation, *, now_ms: int | None = None) -> None:
        self.sim = sim
        self.state = sim.states[0]
        self.now_ms = now_ms if now_ms is not None else sim.now_ms

    def pay(
        self,
        quantities: tuple[int, ...],
        *,
        direct: int = 0,
        reference: str = "",
        at_ms: int | None = None,
    ) -> BalanceProof:
        self.now_ms = at_ms if at_ms is not None else self.now_ms + 1
        t = ch.step(
            self.state,
            ch.ActionPay(
                self.sim.opener, tuple(Quantity(q) for q in quantities), Amount(direct), reference
            ),
            now_ms=self.now_ms,
        )
        self.state = t.state
        proof = t.effects[0].proof  # type: ignore[union-attr]
        assert isinstance(proof, BalanceProof)
        return proof


async def seed(
    config: Config, states: list[ch.ChannelState], peers: list[tuple[Signer, str, str]] = ()
) -> None:
    """Write channel states (and peer rows: signer, url, role) into a node's database before it
    starts, through the node's own ChannelService._commit."""
    engine = make_engine(config.db_url)
    try:
        await migrate(engine)
        signer = Signer(bytes.fromhex(config.key_path.read_text().strip()))
        ctx = Context(
            config=config,
            signer=signer,
            engine=engine,
            db=sessionmaker(engine),
            peers=PeerClient(node_id=signer.node_id.hex()),
            rail=None,
        )
        service = ChannelService(ctx, Outbox(ctx))
        async with ctx.db() as session, session.begin():
            for peer_signer, url, role in peers:
                session.add(
                    Peer(
                        node_id=peer_signer.node_id.hex(),
                        url=url,
                        name=role,
                        role=role,
                        info="{}",
                        added_ms=1,
                    )
                )
        for state in states:
            await service.commit(state, new=True)
    finally:
        await engine.dispose()


# -- a node running in this process ------------------------------------------------------------


@dataclass
class RunningNode:
    node: Node
    config: Config
    token: str
    http: aiohttp.ClientSession

    @property
    def peer_url(self) -> str:
        return f"http://{self.config.listen[0]}:{self.config.listen[1]}"

    @property
    def admin_url(self) -> str:
        return self.config.admin_url

    async def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(
            method,
            self.admin_url + path,
            json=body,
            headers={"Authorization": f"Bearer {self.token}"},
        ) as r:
            return r.status, await r.json(content_type=None)


@pytest.fixture
async def start_node() -> AsyncIterator[Callable[[Config], Awaitable[RunningNode]]]:
    """Start ``node.app.running(config)`` on its loopback ports; stopped at teardown."""
    stack: list[Any] = []
    http = aiohttp.ClientSession()

    async def start(config: Config) -> RunningNode:
        cm = running(config)
        node = await cm.__aenter__()
        stack.append(cm)
        return RunningNode(node, config, config.token_path.read_text().strip(), http)

    yield start
    await http.close()
    for cm in reversed(stack):
        await cm.__aexit__(None, None, None)


async def arbiter_holding_a_channel(
    tmp_path: Path, start_node: Callable[[Config], Awaitable[RunningNode]]
) -> tuple[Simulation, RunningNode]:
    """A real arbiter daemon holding one open channel (of `open_sim`) in escrow."""
    sim = open_sim()
    arbiter = await start_node(make_config(tmp_path / "arbiter", sim.arbiter, role="arbiter"))
    assert sim.escrow is not None
    await arbiter.node.escrow.on_register(ChannelRegistration(sim.escrow.proposal,
                                                              sim.escrow.acceptance))
    await arbiter.node.escrow.commit(sim.escrow)
    return sim, arbiter


__all__ = [
    "ARBITER_URL",
    "KM",
    "MSG",
    "OPENER_URL",
    "PEER_URL",
    "PG_SKIP",
    "Payer",
    "RunningNode",
    "Services",
    "arbiter_holding_a_channel",
    "free_port",
    "make_config",
    "node_with_peers",
    "open_sim",
    "seed",
]
