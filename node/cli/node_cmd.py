"""`meterline init` and `meterline node start|status`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click

from node.cli.client import Admin, data_dir_option, emit, json_option, load, resolve_dir
from node.config import ConfigError, init_data_dir


@click.command()
@data_dir_option
@click.option("--name", default=None, help="A name for this node (shown to peers).")
@click.option("--listen", default="127.0.0.1:7801", show_default=True,
              help="HOST:PORT of the peer-to-peer API.")
@click.option("--admin", default="127.0.0.1:7802", show_default=True,
              help="HOST:PORT of the admin API (loopback only).")
@click.option("--db", default=None, help="Database URL [default: SQLite in the data directory].")
@click.option("--role", type=click.Choice(["node", "arbiter"]), default="node", show_default=True)
@click.option("--bank-config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="A JSON file with the [bank] settings (rail, url, account…).")
@click.option("--allow", multiple=True,
              help="Node id whose proposals are accepted automatically if they ask us to "
                   "deposit nothing ([[peers.allowed]] in config.toml sets larger limits).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="PEM certificate (chain) of the peer API: serve it over HTTPS.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="PEM private key of --tls-cert (mode 0600).")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="PEM CA bundle (or a peer's pinned certificate) to verify https "
              "peers against [default: the system CAs].")
@json_option
def init(data_dir: Path | None, name: str | None, listen: str, admin: str, db: str | None,
         role: str, bank_config: Path | None, allow: tuple[str, ...], tls_cert: Path | None,
         tls_key: Path | None, tls_ca: Path | None, as_json: bool) -> None:
    """Create a node: config.toml, an Ed25519 key and an admin token (both mode 0600).

    Refuses to overwrite an existing key. With --tls-cert and --tls-key the peer API serves
    HTTPS and the public URL is https://HOST:PORT.

    \b
    Example:
      meterline init --data-dir ~/.meterline-carrier --name carrier --listen 127.0.0.1:7811
      meterline init --listen 0.0.0.0:7811 --tls-cert cert.pem --tls-key key.pem
    """
    directory = resolve_dir(data_dir)
    bank = json.loads(bank_config.read_text()) if bank_config else None
    tls = {name: path for name, path in (("cert", tls_cert), ("key", tls_key), ("ca", tls_ca))
           if path is not None}
    try:
        signer = init_data_dir(directory, name=name or directory.name, role=role, listen=listen,
                               admin=admin, db=db, bank=bank, allow=list(allow), tls=tls)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    out = {"node_id": signer.node_id.hex(), "data_dir": str(directory), "role": role}
    emit(out, as_json, f"created {role} {signer.node_id.hex()} in {directory}")


@click.group()
def node() -> None:
    """Run and inspect the node daemon.

    \b
    Example:
      meterline node start --data-dir ~/.meterline
    """


@node.command()
@data_dir_option
@click.option("--json-logs/--pretty-logs", default=None, help="Log format [default: by TTY].")
def start(data_dir: Path | None, json_logs: bool | None) -> None:
    """Run the daemon in the foreground until SIGINT or SIGTERM.

    \b
    Example:
      meterline node start --data-dir ~/.meterline
    """
    from node.app import serve
    from node.logs import configure_logging

    configure_logging(json=json_logs)
    config = load(data_dir)
    try:
        asyncio.run(serve(config))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@node.command()
@data_dir_option
@json_option
def status(data_dir: Path | None, as_json: bool) -> None:
    """Show the running node's identity, role, bank and channel counts.

    \b
    Example:
      meterline node status --json
    """
    data = Admin(data_dir).call("GET", "/api/status")
    counts = data.get("channels") or data.get("escrows") or {}
    human = (f"{data['name']} ({data['role']}) {data['node_id']}\n"
             f"peer API {data['public_url']}; bank {data['bank']['rail']} "
             f"{data['bank']['account'] or '(none)'}\n"
             + ("channels: " + ", ".join(f"{k} {v}" for k, v in counts.items())
                if counts else "no channels"))
    emit(data, as_json, human)
