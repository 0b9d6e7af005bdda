"""`meterline pay`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from node.cli.client import Admin, channel_id_argument, data_dir_option, emit, json_option
from node.cli.exits import NOT_RUNNING, REFUSED, TIMED_OUT, USAGE, CliError
from node.cli.render import amount, balance

CHUNK = 1_000
"""Updates per admin call of `pay --repeat`; every update is still signed and receipted."""


@click.command()
@channel_id_argument
@click.option("--units", "units", multiple=True, metavar="UNIT=QUANTITY",
              help="Quantity of a tariff unit, e.g. km=12.5; repeat for several units.")
@click.option("--amount", "amount_text", default=None, help='A plain amount, e.g. "3.20 EUR".')
@click.option("--ref", "reference", default="", help="Usage reference, e.g. SHIPMENT-4711.")
@click.option("--repeat", default=1, show_default=True, type=click.IntRange(1, 1_000_000),
              help="Send this many updates, each one signed and receipted.")
@click.option("--event-id", default=None, metavar="ID",
              help="Meter the units as one idempotent usage event with this id: sent again "
                   "(with the same --time) it charges nothing.")
@click.option("--time", "event_time", default=None, metavar="RFC3339",
              help="When the event happened, e.g. 2026-12-02T13:00:00Z (with --event-id; "
                   "default now, printed).")
@data_dir_option
@json_option
def pay(channel_id: str, units: tuple[str, ...], amount_text: str | None, reference: str,
        repeat: int, event_id: str | None, event_time: str | None, data_dir: Path | None,
        as_json: bool) -> None:
    """Pay the peer for units consumed (priced by the tariff) or a plain amount.

    Returns once the peer's signed receipt covers the update.

    \b
    Example:
      meterline pay 3f9a --units km=12.5 --ref SHIPMENT-4711
      meterline pay 3f9a --amount "3.20 EUR"
      meterline pay 3f9a --units km=12.5 --event-id DN-2026-000417 --time 2026-12-02T13:00:00Z
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
    if event_id is not None:
        _pay_event(Admin(data_dir), channel_id, parsed, reference, event_id, event_time,
                   amount_text=amount_text, repeat=repeat, as_json=as_json)
        return
    if event_time is not None:
        raise CliError("--time goes with --event-id", code="USAGE", exit_code=USAGE)
    admin = Admin(data_dir)
    # where the receipts stood before: a node killed under a chunk still gets an exact report
    data: dict[str, Any] = admin.call("GET", f"/api/channels/{channel_id}")
    done = 0
    while done < repeat:  # in chunks: each answer is quick, so a long run never looks dead
        n = min(CHUNK, repeat - done)
        body: dict[str, Any] = {"units": parsed, "reference": reference, "repeat": n}
        if amount_text:
            body["amount"] = amount_text
        try:
            data = admin.call("POST", f"/api/channels/{channel_id}/pay", body)
        except CliError as exc:
            if exc.exit_code in (NOT_RUNNING, TIMED_OUT):
                raise _cut_off(exc, channel_id, done, repeat, n, data) from None
            raise
        done += n
    emit(data, as_json,
         f"paid: sent {amount(data['sent'], precise=True)} in total, update "
         f"{data['nonce_sent']} acknowledged by the peer; balance {balance(data['balance'])}")


def _cut_off(exc: CliError, channel_id: str, done: int, repeat: int, in_flight: int,
             last: dict[str, Any]) -> CliError:
    """What is known when the node stops answering: the receipts of the answered chunks (up to
    update `acked`), and `in_flight` updates asked for that may or may not have been signed."""
    acked = int(last["acked_nonce_sent"])
    return CliError(
        f"{done:,} of {repeat:,} updates were acknowledged by the peer (receipts up to update "
        f"{acked:,}); then: {exc.message}. The next {in_flight:,} were in flight: any of them "
        f"the node signed is stored and resent once it runs again, and counts only when "
        f"receipted — look with `meterline channel show {channel_id}`",
        code=exc.code, exit_code=exc.exit_code,
        details={"acknowledged": done, "acked_nonce": acked, "in_flight": in_flight,
                 "repeat": repeat})
def _pay_event(admin: Admin, channel_id: str, units: dict[str, str], reference: str,
               event_id: str, event_time: str | None, *, amount_text: str | None, repeat: int,
               as_json: bool) -> None:
    """One usage event through POST /api/channels/{id}/events (specs/0003 §5.4)."""
    if amount_text or repeat != 1 or not units:
        raise CliError("--event-id meters --units once: not with --amount or --repeat",
                       code="USAGE", exit_code=USAGE)
    when = event_time or datetime.now(UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")
    event = {"id": event_id, "units": units, "time": when, **({"ref": reference} if reference
                                                               else {})}
    data = admin.call("POST", f"/api/channels/{channel_id}/events", {"events": [event]})
    result = data["events"][0]
    if result["status"] == "refused":
        raise CliError(f"event {event_id!r} refused: {result['message']}", code=result["code"],
                       exit_code=REFUSED)
    if result["status"] == "duplicate":
        text = (f"event {event_id} was metered before (update {result['nonce']}, "
                f"{amount(result['amount'], precise=True)}): nothing charged now")
    else:
        text = (f"metered: event {event_id} at {when}, {amount(result['amount'], precise=True)}"
                f" in update {result['nonce']}, acknowledged by the peer")
    emit({**result, "time": when}, as_json, text)
