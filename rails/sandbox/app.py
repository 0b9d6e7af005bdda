"""The sandbox bank's aiohttp application: one ``create_app(config)``; each API's routes live
in its own module (PISP, AISP, the authorisation server, the sandbox admin API, faults).

See the package docstring (:mod:`rails.sandbox`) for what the bank does and decides.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import structlog
from aiohttp import web

from rails.ob_jws import generate_signing_key, key_id, load_signing_key
from rails.sandbox import admin, aisp, auth, faults, pisp
from rails.sandbox.auth import AUTHORITY, Authority
from rails.sandbox.common import CONFIG, DB, SIGNER, BankConfig, Signer, ob_middleware
from rails.sandbox.db import BankDB
from rails.sandbox.faults import FAULTS, FaultBook, fault_middleware

log = structlog.get_logger("meterline.bank")

ROUTES = [*pisp.ROUTES, *aisp.ROUTES, *auth.ROUTES, *admin.ROUTES, *faults.ROUTES]

__all__ = ["BankConfig", "create_app"]


def _bank_signer(data_dir: Path) -> Signer:
    path = data_dir / "bank-signing-key.pem"
    key = load_signing_key(path) if path.exists() else generate_signing_key(path)
    return Signer(key, key_id(key))


async def _ledger(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    config.data_dir.mkdir(parents=True, exist_ok=True)
    app[DB] = BankDB(config.data_dir / "bank.sqlite3")
    app[SIGNER] = _bank_signer(config.data_dir)
    app[AUTHORITY] = Authority(app[DB], config.token_ttl_s)
    log.info("ledger_open", path=str(config.data_dir / "bank.sqlite3"),
             manual_approval=config.manual_approval)
    yield
    app[DB].close()


def create_app(config: BankConfig) -> web.Application:
    app = web.Application(middlewares=[ob_middleware, admin.admin_errors, fault_middleware])
    app[CONFIG] = config
    app[FAULTS] = FaultBook()
    app.cleanup_ctx.append(_ledger)
    app.add_routes(ROUTES)
    return app
