"""Peer records: what a node believes about another node comes only from that node's signature.

A peer is learnt by ``peer add URL`` (the operator's explicit act): the node draws a fresh random
challenge, asks ``GET URL/p2p/identity?challenge=HEX`` and believes the answer only when it is a
:class:`~protocol.messages.NodeInfo` that echoes that challenge and is signed by the key it names
(and, when the operator pinned one, that key is the pinned id). A known peer's record changes
only for a newer record signed by the same key: from ``peer add`` again, or unsolicited through
``POST /p2p/announce`` (a record with an empty challenge, for an address change). Nothing is ever
replaced silently: every change is logged and answered with the list of what changed, and an
arbiter's escrow account does not change while it holds deposits for our channels — the terms we
signed name the old account.

The stored ``Peer.info`` is the verified record as JSON plus its signed bytes (``record``), so
anyone can verify again later what the account and address were taken from.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from node.config import Config
from node.context import Context, now_ms
from node.errors import Conflict, NodeError, PeerNotAuthentic, PeerUnavailable
from node.storage.models import Peer
from protocol import channel as ch
from protocol.crypto import Signer
from protocol.errors import ErrorCode, ProtocolError, RemoteProtocolError
from protocol.messages import EMPTY_SIGNATURE, BankAccount, NodeInfo

if TYPE_CHECKING:
    from node.channels import ChannelService

log = structlog.get_logger()

CHALLENGE_BYTES = (16, 32)
"""A challenge is 16 or 32 random bytes (hex on the query string)."""
MAX_CLOCK_AHEAD_MS = 300_000
"""A record issued more than 5 minutes in the future is refused: once held, it would make every
later honest record of that peer look old."""
ANNOUNCED_FILE = "announced.json"
"""In the data directory: the url, name and account this node last announced to its peers."""
COMPARED = ("url", "name", "account")
"""What a record change is reported by (the role never changes under one key)."""
_NON_PRINTABLE = re.compile(r"[^\x20-\x7e]")


# -- our own identity -------------------------------------------------------------------------


def own_identity(config: Config, signer: Signer, *, challenge: bytes, issued_ms: int) -> NodeInfo:
    """This node's NodeInfo, signed: the answer to `/p2p/identity` (challenge echoed) or an
    announcement (empty challenge)."""
    name = _NON_PRINTABLE.sub("?", config.name)[:100] or config.role
    return NodeInfo(signer.node_id, name, config.role, config.public_url, config.own_account(),
                    issued_ms, challenge, EMPTY_SIGNATURE).signed_by(signer)


def parse_challenge(text: str) -> bytes:
    """A challenge off the query string; INVALID_FIELD unless 16 or 32 bytes of hex."""
    try:
        challenge = bytes.fromhex(text) if re.fullmatch(r"[0-9a-fA-F]*", text) else b""
    except ValueError:
        challenge = b""
    if len(challenge) not in CHALLENGE_BYTES:
        raise RemoteProtocolError(
            ErrorCode.INVALID_FIELD,
            "challenge must be 16 or 32 random bytes in hex (?challenge=<32 or 64 hex digits>)")
    return challenge


# -- checking a peer's identity ---------------------------------------------------------------


def check_identity(info: NodeInfo, *, url: str, challenge: bytes, pin: str | None,
                   self_id: str, now: int) -> None:
    """Believe `info` as the answer of `url` to our `challenge`, or raise saying why not.

    Pin mismatch → 409 ``PEER_ID_MISMATCH``; our own id → 400 ``SELF``; wrong challenge, bad
    signature, a role that is neither node nor arbiter, a clock far ahead → 502
    ``PEER_NOT_AUTHENTIC``.
    """
    node_id = info.node_id.hex()
    if pin is not None and node_id != pin:
        raise Conflict(f"{url} answered as {node_id}, you pinned {pin}", code="PEER_ID_MISMATCH")
    if node_id == self_id:
        raise NodeError("that URL is this node itself", code="SELF")
    if info.challenge != challenge:
        raise PeerNotAuthentic(
            f"{url} answered with an identity for another challenge (a replayed record?): "
            "it did not prove it holds the key it names")
    try:
        info.verify_signature(info.node_id)
    except ProtocolError:
        raise PeerNotAuthentic(
            f"{url} claims node id {node_id} but its identity is not signed by that key"
        ) from None
    if info.role not in ("node", "arbiter"):
        raise PeerNotAuthentic(f"{url} answered with role {info.role!r}")
    if info.issued_ms > now + MAX_CLOCK_AHEAD_MS:
        raise PeerNotAuthentic(
            f"{url} signed its identity {info.issued_ms - now} ms in the future: fix its clock")


def check_announcement(info: NodeInfo, *, now: int) -> None:
    """An unsolicited record (``POST /p2p/announce``): no challenge, signed by the key it
    names, not from the future. Whether it replaces anything is :func:`remember`'s rule."""
    if info.challenge:
        raise RemoteProtocolError(
            ErrorCode.INVALID_FIELD,
            "an announcement carries no challenge (a challenged identity answers one asker only)")
    info.verify_signature(info.node_id)
    if info.issued_ms > now + MAX_CLOCK_AHEAD_MS:
        raise RemoteProtocolError(ErrorCode.INVALID_FIELD,
                                  f"issued_ms is {info.issued_ms - now} ms in the future")


# -- remembering it ---------------------------------------------------------------------------


def info_json(info: NodeInfo) -> str:
    """`Peer.info`: the verified record's fields, and the signed record itself (hex)."""
    account = None if info.account is None else {
        "scheme": info.account.scheme, "identification": info.account.identification,
        "name": info.account.name}
    return json.dumps({"node_id": info.node_id.hex(), "name": info.name, "role": info.role,
                       "url": info.url, "account": account, "issued_ms": info.issued_ms,
                       "record": info.encode().hex()})


def _held_account(row: Peer) -> Any:
    return json.loads(row.info or "{}").get("account")


def _verified(row: Peer) -> bool:
    """The held record came from a signature (rows written before signed records did not)."""
    return row.issued_ms > 0 and "record" in json.loads(row.info or "{}")


def holds_escrow(channels: ChannelService, arbiter_id: str) -> bool:
    """The arbiter holds (or will hold) deposits for one of our channels not yet settled."""
    states = channels.states  # read without decoding a state (node.channel_states)
    return any(phase is not ch.Phase.SETTLED and states.arbiter(cid) == arbiter_id
               for cid, phase in states.phases())


@dataclass(frozen=True, slots=True)
class Remembered:
    peer: Peer
    status: str
    """``added``, ``changed`` or ``unchanged``."""
    changed: tuple[str, ...]


class RecordRefused(NodeError):
    """A record for a known peer that must not replace the one held; `reason` is stable."""

    def __init__(self, message: str, *, code: str, status: int, reason: ErrorCode) -> None:
        super().__init__(message, code=code, status=status)
        self.reason = reason


async def remember(ctx: Context, channels: ChannelService, info: NodeInfo, *, url: str,
                   announced: bool) -> Remembered:
    """Store a verified `info` reached at `url` under the one rule for known peers.

    Unknown peer: added (``peer add``) or refused (an announcement names only known peers).
    Known peer: a record that is not newer than the one held changes nothing (refused when it
    would change something); a newer one replaces url, name and account (an arbiter's account
    not while it holds escrow for our channels); the role never changes.
    """
    node_id = info.node_id.hex()
    new_account = json.loads(info_json(info))["account"]
    async with ctx.db() as session, session.begin():
        row = await session.get(Peer, node_id)
        if row is None:
            if announced:
                raise RecordRefused(f"{node_id[:16]}… is not a known peer: add it with "
                                    "`meterline peer add URL`", code="UNKNOWN_PEER",
                                    status=404, reason=ErrorCode.NOT_A_PARTY)
            row = Peer(node_id=node_id, url=url, name=info.name, role=info.role,
                       info=info_json(info), added_ms=now_ms(), issued_ms=info.issued_ms)
            session.add(row)
            log.info("peer.added", peer=node_id[:16], role=info.role, url=url)
            return Remembered(row, "added", ())
        verified = _verified(row)
        held = {"url": row.url, "name": row.name, "account": _held_account(row)}
        new = {"url": url, "name": info.name, "account": new_account}
        changed = tuple(f for f in COMPARED if held[f] != new[f])
        if verified and info.role != row.role:
            raise RecordRefused(
                f"{node_id[:16]}… is known as {row.role} and now says {info.role}: a node's "
                "role does not change under one key", code="ROLE_CHANGE_REFUSED", status=409,
                reason=ErrorCode.INVALID_FIELD)
        if verified and info.issued_ms <= row.issued_ms:
            if not changed and not announced:
                return Remembered(row, "unchanged", ())
            if not changed and info.encode().hex() == json.loads(row.info)["record"]:
                return Remembered(row, "unchanged", ())  # the held announcement, replayed
            raise RecordRefused(
                f"the record of {node_id[:16]}… was issued at {info.issued_ms}, not after the "
                f"one held ({row.issued_ms}): an older record never replaces a newer one",
                code="PEER_RECORD_STALE", status=409, reason=ErrorCode.NONCE_REPLAY)
        if ("account" in changed and row.role == "arbiter"
                and holds_escrow(channels, node_id)):
            raise RecordRefused(
                f"the arbiter {node_id[:16]}… now names escrow account {_account_text(new)} but "
                f"holds deposits for our channels in {_account_text(held)}: the terms we signed "
                "name that account, so it is not replaced while those channels are unsettled",
                code="ACCOUNT_CHANGE_REFUSED", status=409, reason=ErrorCode.INVALID_STATE)
        row.url, row.name, row.role = url, info.name, info.role
        row.info, row.issued_ms = info_json(info), info.issued_ms
    if changed or not verified:
        log.warning("peer.changed", peer=node_id[:16], changed=list(changed),
                    via="announce" if announced else "peer add", url=url,
                    was_signed=verified, **{f"old_{f}": held[f] for f in changed})
    return Remembered(row, "changed" if changed else "unchanged", changed)


def _account_text(fields: dict[str, Any]) -> str:
    acct = fields["account"]
    return "none" if not acct else f"{acct['scheme']} {acct['identification']}"


def verified_account(row: Peer) -> BankAccount | None:
    """The account in `row`'s signed record, verified again against `row.node_id`; None when the
    row holds no signed record (written before records were signed: add the peer again)."""
    record = json.loads(row.info or "{}").get("record")
    if not record:
        return None
    info = NodeInfo.decode(bytes.fromhex(record))
    if info.node_id.hex() != row.node_id:
        return None
    info.verify_signature(info.node_id)
    return info.account


def signed_account(row: Peer, what: str) -> BankAccount:
    """The bank account `row`'s own signature names — the only source channel terms take an
    account (an arbiter's escrow account above all) from."""
    account = verified_account(row)
    if account is None:
        raise NodeError(f"{what} has no bank account in a signed record: add it again with "
                        "`meterline peer add URL`", code="NO_ACCOUNT")
    return account


# -- telling known peers that we moved ----------------------------------------------------------


async def announce_if_moved(ctx: Context, *, attempts: int = 8, first_delay_s: float = 0.5) -> None:
    """At start: when our url, name or account differ from what we last announced, send every
    known peer our newly signed record (``POST /p2p/announce``), each on its own with backoff.
    Remembered once every peer took it (or refused it with a typed answer); otherwise the next
    start tries again. Peers accept it only as a newer record signed by our key."""
    path = ctx.config.data_dir / ANNOUNCED_FILE
    info = own_identity(ctx.config, ctx.signer, challenge=b"", issued_ms=now_ms())
    current = {f: v for f, v in json.loads(info_json(info)).items() if f in COMPARED}
    try:
        last = json.loads(path.read_text())
    except (OSError, ValueError):
        last = None
    if last == current:
        return
    peers = await ctx.all_peers()
    done = await asyncio.gather(*(_announce_to(ctx, p, info, attempts, first_delay_s)
                                  for p in peers))
    if all(done):
        path.write_text(json.dumps(current))


async def _announce_to(ctx: Context, peer: Peer, info: NodeInfo, attempts: int,
                       delay_s: float) -> bool:
    for attempt in range(attempts):
        try:
            await ctx.peers.send(peer.url, "/p2p/announce", info)
        except PeerUnavailable as exc:
            log.info("peer.announce_retry", peer=peer.node_id[:16], error=exc.message[:200],
                     attempt=attempt + 1)
            await asyncio.sleep(min(delay_s * 2 ** attempt, 30.0))
            continue
        except ProtocolError as exc:
            log.warning("peer.announce_refused", peer=peer.node_id[:16], code=exc.code.name,
                        error=exc.message)
        else:
            log.info("peer.announced", peer=peer.node_id[:16], url=info.url)
        return True
    return False
