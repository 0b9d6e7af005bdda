"""The daemon as an operator runs it: JSON logs off a TTY with ids bound, and a clean stop on
SIGTERM and SIGINT."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.cluster import free_port, wait_port


def start(tmp_path: Path, name: str) -> tuple[subprocess.Popen[bytes], Path, int, str]:
    home = tmp_path / name
    port, admin = free_port(), free_port()
    subprocess.run([sys.executable, "-m", "node.cli", "init", "--data-dir", str(home),
                    "--name", name, "--listen", f"127.0.0.1:{port}",
                    "--admin", f"127.0.0.1:{admin}"], check=True, capture_output=True)
    log = tmp_path / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "node.cli", "node", "start",
                                 "--data-dir", str(home)], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    wait_port(admin, 30)
    token = (home / "admin.token").read_text().strip()
    return proc, log, admin, token


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stops_cleanly_and_logs_json(tmp_path: Path, sig: signal.Signals) -> None:
    import urllib.request

    proc, log, admin, token = start(tmp_path, "n")
    request = urllib.request.Request(f"http://127.0.0.1:{admin}/api/channels/abc",
                                     headers={"Authorization": f"Bearer {token}"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    assert err.value.code == 404
    started = time.monotonic()
    proc.send_signal(sig)
    assert proc.wait(timeout=20) == 0
    assert time.monotonic() - started < 10
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    events = [e["event"] for e in lines]
    assert events[0] == "node.started"
    assert events[-1] == "node.stopped"
    assert all({"level", "timestamp"} <= e.keys() for e in lines)
    text = log.read_text()
    assert token not in text  # no secrets in the logs
    assert (tmp_path / "n" / "node.key").read_text().strip() not in text
