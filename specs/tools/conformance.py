"""Hold a live node's peer API to meterline's behaviour: ``specs/vectors/conformance.json``.

    python -m specs.tools.conformance http://127.0.0.1:7801

The node under test plays the vectors' *peer*; this runner plays the opener and the arbiter,
each with a small peer API of its own on loopback (their signed identities, and a sink that
records what the node sends them). Before the exchanges the node must be set up as 0005 §7 says:

- its identity key is the vectors' ``peer`` key (seed = SHA-256("peer"), ``keys.json``);
- its own bank account is the terms' ``peer_account`` (``node.account`` in the vectors);
- it allow-lists the opener for channels that ask it to deposit nothing;
- it knows the opener and the arbiter as peers, from their signed identities at the URLs this
  runner prints (``meterline peer add URL`` for meterline).

The runner waits until the node has asked both identities, then sends every exchange in order
and checks each answer: the status, and the exact bytes, or a `Refusal` signed by the node over
the exact request bytes with the expected code, or an unsigned `Error` with its code. Last it
waits for what the node must push on its own (its registration with the arbiter, its co-signed
close to both). It exits 0 when everything matched.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientSession, ClientTimeout, WSMsgType, web

from protocol import PROTOCOL_VERSION
from protocol.crypto import Signer
from protocol.errors import ProtocolError
from protocol.messages import (
    EMPTY_SIGNATURE,
    BankAccount,
    ChannelRegistration,
    Error,
    NodeInfo,
    Refusal,
)
from protocol.records import decode_message
from specs.tools.blocks import SPECS

MSGPACK = "application/msgpack"


def load_vectors() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (SPECS / "vectors" / "conformance.json").read_text(encoding="utf-8"))
    return data


@dataclass
class Party:
    """The opener or the arbiter, played by the runner: a signed identity and a sink."""

    role: str
    signer: Signer
    account: BankAccount
    url: str = ""
    asked: asyncio.Event = field(default_factory=asyncio.Event)
    received: list[tuple[str, bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    """Set whenever something arrives (shared by both parties of a run)."""
    runner: web.AppRunner | None = None

    async def identity(self, request: web.Request) -> web.Response:
        challenge = bytes.fromhex(request.query.get("challenge", ""))
        info = NodeInfo(self.signer.node_id, f"conformance {self.role}",
                        "arbiter" if self.role == "arbiter" else "node", self.url, self.account,
                        int(time.time() * 1000), challenge, EMPTY_SIGNATURE).signed_by(self.signer)
        self.asked.set()
        return web.Response(body=info.encode(), content_type=MSGPACK)

    async def sink(self, request: web.Request) -> web.Response:
        self.received.append((request.path, await request.read()))
        self.arrived.set()
        return web.Response(status=204)

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.add_routes([web.get("/p2p/identity", self.identity), web.post("/p2p/{any}", self.sink)])
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://{host}:{bound}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def _account(data: dict[str, str]) -> BankAccount:
    return BankAccount(data["scheme"], data["identification"], data["name"])


def parties(vectors: dict[str, Any]) -> tuple[Party, Party]:
    return (Party("opener", Signer.from_label(vectors["opener"]["label"]),
                  _account(vectors["opener"]["account"])),
            Party("arbiter", Signer.from_label(vectors["arbiter"]["label"]),
                  _account(vectors["arbiter"]["account"])))


def check_answer(vectors: dict[str, Any], exchange: dict[str, Any], status: int,
                 body: bytes) -> str | None:
    """None when the answer is what the exchange demands; else what is wrong."""
    want = exchange["answer"]
    node_id = bytes.fromhex(vectors["node"]["node_id"])
    if status != exchange["status"]:
        return f"status {status}, want {exchange['status']} (body {body[:80].hex()})"
    kind = want["type"]
    try:
        if kind == "empty":
            return None if not body else f"a body of {len(body)} bytes where none belongs"
        if kind == "json":
            got = json.loads(body)
            wrong = {k: got.get(k) for k, v in want["json"].items() if got.get(k) != v}
            if not isinstance(got.get("name"), str):
                wrong["name"] = got.get("name")
            return f"fields differ: {wrong}" if wrong else None
        if "hex" in want:
            return None if body.hex() == want["hex"] else (
                f"bytes differ: got {body.hex()[:120]}…, want {want['hex'][:120]}…")
        message = decode_message(body)
        if type(message).__name__ != kind:
            return f"a {type(message).__name__}, want a {kind}"
        if isinstance(message, Refusal):
            message.verify_for(node_id, bytes.fromhex(exchange.get("body", "")))
        if isinstance(message, Refusal | Error):
            from protocol.errors import ErrorCode

            code = ErrorCode(message.code).name
            return None if code == want["code"] else f"code {code}, want {want['code']}"
        if isinstance(message, NodeInfo):
            message.verify_signature(message.node_id)
            got = {"node_id": message.node_id.hex(), "challenge": message.challenge.hex(),
                   "role": message.role, "account": None if message.account is None else {
                       "scheme": message.account.scheme,
                       "identification": message.account.identification,
                       "name": message.account.name}}
            wrong = {k: got[k] for k in got if got[k] != want[k]}
            return f"fields differ: {wrong}" if wrong else None
    except (ProtocolError, ValueError) as exc:
        return f"not a valid answer: {exc}"
    return f"nothing checks a {kind}"


def _registration_ok(vectors: dict[str, Any], push: dict[str, Any], node_id: bytes,
                     data: bytes) -> bool:
    """The node's registration: the very proposal and acceptance, and its own signed callback
    for this channel (0004 §1.1)."""
    try:
        reg = ChannelRegistration.decode(data)
        if reg.callback is not None:
            reg.callback.verify_signature(node_id)
    except ProtocolError:
        return False
    return (reg.proposal.encode().hex() == push["proposal"]
            and reg.acceptance.encode().hex() == push["acceptance"]
            and reg.callback is not None and reg.callback.party == node_id
            and reg.callback.channel_id.hex() == vectors["channel_id"])


def check_pushes(vectors: dict[str, Any], opener: Party, arbiter: Party) -> list[str]:
    """What the node had to send on its own and has not (yet): empty when all arrived."""
    missing = []
    node_id = bytes.fromhex(vectors["node"]["node_id"])
    for push in vectors["pushes"]:
        party = arbiter if push["to"] == "arbiter" else opener
        bodies = [b for path, b in party.received if path == push["path"]]
        if push["type"] == "ChannelRegistration":
            ok = any(_registration_ok(vectors, push, node_id, data) for data in bodies)
        else:
            ok = any(b.hex() == push["hex"] for b in bodies)
        if not ok:
            missing.append(f"{push['type']} to the {push['to']} at {push['path']}")
    return missing


Say = Callable[[str], None]


async def run(url: str, *, vectors: dict[str, Any] | None = None, host: str = "127.0.0.1",
              ports: tuple[int, int] = (0, 0), setup: Callable[[str, str], Awaitable[None]]
              | None = None, setup_timeout_s: float = 300.0, push_timeout_s: float = 30.0,
              say: Say = print) -> list[str]:
    """Run every exchange against the node at `url`; the list of failures (empty: conformant).

    `setup(opener_url, arbiter_url)` introduces the runner's parties to the node (a test calls
    the node's admin API); without it the runner asks the operator and waits."""
    vectors = vectors or load_vectors()
    opener, arbiter = parties(vectors)
    arrived = asyncio.Event()
    opener.arrived = arbiter.arrived = arrived
    failures: list[str] = []
    await opener.start(host, ports[0])
    await arbiter.start(host, ports[1])
    try:
        if setup is not None:
            await setup(opener.url, arbiter.url)
        else:
            say(f"node under test: {url}\nadd these peers to it now:\n  opener  {opener.url}\n"
                f"  arbiter {arbiter.url}\n(waiting until it has asked both for their identity)")
        await asyncio.wait_for(asyncio.gather(opener.asked.wait(), arbiter.asked.wait()),
                               setup_timeout_s)
        async with ClientSession(timeout=ClientTimeout(total=30)) as session:
            for exchange in vectors["exchanges"]:
                problem = await _exchange(session, url, vectors, exchange)
                say(f"{'ok  ' if problem is None else 'FAIL'} {exchange['name']}"
                    + ("" if problem is None else f": {problem}"))
                if problem is not None:
                    failures.append(f"{exchange['name']}: {problem}")
        deadline = time.monotonic() + push_timeout_s
        while True:
            arrived.clear()  # before looking, so that nothing arriving now is missed
            missing = check_pushes(vectors, opener, arbiter)
            if not missing or time.monotonic() >= deadline:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), deadline - time.monotonic())
        for what in missing:
            failures.append(f"never sent: {what}")
        say(f"{'FAIL' if missing else 'ok  '} the node's own pushes"
            + (f": missing {missing}" if missing else ""))
    finally:
        await opener.stop()
        await arbiter.stop()
    return failures


async def _stream(session: ClientSession, url: str, vectors: dict[str, Any],
                  exchange: dict[str, Any]) -> str | None:
    """Each frame sent, then frames read until the expected one (skipping allowed repeats)."""
    async with session.ws_connect(url.rstrip("/") + exchange["path"],
                                  max_msg_size=int(vectors["max_body_bytes"])) as ws:
        for i, frame in enumerate(exchange["frames"]):
            await ws.send_bytes(bytes.fromhex(frame["send"]))
            while True:
                msg = await ws.receive(timeout=10)
                if msg.type is not WSMsgType.BINARY:
                    return f"frame {i}: the stream ended ({msg.type.name}) before its answer"
                data: bytes = msg.data
                if data.hex() in frame["skip"]:
                    continue
                problem = check_answer(vectors, {"answer": frame["answer"], "status": 200},
                                       200, data)
                if problem is not None:
                    return f"frame {i}: {problem}"
                break
    return None


async def _exchange(session: ClientSession, url: str, vectors: dict[str, Any],
                    exchange: dict[str, Any]) -> str | None:
    if exchange["method"] == "WEBSOCKET":
        try:
            return await _stream(session, url, vectors, exchange)
        except Exception as exc:  # a dropped stream is a wrong answer
            return f"no answer: {type(exc).__name__}: {exc}"
    body = bytes.fromhex(exchange["body"]) if "body" in exchange else None
    headers = {"Content-Type": MSGPACK, "X-Meterline-Node": vectors["opener"]["node_id"]}
    try:
        async with session.request(exchange["method"], url.rstrip("/") + exchange["path"],
                                   data=body, headers=headers if body is not None else None
                                   ) as resp:
            answer = await resp.content.read(int(vectors["max_body_bytes"]) + 1)
            return check_answer(vectors, exchange, resp.status, answer)
    except Exception as exc:  # a connection the node dropped is an answer that is wrong
        return f"no answer: {type(exc).__name__}: {exc}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m specs.tools.conformance", description=__doc__.split("\n\n")[0],
        epilog="example: python -m specs.tools.conformance http://127.0.0.1:7801")
    parser.add_argument("url", help="the peer API of the node under test")
    parser.add_argument("--host", default="127.0.0.1",
                        help="where the runner's opener and arbiter listen (the node must "
                        "reach them there)")
    parser.add_argument("--opener-port", type=int, default=0)
    parser.add_argument("--arbiter-port", type=int, default=0)
    parser.add_argument("--setup-timeout", type=float, default=300.0,
                        help="seconds to wait for the node to ask both identities")
    args = parser.parse_args(argv)
    failures = asyncio.run(run(args.url, host=args.host,
                               ports=(args.opener_port, args.arbiter_port),
                               setup_timeout_s=args.setup_timeout))
    print(f"{len(failures)} failure(s); protocol version {PROTOCOL_VERSION}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
