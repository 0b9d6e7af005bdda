"""The CLI's thin admin-API client: data directory → URL and token → JSON, errors as sentences."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from node.cli.exits import CliError, not_running, refused, timed_out
from node.config import Config, ConfigError, default_home, load_config, load_token

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The node's data directory [default: $METERLINE_HOME or ~/.meterline].",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
_CHANNEL_REF = re.compile(r"[0-9A-Fa-f]{1,64}")
"""The admin API's ChannelId path parameter (node.api.validate.CHANNEL_REF)."""


def _channel_ref(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """A channel id or prefix, checked before it becomes part of an admin API path: any other
    text (``3f9a/close?``) would name another route."""
    if not _CHANNEL_REF.fullmatch(value):
        raise click.BadParameter(f"{value[:80]!r} is not a channel id or prefix (1 to 64 hex "
                                 "digits)", param_hint="CHANNEL_ID")
    return value


channel_id_argument = click.argument("channel_id", callback=_channel_ref)


def resolve_dir(data_dir: Path | None) -> Path:
    return data_dir if data_dir is not None else default_home()


def load(data_dir: Path | None) -> Config:
    try:
        return load_config(resolve_dir(data_dir))
    except ConfigError as exc:
        raise CliError(str(exc), code="BAD_CONFIG") from None


class Admin:
    """Calls the running node's admin API."""

    def __init__(self, data_dir: Path | None, *, timeout_s: float = 120.0) -> None:
        self.config = load(data_dir)
        try:
            self.token = load_token(self.config)
        except ConfigError as exc:
            raise CliError(str(exc), code="BAD_CONFIG") from None
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
                message, code = str(err["message"]), str(err["code"])
            except (ValueError, KeyError, TypeError):
                message, code = f"the node answered HTTP {exc.code}", f"HTTP_{exc.code}"
            raise refused(message, code) from None
        except TimeoutError as exc:
            raise self._timed_out(method, path) from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise self._timed_out(method, path) from None
            raise self._not_running(exc) from None
        except ConnectionError as exc:
            raise self._not_running(exc) from None

    def _timed_out(self, method: str, path: str) -> CliError:
        what = "; the updates may still land" if method == "POST" else ""
        return timed_out(f"timed out after {self.timeout_s:.0f} s waiting for the node's "
                         f"answer to {method} {path}{what}: it is running and carries on — "
                         "look again with `meterline channel show` or `meterline node info`")

    def _not_running(self, exc: Exception) -> CliError:
        return not_running(
            f"the node at {self.config.admin_url} is not running ({_reason(exc)}); "
            f"start it with `meterline node start --detach --data-dir {self.config.data_dir}`")


def _reason(exc: Exception) -> str:
    return str(getattr(exc, "reason", exc))


def emit(data: Any, as_json: bool, human: str | None = None) -> None:
    if as_json or human is None:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        click.echo(human)
