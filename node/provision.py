"""Open an account for a company at the sandbox bank and write the node's bank settings.

Used by ``meterline demo``, the quickstart and the end-to-end tests: it creates the account,
generates the company's TPP signing key (mode 0600, in its data directory), registers it as the
bank's client for that account, and returns the settings ``meterline init --bank-config`` takes:
``rail`` and ``poll_interval_ms`` go to ``[bank]``, the rest to ``[rails.openbanking]``
(:func:`node.config.bank_sections`, typed by :class:`rails.settings.OpenBankingSettings`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from rails.openbanking import generate_key_pair


class ProvisionError(Exception):
    pass


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> Any:
    async with session.post(url, json=body) as resp:
        data = await resp.json(content_type=None)
        if resp.status >= 300:
            raise ProvisionError(f"{url}: HTTP {resp.status}: {data}")
        return data


async def open_sandbox_account(
    *,
    bank_url: str,
    directory: Path,
    account_id: str,
    name: str,
    identification: str,
    currency: str = "EUR",
    opening_balance_minor: int = 0,
) -> dict[str, Any]:
    """Create the account and a TPP client; return the node's bank settings (flat)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)  # noqa: ASYNC240 - once, tiny
    key = generate_key_pair(directory / "tpp-key.pem")
    base = bank_url.rstrip("/")
    async with aiohttp.ClientSession() as session:
        await _post(session, f"{base}/_sandbox/accounts", {
            "account_id": account_id, "name": name, "currency": currency,
            "scheme": "UK.OBIE.SortCodeAccountNumber", "identification": identification,
            "opening_balance_minor": opening_balance_minor,
        })
        client = await _post(session, f"{base}/_sandbox/clients", {
            "jwk": key.public_jwk, "account_ids": [account_id], "name": name,
        })
    return {
        "rail": "openbanking",
        "url": base,
        "account_id": account_id,
        "scheme": "UK.OBIE.SortCodeAccountNumber",
        "identification": identification,
        "name": name,
        "client_id": client["client_id"],
        "org_id": client["org_id"],
        "software_statement_id": client["software_statement_id"],
        "key_file": str(key.path),
        "poll_interval_ms": 200,
        "currency": currency,
    }


async def balances(bank_url: str) -> dict[str, int]:
    """Every sandbox account's booked balance in minor units, by account id."""
    async with aiohttp.ClientSession() as session, session.get(
        f"{bank_url.rstrip('/')}/_sandbox/accounts"
    ) as resp:
        data = await resp.json()
    return {a["account_id"]: int(a["balance_minor"]) for a in data["accounts"]}
