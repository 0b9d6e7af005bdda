"""The two roles one daemon plays (DESIGN §1): a company's node, or the arbiter both trust."""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    NODE = "node"
    """Holds its identity key, opens channels, pays and is paid, closes."""
    ARBITER = "arbiter"
    """Holds the deposits in escrow, confirms them, decides disputes, pays out."""

    @classmethod
    def parse(cls, text: str) -> Role | None:
        """The role named `text`, or None for anything else."""
        return cls._value2member_map_.get(text)  # type: ignore[return-value]
