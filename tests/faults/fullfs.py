"""A small filesystem the test makes and fills: a size-limited tmpfs mounted as root.

The test's SQLite database lives on it; :meth:`SmallFs.fill` takes every free byte (a filler
file written until ENOSPC), :meth:`SmallFs.free` deletes the filler. Where the machine does not
allow mounting (not root, no tmpfs, a container without CAP_SYS_ADMIN), :func:`small_fs` skips
the test and says why.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


class SmallFs:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.filler = root / "filler"

    def fill(self) -> None:
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (1 << 20, 65536, 4096, 512, 1):  # down to the last byte
                with contextlib.suppress(OSError):
                    while os.write(fd, b"\0" * size) == size:
                        pass
        finally:
            os.close(fd)
        assert shutil.disk_usage(self.root).free < 64 * 1024, shutil.disk_usage(self.root)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


@contextlib.contextmanager
def small_fs(where: Path, size_mb: int = 16) -> Iterator[SmallFs]:
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root: full-disk test skipped")
    where.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs",
                          str(where)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        pytest.skip(f"this machine does not allow mounting a tmpfs ({out.stderr.strip()}): "
                    "full-disk test skipped")
    try:
        yield SmallFs(where)
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
