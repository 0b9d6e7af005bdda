"""Daemons an operator can script: start --detach returns once it listens, one daemon per data
directory, stop by the lock, a re-runnable open-account, an init that validates before it
writes, and exit codes (with --json errors) that say what happened. Every step is a `meterline`
subprocess against real daemons on loopback."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from node.cluster import free_port
from node.lockfile import holder
from tests.e2e.cli_ops import json_error, meterline, stop_all


def pid_of(text: str) -> int:
    match = re.search(r"pid (\d+)", text)
    assert match, text
    return int(match.group(1))


def init_node(tmp_path: Path, name: str, *extra: str) -> Path:
    home = tmp_path / name
    meterline("init", "--data-dir", str(home), "--name", name,
              "--listen", f"127.0.0.1:{free_port()}", "--admin", f"127.0.0.1:{free_port()}",
              *extra)
    return home


def test_node_start_detach_lock_and_stop(tmp_path: Path) -> None:
    home = init_node(tmp_path, "solo")
    try:
        started = meterline("node", "start", "--detach", "--data-dir", str(home)).stdout
        assert f"node solo is running (pid {pid_of(started)})" in started
        assert f"log {home.resolve() / 'node.log'}" in started
        pid = pid_of(started)
        # it listens already: no sleep, no retry
        status = json.loads(meterline("node", "status", "--json", "--data-dir", str(home)).stdout)
        assert status["name"] == "solo"
        # a second start, detached or not, says who runs
        again = json_error("node", "start", "--detach", "--data-dir", str(home), status=1)
        assert again["code"] == "ALREADY_RUNNING"
        assert again["message"].startswith(f"already running (pid {pid})")
        fg = meterline("node", "start", "--data-dir", str(home), status=1)
        assert f"Error: already running (pid {pid})" in fg.stderr
        # stop by the lock, then nothing answers
        stopped = meterline("node", "stop", "--data-dir", str(home)).stdout
        assert f"stopped the node in {home.resolve()} (pid {pid})" in stopped
        assert holder(home) is None
        assert json_error("node", "stop", "--data-dir", str(home), status=4)["code"] == (
            "NOT_RUNNING")
        gone = json_error("node", "status", "--data-dir", str(home), status=4)
        assert gone["code"] == "NOT_RUNNING"
        assert "is not running" in gone["message"]
    finally:
        stop_all(home)


def test_a_stale_lock_is_taken_over(tmp_path: Path) -> None:
    home = init_node(tmp_path, "crashy")
    try:
        pid = pid_of(meterline("node", "start", "--detach", "--data-dir", str(home)).stdout)
        os.kill(pid, signal.SIGKILL)  # a crash: the lock file stays, its flock goes
        deadline = time.monotonic() + 10
        while holder(home) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert json.loads((home / "daemon.lock").read_text())["pid"] == pid
        restarted = meterline("node", "start", "--detach", "--data-dir", str(home)).stdout
        assert pid_of(restarted) != pid
        log = (home / "node.log").read_text()
        assert '"event": "daemon.stale_lock"' in log
        assert f'"previous_pid": {pid}' in log
    finally:
        stop_all(home)


def test_start_detach_fails_with_the_log_tail(tmp_path: Path) -> None:
    port = free_port()
    home = init_node(tmp_path, "clash")
    config = home / "config.toml"
    with __import__("socket").socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        text = config.read_text()
        config.write_text(re.sub(r'listen = "127.0.0.1:\d+"', f'listen = "127.0.0.1:{port}"',
                                 text))
        error = json_error("node", "start", "--detach", "--data-dir", str(home), status=1)
    assert error["code"] == "START_FAILED"
    assert "exited with status" in error["message"]
    assert "the last lines of" in error["message"]
    assert "address already in use" in error["message"].lower()
    assert holder(home) is None


def test_log_level_reaches_the_detached_daemon(tmp_path: Path) -> None:
    quiet, chatty = init_node(tmp_path, "quiet"), init_node(tmp_path, "chatty")
    try:
        meterline("--log-level", "error", "node", "start", "--detach", "--data-dir", str(quiet))
        meterline("node", "start", "--detach", "--data-dir", str(chatty))
        assert '"event": "node.started"' not in (quiet / "node.log").read_text()
        assert '"event": "node.started"' in (chatty / "node.log").read_text()
    finally:
        stop_all(quiet, chatty)


def test_bank_detach_and_open_account_again(tmp_path: Path) -> None:
    bank_dir, port = tmp_path / "bank", free_port()
    url = f"http://127.0.0.1:{port}"
    account = ("bank", "open-account", "--bank", url, "--account-id", "carrier",
               "--name", "Carrier Ltd", "--identification", "40000100000003",
               "--keys-dir", "carrier-keys", "--out", "carrier-bank.json")
    # before the bank listens: refused, and nothing written, so the paste can simply run again
    early = json_error(*account, status=4, cwd=tmp_path)
    assert early["code"] == "NOT_RUNNING"
    assert f"the sandbox bank at {url} is not running" in early["message"]
    assert not (tmp_path / "carrier-keys").exists()
    assert not (tmp_path / "carrier-bank.json").exists()
    try:
        started = meterline("bank", "start", "--detach", "--data-dir", str(bank_dir),
                            "--listen", f"127.0.0.1:{port}").stdout
        assert f"the sandbox bank is running at {url} (pid {pid_of(started)})" in started
        assert "opened carrier (Carrier Ltd)" in meterline(*account, cwd=tmp_path).stdout
        first = (tmp_path / "carrier-bank.json").read_text()
        again = meterline(*account, cwd=tmp_path).stdout
        assert "carrier (Carrier Ltd) is already open" in again
        assert "(unchanged)" in again
        assert (tmp_path / "carrier-bank.json").read_text() == first
        settings = json.loads(first)
        # stored absolute: a node started from elsewhere finds its files
        assert Path(settings["key_file"]) == (tmp_path / "carrier-keys" / "tpp-key.pem")
        other = json_error("bank", "open-account", "--bank", url, "--account-id", "other",
                           "--name", "Other", "--identification", "40000100000009",
                           "--keys-dir", "carrier-keys", "--out", "carrier-bank.json",
                           status=1, cwd=tmp_path)
        assert other["code"] == "OUT_EXISTS"
        assert (tmp_path / "carrier-bank.json").read_text() == first
        stopped = meterline("bank", "stop", "--data-dir", str(bank_dir)).stdout
        assert f"stopped the sandbox bank in {bank_dir.resolve()}" in stopped
    finally:
        stop_all(bank_dir)


@pytest.mark.parametrize(("content", "code", "sentence"), [
    ("{not json", "BAD_BANK_CONFIG", "is not JSON"),
    ('["a list"]', "BAD_BANK_CONFIG", "must hold a JSON object"),
    ('{"rail": "openbanking", "bogus": 1}', "BAD_CONFIG",
     "unknown [rails.openbanking] settings ['bogus']"),
    ('{"poll_interval_ms": "fast"}', "BAD_CONFIG", "poll_interval_ms must be a positive integer"),
    ('{"url": {"nested": 1}}', "BAD_BANK_CONFIG", "'url' must be a string"),
])
def test_init_validates_the_bank_config_before_writing(tmp_path: Path, content: str, code: str,
                                                       sentence: str) -> None:
    bank = tmp_path / "bank.json"
    bank.write_text(content)
    home = tmp_path / "node"
    error = json_error("init", "--data-dir", str(home), "--bank-config", str(bank), status=1)
    assert error["code"] == code
    assert sentence in error["message"]
    assert not home.exists()  # no half-initialised directory


def test_relative_bank_paths_are_stored_absolute_and_work_from_elsewhere(
        tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    key = tmp_path / "keys" / "tpp-key.pem"
    (tmp_path / "bank.json").write_text(json.dumps({
        "rail": "openbanking", "url": "http://127.0.0.1:9", "account_id": "acc",
        "identification": "40000100000007", "name": "Rel Ltd", "client_id": "tpp-1",
        "org_id": "org-1", "software_statement_id": "ssa-1", "key_file": "keys/tpp-key.pem"}))
    home = tmp_path / "rel"
    meterline("init", "--data-dir", "rel", "--listen", f"127.0.0.1:{free_port()}",
              "--admin", f"127.0.0.1:{free_port()}", "--bank-config", "bank.json",
              cwd=tmp_path)
    config = (home / "config.toml").read_text()
    assert f'key_file = "{key}"' in config
    shown = meterline("config", "show", "--data-dir", str(home), cwd=Path("/")).stdout
    assert f'key_file = "{key}"' in shown


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    home = init_node(tmp_path, "pg", "--db", "postgresql+asyncpg://ops:s3cret@127.0.0.1/x")
    shown = meterline("config", "show", "--data-dir", str(home)).stdout
    assert "s3cret" not in shown
    assert 'db_url = "postgresql+asyncpg://ops:********@127.0.0.1/x"' in shown
    assert f'token_file = "{home / "admin.token"}"' in shown
    token = (home / "admin.token").read_text().strip()
    data = json.loads(meterline("config", "show", "--json", "--data-dir", str(home)).stdout)
    assert token not in json.dumps(data)
    assert data["node"]["name"] == "pg"
    assert data["policy"]["min_dispute_window_ms"] == 3_600_000


def test_usage_errors_suggest_and_exit_2(tmp_path: Path) -> None:
    assert "Error: No such command 'chanel'. Did you mean channel?" in meterline(
        "chanel", status=2).stderr
    assert "Did you mean list?" in meterline("channel", "lst", status=2).stderr
    error = json_error("chanel", status=2)
    assert error == {"code": "USAGE", "message": "No such command 'chanel'. Did you mean "
                     "channel?", "exit": 2}
    assert "Did you mean '--json'?" in meterline("node", "status", "--jsn", status=2).stderr


def test_help_documents_exit_codes_and_completion() -> None:
    text = meterline("--help").stdout
    assert "4  not running (nothing answers at the admin address)" in text
    assert "5  timed out waiting: it may still happen (updates may still land)" in text
    assert '_METERLINE_COMPLETE=bash_source meterline' in text
    script = meterline(env={"_METERLINE_COMPLETE": "bash_source"}).stdout
    assert "_meterline_completion" in script
    words = meterline(env={"_METERLINE_COMPLETE": "bash_complete", "COMP_WORDS": "meterline cha",
                           "COMP_CWORD": "1"}).stdout
    assert "plain,channel" in words
