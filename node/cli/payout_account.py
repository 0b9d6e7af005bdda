"""`meterline channel payout-account ID --account … --name …`."""

from __future__ import annotations

from pathlib import Path

import click

from node.cli.client import Admin, channel_id_argument, data_dir_option, emit, json_option


@click.command("payout-account")
@channel_id_argument
@click.option("--account", "identification", required=True,
              help="The corrected account (IBAN, sort code + number, or routing:account).")
@click.option("--name", required=True, help="The account holder's name.")
@click.option("--scheme", default=None,
              help="The account's scheme [default: the one in the channel's terms].")
@data_dir_option
@json_option
def payout_account(channel_id: str, identification: str, name: str, scheme: str | None,
                   data_dir: Path | None, as_json: bool) -> None:
    """Name a corrected account for our payouts on a channel, signed, to the arbiter.

    After the bank rejected or returned a payout to us (its reason shows in `channel show`),
    the arbiter pays it again to this account — under a new idempotency key, never both —
    and pays later payouts there too.

    \b
    Example:
      meterline channel payout-account 3f9a --account 40000100000009 --name "Carrier Ltd"
    """
    body = {"identification": identification, "name": name,
            **({"scheme": scheme} if scheme else {})}
    data = Admin(data_dir).call("POST", f"/api/channels/{channel_id}/payout-account", body)
    acct = data["account"]
    emit(data, as_json, f"payouts on {data['channel'][:16]} go to {acct['identification']} "
                        f"({acct['name']}) from now on; the arbiter has been told")
