"""A difference between the bank's statement and our payments reaches the operator: a real node
daemon with the Open Banking rail on a real sandbox bank whose transactions disagree, and the
real ``meterline rails reconcile``, which lists the difference and exits 1, then shows the
payment booked (exit 0) once the statement agrees."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from node.app import Node
from rails.port import PaymentStatus
from tests.rails.sandbox.conftest import AISP, Bank, Party, instruction
from tests.rails.sandbox.daemon import Cli, attach, node_daemon


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[tuple[Node, Cli]]:
    async with node_daemon(tmp_path / "node") as node:
        yield node, Cli(tmp_path / "node", "reconcile")


async def test_reconcile_raises_a_mismatch_and_a_missing_booking_to_the_operator(
        bank: Bank, parties: tuple[Party, Party], tmp_path: Path,
        daemon: tuple[Node, Cli]) -> None:
    node, cli = daemon
    alice, bob = parties
    rail = attach(node, alice, tmp_path / "rail.sqlite", booking_deadline=timedelta(seconds=1))
    transactions = f"{AISP}/accounts/{alice.account_id}/transactions"
    try:
        # one payment the statement shows with another amount, one it does not show yet
        bank.fault(path=transactions, method="GET", kind="misbook", count=100)
        wrong = instruction(alice, bob, 700, key="chan-1/payout/0")
        assert (await rail.submit(wrong)).status is PaymentStatus.UNRECONCILED
        bank.admin("DELETE", "/_sandbox/faults")
        bank.fault(path=transactions, method="GET", kind="withhold", count=100)
        missing = instruction(alice, bob, 300, key="chan-2/payout/0")
        assert (await rail.submit(missing)).status is PaymentStatus.ACCEPTED
        await asyncio.sleep(1.1)  # past the booking deadline

        status, answer, err = await cli()
        assert status == 1, err  # a difference: exit 1
        assert answer["matches"] == []
        assert {(d["kind"], d["key"]) for d in answer["differences"]} == {
            ("missing_booking", "chan-1/payout/0"), ("missing_booking", "chan-2/payout/0")}

        bank.admin("DELETE", "/_sandbox/faults")
        bank.fault(path=transactions, method="GET", kind="misbook", count=100)
        status, text, _ = await cli(as_json=False)
        assert status == 1
        assert "amount_mismatch" in text
        assert "chan-1/payout/0" in text
        assert "no payment matched" in text

        bank.admin("DELETE", "/_sandbox/faults")

        # the statement agrees now: both booked, no difference, exit 0
        status, answer, err = await cli()
        assert status == 0, err
        assert answer["differences"] == []
        assert {(m["key"], m["outcome"], m["entry"]["amount_minor"])
                for m in answer["matches"]} == {("chan-1/payout/0", "booked", "700"),
                                                ("chan-2/payout/0", "booked", "300")}
    finally:
        await rail.aclose()
