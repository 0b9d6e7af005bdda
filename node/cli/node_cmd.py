"""`meterline init` and `meterline node start|status`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import structlog

from node import daemon
from node.cli.client import Admin, data_dir_option, emit, json_option, load, resolve_dir
from node.cli.exits import CliError, not_running, timed_out
from node.cli.group import Group
from node.cluster import meterline_argv
from node.config import Config, ConfigError, init_data_dir
from node.lockfile import AlreadyRunning, DaemonLock
from node.logs import log_level


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
              default=None, help="A JSON file with the [bank] settings (rail, url, account…); "
              "relative *_file paths in it are taken from the current directory and stored "
              "absolute.")
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
    bank = None if bank_config is None else bank_settings(bank_config)
    tls = {name: path for name, path in (("cert", tls_cert), ("key", tls_key), ("ca", tls_ca))
           if path is not None}
    try:
        signer = init_data_dir(directory, name=name or directory.name, role=role, listen=listen,
                               admin=admin, db=db, bank=bank, allow=list(allow), tls=tls)
    except ConfigError as exc:
        raise CliError(str(exc), code="BAD_CONFIG") from None
    out = {"node_id": signer.node_id.hex(), "data_dir": str(directory), "role": role}
    emit(out, as_json, f"created {role} {signer.node_id.hex()} in {directory}")


def bank_settings(path: Path) -> dict[str, Any]:
    """The [bank] settings in `path`: a JSON object of scalars, its file paths made absolute
    (a node started from another directory — systemd, cron — finds them). Unknown settings
    are refused by `init_data_dir`, before anything is written."""
    try:
        raw = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise CliError(f"--bank-config {path} is not JSON ({exc}); nothing was written",
                       code="BAD_BANK_CONFIG") from None
    if not isinstance(raw, dict):
        raise CliError(f"--bank-config {path} must hold a JSON object of [bank] settings "
                       "(as `meterline bank open-account --out` writes); nothing was written",
                       code="BAD_BANK_CONFIG")
    for key, value in raw.items():
        if not isinstance(value, str | int | bool):
            raise CliError(f"--bank-config {path}: {key!r} must be a string, integer or "
                           "boolean; nothing was written", code="BAD_BANK_CONFIG")
        if key.endswith("_file") and isinstance(value, str) and value:
            raw[key] = str(Path(value).resolve())
    return raw


@click.group(cls=Group)
def node() -> None:
    """Run and inspect the node daemon.

    \b
    Example:
      meterline node start --data-dir ~/.meterline
    """


@node.command()
@data_dir_option
@click.option("--json-logs/--pretty-logs", default=None, help="Log format [default: by TTY].")
@click.option("--detach", is_flag=True,
              help="Run in the background: return once it listens, print its pid and log file "
                   "(DATA_DIR/node.log).")
@json_option
def start(data_dir: Path | None, json_logs: bool | None, detach: bool, as_json: bool) -> None:
    """Run the daemon until SIGINT or SIGTERM (or `meterline node stop`).

    One daemon per data directory: a second start says "already running (pid N)". With
    --detach it starts in the background and returns once its APIs listen (or fails with the
    last lines of its log).

    \b
    Example:
      meterline node start --data-dir ~/.meterline
      meterline node start --detach --data-dir ~/.meterline
    """
    config = load(data_dir)
    directory = config.data_dir.resolve()
    if detach:
        log = directory / "node.log"
        argv = [*meterline_argv(), "node", "start", "--data-dir", str(directory), "--json-logs"]
        try:
            started = daemon.detach(argv, data_dir=directory, log=log, what=f"node {config.name}")
        except AlreadyRunning as exc:
            raise CliError(str(exc), code="ALREADY_RUNNING") from None
        except daemon.DaemonError as exc:
            raise CliError(str(exc), code="START_FAILED") from None
        out = {"pid": started.pid, "log": str(log), "data_dir": str(directory),
               "name": config.name, "admin_url": config.admin_url,
               "public_url": config.public_url}
        emit(out, as_json, f"node {config.name} is running (pid {started.pid}), peer API "
             f"{config.public_url}; log {log}; stop it with `meterline node stop "
             f"--data-dir {directory}`")
        return
    serve_locked(directory, json_logs, lambda ready: _serve(config, ready))


def serve_locked(directory: Path, json_logs: bool | None,
                 run: Callable[[Callable[[], None]], Coroutine[Any, Any, None]]) -> None:
    """Hold the data directory's lock while `run(ready)` serves; `ready` marks it listening."""
    from node.logs import configure_logging

    lock = DaemonLock(directory)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        raise CliError(str(exc), code="ALREADY_RUNNING") from None
    configure_logging(json=json_logs, level=log_level())
    if lock.stale is not None:
        structlog.get_logger().warning("daemon.stale_lock", previous_pid=lock.stale.pid,
                                       lock=str(lock.path))
    try:
        asyncio.run(run(lock.ready))
    except ConfigError as exc:
        raise CliError(str(exc), code="BAD_CONFIG") from None
    except OSError as exc:
        raise CliError(f"cannot serve: {exc}", code="START_FAILED") from None
    finally:
        lock.release()


async def _serve(config: Config, ready: Callable[[], None]) -> None:
    from node.app import serve

    await serve(config, ready)


@node.command()
@data_dir_option
@json_option
def stop(data_dir: Path | None, as_json: bool) -> None:
    """Stop the daemon running on this data directory (SIGTERM to the pid in its lock) and
    wait until it has finished its in-flight commits.

    \b
    Example:
      meterline node stop --data-dir ~/.meterline
    """
    stop_daemon(resolve_dir(data_dir).resolve(), "node", as_json)


def stop_daemon(directory: Path, what: str, as_json: bool) -> None:
    try:
        pid = daemon.stop(directory, what=f"the {what} in {directory}")
    except daemon.NotRunning as exc:
        raise not_running(str(exc)) from None
    except daemon.StillRunning as exc:
        raise timed_out(str(exc)) from None
    except daemon.DaemonError as exc:
        raise CliError(str(exc)) from None
    emit({"pid": pid, "data_dir": str(directory), "stopped": True}, as_json,
         f"stopped the {what} in {directory} (pid {pid})")


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


@node.command()
@data_dir_option
@json_option
def info(data_dir: Path | None, as_json: bool) -> None:
    """Everything about the running node: id, name, role, version, uptime, listen URLs, peers,
    channels by phase, the totals sent and received per currency, whether its storage is
    writable (and why not), and the bank transfers refused or returned with their reason.

    \b
    Example:
      meterline node info
      meterline node info --json | jq .totals
    """
    data = Admin(data_dir).call("GET", "/api/info")
    lines = [
        f"node      {data['node_id']}",
        f"name      {data['name']} ({data['role']}), meterline {data['version']}",
        f"up        {duration(data['uptime_s'])} (pid {data['pid']})",
        f"peer API  {data['public_url']} (listening on {data['listen']})",
        f"admin     {data['admin_url']}",
        "peers     " + (", ".join(f"{p['name'] or p['node_id'][:16]} ({p['role']})"
                                  for p in data["peers"]) or "none"),
        "channels  " + (", ".join(f"{k} {v}" for k, v in sorted(data["channels"].items()))
                        or "none"),
    ]
    for total in data["totals"]:
        lines.append(f"{total['currency']:<9} sent {total['sent']}, received "
                     f"{total['received']}")
    lines.append("storage   " + storage_text(data.get("storage")))
    if (data.get("ingest") or {}).get("mqtt"):
        lines.append("ingest    " + mqtt_text(data["ingest"]["mqtt"]))
    for t in data.get("transfers_failed") or []:
        lines.append(f"transfer  {t['purpose']} {t['party']} {t['amount']['amount']} "
                     f"{t['amount']['currency']} {t['reference']} {t['status']}: "
                     f"{t['reason'] or 'no reason given'} (channel {t['channel'][:16]})")
    emit(data, as_json, "\n".join(lines))


def storage_text(storage: dict[str, Any] | None) -> str:
    """``ok (sqlite)`` or ``UNAVAILABLE since 13:40:02 UTC, 3 failures: <the driver's words>;
    not acknowledging``."""
    if not storage:
        return "unknown (an older node)"
    if storage["state"] == "ok":
        return f"ok ({storage['backend']})"
    since = datetime.fromtimestamp(storage["since_ms"] / 1000, UTC).strftime("%H:%M:%S UTC")
    return (f"UNAVAILABLE ({storage['backend']}) since {since}, {storage['failures']} "
            f"failures: {storage['error']}; payments are not acknowledged until it is back")


def mqtt_text(mqtt: dict[str, Any]) -> str:
    """``mqtt subscribed to meters/# at mqtts://broker:8883 since 13:40:02 UTC, 120 messages
    acknowledged`` or ``mqtt REFUSED (not_authorized) … since …: <what to fix>; <its words>``."""
    since = datetime.fromtimestamp(mqtt["since_ms"] / 1000, UTC).strftime("%H:%M:%S UTC")
    where = f"{mqtt['topic']} at {mqtt['broker']}"
    if mqtt["state"] == "subscribed":
        return (f"mqtt subscribed to {where} since {since}, {mqtt['acked']} messages "
                "acknowledged")
    if mqtt["state"] == "refused":
        return (f"mqtt REFUSED ({mqtt['code']}) by {where} since {since}: {mqtt['hint']}; "
                f"the broker said: {mqtt['error']}")
    return (f"mqtt {mqtt['state']} to {where} since {since}"
            + (f": {mqtt['error']}" if mqtt["error"] else ""))


def duration(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86_400)
    hours, s = divmod(s, 3_600)
    minutes, s = divmod(s, 60)
    parts = [f"{days}d"] * bool(days) + [f"{hours}h"] * bool(hours or days) + [
        f"{minutes}m"] * bool(minutes or hours or days)
    return " ".join([*parts, f"{s}s"])
