"""``meterline bank``: run the sandbox bank (UK Open Banking v3.1.11) for tests and the demo."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import click
import structlog

from node import daemon
from node.cli.client import emit
from node.cli.exits import CliError
from node.cli.group import Group
from node.cluster import meterline_argv
from node.lockfile import AlreadyRunning


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise click.BadParameter("expected HOST:PORT, e.g. 127.0.0.1:8700")
    return host.strip("[]"), int(port)


@click.group(cls=Group)
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
@click.option("--detach", is_flag=True,
              help="Run in the background: return once it listens, print its pid and log file "
                   "(DATA_DIR/bank.log).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
def start(data_dir: Path, listen: str, manual_approval: bool, json_logs: bool, detach: bool,
          as_json: bool) -> None:
    """Run the sandbox bank until SIGINT/SIGTERM (or `meterline bank stop`).

    \b
    Example:
      meterline bank start --data-dir ./bank --listen 127.0.0.1:8700 --detach
      curl -X POST localhost:8700/_sandbox/accounts -d '{"account_id": "acc-a", ...}'
    """
    from node.cli.node_cmd import serve_locked

    host, port = _parse_listen(listen)
    directory = data_dir.resolve()
    if detach:
        log = directory / "bank.log"
        argv = [*meterline_argv(), "bank", "start", "--data-dir", str(directory),
                "--listen", listen, "--json-logs", *(["--manual-approval"] * manual_approval)]
        try:
            started = daemon.detach(argv, data_dir=directory, log=log, what="the sandbox bank")
        except AlreadyRunning as exc:
            raise CliError(str(exc), code="ALREADY_RUNNING") from None
        except daemon.DaemonError as exc:
            raise CliError(str(exc), code="START_FAILED") from None
        out = {"pid": started.pid, "log": str(log), "data_dir": str(directory),
               "url": f"http://{host}:{port}"}
        emit(out, as_json, f"the sandbox bank is running at http://{host}:{port} (pid "
             f"{started.pid}); log {log}; stop it with `meterline bank stop --data-dir "
             f"{directory}`")
        return

    async def run(ready: Callable[[], None]) -> None:
        from rails.httpserver import serve
        from rails.sandbox import BankConfig, create_app

        structlog.get_logger("meterline.bank").info(
            "bank_starting", listen=f"{host}:{port}", data_dir=str(directory),
            manual_approval=manual_approval)
        app = create_app(BankConfig(data_dir=directory, manual_approval=manual_approval))
        await serve(app, host, port, shutdown_timeout=2.0, ready=ready)

    serve_locked(directory, True if json_logs else None, run)


@bank.command("stop")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("sandbox-bank"), show_default=True,
              help="The bank's data directory.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
def stop(data_dir: Path, as_json: bool) -> None:
    """Stop the sandbox bank running on this data directory.

    \b
    Example:
      meterline bank stop --data-dir ./bank
    """
    from node.cli.node_cmd import stop_daemon

    stop_daemon(data_dir.resolve(), "sandbox bank", as_json)


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

    Safe to run again: with the same arguments, once the account is open, it answers with the
    same settings and changes nothing. Nothing is written before the bank answers.

    \b
    Example:
      meterline bank open-account --account-id carrier --name "Carrier Ltd" \\
          --identification 40000100000003 --keys-dir ./carrier-bank --out carrier-bank.json
    """
    from node.cli.sandbox_account import open_or_reuse

    settings, status = open_or_reuse(
        bank_url=bank_url.rstrip("/"), account_id=account_id, name=name,
        identification=identification, balance=balance, keys_dir=keys_dir.resolve(), out=out)
    if as_json:
        click.echo(json.dumps({**settings, "status": status}, indent=2, sort_keys=True))
    elif status == "unchanged":
        click.echo(f"{account_id} ({name}) is already open at {bank_url}; settings in {out} "
                   "(unchanged)")
    else:
        click.echo(f"opened {account_id} ({name}) at {bank_url}; settings in {out}")
