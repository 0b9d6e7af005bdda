"""`meterline pay`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from node.cli.client import Admin, data_dir_option, emit, json_option
from node.cli.exits import NOT_RUNNING, TIMED_OUT, USAGE, CliError
from node.cli.render import amount, balance

CHUNK = 1_000
"""Updates per admin call of `pay --repeat`; every update is still signed and receipted."""


@click.command()
@click.argument("channel_id")
@click.option("--units", "units", multiple=True, metavar="UNIT=QUANTITY",
              help="Quantity of a tariff unit, e.g. km=12.5; repeat for several units.")
@click.option("--amount", "amount_text", default=None, help='A plain amount, e.g. "3.20 EUR".')
@click.option("--ref", "reference", default="", help="Usage reference, e.g. SHIPMENT-4711.")
@click.option("--repeat", default=1, show_default=True, type=click.IntRange(1, 1_000_000),
              help="Send this many updates, each one signed and receipted.")
@data_dir_option
@json_option
def pay(channel_id: str, units: tuple[str, ...], amount_text: str | None, reference: str,
        repeat: int, data_dir: Path | None, as_json: bool) -> None:
    """Pay the peer for units consumed (priced by the tariff) or a plain amount.

    Returns once the peer's signed receipt covers the update.

    \b
    Example:
      meterline pay 3f9a --units km=12.5 --ref SHIPMENT-4711
      meterline pay 3f9a --amount "3.20 EUR"
    """
    parsed: dict[str, str] = {}
    for item in units:
        unit, sep, quantity = item.partition("=")
        if not sep or not unit or not quantity:
            raise CliError(f"--units {item!r} is not UNIT=QUANTITY (e.g. km=12.5)",
                           code="USAGE", exit_code=USAGE)
        unit = unit.strip()
        if unit in parsed:
            raise CliError(
                f"--units {unit} is given twice ({unit}={parsed[unit]} and {item.strip()}): "
                f"give each unit once, with the total quantity", code="USAGE", exit_code=USAGE)
        parsed[unit] = quantity.strip()
    if not parsed and not amount_text:
        raise CliError("say what to pay: --units km=12.5 or --amount \"3.20 EUR\"",
                       code="USAGE", exit_code=USAGE)
    admin = Admin(data_dir)
    done = 0
    data: dict[str, Any] = {}
    while done < repeat:  # in chunks: each answer is quick, so a long run never looks dead
        n = min(CHUNK, repeat - done)
        body: dict[str, Any] = {"units": parsed, "reference": reference, "repeat": n}
        if amount_text:
            body["amount"] = amount_text
        try:
            data = admin.call("POST", f"/api/channels/{channel_id}/pay", body)
        except CliError as exc:
            if done and exc.exit_code in (NOT_RUNNING, TIMED_OUT):
                raise CliError(f"{done:,} of {repeat:,} updates were acknowledged by the peer; "
                               f"then: {exc.message}", code=exc.code,
                               exit_code=exc.exit_code) from None
            raise
        done += n
    emit(data, as_json,
         f"paid: sent {amount(data['sent'], precise=True)} in total, update "
         f"{data['nonce_sent']} acknowledged by the peer; balance {balance(data['balance'])}")
