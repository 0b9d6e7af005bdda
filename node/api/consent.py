"""``/api/rails/consents``: the account holder's authorisation of a payment at the bank.

Some rails need the account holder (the PSU) to authorise each payment at the bank itself: an
Open Banking consent is authorised by sending the PSU to the bank, which sends them back to our
redirect URI with a code (OAuth 2.0 authorization code). The node decides nothing here: it
asks its rail (:class:`rails.port.PsuAuthorisation`) what waits and where to send the PSU, and
hands the rail the URL the bank redirected to. A rail without the step answers 404.

- ``GET /api/rails/consents``: the payments waiting, each with its authorisation URL.
- ``POST /api/rails/consents/authorise`` ``{"redirect": URL}``: the PSU came back; the payment
  goes on (or is rejected, when the PSU declined). The URL must be our redirect URI with a
  ``state`` this node gave out; anything else changes nothing.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node.api.validate import AUTHORISE_CONSENT, read_json
from node.errors import Conflict, NodeError, NotFound, PeerUnavailable
from node.keys import CONTEXT
from rails.errors import (
    BankRejected,
    BankUnavailable,
    InvalidRedirect,
    NotConfigured,
    RailError,
    UnknownPayment,
)
from rails.port import PsuAuthorisation


def _rail(request: web.Request) -> PsuAuthorisation:
    rail = request.app[CONTEXT].rail
    if rail is None:
        raise NotFound("this node has no rail configured ([bank] in config.toml)")
    if not isinstance(rail, PsuAuthorisation):
        raise NotFound(f"the {rail.name} rail has no account-holder authorisation step",
                       code="NO_PSU_STEP")
    return rail


def _refused(exc: RailError) -> NodeError:
    """A rail's refusal as the admin API answers it (x-error-codes)."""
    message = str(exc)
    if isinstance(exc, NotConfigured):
        return Conflict(message, code="NO_REDIRECT_URI")
    if isinstance(exc, InvalidRedirect):
        return NodeError(message, code="BAD_REDIRECT")
    if isinstance(exc, UnknownPayment):
        return NotFound(message, code="UNKNOWN_CONSENT")
    if isinstance(exc, BankRejected):
        return Conflict(f"the bank refused: {message}", code="AUTHORISATION_REFUSED")
    if isinstance(exc, BankUnavailable):
        return PeerUnavailable(f"the bank could not be reached: {message}")
    return PeerUnavailable(f"the bank answered with an error: {message}")


async def list_consents(request: web.Request) -> web.StreamResponse:
    rail = _rail(request)
    try:
        pending = await rail.awaiting_authorisation()
    except RailError as exc:
        raise _refused(exc) from None
    return web.json_response({"consents": [
        {"key": p.idempotency_key, "consent_id": p.consent_id,
         "amount_minor": str(p.amount_minor), "currency": p.currency,
         "authorisation_url": p.authorisation_url} for p in pending]})


async def authorise(request: web.Request) -> web.StreamResponse:
    body: dict[str, Any] = AUTHORISE_CONSENT.check(await read_json(request))
    rail = _rail(request)
    try:
        record = await rail.authorised_by_redirect(body["redirect"])
    except RailError as exc:
        raise _refused(exc) from None
    return web.json_response({
        "key": record.idempotency_key, "status": record.status.value,
        "amount_minor": str(record.amount_minor), "currency": record.currency,
        "reason_code": record.reason_code, "reason": record.reason})


def routes() -> list[web.RouteDef]:
    return [web.get("/api/rails/consents", list_consents),
            web.post("/api/rails/consents/authorise", authorise)]
