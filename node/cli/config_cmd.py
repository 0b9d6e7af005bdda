"""`meterline config show`: the configuration the node runs with, secrets masked."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any

import click

from node.cli.client import data_dir_option, emit, json_option, load
from node.cli.group import Group
from node.config import Config, render_config

MASK = "********"
_SECRET = re.compile(r"token|secret|password|passphrase|private", re.IGNORECASE)


def masked(key: str, value: Any) -> Any:
    """`value` with any secret in it replaced: a setting named like a secret (its *file* is
    shown: the file is mode 0600), and the password of a URL."""
    if isinstance(value, dict):
        return {k: masked(k, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [masked(key, v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str):
        if _SECRET.search(key) and not key.endswith(("_file", "_path")) and value:
            return MASK
        if "://" in value:
            parts = urllib.parse.urlsplit(value)
            if parts.password:
                netloc = parts.netloc.replace(f":{parts.password}@", f":{MASK}@", 1)
                return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return value


def effective(config: Config) -> dict[str, Any]:
    """Every setting the node runs with (defaults included), as config.toml sections."""
    sections: dict[str, Any] = {"node": {}}
    for f in fields(config):
        value = getattr(config, f.name)
        if is_dataclass(value) and not isinstance(value, type):
            table = masked(f.name, asdict(value))
            for key, inner in list(table.items()):  # a nested table is a section of its own
                if isinstance(inner, dict):
                    del table[key]
                    rail = table.get("rail") if key == "settings" else None
                    sections[f"rails.{rail}" if rail else f"{f.name}.{key}"] = inner
            sections[f.name] = table
        elif isinstance(value, tuple) and value and is_dataclass(value[0]):
            sections[f.name] = [masked(f.name, asdict(v)) for v in value]
        elif f.name in ("listen", "admin"):
            sections["node"][f.name] = f"{value[0]}:{value[1]}"
        else:
            sections["node"][f.name] = masked(f.name, value)
    sections["files"] = {"key_file": str(config.key_path), "token_file": str(config.token_path)}
    return sections


@click.group(cls=Group)
def config() -> None:
    """The node's configuration (config.toml in its data directory).

    \b
    Example:
      meterline config show
    """


@config.command("show")
@data_dir_option
@json_option
def show(data_dir: Path | None, as_json: bool) -> None:
    """Every setting the node runs with, defaults included, checked as `node start` checks
    them; secrets masked (a URL's password; the key and tokens are named by their files only).
    Works whether or not the node runs.

    \b
    Example:
      meterline config show --data-dir ~/.meterline
      meterline config show --json | jq .bank
    """
    data = effective(load(data_dir))
    toml_ready = {name: ({k: v for k, v in values.items() if v is not None}
                         if isinstance(values, dict) else
                         [{k: v for k, v in item.items() if v is not None} for item in values])
                  for name, values in data.items() if values}
    emit(data, as_json, render_config(toml_ready).split("\n", 1)[1].lstrip("\n"))
