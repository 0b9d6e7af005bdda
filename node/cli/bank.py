"""``meterline bank``: run the sandbox bank (UK Open Banking v3.1.11) for tests and the demo."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click
import structlog

from node.logs import configure_logging


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise click.BadParameter("expected HOST:PORT, e.g. 127.0.0.1:8700")
    return host.strip("[]"), int(port)


@click.group()
def bank() -> None:
    """The sandbox bank: UK Open Banking pay-by-bank against accounts it holds itself.

    \b
    Example:
      meterline bank start --data-dir ./bank --listen 127.0.0.1:8700
    """


@bank.command("start")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("sandbox-bank"), show_default=True,
              help="Directory for bank.sqlite3 and the bank's signing key.")
@click.option("--listen", default="127.0.0.1:8700", show_default=True, metavar="HOST:PORT",
              help="Address to serve the OB API and the /_sandbox admin API on.")
@click.option("--manual-approval", is_flag=True,
              help="Leave new consents AwaitingAuthorisation until "
                   "POST /_sandbox/consents/{id}/authorise.")
@click.option("--json-logs", is_flag=True, help="JSON log lines even on a TTY.")
def start(data_dir: Path, listen: str, manual_approval: bool, json_logs: bool) -> None:
    """Run the sandbox bank in the foreground until SIGINT/SIGTERM.

    \b
    Example:
      meterline bank start --data-dir ./bank --listen 127.0.0.1:8700 --manual-approval
      curl -X POST localhost:8700/_sandbox/accounts -d '{"account_id": "acc-a", ...}'
    """
    from rails.httpserver import serve
    from rails.sandbox import BankConfig, create_app

    host, port = _parse_listen(listen)
    configure_logging(json=True if json_logs else None)
    log = structlog.get_logger("meterline.bank")
    log.info("bank_starting", listen=f"{host}:{port}", data_dir=str(data_dir),
             manual_approval=manual_approval)
    app = create_app(BankConfig(data_dir=data_dir, manual_approval=manual_approval))
    asyncio.run(serve(app, host, port, shutdown_timeout=2.0))


@bank.command("open-account")
@click.option("--bank", "bank_url", default="http://127.0.0.1:8700", show_default=True,
              help="The sandbox bank's URL.")
@click.option("--account-id", required=True, help="The bank's id for the new account.")
@click.option("--name", required=True, help="The account holder's name.")
@click.option("--identification", required=True,
              help="Sort code + account number, 14 digits (UK.OBIE.SortCodeAccountNumber).")
@click.option("--balance", default="0.00 EUR", show_default=True,
              help='Opening balance, e.g. "10000.00 EUR".')
@click.option("--keys-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Where to keep the TPP signing key and bank token (mode 0600).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Write the node's [bank] settings here, for `meterline init --bank-config`.")
@click.option("--json", "as_json", is_flag=True, help="Print the settings as JSON.")
def open_account(bank_url: str, account_id: str, name: str, identification: str, balance: str,
                 keys_dir: Path, out: Path, as_json: bool) -> None:
    """Open an account at the sandbox bank and register this company as its pay-by-bank client.

    \b
    Example:
      meterline bank open-account --account-id carrier --name "Carrier Ltd" \\
          --identification 40000100000003 --keys-dir ./carrier-bank --out carrier-bank.json
    """
    from node.provision import ProvisionError, open_sandbox_account
    from protocol.errors import ProtocolError
    from protocol.money import parse_rail_money

    try:
        money = parse_rail_money(balance)  # a bank balance is whole minor units
    except ProtocolError as exc:
        raise click.ClickException(exc.message) from None
    minor = money.amount
    try:
        settings = asyncio.run(open_sandbox_account(
            bank_url=bank_url, directory=keys_dir, account_id=account_id, name=name,
            identification=identification, currency=money.currency,
            opening_balance_minor=minor))
    except (ProvisionError, OSError) as exc:
        raise click.ClickException(f"could not open the account: {exc}") from None
    out.write_text(json.dumps(settings, indent=2) + "\n")
    if as_json:
        click.echo(json.dumps(settings, indent=2, sort_keys=True))
    else:
        click.echo(f"opened {account_id} ({name}) at {bank_url}; settings in {out}")
