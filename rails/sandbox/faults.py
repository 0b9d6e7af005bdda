"""Fault injection: the next N requests to a path are delayed, answered 5xx, rejected,
answered with garbage, processed and then cut off, processed twice, or accepted and booked late
(``/_sandbox/faults``), as a misbehaving bank or the network in front of it would; or, on an
account's transactions, answered with a statement that disagrees with the payments (``withhold``:
the debits are not on it yet; ``misbook``: each debit is one minor unit more), which is what
reconciliation must raise rather than settle."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import structlog
from aiohttp import web

from rails.sandbox.admin import AdminError, admin_int, admin_json, admin_str
from rails.sandbox.common import LATE_BOOKING, REJECT, Handler
from rails.sandbox.errors import OBError

log = structlog.get_logger("meterline.bank")


@dataclass(slots=True)
class Fault:
    """Injected trouble for the next `remaining` requests matching `method` and `path`."""

    path: str
    method: str | None
    kind: str
    """``delay`` (``timeout`` is a long delay), ``error`` (a 5xx, or a 4xx with `status`: a
    refusal of the request itself), ``reject`` (the payment is
    created ``Rejected``), ``garbage`` (a 200 that is not JSON), ``drop`` (processed, then the
    connection is cut before any answer), ``duplicate`` (the request reaches the bank twice, as
    from a proxy that retried it; the client gets the second answer), ``late`` (the payment is
    answered ``AcceptedSettlementInProcess`` and booked `delay_ms` later), ``withhold`` or
    ``misbook`` (the transactions answer without its debits, or with each debit one minor unit
    more)."""
    remaining: int
    delay_ms: int = 0
    after_processing: bool = False
    status: int = 500
    reason_code: str = "AM04"
    reason: str = "rejected by sandbox fault injection"


@dataclass(slots=True)
class FaultBook:
    faults: list[Fault] = field(default_factory=list)

    def take(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.path == path and fault.method in (None, method) and fault.remaining > 0:
                fault.remaining -= 1
                if fault.remaining == 0:
                    self.faults.remove(fault)
                return fault
        return None



FAULTS = web.AppKey("faults", FaultBook)
KINDS = ("delay", "timeout", "error", "reject", "garbage", "drop", "duplicate", "late",
         "withhold", "misbook")


@web.middleware
async def fault_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    fault = request.app[FAULTS].take(request.method, request.path)
    if fault is None:
        return await handler(request)
    log.warning("fault_injected", kind=fault.kind, remaining=fault.remaining)
    if fault.kind == "error":
        raise OBError(fault.status, "UK.OBIE.UnexpectedError", "injected fault")
    if fault.kind == "garbage":
        return web.Response(text="<html>upstream proxy says hello</html>", status=200,
                            content_type="text/html")
    if fault.kind == "reject":
        request[REJECT] = (fault.reason_code, fault.reason)
        return await handler(request)
    if fault.kind in STATEMENT_KINDS:
        return _disagreeing(await handler(request), fault.kind)
    if fault.kind == "late":
        request[LATE_BOOKING] = fault.delay_ms
        return await handler(request)
    if fault.kind == "duplicate":
        await _answer(handler, request)  # the first delivery's answer goes nowhere
        return await handler(request)
    if fault.kind == "drop":
        await _answer(handler, request)
        if request.transport is not None:
            request.transport.abort()  # the work is done; the client never hears of it
        return web.Response(status=204)  # written nowhere: the transport is gone
    if not fault.after_processing:
        await asyncio.sleep(fault.delay_ms / 1000)
        return await handler(request)
    response = await handler(request)
    await asyncio.sleep(fault.delay_ms / 1000)
    return response


async def _answer(handler: Handler, request: web.Request) -> None:
    """Run the handler for its effect only: its answer, or its refusal, is thrown away."""
    with contextlib.suppress(web.HTTPException, OBError):
        await handler(request)


STATEMENT_KINDS = ("withhold", "misbook")


def _disagreeing(response: web.StreamResponse, kind: str) -> web.StreamResponse:
    """A transactions answer whose debits are left out (withhold) or one minor unit more
    (misbook); anything else unchanged. (The OB middleware signs what leaves here.)"""
    if not isinstance(response, web.Response) or response.status != 200 or not response.body:
        return response
    assert isinstance(response.body, bytes)
    body = json.loads(response.body)
    txns = body.get("Data", {}).get("Transaction")
    if not isinstance(txns, list):
        return response
    debits = [t for t in txns if t.get("CreditDebitIndicator") == "Debit"]
    if kind == "withhold":
        body["Data"]["Transaction"] = [t for t in txns if t not in debits]
    else:
        for t in debits:
            amount = t["Amount"]
            amount["Amount"] = str(Decimal(amount["Amount"]) + Decimal("0.01"))
    return web.json_response(body, status=200, headers={
        k: v for k, v in response.headers.items() if k.lower().startswith("x-")})


async def admin_add_fault(request: web.Request) -> web.StreamResponse:
    body = await admin_json(request)
    kind = admin_str(body, "kind")
    if kind not in KINDS:
        raise AdminError(400, f"kind is one of {', '.join(KINDS)}")
    method = body.get("method")
    if method is not None and not isinstance(method, str):
        raise AdminError(400, "method must be a string")
    fault = Fault(
        path=admin_str(body, "path"),
        method=method.upper() if method else None,
        kind="delay" if kind == "timeout" else kind,
        remaining=admin_int(body, "count", 1),
        delay_ms=admin_int(body, "delay_ms", 30_000 if kind == "timeout" else 1_000),
        after_processing=bool(body.get("after_processing", False)),
        status=admin_int(body, "status", 500),
        reason_code=admin_str(body, "reason_code", "AM04"),
        reason=admin_str(body, "reason", "rejected by sandbox fault injection"),
    )
    if fault.remaining <= 0 or not 400 <= fault.status <= 599:
        raise AdminError(400, "count must be positive and status a 4xx or 5xx")
    request.app[FAULTS].faults.append(fault)
    return web.json_response(_fault_json(fault), status=201)


def _fault_json(f: Fault) -> dict[str, Any]:
    return {"path": f.path, "method": f.method, "kind": f.kind, "count": f.remaining,
            "delay_ms": f.delay_ms, "after_processing": f.after_processing, "status": f.status,
            "reason_code": f.reason_code, "reason": f.reason}


async def admin_list_faults(request: web.Request) -> web.StreamResponse:
    return web.json_response({"faults": [_fault_json(f) for f in request.app[FAULTS].faults]})


async def admin_clear_faults(request: web.Request) -> web.StreamResponse:
    request.app[FAULTS].faults.clear()
    return web.json_response({"faults": []})


ROUTES = [
    web.post("/_sandbox/faults", admin_add_fault),
    web.get("/_sandbox/faults", admin_list_faults),
    web.delete("/_sandbox/faults", admin_clear_faults),
]
