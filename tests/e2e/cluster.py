"""The demo topology (node.cluster) as a context manager for the e2e suites."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from node.cluster import CARRIER, ESCROW, MANUFACTURER, Companies, start_companies, wait_for

__all__ = ["CARRIER", "ESCROW", "MANUFACTURER", "Companies", "companies", "wait_for"]


@contextmanager
def companies(root: Path, **kwargs: Any) -> Iterator[Companies]:
    c = start_companies(root, **kwargs)
    try:
        yield c
    finally:
        c.cluster.stop()
