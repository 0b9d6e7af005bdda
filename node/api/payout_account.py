"""``POST /api/channels/{channel_id}/payout-account``: the payee names a corrected payout account.

After the bank rejected or returned a payout to us (AC04 closed account, R03 no account…), we
sign a :class:`protocol.messages.PayoutAccount` for the channel and the outbox delivers it to
the arbiter's ``POST /p2p/payout-account``; the arbiter's machine pays every returned payout
of ours again there, with a new idempotency key, and pays later payouts there too (specs/0004
§9, ADR 0272). Only the newest account we signed counts: an older one replayed changes
nothing.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node.api.validate import ACCOUNT, channel_ref, read_json
from node.context import now_ms
from node.credits import checked_account
from node.errors import NodeError
from node.keys import CHANNELS, CONTEXT, OUTBOX, SIGNER
from protocol.messages import EMPTY_SIGNATURE, PayoutAccount


async def name_payout_account(request: web.Request) -> web.Response:
    service = request.app[CHANNELS]
    cid = service.resolve(channel_ref(request.match_info["channel_id"]))
    state = service.get(cid)
    body = ACCOUNT.check(await read_json(request))
    if not {"identification", "name"} <= set(body):
        raise NodeError("give identification and name (scheme: our account's by default)",
                        code="MISSING_FIELD")
    ctx = request.app[CONTEXT]
    scheme = body.get("scheme") or state.terms.accounts()[state.us].scheme
    account = checked_account(scheme, body["identification"], body["name"])
    signer = request.app[SIGNER]
    named = PayoutAccount(state.channel_id, signer.node_id, account, now_ms(),
                          EMPTY_SIGNATURE).signed_by(signer)
    arbiter = await ctx.peer(state.terms.arbiter.hex())
    outbox = request.app[OUTBOX]
    async with ctx.repo.transaction() as session:
        await outbox.add(session, cid, "send", f"{arbiter.url}/p2p/payout-account",
                         named.encode(), recipient=arbiter.node_id, purpose="payout-account",
                         urgent=True)
    outbox.kick()
    answer: dict[str, Any] = {"channel": cid, "account": {
        "scheme": account.scheme, "identification": account.identification,
        "name": account.name}, "issued_ms": named.issued_ms}
    return web.json_response(answer)


def routes() -> list[web.RouteDef]:
    return [web.post("/api/channels/{channel_id}/payout-account", name_payout_account)]
