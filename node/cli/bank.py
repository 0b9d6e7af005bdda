"""``meterline bank``: run the sandbox bank (UK Open Banking v3.1.11) for tests and the demo."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
import structlog


def _configure_logging(json_logs: bool) -> None:
    """structlog once, at the entry point: pretty on a TTY, JSON otherwise (or when asked)."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json_logs or not sys.stderr.isatty()
        else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


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
    from aiohttp import web

    from rails.sandbox import BankConfig, create_app

    host, port = _parse_listen(listen)
    _configure_logging(json_logs)
    log = structlog.get_logger("meterline.bank")
    log.info("bank_starting", listen=f"{host}:{port}", data_dir=str(data_dir),
             manual_approval=manual_approval)
    app = create_app(BankConfig(data_dir=data_dir, manual_approval=manual_approval))
    web.run_app(app, host=host, port=port, access_log=None, print=None, shutdown_timeout=2.0)
