"""The conformance runner against a real meterline daemon on loopback (specs/tools/conformance.py).

The daemon is a `meterline node start` process whose key is the vectors' `peer` key; the runner
plays the opener and the arbiter. Every exchange of specs/vectors/conformance.json must get the
answer the vectors give — exact bytes, signed refusals with their codes — and the daemon must push
its registration and its co-signed close on its own.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import aiohttp

from node.config import init_data_dir
from specs.tools.conformance import load_vectors, run
from tests.support import free_port, running


async def test_meterline_passes_its_own_conformance_vectors(tmp_path: Path) -> None:
    vectors = load_vectors()
    port, admin_port = free_port(), free_port()
    data_dir = tmp_path / "peer"
    account = vectors["node"]["account"]
    init_data_dir(data_dir, name="conformance peer", listen=f"127.0.0.1:{port}",
                  admin=f"127.0.0.1:{admin_port}", allow=[vectors["opener"]["node_id"]],
                  bank={**account, "rail": "sepa", "agent": "BNPAFRPPXXX",
                        "url": f"http://127.0.0.1:{free_port()}"},  # no deposit to pay
                  seed=hashlib.sha256(vectors["node"]["label"].encode()).digest())
    token = (data_dir / "admin.token").read_text().strip()
    argv = [sys.executable, "-m", "node.cli", "node", "start", "--data-dir", str(data_dir),
            "--json-logs"]

    async def introduce(opener_url: str, arbiter_url: str) -> None:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as s:
            for url in (arbiter_url, opener_url):
                async with s.post(f"http://127.0.0.1:{admin_port}/api/peers",
                                  json={"url": url}) as resp:
                    assert resp.status in (200, 201), await resp.text()

    log = tmp_path / "peer.log"
    lines: list[str] = []
    with running(argv, port=admin_port, log=log):
        failures = await run(f"http://127.0.0.1:{port}", vectors=vectors, setup=introduce,
                             setup_timeout_s=30, say=lines.append)
    assert failures == [], "\n".join([*lines, log.read_text(errors="replace")[-3000:]])
    assert len([x for x in lines if x.startswith("ok")]) == len(vectors["exchanges"]) + 1


def test_the_runner_fails_a_node_that_answers_otherwise() -> None:
    """check_answer itself: other bytes, a refusal by another key or of other bytes, another
    code or status are each a failure (the runner is no check that cannot fail)."""
    from protocol.crypto import Signer
    from protocol.errors import ErrorCode, RemoteProtocolError
    from protocol.messages import Refusal
    from specs.tools.conformance import check_answer

    vectors = load_vectors()
    by_name = {x["name"]: x for x in vectors["exchanges"]}
    exact = by_name["proof 1: its receipt"]
    right = bytes.fromhex(exact["answer"]["hex"])
    assert check_answer(vectors, exact, 200, right) is None
    assert check_answer(vectors, exact, 200, right[:-1] + bytes([right[-1] ^ 1])) is not None
    assert check_answer(vectors, exact, 400, right) is not None
    refused = by_name["a proof that skips a nonce"]
    body = bytes.fromhex(refused["body"])
    gap = RemoteProtocolError(ErrorCode.NONCE_GAP, "gap")
    node = Signer.from_label("peer")
    assert check_answer(vectors, refused, 400, Refusal.make(node, gap, body).encode()) is None
    for wrong in (Refusal.make(Signer.from_label("mallory"), gap, body),
                  Refusal.make(node, gap, body + b"x"),
                  Refusal.make(node, RemoteProtocolError(ErrorCode.NONCE_REPLAY, "x"), body)):
        assert check_answer(vectors, refused, 400, wrong.encode()) is not None
