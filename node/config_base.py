"""What every part of the config reads with: the typed error, strict table checks, private files.

A config that does not parse or names something impossible is a :class:`ConfigError` that says
which setting and why; secrets (the key, the admin token, a TLS key) are files only the operator
can read (mode 0600), created that way and refused otherwise.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

KEY_FILE = "node.key"
TOKEN_FILE = "admin.token"
CONFIG_FILE = "config.toml"
DB_FILE = "meterline.sqlite"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class ConfigError(Exception):
    """The data directory or config.toml is unusable; the message says how to fix it."""


def parse_hostport(text: str, setting: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{setting}: {text!r} is not HOST:PORT")
    return host, int(port)



def check_keys(path: Path, section: str, raw: dict[str, Any], known: Any) -> None:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: [{section}] must be a table")
    unknown = set(raw) - set(known)
    if unknown:
        raise ConfigError(f"{path}: unknown [{section}] settings {sorted(unknown)}")


def typed(path: Path, section: str, raw: dict[str, Any], cls: Any) -> Any:
    """Build `cls` from `raw`, every value of its field's type (ints positive)."""
    check_keys(path, section, raw, cls.__dataclass_fields__)
    for key, value in raw.items():
        want = type(getattr(cls(), key))
        if want is int:
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{path}: [{section}] {key} must be a positive integer")
        elif not isinstance(value, want):
            raise ConfigError(f"{path}: [{section}] {key} must be a {want.__name__}")
    return cls(**raw)


def write_private(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 (never readable by others, not even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def read_private(path: Path, what: str) -> str:
    """A secret file's text; refused when missing or when group or others can read it."""
    if not path.exists():
        raise ConfigError(f"no {what} {path}: run `meterline init` first")
    check_private(path)
    return path.read_text().strip()


def check_private(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"{path} is readable by others (mode {mode:o}): run `chmod 600 {path}`"
        )
