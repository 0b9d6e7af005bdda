"""Message layouts for ``specs/0002-wire.md``, generated from each record's ``FIELDS``.

Writes the ``message-layouts`` block (one table per record and per message, field by field, with
``Kind.describe()``) and the ``signature-domains`` block. :func:`parse_layouts` reads the tables
back, like the BOLTs' ``tools/extract-formats.py``, so an implementation in another language can
generate its codecs from the spec.

    python -m specs.tools.make_tables          # rewrite the blocks
    python -m specs.tools.make_tables --check  # exit 1 when the spec is stale
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

from protocol import PROTOCOL_VERSION
from protocol.messages import (
    BalanceProof,
    BankAccount,
    CallbackAddress,
    ChannelAcceptance,
    ChannelProposal,
    ChannelRegistration,
    ChannelTerms,
    Checkpoint,
    CooperativeClose,
    DisputeEvidence,
    DisputeNotice,
    EscrowStatus,
    EscrowStatuses,
    FundingConfirmation,
    NodeInfo,
    PayoutAccount,
    PayoutNotice,
    PayoutReturned,
    Receipt,
    Refusal,
    Signed,
    TopUpConfirmation,
    TransferNotice,
    UnilateralClose,
)
from protocol.records import Kind, ListOf, Message, Nested, Opt, Record, Text, message_types
from protocol.tariff import TariffLine, TariffTier
from specs.tools.blocks import SPECS, update

WIRE_SPEC = SPECS / "0002-wire.md"

RECORDS: tuple[type[Record], ...] = (TariffTier, TariffLine, BankAccount)
"""Records that only appear nested (no tag, no version)."""

SIGNERS: dict[type[Signed], str] = {
    ChannelProposal: "`terms.opener`",
    ChannelAcceptance: "`terms.peer`",
    FundingConfirmation: "`terms.arbiter`",
    BalanceProof: "`sender`",
    Receipt: "`receiver`",
    Checkpoint: "`terms.opener` (`opener_signature`), `terms.peer` (`peer_signature`)",
    CooperativeClose: "`terms.opener` (`opener_signature`), `terms.peer` (`peer_signature`)",
    UnilateralClose: "`claimant`",
    DisputeEvidence: "`submitter`",
    PayoutNotice: "`terms.arbiter`",
    DisputeNotice: "`terms.arbiter`",
    CallbackAddress: "`party`",
    EscrowStatus: "`terms.arbiter`",
    EscrowStatuses: "`terms.arbiter` of every channel asked about",
    NodeInfo: "`node_id`",
    Refusal: "`refuser` (the node the refused request was addressed to)",
    TopUpConfirmation: "`terms.arbiter`",
    PayoutAccount: "`party`",
    PayoutReturned: "`terms.arbiter`",
    TransferNotice: "`terms.arbiter`",
}
"""Whose key verifies each signature (the code passes it to ``verify_signature``)."""

SIGNED_BYTES: dict[type[Signed], str] = {
    ChannelProposal: "the encoding of `terms` (a `ChannelTerms` message)",
    ChannelAcceptance: "the encoding of the `ChannelTerms` whose SHA-256 is `channel_id`",
}
DEFAULT_SIGNED_BYTES = "the message's encoding without its signature field(s)"


def messages() -> list[type[Message]]:
    return [cls for _, cls in sorted(message_types().items())]


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _constraint(kind: Kind) -> str:
    while isinstance(kind, Opt | ListOf):
        kind = kind.inner
    if isinstance(kind, Text) and kind.pattern is not None:
        return f"`{_escape(kind.pattern.pattern)}`"
    if isinstance(kind, Nested):
        return f"see `{kind.cls.__name__}`"
    return ""


def _row(index: int | str, name: str, kind: str, constraint: str) -> str:
    return f"| {index} | `{name}` | `{_escape(kind)}` | {constraint} |"


def layout(cls: type[Record]) -> str:
    is_message = issubclass(cls, Message)
    title = f"#### `{cls.__name__}`" + (f" (tag {cls.TAG})" if is_message else " (record)")
    lines = [title, ""]
    if issubclass(cls, Signed):
        signed = SIGNED_BYTES.get(cls, DEFAULT_SIGNED_BYTES)
        fields = ", ".join(f"`{f}`" for f in cls.SIGNATURE_FIELDS)
        lines += [
            f"Domain `{cls.DOMAIN}`; signature field(s) {fields}; signed by {SIGNERS[cls]}; "
            f"the signature covers {signed}.",
            "",
        ]
    elif cls is ChannelTerms:
        lines += [
            "Carried inside `ChannelProposal`; the signatures of the proposal and the "
            "acceptance cover this encoding, and the channel id is its SHA-256.",
            "",
        ]
    elif cls is ChannelRegistration:
        lines += [
            "Unsigned: the `ChannelProposal` and `ChannelAcceptance` inside carry the signatures "
            "that matter.",
            "",
        ]
    elif is_message:
        lines += ["Unsigned.", ""]
    lines += ["| # | field | kind | constraint |", "| --: | --- | --- | --- |"]
    offset = 0
    if is_message:
        lines += [
            _row(0, "tag", "u64", f"= {cls.TAG}"),
            _row(1, "version", "u64", f"= {PROTOCOL_VERSION}"),
        ]
        offset = 2
    for i, (name, kind) in enumerate(cls.FIELDS):
        lines.append(_row(i + offset, name, kind.describe(), _constraint(kind)))
    return "\n".join(lines) + "\n"


def layouts_block() -> str:
    parts = [layout(cls) for cls in (*RECORDS, *messages())]
    return "\n".join(parts)


def domains_block() -> str:
    lines = [
        "| message | tag | domain | signature fields | signed by |",
        "| --- | --: | --- | --- | --- |",
    ]
    for cls in messages():
        if issubclass(cls, Signed):
            fields = ", ".join(f"`{f}`" for f in cls.SIGNATURE_FIELDS)
            lines.append(
                f"| `{cls.__name__}` | {cls.TAG} | `{cls.DOMAIN}` | {fields} | {SIGNERS[cls]} |"
            )
    return "\n".join(lines) + "\n"


def wire_blocks() -> dict[str, str]:
    return {"message-layouts": layouts_block(), "signature-domains": domains_block()}


# ---------------------------------------------------------------------------------------------
# Reading the tables back


@dataclass(frozen=True)
class Layout:
    name: str
    tag: int | None
    """None for a record."""
    fields: tuple[tuple[str, str], ...]
    """(name, kind) in wire order, without tag and version."""


_TITLE = re.compile(r"^#### `(\w+)` \((?:tag (\d+)|record)\)$")
_ROW = re.compile(r"^\| (\d+) \| `(\w+)` \| `((?:[^`\\]|\\.)+)` \|")


def parse_layouts(markdown: str) -> dict[str, Layout]:
    """Every ``#### `Name` (tag N)`` table in `markdown`, as (field, kind) pairs."""
    found: dict[str, Layout] = {}
    name: str | None = None
    tag: int | None = None
    fields: list[tuple[str, str]] = []

    def flush() -> None:
        if name is not None:
            found[name] = Layout(name, tag, tuple(fields))

    for line in markdown.splitlines():
        title = _TITLE.match(line)
        if title:
            flush()
            name, tag, fields = (
                title.group(1),
                (int(title.group(2)) if title.group(2) else None),
                [],
            )
            continue
        row = _ROW.match(line)
        if row and name is not None:
            field, kind = row.group(2), row.group(3).replace("\\|", "|")
            if tag is not None and field in ("tag", "version") and int(row.group(1)) < 2:
                continue
            fields.append((field, kind))
    flush()
    return found


def main(argv: list[str]) -> int:
    current = update(WIRE_SPEC, wire_blocks(), check="--check" in argv)
    if "--check" in argv and not current:
        print("stale: run python -m specs.tools.make_tables", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
