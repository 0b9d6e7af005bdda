"""Every query the node's services make, in one place (STYLE: small typed repositories).

The services decide; this module only reads and writes rows. A method that takes a `session`
runs inside the caller's transaction (the state and the deliveries it produced commit together:
*persist, then act*); the others open their own short session.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import Table, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from node.storage.codec import decode_channel, decode_escrow, encode_channel, encode_escrow
from node.storage.db import transaction
from node.storage.direct import DirectCommits, Writes, direct_path
from node.storage.models import (
    Channel,
    Cursor,
    Escrow,
    HeldProposal,
    OutgoingProof,
    Peer,
    UnappliedCredit,
    Usage,
)
from protocol import arbiter as arb
from protocol import channel as ch
from protocol.messages import BalanceProof
from protocol.usage_events import aggregate_reference

BUCKET_MS = 3_600_000
"""Usage is aggregated per (direction, unit, reference, hour)."""
UsageRows = dict[tuple[Any, ...], list[int]]
"""(channel, sender, unit, reference, bucket) → [quantity, amount, updates]."""


def usage_rows(
    state: ch.ChannelState, before: ch.Flow, proof: BalanceProof, rows: UsageRows
) -> None:
    """Add one proof's usage (its deltas over `before`) to the aggregate `rows`."""
    sender = state.terms.party_index(proof.sender)
    bucket = proof.time_ms - proof.time_ms % BUCKET_MS
    cid = state.channel_id.hex()
    reference = aggregate_reference(proof.reference)  # one row per hour, not per commitment
    for line, old, new in zip(state.terms.tariff, before.quantities, proof.quantities, strict=True):
        if new != old:
            row = rows[(cid, sender, line.unit, reference, bucket)]
            row[0] += new - old
            row[1] += line.amount(new) - line.amount(old)
            row[2] += 1
    if proof.direct_amount != before.direct_amount:
        row = rows[(cid, sender, "amount", reference, bucket)]
        row[1] += proof.direct_amount - before.direct_amount
        row[2] += 1


def _usage_upsert(insert_: Any) -> Any:
    stmt = insert_(Usage)
    return stmt.on_conflict_do_update(
        index_elements=["channel_id", "sender", "unit", "reference", "bucket_ms"],
        set_={
            "quantity": Usage.quantity + stmt.excluded.quantity,
            "amount": Usage.amount + stmt.excluded.amount,
            "updates": Usage.updates + stmt.excluded.updates,
        },
    )


USAGE_UPSERT = {"sqlite": _usage_upsert(sqlite.insert),
                "postgresql": _usage_upsert(postgresql.insert)}
"""Adds (quantity, amount, updates) to the aggregated usage rows, one parameter set per row.
Built once per dialect: a constant statement is compiled once (SQLAlchemy's cache), where one
built per commit with its values inlined was compiled on every commit (about 1.5 ms of a
single update's commit, issue 13)."""
CHANNEL_TABLE: Table = Channel.__table__  # type: ignore[assignment]
PROOF_TABLE: Table = OutgoingProof.__table__  # type: ignore[assignment]
"""The hot path's statements are Core statements on the tables: the ORM's bulk UPDATE machinery
(synchronising the identity map) cost about 0.5 ms a commit and the node holds no ORM Channel
objects there."""


USAGE_KEYS = ("channel_id", "sender", "unit", "reference", "bucket_ms", "quantity", "amount",
              "updates")


def usage_params(rows: UsageRows) -> list[dict[str, Any]]:
    return [dict(zip(USAGE_KEYS, (*k, *v), strict=True)) for k, v in rows.items()]


Encoded = Sequence[tuple[int, bytes]]
"""Our proofs as (nonce, wire bytes): encoded once, for the stored row and for the stream."""


def proof_params(cid: str, outgoing: Encoded) -> list[dict[str, Any]]:
    return [{"channel_id": cid, "nonce": nonce, "proof": data} for nonce, data in outgoing]


CHANNEL_UPDATE = update(CHANNEL_TABLE).where(CHANNEL_TABLE.c.id == bindparam("b_id"))
PROOFS_INSERT = insert(PROOF_TABLE)
PROOFS_PRUNE = delete(PROOF_TABLE).where(PROOF_TABLE.c.channel_id == bindparam("b_cid"),
                                         PROOF_TABLE.c.nonce <= bindparam("b_upto"))
"""With USAGE_UPSERT, the statements of a channel commit: constant, so each is compiled once,
by SQLAlchemy for a session and by node.storage.direct for its own connection."""


def channel_writes(state: ch.ChannelState, dialect: str, *, usage: UsageRows | None,
                   outgoing: Encoded, prune_upto: int | None) -> Writes:
    """What a commit of the channel's rows runs, in order: its state row (always first), its
    usage, our new proofs and the pruning of those the peer acknowledged."""
    cid = state.channel_id.hex()
    writes: Writes = [(CHANNEL_UPDATE, [{"phase": state.phase.value, "state": encode_channel(state),
                                         "updated_ms": state.updated_ms, "b_id": cid}])]
    if usage:
        writes.append((USAGE_UPSERT[dialect], usage_params(usage)))
    if outgoing:
        writes.append((PROOFS_INSERT, proof_params(cid, outgoing)))
    if prune_upto is not None:
        writes.append((PROOFS_PRUNE, [{"b_cid": cid, "b_upto": prune_upto}]))
    return writes


class Repository:
    def __init__(self, db: async_sessionmaker[AsyncSession]) -> None:
        self.db = db
        engine: AsyncEngine = db.kw["bind"]
        path = direct_path(engine)
        self.direct = None if path is None else DirectCommits(engine, path)
        """SQLite: where a commit of only the channel's rows runs (save_channel_alone)."""

    def close(self) -> None:
        if self.direct is not None:
            self.direct.close()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One transaction; a storage failure is StorageUnavailable (node.storage.db)."""
        async with transaction(self.db) as session:
            yield session

    # -- peers ----------------------------------------------------------------------------------

    async def peer(self, node_id: str) -> Peer | None:
        async with self.db() as session:
            return await session.get(Peer, node_id)

    async def peers(self) -> list[Peer]:
        async with self.db() as session:
            return list((await session.scalars(select(Peer).order_by(Peer.added_ms))).all())

    # -- channels -------------------------------------------------------------------------------

    async def channels(self) -> list[ch.ChannelState]:
        async with self.db() as session:
            return [decode_channel(row.state)
                    for row in (await session.scalars(select(Channel))).all()]

    async def channel_rows(self) -> list[tuple[str, str, bytes]]:
        """(id, phase, encoded state) of every channel, not decoded (node.channel_states)."""
        async with self.db() as session:
            return [(cid, phase, data) for cid, phase, data in (await session.execute(
                select(Channel.id, Channel.phase, Channel.state))).all()]

    async def unacked_channels(self) -> set[str]:
        """The channels with proofs of ours the peer has not acknowledged yet."""
        async with self.db() as session:
            return set((await session.scalars(
                select(OutgoingProof.channel_id).distinct())).all())

    async def save_channel(
        self,
        session: AsyncSession,
        state: ch.ChannelState,
        *,
        new: bool = False,
        usage: UsageRows | None = None,
        outgoing: Encoded = (),
        prune_upto: int | None = None,
    ) -> None:
        """The channel's state with its usage and our in-flight proofs (pruning what the
        peer's receipts acknowledge), in the caller's transaction."""
        dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
        writes = channel_writes(state, dialect, usage=usage, outgoing=outgoing,
                                prune_upto=prune_upto)
        if new:  # the row is inserted, not updated
            row = writes.pop(0)[1][0]
            session.add(Channel(id=row["b_id"], peer_id=state.terms.parties()[state.them].hex(),
                                phase=row["phase"], state=row["state"],
                                created_ms=state.updated_ms, updated_ms=state.updated_ms))
        for statement, params in writes:
            await session.execute(statement, params)

    async def save_channel_alone(
        self,
        state: ch.ChannelState,
        *,
        usage: UsageRows | None = None,
        outgoing: Encoded = (),
        prune_upto: int | None = None,
    ) -> None:
        """:meth:`save_channel` of an existing channel as a transaction of its own, when it
        writes nothing else: on SQLite in one call on the direct connection
        (node.storage.direct, ADR 0325), elsewhere in a session."""
        if self.direct is None:
            async with self.transaction() as session:
                await self.save_channel(session, state, usage=usage, outgoing=outgoing,
                                        prune_upto=prune_upto)
            return
        await self.direct.run(channel_writes(state, "sqlite", usage=usage, outgoing=outgoing,
                                             prune_upto=prune_upto))

    async def outgoing_after(self, cid: str, start: int) -> list[tuple[int, bytes]]:
        """Our stored proofs on `cid` above nonce `start`, in order (what a stream resends)."""
        async with self.db() as session:
            rows = await session.execute(
                select(OutgoingProof.nonce, OutgoingProof.proof)
                .where(OutgoingProof.channel_id == cid, OutgoingProof.nonce > start)
                .order_by(OutgoingProof.nonce))
            return [(int(n), bytes(p)) for n, p in rows.all()]

    async def usage(self, cid: str) -> list[Usage]:
        async with self.db() as session:
            return list((await session.scalars(
                select(Usage).where(Usage.channel_id == cid))).all())

    # -- proposals held for the operator -------------------------------------------------------

    async def held(self) -> list[HeldProposal]:
        async with self.db() as session:
            return list((await session.scalars(
                select(HeldProposal).order_by(HeldProposal.received_ms))).all())

    async def held_proposal(self, cid: str) -> HeldProposal | None:
        async with self.db() as session:
            return await session.get(HeldProposal, cid)

    async def held_ids(self, prefix: str, limit: int = 2) -> list[str]:
        async with self.db() as session:
            return [str(cid) for cid in (await session.scalars(
                select(HeldProposal.id).where(HeldProposal.id.startswith(prefix))
                .order_by(HeldProposal.id).limit(limit))).all()]

    @staticmethod
    async def held_counts(session: AsyncSession, opener: str) -> tuple[int, int | None]:
        """Proposals held from `opener`, and from openers that are not known peers (None when
        `opener` is a known peer: the strangers' quota does not apply to it)."""
        count = select(func.count()).select_from(HeldProposal)
        theirs = await session.scalar(count.where(HeldProposal.opener_id == opener)) or 0
        if await session.get(Peer, opener) is not None:
            return theirs, None
        strangers = await session.scalar(count.where(
            HeldProposal.opener_id.not_in(select(Peer.node_id)))) or 0
        return theirs, strangers

    async def delete_held(self, cid: str) -> HeldProposal | None:
        async with self.transaction() as session:
            row = await session.get(HeldProposal, cid)
            if row is not None:
                await session.delete(row)
            return row

    # -- escrow (arbiter) -----------------------------------------------------------------------

    async def escrows(self) -> list[tuple[arb.ArbiterState, list[str], list[int]]]:
        """Each channel in escrow with its parties' callback URLs and their `issued_ms`."""
        async with self.db() as session:
            return [(decode_escrow(row.state), [row.opener_url, row.peer_url],
                     [row.opener_url_ms, row.peer_url_ms])
                    for row in (await session.scalars(select(Escrow))).all()]

    @staticmethod
    async def save_escrow(session: AsyncSession, state: arb.ArbiterState, urls: list[str],
                          stamps: list[int], *, new: bool = False) -> None:
        cid = state.channel_id.hex()
        values = {"phase": state.phase.value, "state": encode_escrow(state),
                  "opener_url": urls[0], "peer_url": urls[1], "opener_url_ms": stamps[0],
                  "peer_url_ms": stamps[1], "updated_ms": state.updated_ms}
        if new:
            session.add(Escrow(id=cid, **values))
        else:
            await session.execute(update(Escrow).where(Escrow.id == cid).values(**values))

    async def cursor(self, name: str) -> str | None:
        async with self.db() as session:
            row = await session.get(Cursor, name)
            return row.value if row else None

    async def set_cursor(self, name: str, value: str) -> None:
        async with self.transaction() as session:
            row = await session.get(Cursor, name)
            if row is None:
                session.add(Cursor(name=name, value=value))
            else:
                row.value = value

    async def unapplied(self, references: Sequence[str] | None = None) -> list[UnappliedCredit]:
        """Credits no channel took (optionally only those with one of `references`)."""
        query = select(UnappliedCredit).where(UnappliedCredit.applied.is_(False))
        if references is not None:
            query = query.where(UnappliedCredit.reference.in_(references))
        async with self.db() as session:
            return list((await session.scalars(query.order_by(UnappliedCredit.booked_ms))).all())

    async def note_credit(self, credit: UnappliedCredit) -> bool:
        """Keep a credit that was not applied (`credit.reason` says why), or mark one kept
        before as applied now (empty reason). True when it was newly kept."""
        async with self.transaction() as session:
            row = await session.get(UnappliedCredit, credit.entry_id)
            if row is None:
                if credit.reason:
                    session.add(credit)
                    return True
                return False
            row.applied = not credit.reason
            row.reason = credit.reason
            if row.status == "held":  # why held and whose: as last seen (never once refunding)
                row.kind, row.channel_id = credit.kind, credit.channel_id
                row.sender = credit.sender or row.sender
            return False
