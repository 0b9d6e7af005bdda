"""A normal run's logs hold no secret: `meterline demo`, every line of every daemon's log,
grepped for the admin tokens, the key bytes and the bank credentials (tests/faults/crash_logs.py;
the crash run's own logs are grepped at the end of tests/faults/test_crash.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.faults.crash_logs import scan, secrets_of
from tests.faults.figures import record


def test_a_demo_run_logs_no_secret(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "node.cli", "demo", "--json", "--dir",
                           str(root)], capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = scan(root)
    record("demo_logs", {"files": len(logs.files), "lines": logs.lines,
                         "secrets": logs.secrets, "leaks": len(logs.leaks)})
    print(f"\ndemo logs: {logs.lines} lines in {len(logs.files)} files, {logs.secrets} secrets")
    assert len(logs.files) >= 4, logs.files  # the bank, the arbiter and both companies
    assert logs.lines > 50
    assert logs.secrets > 12
    assert not logs.leaks, "\n".join(logs.leaks[:20])
    # and what the demo printed to its operator holds none either
    for what, secret in secrets_of(root).items():
        assert secret not in proc.stdout + proc.stderr, what


def test_the_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    """The grep can fail: a planted admin token, key hex and bearer token are each found."""
    node = tmp_path / "node"
    node.mkdir()
    token = "kX3v9Q_wz0-ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef"
    (node / "admin.token").write_text(token + "\n")
    key = bytes(range(32))
    (node / "node.key").write_text(key.hex())
    (tmp_path / "node.log").write_text(
        '{"event": "fine"}\n'
        f'{{"event": "oops", "token": "{token}"}}\n'
        f'{{"event": "oops", "seed": "{key.hex()}"}}\n'
        '{"event": "oops", "header": "Bearer Zm9vYmFyYmF6cXV4cXV1eA"}\n'
        '{"event": "oops", "kid": "9vTJ3VCiwMT2AmyGntNKZ-hxvltCp49aH4NjX3QR_Oo"}\n')
    leaks = scan(tmp_path).leaks
    assert any(":2: node admin token" in leak for leak in leaks), leaks
    assert any(":3: node key (hex)" in leak for leak in leaks), leaks
    assert any(":4: bearer credential" in leak for leak in leaks), leaks
    assert not any(":5:" in leak for leak in leaks), leaks  # a public key's id is no secret
    assert not any(":1:" in leak for leak in leaks), leaks


def logged_traceback(*, json: bool) -> subprocess.CompletedProcess[str]:
    """A process that logs an exception raised in a frame holding a credential, its logging
    configured as a daemon's (`json`) or as on a terminal."""
    program = (
        "import structlog\n"
        "from node.logs import configure_logging\n"
        f"configure_logging(json={json})\n"
        "def handler(credential):\n"
        "    raise ConnectionResetError('Connection lost')\n"
        "try:\n"
        "    handler('kX3v9Q_wz0-ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef')\n"
        "except ConnectionResetError as exc:\n"
        "    structlog.get_logger().exception('unhandled', error=repr(exc))\n")
    return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=60, check=False)


def test_a_logged_traceback_carries_no_local_variable(tmp_path: Path) -> None:
    """Found by the crash run: the sandbox bank's `unhandled` line (a client gone while its
    answer was held back) rendered every frame's locals, a bank client's key material among
    them. A daemon's JSON log now carries the frames without their locals."""
    proc = logged_traceback(json=True)
    assert proc.returncode == 0, proc.stderr
    line = json.loads(proc.stderr.strip().splitlines()[-1])
    frames = line["exception"][0]["frames"]
    assert [f["name"] for f in frames][-1] == "handler"  # the traceback is still there
    assert all("locals" not in f for f in frames), frames
    assert "kX3v9Q_wz0" not in proc.stderr
    (tmp_path / "daemon.log").write_text(proc.stderr)
    assert not scan(tmp_path).leaks


def test_a_pretty_traceback_carries_no_local_variable(tmp_path: Path) -> None:
    """The console renderer (a TTY, `--pretty-logs`, `meterline bank start` without
    `--json-logs`) formats tracebacks with rich, which shows every frame's locals by default:
    the same credential the JSON renderer leaves out was printed there."""
    proc = logged_traceback(json=False)
    assert proc.returncode == 0, proc.stderr
    assert "ConnectionResetError" in proc.stderr  # the traceback is still there
    assert "handler" in proc.stderr
    assert "kX3v9Q_wz0" not in proc.stderr
