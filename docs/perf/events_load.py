"""Usage events/s through ``POST /api/channels/{id}/events`` against real daemons.

What ``meterline bench`` does for ``events_per_s`` (node/bench.py ``_events_phase``), alone and
with an optional py-spy profile of the sending and the receiving node while the batches go:

    python docs/perf/events_load.py --events 30000 [--profile /tmp/events] [--rounds 2]

Prints one JSON line per round: events, seconds, events/s, and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from node.bench_figures import EVENT_BATCH, EVENT_CLIENTS, TARIFF, UNIT
from node.cluster import start_companies


async def send(port: int, token: str, cid: str, prefix: str, total: int, size: int) -> float:
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    batches = [[{"id": f"{prefix}-{i}", "units": {UNIT: "1"}, "ref": "BENCH", "time": stamp}
                for i in range(start, min(total, start + size))]
               for start in range(0, total, size)]
    pending = iter(batches)
    accepted = 0
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"},
                                     connector=aiohttp.TCPConnector(limit=0)) as session:
        async def client() -> None:
            nonlocal accepted
            for batch in pending:
                async with session.post(f"http://127.0.0.1:{port}/api/channels/{cid}/events",
                                        json={"events": batch}) as resp:
                    answer = await resp.json()
                    if resp.status != 200:
                        raise RuntimeError(answer)
                    accepted += int(answer["accepted"])

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(EVENT_CLIENTS)))
        elapsed = time.perf_counter() - started
    if accepted != total:
        raise RuntimeError(f"{accepted} of {total} accepted")
    return elapsed


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--single", type=int, default=0, help="also N events one request each")
    parser.add_argument("--profile", help="py-spy both nodes: PREFIX-sender.svg, -receiver.svg")
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--raw", action="store_true", help="collapsed stacks, not a flame graph")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="events-load-"))
    companies = start_companies(work, manufacturer_balance=100_000_000)
    try:
        cid = companies.open_channel(tariff=[TARIFF])
        man, car = companies.manufacturer, companies.carrier
        run = f"{time.time_ns():x}"
        asyncio.run(send(man.admin_port, man.token, cid, f"{run}-warm", 500, EVENT_BATCH))
        spies: list[subprocess.Popen[bytes]] = []
        if args.profile:
            for role, handle in (("sender", man), ("receiver", car)):
                assert handle.process is not None
                spies.append(subprocess.Popen(
                    [shutil.which("py-spy") or "py-spy", "record", "--pid",
                     str(handle.process.pid), "-o",
                     f"{args.profile}-{role}.{'txt' if args.raw else 'svg'}", "-d",
                     str(args.duration), *(["--format", "raw"] if args.raw else [])],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(1.0)
        assert man.process is not None
        assert car.process is not None
        pids = {"sender": man.process.pid, "receiver": car.process.pid, "client": os.getpid()}
        for n in range(args.rounds):
            before = {role: cpu_s(pid) for role, pid in pids.items()}
            nonce = int(man.api("GET", f"/api/channels/{cid}")["nonce_sent"])
            seconds = asyncio.run(send(man.admin_port, man.token, cid, f"{run}-b{n}",
                                       args.events, EVENT_BATCH))
            row: dict[str, Any] = {"round": n, "events": args.events,
                                   "seconds": round(seconds, 3),
                                   "events_per_s": round(args.events / seconds),
                                   "cpu_ms_per_1000": {
                                       role: round((cpu_s(pid) - before[role]) * 1e6
                                                   / args.events, 1)
                                       for role, pid in pids.items()},
                                   "events_per_proof": round(args.events / (int(man.api(
                                       "GET", f"/api/channels/{cid}")["nonce_sent"]) - nonce)),
                                   "loadavg": Path("/proc/loadavg").read_text().split()[:3]}
            if args.single:
                single = asyncio.run(send(man.admin_port, man.token, cid, f"{run}-s{n}",
                                          args.single, 1))
                row["single_per_s"] = round(args.single / single)
            print(json.dumps(row), flush=True)
        for spy in spies:
            spy.wait()
    finally:
        companies.cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
