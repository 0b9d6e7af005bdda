"""`meterline bank open-account`, safe to run again.

The same arguments give the same result: when ``--out`` already holds the settings of this
account at this bank, its key and token files exist and the bank knows the account, nothing is
done and the settings are answered again (``unchanged``). Nothing is written before the bank has
answered: a bank that does not listen yet, an account id or identification the bank already has,
or an ``--out`` that names another account is refused with nothing changed, so a paste that ran
too early can simply be run again.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from node.cli.exits import CliError, not_running, refused
from protocol.errors import ProtocolError
from protocol.money import parse_rail_money

KEY_FILE = "tpp-key.pem"
SAME = ("rail", "url", "account_id", "identification", "name")


def _accounts(bank_url: str) -> list[dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{bank_url}/_sandbox/accounts", timeout=10) as resp:  # noqa: S310 - the operator's bank URL
            data = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise refused(f"the sandbox bank at {bank_url} answered HTTP {exc.code}",
                      "BANK_REFUSED") from None
    except (urllib.error.URLError, OSError) as exc:
        raise not_running(
            f"the sandbox bank at {bank_url} is not running "
            f"({getattr(exc, 'reason', exc)}); start it with `meterline bank start --detach`"
        ) from None
    except ValueError:
        raise refused(f"{bank_url} is not a sandbox bank (its answer is not JSON)",
                      "BANK_REFUSED") from None
    accounts = data.get("accounts") if isinstance(data, dict) else None
    if not isinstance(accounts, list):
        raise refused(f"{bank_url} is not a sandbox bank (no account list)", "BANK_REFUSED")
    return [a for a in accounts if isinstance(a, dict)]


def _existing(out: Path) -> dict[str, Any] | None:
    if not out.exists():
        return None
    try:
        settings = json.loads(out.read_text())
    except (ValueError, UnicodeDecodeError):
        settings = None
    if not isinstance(settings, dict):
        raise CliError(f"{out} exists and is not a settings file: choose another --out",
                       code="OUT_EXISTS")
    return settings


def open_or_reuse(*, bank_url: str, account_id: str, name: str, identification: str,
                  balance: str, keys_dir: Path, out: Path) -> tuple[dict[str, Any], str]:
    """The account's [bank] settings and ``opened`` or ``unchanged`` (see the module doc)."""
    from node.provision import ProvisionError, open_sandbox_account

    try:
        money = parse_rail_money(balance)  # a bank balance is whole minor units
    except ProtocolError as exc:
        raise CliError(exc.message, code="BAD_AMOUNT", exit_code=2) from None
    wanted = {"rail": "openbanking", "url": bank_url, "account_id": account_id,
              "identification": identification, "name": name}
    previous = _existing(out)
    accounts = _accounts(bank_url)
    if previous is not None:
        differs = [k for k in SAME if previous.get(k) != wanted[k]]
        if differs:
            raise CliError(f"{out} holds the settings of another account "
                           f"({previous.get('account_id')!r} at {previous.get('url')!r}; "
                           f"{', '.join(differs)} differ): choose another --out",
                           code="OUT_EXISTS")
        files = [Path(str(previous[k])) for k in ("token_file", "key_file") if k in previous]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise CliError(f"{out} names files that are gone ({', '.join(missing)}): remove "
                           f"{out} and {keys_dir}, and open the account again",
                           code="OUT_EXISTS")
        if not any(a.get("account_id") == account_id
                   and a.get("identification") == identification for a in accounts):
            raise refused(f"the bank at {bank_url} has no account {account_id} "
                          f"({identification}) although {out} names it: a new bank data "
                          f"directory? remove {out} and {keys_dir}, and open it again",
                          "UNKNOWN_ACCOUNT")
        return previous, "unchanged"
    taken = [a for a in accounts if a.get("account_id") == account_id
             or a.get("identification") == identification]
    if taken:
        raise refused(f"the bank at {bank_url} already has an account with id {account_id} or "
                      f"identification {identification}, and {out} does not exist: give the "
                      "--out of the run that opened it, or another id", "ACCOUNT_EXISTS")
    if (keys_dir / KEY_FILE).exists():
        raise CliError(f"{keys_dir / KEY_FILE} exists but {out} does not: that key belongs to "
                       f"another account; choose another --keys-dir", code="KEYS_EXIST")
    minor = money.amount
    try:
        settings = asyncio.run(open_sandbox_account(
            bank_url=bank_url, directory=keys_dir, account_id=account_id, name=name,
            identification=identification, currency=money.currency,
            opening_balance_minor=minor))
    except ProvisionError as exc:
        raise refused(f"the bank refused to open the account: {exc}", "BANK_REFUSED") from None
    except OSError as exc:
        raise CliError(f"could not open the account: {exc}") from None
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(settings, indent=2) + "\n")
    os.replace(tmp, out)
    return settings, "opened"
