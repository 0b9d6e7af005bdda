"""Attack 3 (issue 8): `peer add` of an impostor that claims to be the arbiter.

The counterparty (the carrier) runs a server that answers ``/p2p/info`` and ``/p2p/identity``
with the ARBITER's node id and the attacker's own bank account. It cannot sign with the
arbiter's key: it signs with its own, or replays a genuine arbiter record it asked for with a
challenge of its own. The old ``peer add`` believed the unsigned ``/p2p/info`` and overwrote the
arbiter's record, so the victim's next deposit went to the attacker.

Honest outcome: ``peer add`` refuses the impostor (with or without ``--id`` pinned to the real
arbiter), the known arbiter's record is unchanged, a node that does not know the arbiter yet
stores nothing for it, and a channel opened afterwards names the real escrow account in its
terms and pays its deposit into it.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from node.cluster import ClusterError, NodeHandle, meterline_argv
from node.config import load_config
from protocol.messages import EMPTY_SIGNATURE, BankAccount, NodeInfo
from tests.adversarial.arena import ATTACKER, ESCROW, MANUFACTURER, Arena, arena, wait_for
from tests.adversarial.toolkit import (
    Attacker,
    Loop,
    PeerServer,
    free_port,
    now_ms,
    request,
    stored_state,
)


@pytest.fixture(scope="module")
def a(tmp_path_factory: pytest.TempPathFactory, loop: Loop) -> Iterator[Arena]:
    with arena(tmp_path_factory.mktemp("impostor"), loop=loop) as a:
        yield a


class Impostor:
    """The attacker's server posing as the arbiter."""

    def __init__(self, loop: Loop, a: Arena, attacker: Attacker) -> None:
        self.arbiter_id = bytes.fromhex(a.arbiter.node_id)
        acct = a.attacker_account
        self.account = BankAccount(acct["scheme"], acct["identification"], "Escrow Agent")
        self.attacker = attacker
        self.mode = "forged"
        self.replay: NodeInfo | None = None
        # A genuine record of the arbiter, asked for with the impostor's own challenge.
        got = request("GET", f"{a.arbiter.url}/p2p/identity?challenge={'ab' * 16}")
        if got.status == 200 and isinstance(got.message, NodeInfo):
            self.replay = got.message
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = PeerServer(loop, self.port, responder=self.answer)

    async def answer(self, req: web.Request, body: bytes) -> web.StreamResponse:
        if req.path == "/p2p/info":
            return web.json_response({
                "node_id": self.arbiter_id.hex(), "name": "Escrow Agent", "role": "arbiter",
                "protocol_version": 1,
                "account": {"scheme": self.account.scheme,
                            "identification": self.account.identification,
                            "name": self.account.name}})
        if req.path == "/p2p/identity":
            if self.mode == "replayed" and self.replay is not None:
                record = self.replay
            else:
                try:
                    challenge = bytes.fromhex(req.query.get("challenge", ""))
                except ValueError:
                    challenge = b""
                record = NodeInfo(self.arbiter_id, "Escrow Agent", "arbiter",  # type: ignore[arg-type]
                                  self.url, self.account, now_ms(), challenge,
                                  EMPTY_SIGNATURE).signed_by(self.attacker.signer)
            return web.Response(body=record.encode(), content_type="application/msgpack")
        return web.Response(status=404)

    def close(self) -> None:
        self.server.close()


def arbiter_record(handle: NodeHandle, arbiter_id: str) -> dict[str, Any] | None:
    peers = handle.api("GET", "/api/peers")["peers"]
    return next((p for p in peers if p["node_id"] == arbiter_id), None)


def refused(handle: NodeHandle, body: dict[str, Any]) -> str | None:
    """The admin API's refusal of `peer add` (None when it took the record)."""
    try:
        handle.api("POST", "/api/peers", body)
    except ClusterError as exc:
        return str(exc)
    return None


def cli_peer_add(handle: NodeHandle, url: str, node_id: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*meterline_argv(), "peer", "add", url, "--id", node_id, "--data-dir",
                           str(handle.directory), "--json"], capture_output=True, text=True,
                          check=False, timeout=60)


def test_peer_add_refuses_an_impostor_of_the_arbiter(a: Arena, loop: Loop) -> None:
    impostor = Impostor(loop, a, Attacker.of(a.carrier))
    arbiter_id = a.arbiter.node_id
    try:
        # The victim already knows the arbiter: its record must not move.
        before = arbiter_record(a.manufacturer, arbiter_id)
        assert before is not None
        assert before["account"]["identification"] == "40000100000001"
        attempts = {
            "forged": {"url": impostor.url},
            "forged, pinned": {"url": impostor.url, "id": arbiter_id},
        }
        if impostor.replay is not None:
            attempts["replayed"] = {"url": impostor.url}
        taken = []
        for what, body in attempts.items():
            impostor.mode = "replayed" if what == "replayed" else "forged"
            if refused(a.manufacturer, body) is None:
                taken.append(what)
        assert not taken, f"peer add believed the impostor ({', '.join(taken)})"
        assert arbiter_record(a.manufacturer, arbiter_id) == before

        # A node that does not know the arbiter yet stores nothing for it, pinned or not.
        newcomer = a.cluster.add_node("newcomer", bank=None)
        newcomer.start()
        impostor.mode = "forged"
        assert refused(newcomer, {"url": impostor.url}) is not None
        assert refused(newcomer, {"url": impostor.url, "id": arbiter_id}) is not None
        out = cli_peer_add(newcomer, impostor.url, arbiter_id)
        assert out.returncode != 0, out.stdout
        assert arbiter_record(newcomer, arbiter_id) is None
        # ...and pinned to the real arbiter at its real address, it is learnt.
        out = cli_peer_add(newcomer, a.arbiter.url, arbiter_id)
        assert out.returncode == 0, out.stderr
        record = arbiter_record(newcomer, arbiter_id)
        assert record is not None
        assert record["url"] == a.arbiter.url
        assert record["account"]["identification"] == "40000100000001"

        # A channel opened afterwards pays its deposit into the real escrow account.
        funded_before = a.balances()
        cid = a.open_channel()
        wait_for(lambda: a.escrow(cid) is not None, "the arbiter to hold the channel")
        time.sleep(0.5)
        after = a.balances()
        assert after[ESCROW] - funded_before[ESCROW] == 5000
        assert after[MANUFACTURER] - funded_before[MANUFACTURER] == -5000
        assert after[ATTACKER] == 0
        for handle in (a.manufacturer, a.carrier):  # the terms both signed name the real one
            escrow = stored_state(load_config(handle.directory), cid).terms.escrow_account
            assert escrow.identification == "40000100000001"
    finally:
        impostor.close()
