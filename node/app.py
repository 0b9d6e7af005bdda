"""The daemon: one ``Node`` holding the services of its role, two aiohttp applications.

``create_app(config)`` builds the role's peer API app (the node's lifecycle as its
``cleanup_ctx``) with the admin API app beside it; ``serve(config)`` runs them until
SIGINT/SIGTERM, then stops accepting, lets in-flight commits finish, closes streams and the
database.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable

import structlog
from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from node.api import admin, events_out, peer
from node.api.events_in import EVENTS
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
from node.ingest.mqtt import INGEST, MqttIngest
from node.keys import (
    CHANNELS,
    CONFIG,
    CONTEXT,
    ESCROW,
    OUTBOX,
    SIGNER,
    TOKEN,
    TRANSFERS,
    WEBHOOKS,
    WEBSOCKETS,
)
from node.metrics import Metrics
from node.outbox import Outbox
from node.peerclient import PeerClient
from node.peers import announce_if_moved
from node.roles import Role
from node.storage.db import make_engine, migrate, sessionmaker
from node.storage.models import Outbox as OutboxRow
from node.transfers import Transfers
from node.usage_events import UsageEvents
from node.watch import ArbiterWatch
from node.webhooks import Webhooks
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
    """The services of one daemon, for its role. Their lifecycle is three ``cleanup_ctx``
    generators (the database, the clients, the role's services and background tasks), run by
    the peer app of :func:`create_app` — or by :meth:`start` and :meth:`stop` without HTTP."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.signer = load_signer(config)
        self.token = load_token(config)
        try:
            engine = make_engine(config.db_url)
        except (SQLAlchemyError, ImportError) as exc:  # not the URL: it may hold a password
            raise ConfigError(f"[node] db is not a database URL this node can use ({exc}): "
                              "sqlite+aiosqlite:///PATH or postgresql+asyncpg://…") from None
        metrics = Metrics()
        self.ctx = Context(
            config=config, signer=self.signer, engine=engine, db=sessionmaker(engine),
            peers=PeerClient(node_id=self.signer.node_id.hex(),
                             ssl_context=client_ssl_context(config),
                             max_body_bytes=config.limits.max_body_bytes),
            rail=metrics.counted(build_rail(config)), metrics=metrics)
        self.outbox = Outbox(self.ctx)
        self.transfers = Transfers(self.ctx)
        self.channels = ChannelService(self.ctx, self.outbox)
        self.usage_events = UsageEvents(self.channels)
        self.escrow = EscrowService(self.ctx, self.outbox, self.transfers)
        self.watch = ArbiterWatch(self.ctx, self.channels)
        self.webhooks = Webhooks(self.ctx)
        self.ingest = (MqttIngest(config.ingest.mqtt, self.usage_events, self.channels)
                       if config.ingest.mqtt is not None and config.role is Role.NODE else None)
        """[ingest.mqtt]'s subscriber; its status is in GET /api/info."""
        self.outbox.handlers["send"] = self._send
        self.outbox.handlers["deposit"] = self.transfers.submit_row
        self._stack: contextlib.AsyncExitStack | None = None

    async def _send(self, row: OutboxRow) -> None:
        """Outbox handler: POST the row's exact bytes to its target. Returns when the recipient
        took it; its refusal (`Refused`) and every failure propagate for the outbox to classify
        against the row's recipient (node.outbox.classify): only a refusal that recipient signed
        over these bytes ends the row."""
        base, _, path = row.target.partition("/p2p/")
        answer = await self.ctx.peers.send(base, "/p2p/" + path, row.payload)
        if isinstance(answer, CooperativeClose) and self.config.role is Role.NODE:
            await self.channels.on_close(answer)

    # -- the lifecycle (aiohttp cleanup_ctx generators) ------------------------------------------

    async def database(self, _app: web.Application | None = None) -> AsyncIterator[None]:
        await migrate(self.ctx.engine)
        try:
            yield
        finally:
            self.ctx.repo.close()
            await self.ctx.engine.dispose()

    async def clients(self, _app: web.Application | None = None) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await self.ctx.peers.close()
            if self.ctx.rail is not None:
                await self.ctx.rail.aclose()

    async def services(self, _app: web.Application | None = None) -> AsyncIterator[None]:
        """The role's services and background tasks; stopped in reverse."""
        tasks: list[asyncio.Task[None]] = []
        if self.config.role is Role.ARBITER:
            await self.escrow.load()
            self.escrow.start()
        else:
            await self.channels.load()
            tasks.append(asyncio.create_task(self._watch_transfers(), name="transfers"))
            tasks.append(asyncio.create_task(self.ctx.events.run_payments(
                lambda: self.channels.states, self.channels.lock), name="payment events"))
            self.watch.start()
            if self.ingest is not None:  # [ingest.mqtt]: meter a topic's messages
                tasks.append(asyncio.create_task(self.ingest.run(), name="mqtt ingest"))
            self.channels.checkpoints.start()
        self.outbox.start()
        self.outbox.kick()
        self.webhooks.start()
        tasks.append(asyncio.create_task(announce_if_moved(self.ctx), name="announce"))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            # done before the rail and the database close under them
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.webhooks.stop()
            await self.watch.stop()
            await self.escrow.stop()
            await self.outbox.stop()
            await self.usage_events.stop()
            await self.channels.stop()

    LIFECYCLE = ("database", "clients", "services")

    async def _watch_transfers(self) -> None:
        while True:
            await asyncio.sleep(self.config.bank.poll_interval_ms / 1000)
            with contextlib.suppress(Exception):
                await self.transfers.refresh()

    async def start(self) -> None:
        """The lifecycle without HTTP (what the peer app's cleanup_ctx does at startup)."""
        stack = contextlib.AsyncExitStack()
        try:
            for part in self.LIFECYCLE:
                gen = getattr(self, part)
                await stack.enter_async_context(contextlib.asynccontextmanager(gen)())
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack

    async def stop(self) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()

    def app(self, routes: list[web.RouteDef], middlewares: list[object],
            max_size: int) -> web.Application:
        app = web.Application(middlewares=middlewares, client_max_size=max_size)  # type: ignore[arg-type]
        app[CONFIG] = self.config
        app[SIGNER] = self.signer
        app[CONTEXT] = self.ctx
        app[CHANNELS] = self.channels
        app[EVENTS] = self.usage_events
        app[ESCROW] = self.escrow
        app[TRANSFERS] = self.transfers
        app[OUTBOX] = self.outbox
        app[WEBHOOKS] = self.webhooks
        app[TOKEN] = self.token
        app[WEBSOCKETS] = {}
        if self.ingest is not None:
            app[INGEST] = self.ingest
        app.add_routes(routes)
        return app


NODE = web.AppKey("node", Node)
ADMIN_APP = web.AppKey("admin_app", web.Application)


def create_app(config: Config) -> web.Application:
    """The daemon of `config.role`: its peer API app, which runs the node's lifecycle as
    ``cleanup_ctx``, with the admin API app (``app[ADMIN_APP]``) on the same services."""
    node = Node(config)
    peer_app = node.app(peer.routes(config.role), [peer.peer_errors],
                        config.limits.max_body_bytes)
    peer_app.cleanup_ctx.extend(getattr(node, part) for part in Node.LIFECYCLE)
    peer_app.on_shutdown.append(peer.close_streams)
    peer_app[NODE] = node
    peer_app[ADMIN_APP] = node.app(admin.routes(config.role),
                                   [admin.admin_errors, admin.admin_auth], 1024 * 1024)
    peer_app[ADMIN_APP].on_shutdown.append(events_out.close_streams)
    return peer_app


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[Node]:
    peer_tls = server_ssl_context(config)  # the peer API only: admin stays plain on loopback
    peer_app = create_app(config)
    node, limits = peer_app[NODE], config.limits
    timeouts = ServerTimeouts(limits.header_timeout_ms, limits.body_timeout_ms,
                              limits.idle_timeout_ms)
    runners: list[BoundedAppRunner] = []
    try:
        for app in (peer_app, peer_app[ADMIN_APP]):  # the peer app's setup starts the node
            runner = BoundedAppRunner(app, timeouts, access_log=None, shutdown_timeout=5)
            await runner.setup()
            runners.append(runner)
        await web.TCPSite(runners[0], *config.listen, ssl_context=peer_tls).start()
        await web.TCPSite(runners[1], *config.admin).start()
        log.info("node.started", name=config.name, role=config.role.value,
                 node_id=node.signer.node_id.hex(), listen=f"{config.listen[0]}:{config.listen[1]}",
                 tls=peer_tls is not None,
                 admin=f"{config.admin[0]}:{config.admin[1]}")
        yield node
    finally:
        for runner in reversed(runners):  # admin first; the peer app's cleanup stops the node
            await runner.cleanup()
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
