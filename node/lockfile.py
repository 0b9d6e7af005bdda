"""One daemon per data directory: an fcntl lock on ``daemon.lock`` that also says its pid.

The daemon (``meterline node start``, ``meterline bank start``) takes an exclusive, non-blocking
``flock`` on ``DATA_DIR/daemon.lock`` before it opens anything else, writes ``{"pid": …,
"state": "starting"}`` into it, and ``"ready"`` once its sockets listen. The kernel releases the
lock when the process ends however it ends (SIGKILL, a crash), so a lock file left behind is
*stale* by construction: the next start takes it over and says so. The file is never deleted —
deleting it would let a second daemon lock a fresh file while the first still holds the old one.

A reader (``node stop``, ``start --detach`` waiting for readiness, a second ``start``) trusts the
pid only while the lock is held: a pid from a stale file may belong to an unrelated process now.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path

LOCK_FILE = "daemon.lock"


class AlreadyRunning(Exception):
    """Another live process holds the data directory's lock."""

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        who = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(f"already running ({who}): {path.parent} is locked by {path}")


@dataclass(frozen=True, slots=True)
class Holder:
    """What a held lock file says: the daemon's pid and whether it listens yet."""

    pid: int | None
    state: str


def _read(fd: int) -> Holder:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    try:
        data = json.loads(raw)
        pid = data.get("pid")
        state = data.get("state")
        return Holder(pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
                      state if isinstance(state, str) else "unknown")
    except (ValueError, AttributeError):
        return Holder(None, "unknown")


class DaemonLock:
    """The lock a running daemon holds for its whole life (see the module docstring)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None
        self.stale: Holder | None = None
        """What a stale lock file said when we took it over (None: there was none)."""

    def acquire(self) -> DaemonLock:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise AlreadyRunning(self.path, holder.pid) from None
        previous = _read(fd)
        self.stale = previous if previous.pid is not None else None
        self._fd = fd
        self._write("starting")
        return self

    def _write(self, state: str) -> None:
        assert self._fd is not None, "acquire() first"
        data = json.dumps({"pid": os.getpid(), "state": state}).encode()
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        os.write(self._fd, data)
        os.fsync(self._fd)

    def ready(self) -> None:
        """The daemon listens: `start --detach` may return."""
        self._write("ready")

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self._write("stopped")
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def holder(data_dir: Path) -> Holder | None:
    """Who holds the data directory's lock, or None when no live process does (no lock file,
    or a stale one)."""
    path = data_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
