"""Start a daemon in the background and return once it listens; stop it by its lock.

``meterline node start --detach`` and ``meterline bank start --detach`` run the same command
without ``--detach`` as a child in its own session (so closing the terminal does not stop it),
its output appended to a log file, and wait until the child's lock file (node.lockfile) says
``ready`` with the child's pid — its sockets are bound — or fail with the log's last lines if it
exits first or is not ready in time (then it is stopped: a half-started daemon is not left behind).

``stop`` sends SIGTERM to the pid in a *held* lock (never to a pid from a stale file) and waits for
the lock to be released: the daemon has then finished its in-flight commits and closed its
database.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from node.lockfile import AlreadyRunning, holder

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


class DaemonError(Exception):
    """The daemon could not be started or stopped; the message says why (with its log tail)."""


class NotRunning(DaemonError):
    """No live process holds the data directory's lock."""


class StillRunning(DaemonError):
    """SIGTERM was sent but the daemon had not stopped in time."""


@dataclass(frozen=True, slots=True)
class Started:
    pid: int
    log: Path


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:]) or "(the log is empty)"


def detach(argv: list[str], *, data_dir: Path, log: Path, what: str,
           timeout_s: float = READY_TIMEOUT_S) -> Started:
    """Run `argv` (the foreground form of the daemon) in the background; see the module doc."""
    running = holder(data_dir)
    if running is not None:
        raise AlreadyRunning(data_dir / "daemon.lock", running.pid)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        child = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + timeout_s
    while True:
        code = child.poll()
        if code is not None:
            raise DaemonError(f"{what} exited with status {code} before it listened; the last "
                              f"lines of {log}:\n{tail(log)}")
        now = holder(data_dir)
        if now is not None and now.pid == child.pid and now.state == "ready":
            child.returncode = 0  # it lives on without us: no "still running" warning at exit
            return Started(child.pid, log)
        if time.monotonic() > deadline:
            child.terminate()
            try:
                child.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            raise DaemonError(f"{what} did not listen within {timeout_s:.0f} s and was stopped; "
                              f"the last lines of {log}:\n{tail(log)}")
        time.sleep(0.05)


def stop(data_dir: Path, *, what: str, timeout_s: float = STOP_TIMEOUT_S) -> int:
    """SIGTERM the daemon holding `data_dir`'s lock and wait until it let go; its pid."""
    running = holder(data_dir)
    if running is None:
        raise NotRunning(f"{what} is not running (nothing holds {data_dir / 'daemon.lock'})")
    if running.pid is None:
        raise DaemonError(f"{data_dir / 'daemon.lock'} is held but names no pid")
    with contextlib.suppress(ProcessLookupError):  # it ended between our look and the signal
        os.kill(running.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while holder(data_dir) is not None:
        if time.monotonic() > deadline:
            raise StillRunning(f"{what} (pid {running.pid}) has not stopped {timeout_s:.0f} s "
                               "after SIGTERM; it is still finishing, or stuck "
                               f"(`kill -KILL {running.pid}` loses nothing acknowledged)")
        time.sleep(0.05)
    return running.pid
