"""`meterline pay --repeat` running while its node is killed: it reports what was acknowledged.

The operator's view of the crash suite: the CLI sends its updates in chunks of
node.cli.pay.CHUNK; kill -9 of the payer's node in the middle of a chunk (the first one, and a
later one) must leave the CLI saying exactly what it knows — the updates acknowledged, the
receipts' nonce, the updates in flight — and every number it says is held against the committed
state: the payer's and the payee's SQLite files, and both nodes once the payer is back.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.cli.exits import NOT_RUNNING
from node.cli.pay import CHUNK
from node.cluster import NodeHandle
from node.storage.codec import decode_channel
from protocol import channel as ch
from tests.e2e.cluster import Companies, companies, wait_for
from tests.faults.figures import record

REPEAT = 3 * CHUNK


def committed(handle: NodeHandle, cid: str) -> ch.ChannelState:
    db = handle.directory / "meterline.sqlite"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        (blob,) = conn.execute("SELECT state FROM channel WHERE id = ?", (cid,)).fetchone()
    return decode_channel(blob)


@pytest.fixture
def cos(tmp_path: Path) -> Iterator[Companies]:
    with companies(tmp_path) as c:
        yield c


@pytest.mark.parametrize("cut_after", [CHUNK // 3, CHUNK + CHUNK // 2])
def test_pay_repeat_killed_says_what_was_acknowledged(cos: Companies, cut_after: int) -> None:
    cid = cos.open_channel()
    man, car = cos.manufacturer, cos.carrier
    cos.manufacturer.api("POST", f"/api/channels/{cid}/pay", {"units": {"km": "1"},
                                                              "repeat": 7})
    start = car.api("GET", f"/api/channels/{cid}")["nonce_received"]
    assert start == 7
    proc = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "pay", cid[:12], "--units", "km=1", "--ref", "CUT",
         "--repeat", str(REPEAT), "--data-dir", str(man.directory), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: car.api("GET", f"/api/channels/{cid}")["nonce_received"]
             >= start + cut_after, "the CLI's stream to get going")
    man.stop(kill=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == NOT_RUNNING, (proc.returncode, out, err)
    assert out == ""
    assert "Traceback" not in err
    error = json.loads(err)["error"]
    done, acked, in_flight = error["acknowledged"], error["acked_nonce"], error["in_flight"]
    # the chunks that were answered: every one done before the cut, and perhaps the one under
    # way (on a fast machine it can be answered between the payee's count and the kill)
    assert done % CHUNK == 0, done
    assert (cut_after // CHUNK) * CHUNK <= done < REPEAT, done
    assert acked == start + done
    assert in_flight == CHUNK
    assert error["repeat"] == REPEAT
    assert f"{done:,} of {REPEAT:,} updates were acknowledged" in error["message"]
    assert f"receipts up to update {acked:,}" in error["message"]

    # what it says was acknowledged is committed on both sides; what it says was in flight
    # bounds what was signed beyond that
    payer, payee = committed(man, cid), committed(car, cid)
    # acknowledged means receipted by the payee after its commit: its stored receipt covers it
    # and the payer stored those proofs; the payer's own copy of the receipt may still have been
    # in memory at the kill (written within 50 ms, ADR 0306), it reads it back on restart
    assert payee.received.receipt is not None
    assert payee.received.receipt.nonce >= acked
    assert payer.sent.nonce >= acked
    assert payee.received.nonce >= payer.sent.acked_nonce
    assert payer.sent.nonce <= acked + in_flight
    assert payee.received.nonce <= payer.sent.nonce

    # the node back: the updates it signed are delivered and receipted, no more and no less
    man.start()
    wait_for(lambda: (lambda a, b: a["nonce_sent"] == a["acked_nonce_sent"]
                      == b["nonce_received"])(man.api("GET", f"/api/channels/{cid}"),
                                              car.api("GET", f"/api/channels/{cid}")),
             "the payer's stored updates to be receipted")
    after = car.api("GET", f"/api/channels/{cid}")
    record(f"crash_cli_{cut_after}", {
        "acknowledged": done, "repeat": REPEAT, "acked_nonce": acked,
        "payee_committed": payee.received.nonce - start,
        "delivered_after_restart": after["nonce_received"] - start})
    assert after["nonce_received"] == payer.sent.nonce
    assert after["units"]["received"]["km"] == str(payer.sent.nonce)
