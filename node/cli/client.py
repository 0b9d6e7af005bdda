"""The CLI's thin admin-API client: data directory → URL and token → JSON, errors as sentences."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from node.config import Config, ConfigError, default_home, load_config, load_token

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The node's data directory [default: $METERLINE_HOME or ~/.meterline].",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")


def resolve_dir(data_dir: Path | None) -> Path:
    return data_dir if data_dir is not None else default_home()


def load(data_dir: Path | None) -> Config:
    try:
        return load_config(resolve_dir(data_dir))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


class Admin:
    """Calls the running node's admin API."""

    def __init__(self, data_dir: Path | None, *, timeout_s: float = 120.0) -> None:
        self.config = load(data_dir)
        try:
            self.token = load_token(self.config)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
        self.timeout_s = timeout_s

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - the URL is our own loopback admin API
            self.config.admin_url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:  # noqa: S310
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                err = json.loads(exc.read())["error"]
                message = err["message"]
            except (ValueError, KeyError, TypeError):
                message = f"the node answered HTTP {exc.code}"
            raise click.ClickException(message) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise click.ClickException(
                f"the node at {self.config.admin_url} is not running ({_reason(exc)}); "
                f"start it with `meterline node start --data-dir {self.config.data_dir}`"
            ) from None


def _reason(exc: Exception) -> str:
    return str(getattr(exc, "reason", exc))


def emit(data: Any, as_json: bool, human: str | None = None) -> None:
    if as_json or human is None:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        click.echo(human)
