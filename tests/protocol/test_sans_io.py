"""protocol/ is sans-I/O (STYLE "The shape"): no event loop, sockets, database, clock,
randomness or logging. Time and randomness are arguments."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROTOCOL = Path(__file__).resolve().parents[2] / "protocol"
FORBIDDEN_MODULES = {
    "asyncio",
    "aiohttp",
    "sqlalchemy",
    "socket",
    "structlog",
    "logging",
    "threading",
    "subprocess",
    "time",
    "datetime",
    "os",
    "random",
    "secrets",
}
FORBIDDEN_CALLS = {
    ("time", "time"),
    ("time", "monotonic"),
    ("time", "perf_counter"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
    ("os", "urandom"),
    ("os", "getenv"),
    ("random", "random"),
}
MODULES = sorted(PROTOCOL.glob("*.py"))


def offences(source: str) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    found.append(f"line {node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            root = (node.module or "").split(".")[0]
            if node.level == 0 and root in FORBIDDEN_MODULES:
                found.append(f"line {node.lineno}: from {node.module} import …")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute):
                base = func.value
                name = base.id if isinstance(base, ast.Name) else getattr(base, "attr", "")
                if (name, func.attr) in FORBIDDEN_CALLS:
                    found.append(f"line {node.lineno}: {name}.{func.attr}()")
            elif isinstance(func, ast.Name) and func.id in {"open", "print", "input", "urandom"}:
                found.append(f"line {node.lineno}: {func.id}()")
    return found


def test_the_package_is_all_there() -> None:
    names = {p.stem for p in MODULES}
    assert {"crypto", "encoding", "records", "messages", "money", "tariff", "references"} <= names
    assert {"channel", "arbiter", "simulation"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_is_sans_io(path: Path) -> None:
    assert offences(path.read_text()) == []


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio",
        "import os.path",
        "from datetime import datetime",
        "from logging import getLogger",
        "import sqlalchemy.orm as orm",
        "x = time.time()",
        "x = datetime.now()",
        "x = datetime.datetime.now()",
        "x = os.urandom(16)",
        "print('hi')",
    ],
)
def test_the_checker_catches(source: str) -> None:
    assert offences(source) != []


def test_the_checker_allows_what_protocol_uses() -> None:
    assert (
        offences("import hashlib\nfrom protocol.money import parse_decimal\nx = now_ms + 1") == []
    )
