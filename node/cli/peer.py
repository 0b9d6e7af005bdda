"""`meterline peer add|list`."""

from __future__ import annotations

from pathlib import Path

import click

from node.cli.client import Admin, data_dir_option, emit, json_option
from node.cli.render import table


@click.group()
def peer() -> None:
    """Nodes and arbiters this node knows.

    \b
    Example:
      meterline peer add http://127.0.0.1:7811
    """


@peer.command("add")
@click.argument("url")
@data_dir_option
@json_option
def add(url: str, data_dir: Path | None, as_json: bool) -> None:
    """Fetch a node's (or arbiter's) identity from URL and remember it.

    \b
    Example:
      meterline peer add http://127.0.0.1:7811 --data-dir ./manufacturer
    """
    data = Admin(data_dir).call("POST", "/api/peers", {"url": url})
    emit(data, as_json, f"added {data['role']} {data['name']} {data['node_id']}")


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
