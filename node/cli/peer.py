"""`meterline peer add|list`."""

from __future__ import annotations

from pathlib import Path

import click

from node.cli.client import Admin, data_dir_option, emit, json_option
from node.cli.group import Group
from node.cli.render import table


@click.group(cls=Group)
def peer() -> None:
    """Nodes and arbiters this node knows.

    \b
    Example:
      meterline peer add https://carrier.example:7811 --id <NODE-ID>
    """


@peer.command("add")
@click.argument("url")
@click.option("--id", "node_id", default=None, metavar="HEX",
              help="The node id you expect (64 hex digits, from its operator): refuse any other.")
@data_dir_option
@json_option
def add(url: str, node_id: str | None, data_dir: Path | None, as_json: bool) -> None:
    """Make the node at URL prove its identity, then remember it.

    The node sends a fresh random challenge; URL must answer with its identity (node id, role,
    address, bank account) signed by that node id's key. With --id, any other node id is
    refused. A known peer's record changes only for a newer record signed by the same key, and
    the answer says what changed.

    \b
    Example:
      meterline peer add http://127.0.0.1:7811 --data-dir ./manufacturer
      meterline peer add https://escrow.example:7701 --id <NODE-ID>
    """
    body = {"url": url} if node_id is None else {"url": url, "id": node_id}
    data = Admin(data_dir).call("POST", "/api/peers", body)
    what = f"{data['role']} {data['name']} {data['node_id']}"
    if data["status"] == "added":
        human = f"added {what}"
    elif data["changed"]:
        human = f"changed {', '.join(data['changed'])} of {what} (now {data['url']})"
    else:
        human = f"unchanged {what}"
    emit(data, as_json, human)


@peer.command("list")
@data_dir_option
@json_option
def list_(data_dir: Path | None, as_json: bool) -> None:
    """List known peers and arbiters.

    \b
    Example:
      meterline peer list --json
    """
    data = Admin(data_dir).call("GET", "/api/peers")
    rows = [(p["node_id"], p["name"], p["role"], p["url"], "yes" if p["allowed"] else "")
            for p in data["peers"]]
    human = table(["NODE ID", "NAME", "ROLE", "URL", "AUTO-ACCEPT"], rows) if rows else (
        "no peers yet: add one with `meterline peer add URL`")
    emit(data, as_json, human)
