"""What the bank said of the arbiter's payouts, as inputs to its machine (specs/0004 §9).

The transfer rows (node.transfers) hold the rail's latest answer for every payout attempt;
each poll re-derives from them what the machine has not seen yet — a booking, a rejection
(pain.002 RJCT, a rejected Open Banking payment: AC04, AM04…) or a return after booking
(pacs.004, an ACH R-code return), a notification of change (an ACH COR entry, C01-C13) —
so a crash between saving an answer and applying it loses nothing. The machine decides what
follows (settled, paid again to a corrected account, later payouts to a corrected account);
this module only translates.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from node.storage.models import Transfer as TransferRow
from protocol import arbiter as arb
from protocol import transfers as tr
from protocol.crypto import Signer
from protocol.errors import ProtocolError
from protocol.references import Purpose, bank_reference

NARRATIVE = "NARR"
"""ISO 20022's code for "the reason is in the text": a bank answer without a usable code."""


def reason_code(reason: str) -> str:
    """The bank's reason code from a transfer row's reason ("AC04 account closed" → AC04)."""
    code = reason.split(" ", 1)[0] if reason else ""
    return code if tr.REASON.fullmatch(code) else NARRATIVE


NOC_DATA = re.compile(r"corrected data '([^']*)'")
"""How rails.nacha.answers.Correction.reason carries the corrected data, after the C code."""


def correction(reason: str) -> tuple[str, str] | None:
    """(C code, corrected data) of a notification of change kept as a row's reason."""
    code = reason.split(" ", 1)[0] if reason else ""
    found = NOC_DATA.search(reason)
    if not tr.CHANGE_CODE.fullmatch(code) or found is None:
        return None
    return code, found.group(1)


def bank_answers(state: arb.ArbiterState, rows: Sequence[TransferRow], signer: Signer
                 ) -> list[arb.Input]:
    """The inputs the rows' answers make that `state` has not taken yet, oldest first."""
    inputs: list[arb.Input] = []
    for row in rows:
        if row.purpose != "payout":
            continue
        try:
            attempt = tr.find(state.transfers, row.reference)
        except ProtocolError:
            # a payout decided before attempts were recorded: only its booking is known (the
            # close's first attempt only: a checkpoint's row the machine forgot is no close)
            if (row.status == "booked" and state.phase is arb.ArbiterPhase.PAYING
                    and not state.booked[row.party]
                    and row.reference == bank_reference(state.channel_id, Purpose.PAYOUT,
                                                        row.party)):
                inputs.append(arb.ObservePayoutBooked(signer, row.party, row.updated_ms))
            continue
        if row.status == "booked" and attempt.status is tr.TransferStatus.SUBMITTED:
            inputs.append(arb.ObserveTransferBooked(signer, attempt.reference, row.updated_ms))
        noc = correction(row.reason) if row.status == "booked" else None
        if noc is not None:  # booked, with a notification of change: for later payouts
            inputs.append(arb.ObservePayoutCorrected(attempt.reference, noc[0], noc[1],
                                                     row.updated_ms))
        elif (row.status in ("rejected", "returned")
              and attempt.status is not tr.TransferStatus.RETURNED):
            inputs.append(arb.ObservePayoutReturned(attempt.reference, reason_code(row.reason),
                                                    row.updated_ms, signer,
                                                    rejected=row.status == "rejected"))
    return inputs
