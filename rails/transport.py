"""The file-channel port: how a file rail hands a payment file to its bank and reads what the
bank sends back (status reports, notifications, statements, returns).

A real company reaches its bank's file channel through a host-to-host link (SFTP, EBICS, SWIFT
FileAct) that ends in a pair of folders; :class:`rails.transport_directory.DirectoryTransport` is
that (see ``docs/file-channel.md``). :class:`rails.testing.mockbank.MockBankHttpTransport`
speaks mock-bank's HTTP door and exists for tests only.

What every transport guarantees, and what the adapters (:mod:`rails.filebank`) build on:

- :meth:`FileTransport.send` delivers the *same bytes* under the same name on every retry, and
  never a half-written file;
- :meth:`FileTransport.messages` returns every message the bank sent, oldest first, each with an
  id that only grows, and keeps returning it on later calls (a restarted adapter sees everything
  again), while the channel itself reads each bank file exactly once;
- every failure is a typed :class:`~rails.errors.RailError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class BankMessage:
    """One message the bank released: its id (monotonic), type, and raw body.

    `type` is the message's family and version (``pain.002.001.10``, ``camt.054.001.08``) for
    ISO 20022, or the channel's own name for a flat file (``nacha.ack``, ``bai2.statement``).
    """

    id: int
    type: str
    account: str | None
    body: bytes


@dataclass(frozen=True, slots=True)
class PostAnswer:
    """A bank's synchronous answer to a posted file, where the channel has one (an HTTP door);
    a folder channel answers only later, with a status report."""

    status: int
    body: dict[str, Any]


@runtime_checkable
class FileTransport(Protocol):
    async def send(self, name: str, data: bytes, content_type: str) -> PostAnswer | None:
        """Hand one file to the bank; its synchronous answer, or None when it has none."""
        ...

    async def messages(self, type_prefix: str, after_id: int = 0) -> list[BankMessage]:
        """Every message whose type starts with `type_prefix` and id exceeds `after_id`."""
        ...

    async def payment(self, end_to_end_id: str) -> dict[str, Any] | None:
        """The bank's own record of a payment, where the channel can be asked (an HTTP door,
        after a duplicate answer); None when it has none or cannot be asked."""
        ...

    async def aclose(self) -> None: ...
