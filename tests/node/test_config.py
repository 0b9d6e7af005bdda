"""The data directory: key and token files, and config.toml errors that say what to fix."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from node.config import (
    ConfigError,
    init_data_dir,
    load_config,
    load_signer,
    load_token,
)
from protocol.crypto import Signer


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def meterline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "node"
    init_data_dir(directory, name="carrier", listen="127.0.0.1:7811", admin="127.0.0.1:7812")
    return directory


# -- init ----------------------------------------------------------------------------------------


def test_init_writes_key_and_token_readable_by_the_owner_only(tmp_path: Path) -> None:
    old = os.umask(0)  # even with a permissive umask
    try:
        signer = init_data_dir(tmp_path / "node", name="carrier")
    finally:
        os.umask(old)
    directory = tmp_path / "node"
    assert mode(directory / "node.key") == 0o600
    assert mode(directory / "admin.token") == 0o600
    assert mode(directory) & 0o077 == 0
    config = load_config(directory)
    assert load_signer(config).node_id == signer.node_id
    token = load_token(config)
    assert len(token) >= 32
    assert token.replace("-", "").replace("_", "").isalnum()
    assert (config.name, config.role, config.listen, config.admin) == (
        "carrier",
        "node",
        ("127.0.0.1", 7801),
        ("127.0.0.1", 7802),
    )


def test_init_with_a_seed_is_that_key(tmp_path: Path) -> None:
    seed = Signer.from_label("carrier").seed()
    signer = init_data_dir(tmp_path / "node", name="carrier", seed=seed)
    assert signer.node_id == Signer(seed).node_id
    assert load_signer(load_config(tmp_path / "node")).node_id == signer.node_id


def test_init_refuses_to_overwrite_a_key(data_dir: Path) -> None:
    files = {
        name: (data_dir / name).read_bytes() for name in ("node.key", "admin.token", "config.toml")
    }
    with pytest.raises(ConfigError, match="refusing to overwrite a node key"):
        init_data_dir(data_dir, name="other", seed=bytes(32))
    assert {name: (data_dir / name).read_bytes() for name in files} == files


def test_meterline_init_twice_fails_and_keeps_the_key(tmp_path: Path) -> None:
    directory = tmp_path / "node"
    assert meterline("init", "--data-dir", str(directory), "--json").returncode == 0
    key = (directory / "node.key").read_bytes()
    second = meterline("init", "--data-dir", str(directory), "--json")
    assert second.returncode != 0
    assert "refusing to overwrite" in second.stderr
    assert (directory / "node.key").read_bytes() == key


# -- the key file's permissions -----------------------------------------------------------------


@pytest.mark.parametrize("bits", [0o644, 0o640, 0o604, 0o660, 0o666, 0o601])
def test_load_signer_refuses_a_key_others_can_read(data_dir: Path, bits: int) -> None:
    key = data_dir / "node.key"
    key.chmod(bits)
    with pytest.raises(ConfigError) as err:
        load_signer(load_config(data_dir))
    assert f"chmod 600 {key}" in str(err.value)


@pytest.mark.parametrize("bits", [0o600, 0o400])
def test_load_signer_accepts_an_owner_only_key(data_dir: Path, bits: int) -> None:
    (data_dir / "node.key").chmod(bits)
    assert isinstance(load_signer(load_config(data_dir)), Signer)


def test_load_signer_refuses_a_key_that_is_not_a_key(data_dir: Path) -> None:
    (data_dir / "node.key").write_text("not hex\n")
    with pytest.raises(ConfigError, match="32-byte hex key"):
        load_signer(load_config(data_dir))


def test_node_start_refuses_a_readable_key(tmp_path: Path) -> None:
    directory = tmp_path / "node"
    assert meterline("init", "--data-dir", str(directory)).returncode == 0
    (directory / "node.key").chmod(0o644)
    out = meterline("node", "start", "--data-dir", str(directory), "--json-logs")
    assert out.returncode != 0
    assert "chmod 600" in out.stderr


# -- config.toml ----------------------------------------------------------------------------------


def test_a_missing_config_says_to_run_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="meterline init"):
        load_config(tmp_path)


def test_a_config_that_does_not_parse_names_the_file_and_the_place(data_dir: Path) -> None:
    path = data_dir / "config.toml"
    path.write_text(path.read_text() + "\n[limits\nmax_batch = 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(data_dir)
    message = str(err.value)
    assert str(path) in message
    assert "line" in message


def _edit(data_dir: Path, old: str, new: str) -> None:
    path = data_dir / "config.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def _append(data_dir: Path, text: str) -> None:
    with (data_dir / "config.toml").open("a") as f:
        f.write(text)


@pytest.mark.parametrize(
    ("section", "setting"),
    [
        ("bank", "acount_id"),
        ("limits", "max_bodybytes"),
    ],
)
def test_an_unknown_setting_is_named(data_dir: Path, section: str, setting: str) -> None:
    if section == "bank":
        _edit(data_dir, "[bank]\n", f"[bank]\n{setting} = 1\n")
    else:
        _append(data_dir, f"\n[{section}]\n{setting} = 1\n")
    with pytest.raises(ConfigError, match=rf"unknown \[{section}\].*{setting}"):
        load_config(data_dir)


def test_an_unknown_node_setting_is_named(data_dir: Path) -> None:
    """A typo in [node] (``lisen``) would otherwise silently start on the default port."""
    _edit(data_dir, 'listen = "127.0.0.1:7811"', 'lisen = "127.0.0.1:7811"')
    with pytest.raises(ConfigError, match="lisen"):
        load_config(data_dir)


def test_an_unknown_section_is_named(data_dir: Path) -> None:
    """A misspelt section (``[limit]``) would otherwise silently keep every default."""
    _append(data_dir, "\n[limit]\nmax_batch = 8\n")
    with pytest.raises(ConfigError, match="limit"):
        load_config(data_dir)


@pytest.mark.parametrize(
    ("old", "new", "names"),
    [
        ('listen = "127.0.0.1:7811"', "listen = 7811", "listen"),
        ('admin = "127.0.0.1:7812"', 'admin = "127.0.0.1"', "admin"),
        ('listen = "127.0.0.1:7811"', 'listen = "127.0.0.1:99999"', "listen"),
        ('role = "node"', 'role = "bank"', "role"),
        ("allow = []", 'allow = ["not-a-node-id"]', "allow"),
    ],
)
def test_an_impossible_value_is_a_config_error_naming_the_setting(
    data_dir: Path, old: str, new: str, names: str
) -> None:
    _edit(data_dir, old, new)
    with pytest.raises(ConfigError, match=names):
        load_config(data_dir)


@pytest.mark.parametrize(
    "limits", ['max_body_bytes = "64k"', "max_batch = -1", "max_inflight = 1.5"]
)
def test_a_limit_of_the_wrong_kind_is_a_config_error(data_dir: Path, limits: str) -> None:
    _append(data_dir, f"\n[limits]\n{limits}\n")
    with pytest.raises(ConfigError, match=limits.split()[0]):
        load_config(data_dir)


@pytest.mark.parametrize(
    "url",
    ["ftp://carrier.example:7811", "carrier.example:7811", "http://carrier example:7811",
     "http://carrier.example:7811/" + "x" * 250],
)
def test_a_public_url_the_wire_refuses_is_a_config_error(data_dir: Path, url: str) -> None:
    """`public_url` is what this node signs into its identity (NodeInfo.url) and its channel
    callbacks: one the wire's URL rule refuses made every peer refuse the node's identity
    (INVALID_FIELD), while the node itself started without a word."""
    _edit(data_dir, 'public_url = "http://127.0.0.1:7811"', f'public_url = "{url}"')
    with pytest.raises(ConfigError, match="public_url"):
        load_config(data_dir)


@pytest.mark.parametrize(
    "db", ["nonsense", "sqlite:///plain.db", "postgresql://u:hunter2@127.0.0.1:1/x"]
)
def test_a_database_url_the_node_cannot_use_is_a_config_error_at_start(
    data_dir: Path, db: str
) -> None:
    """Was a traceback out of SQLAlchemy (a URL that does not parse, a driver that is not
    async or not installed); now exit 1 with a sentence naming [node] db, the password of the
    URL not in it."""
    text = (data_dir / "config.toml").read_text()
    line = next(line for line in text.splitlines() if line.startswith("db = "))
    _edit(data_dir, line, f'db = "{db}"')
    out = meterline("node", "start", "--data-dir", str(data_dir), "--json-logs")
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    assert "[node] db" in out.stderr, out.stderr
    assert "hunter2" not in out.stderr


def test_init_into_an_existing_directory_keeps_a_database_password_private(
    tmp_path: Path,
) -> None:
    """A data directory made beforehand (a package's /var/lib/meterline, mode 0755) leaves
    config.toml reachable: with `--db postgresql+asyncpg://user:PASSWORD@…` it must be readable
    by the owner only, like the key and the token."""
    directory = tmp_path / "node"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    init_data_dir(directory, name="carrier",
                  db="postgresql+asyncpg://meterline:hunter2@127.0.0.1:5432/meterline")
    assert "hunter2" in (directory / "config.toml").read_text()
    assert mode(directory / "config.toml") & 0o077 == 0
