"""``GET /metrics`` on the admin port: the node's Prometheus registry (node.metrics), behind the
admin bearer token like every admin route (ADR 0220)."""

from __future__ import annotations

from aiohttp import web

from node.context import now_ms
from node.keys import CHANNELS, CONFIG, CONTEXT, ESCROW
from node.metrics import CONTENT_TYPE
from node.roles import Role


async def metrics(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    arbiter = request.app[CONFIG].role is Role.ARBITER
    await ctx.metrics.refresh(
        channels=None if arbiter else request.app[CHANNELS].states,
        escrows=request.app[ESCROW].states if arbiter else None,
        db=ctx.db, now_ms=now_ms())
    body = ctx.metrics.render()
    # the exposition format's own content type (text/plain; version=0.0.4; charset=utf-8)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def routes() -> list[web.RouteDef]:
    return [web.get("/metrics", metrics)]
