"""The daemon: one ``Node`` holding the services, two aiohttp applications (peer, admin).

``create_apps(config)`` builds both; ``serve(config)`` runs them until SIGINT/SIGTERM, then stops
accepting, lets in-flight commits finish, closes streams and the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable

import structlog
from aiohttp import web

from node.api import admin, peer
from node.channels import ChannelService
from node.config import (
    Config,
    ConfigError,
    client_ssl_context,
    load_signer,
    load_token,
    server_ssl_context,
)
from node.context import Context
from node.escrow import EscrowService
from node.keys import (
    CHANNELS,
    CONFIG,
    CONTEXT,
    ESCROW,
    OUTBOX,
    SIGNER,
    TOKEN,
    TRANSFERS,
    WEBSOCKETS,
)
from node.outbox import Outbox
from node.peerclient import PeerClient
from node.peers import announce_if_moved
from node.storage.db import make_engine, migrate, sessionmaker
from node.storage.models import Outbox as OutboxRow
from node.transfers import Transfers
from node.watch import ArbiterWatch
from protocol.messages import CooperativeClose
from rails import registry
from rails.httpserver import BoundedAppRunner, ServerTimeouts
from rails.port import Rail
from rails.settings import RailConfigError

log = structlog.get_logger()


def build_rail(config: Config) -> Rail | None:
    """The rail named in [bank] with its [rails.RAIL] settings; None without a bank account."""
    bank = config.bank
    if bank.settings is None:
        return None
    try:
        return registry.build_rail(bank.rail, bank.settings,
                                   registry.RailContext(config.data_dir, config.name))
    except (RailConfigError, ValueError) as exc:
        raise ConfigError(f"[rails.{bank.rail}]: {exc}") from None


class Node:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.signer = load_signer(config)
        self.token = load_token(config)
        engine = make_engine(config.db_url)
        self.ctx = Context(
            config=config, signer=self.signer, engine=engine, db=sessionmaker(engine),
            peers=PeerClient(node_id=self.signer.node_id.hex(),
                             ssl_context=client_ssl_context(config),
                             max_body_bytes=config.limits.max_body_bytes),
            rail=build_rail(config))
        self.outbox = Outbox(self.ctx)
        self.transfers = Transfers(self.ctx)
        self.channels = ChannelService(self.ctx, self.outbox)
        self.escrow = EscrowService(self.ctx, self.outbox, self.transfers)
        self.watch = ArbiterWatch(self.ctx, self.channels)
        self.outbox.handlers["send"] = self._send
        self.outbox.handlers["deposit"] = self.transfers.submit_row
        self._deposit_task: asyncio.Task[None] | None = None
        self._announce_task: asyncio.Task[None] | None = None

    async def _send(self, row: OutboxRow) -> None:
        """Outbox handler: POST the row's exact bytes to its target. Returns when the recipient
        took it; its refusal (`Refused`) and every failure propagate for the outbox to classify
        against the row's recipient (node.outbox.classify): only a refusal that recipient signed
        over these bytes ends the row."""
        base, _, path = row.target.partition("/p2p/")
        answer = await self.ctx.peers.send(base, "/p2p/" + path, row.payload)
        if isinstance(answer, CooperativeClose) and self.config.role == "node":
            await self.channels.on_close(answer)

    async def start(self) -> None:
        await migrate(self.ctx.engine)
        if self.config.role == "arbiter":
            await self.escrow.load()
            self.escrow.start()
        else:
            await self.channels.load()
            self._deposit_task = asyncio.create_task(self._watch_transfers())
            self.watch.start()
        self.outbox.start()
        self.outbox.kick()
        self._announce_task = asyncio.create_task(announce_if_moved(self.ctx))

    async def _watch_transfers(self) -> None:
        while True:
            await asyncio.sleep(self.config.bank.poll_interval_ms / 1000)
            with contextlib.suppress(Exception):
                await self.transfers.refresh()

    async def stop(self) -> None:
        for task in (self._deposit_task, self._announce_task):
            if task is not None:
                task.cancel()
        await self.watch.stop()
        await self.escrow.stop()
        await self.outbox.stop()
        await self.channels.stop()
        await self.ctx.peers.close()
        if self.ctx.rail is not None:
            await self.ctx.rail.aclose()
        await self.ctx.engine.dispose()

    def _app(self, routes: list[web.RouteDef], middlewares: list[object],
             max_size: int) -> web.Application:
        app = web.Application(middlewares=middlewares, client_max_size=max_size)  # type: ignore[arg-type]
        app[CONFIG] = self.config
        app[SIGNER] = self.signer
        app[CONTEXT] = self.ctx
        app[CHANNELS] = self.channels
        app[ESCROW] = self.escrow
        app[TRANSFERS] = self.transfers
        app[OUTBOX] = self.outbox
        app[TOKEN] = self.token
        app[WEBSOCKETS] = set()
        app.add_routes(routes)
        return app

    def create_apps(self) -> tuple[web.Application, web.Application]:
        limits = self.config.limits
        peer_app = self._app(peer.routes(self.config.role), [peer.peer_errors],
                             limits.max_body_bytes)
        peer_app.on_shutdown.append(peer.close_streams)
        admin_app = self._app(admin.routes(self.config.role),
                              [admin.admin_errors, admin.admin_auth], 1024 * 1024)
        return peer_app, admin_app


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[Node]:
    peer_tls = server_ssl_context(config)  # the peer API only: admin stays plain on loopback
    node = Node(config)
    await node.start()
    peer_app, admin_app = node.create_apps()
    limits = config.limits
    timeouts = ServerTimeouts(limits.header_timeout_ms, limits.body_timeout_ms,
                              limits.idle_timeout_ms)
    runners = [BoundedAppRunner(app, timeouts, access_log=None, shutdown_timeout=5)
               for app in (peer_app, admin_app)]
    for runner in runners:
        await runner.setup()
    try:
        await web.TCPSite(runners[0], *config.listen, ssl_context=peer_tls).start()
        await web.TCPSite(runners[1], *config.admin).start()
        log.info("node.started", name=config.name, role=config.role,
                 node_id=node.signer.node_id.hex(), listen=f"{config.listen[0]}:{config.listen[1]}",
                 tls=peer_tls is not None,
                 admin=f"{config.admin[0]}:{config.admin[1]}")
        yield node
    finally:
        for runner in runners:
            await runner.cleanup()
        await node.stop()
        log.info("node.stopped", name=config.name)


async def serve(config: Config, ready: Callable[[], None] | None = None) -> None:
    """Run until SIGINT/SIGTERM; `ready` is called once both APIs listen."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running(config):
        if ready is not None:
            ready()
        await stop.wait()
