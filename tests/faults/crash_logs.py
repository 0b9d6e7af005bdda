"""Every secret a run's daemons hold, and every line of every log of the run grepped for them.

The secrets are read from the run's own files, in the forms a log line could carry them: each
node's admin token, its key bytes (the seed, in hex, HEX, base64 and base64url), each company's
TPP signing key (any 48 characters of its PEM body) and OAuth client id next to its key. The
sandbox bank's access tokens live only in the processes' memory (the bank keeps their digests),
so they are looked for by shape: a bearer credential, a JWS/JWT (a client assertion or a signed
request), a 43-character URL-safe token (``secrets.token_urlsafe(32)``, the size of both the
bank's tokens and the admin token) — none may appear in any line.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

SHAPES = {
    "bearer credential": re.compile(r"[Bb]earer\s+[A-Za-z0-9._~+/-]{16,}"),
    "JWS or JWT": re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*\.?"),
    "access_token field": re.compile(r"access_token[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9._-]{8,}"),
    "client assertion": re.compile(r"client_assertion[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9._-]{8,}"),
    "43-character token": re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])"),
}
"""Shapes a credential takes. A 43-character run of hex digits only is not a token (no id in
the logs is that long, but the test does not rely on it: see `_token_shaped`), nor is a public
key's id (`PUBLIC_FIELDS`)."""


def secrets_of(root: Path) -> dict[str, str]:
    """Every secret under the run's directory `root`, by what it is."""
    found: dict[str, str] = {}
    for token in root.rglob("admin.token"):
        found[f"{token.parent.name} admin token"] = token.read_text().strip()
    for keyfile in root.rglob("node.key"):
        key = bytes.fromhex(keyfile.read_text().strip())
        name = keyfile.parent.name
        found[f"{name} key (hex)"] = key.hex()
        found[f"{name} key (HEX)"] = key.hex().upper()
        found[f"{name} key (base64)"] = base64.b64encode(key).decode().rstrip("=")
        found[f"{name} key (base64url)"] = base64.urlsafe_b64encode(key).decode().rstrip("=")
    for pem in root.rglob("tpp-key.pem"):
        body = "".join(line for line in pem.read_text().splitlines()
                       if line and not line.startswith("-----"))
        for i in range(0, len(body) - 48, 48):  # any 48 characters of the key's DER
            found[f"bank signing key {pem.parent.name} @{i}"] = body[i:i + 48]
    for token in root.rglob("bank-token"):
        found[f"bank token {token.parent.name}"] = token.read_text().strip()
    return {k: v for k, v in found.items() if len(v) >= 16}


PUBLIC_FIELDS = ("kid",)
"""JSON log fields whose 43-character value is public: a key id is the RFC 7638 thumbprint of a
*public* key (the bank logs the client it registered by it)."""


def _public(line: str) -> set[str]:
    try:
        record = json.loads(line)
    except ValueError:
        return set()
    if not isinstance(record, dict):
        return set()
    return {str(record[f]) for f in PUBLIC_FIELDS if f in record}


def _token_shaped(text: str, public: set[str]) -> bool:
    return not re.fullmatch(r"[0-9a-fA-F]+", text) and text not in public


@dataclass
class LogScan:
    files: list[Path] = field(default_factory=list)
    lines: int = 0
    secrets: int = 0
    leaks: list[str] = field(default_factory=list)


def scan(root: Path) -> LogScan:
    """Grep every line of every ``*.log`` under `root` for its secrets and credential shapes."""
    result = LogScan(files=sorted(root.rglob("*.log")))
    secrets = secrets_of(root)
    result.secrets = len(secrets)
    for path in result.files:
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            result.lines += 1
            where = f"{path.relative_to(root)}:{number}"
            result.leaks += [f"{where}: {what}" for what, secret in secrets.items()
                             if secret in line]
            for what, shape in SHAPES.items():
                hits = [m.group(0) for m in shape.finditer(line)]
                if what == "43-character token":
                    public = _public(line)
                    hits = [h for h in hits if _token_shaped(h, public)]
                result.leaks += [f"{where}: {what} {hit[:12]}…" for hit in hits]
    return result
