"""Suite-wide collection order: the slowest tests first.

Under ``pytest -n auto`` a worker that is handed a few long daemon tests at the end keeps the whole
run waiting while the other worker idles; starting the known-long tests first (longest processing
time first, the classic list-scheduling rule) and letting idle workers steal queued tests
(``--dist worksteal`` in pyproject.toml) keeps both cores busy to the end. Files move as a whole,
ordered by their listed tests' total, so a module's fixtures are still set up once per worker;
inside a file the order is unchanged. The durations come from tests/durations.json, refreshed
with ``python -m tests.tools.durations`` (its docstring says how); files with no listed test keep
their order after the others.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DURATIONS = Path(__file__).with_name("durations.json")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    try:
        known: dict[str, float] = json.loads(DURATIONS.read_text())
    except (OSError, ValueError):
        return
    per_file: dict[str, float] = {}
    for nodeid in {item.nodeid for item in items}:  # schemathesis repeats a node id
        path = nodeid.split("::", 1)[0]
        per_file[path] = per_file.get(path, 0.0) + known.get(nodeid, 0.0)
    items.sort(key=lambda item: -per_file[item.nodeid.split("::", 1)[0]])  # stable sort
