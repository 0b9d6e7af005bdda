"""Single updates through ``POST /api/channels/{id}/pay``, paced open loop, against real daemons.

What ``meterline bench`` does for ``admin_latency`` (node/bench.py ``_admin_phase``), alone and
with an optional py-spy profile of the sending and the receiving node (warm-up included):

    python docs/perf/single_load.py --count 1500 [--rate 1000] [--profile /tmp/single]

Prints one JSON line: p50/p99 ms, the rate achieved, whether the load saturated the node, the
sender's and the receiver's CPU ms per update (from /proc/PID/stat), the unloaded p50, and the
load average before and after.
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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from node.bench import AdminClient, _quiet_logs
from node.bench_figures import TARIFF, UNIT
from node.cluster import start_companies
from node.measure import paced, sequential


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


async def _run(companies: Any, cid: str, args: argparse.Namespace) -> dict[str, Any]:
    man, car = companies.manufacturer, companies.carrier
    admin = AdminClient(man.admin_port, man.token)
    path = f"/api/channels/{cid}/pay"
    try:
        await admin.call("POST", path, {"units": {UNIT: "1"}, "repeat": 200})

        async def single() -> None:
            await admin.call("POST", path, {"units": {UNIT: "1"}})

        unloaded = await sequential(single, 50)
        before = _cpu_ticks(man.process.pid), _cpu_ticks(car.process.pid)
        load = await paced(single, rate=args.rate, count=args.count)
        after = _cpu_ticks(man.process.pid), _cpu_ticks(car.process.pid)
    finally:
        await admin.close()
    hz = os.sysconf("SC_CLK_TCK")
    done = max(1, len(load.latencies_s))
    return {"count": len(load.latencies_s), "offered": load.offered, "rate": args.rate,
            "p50_ms": round(_pct(load.latencies_s, 0.5), 2),
            "p99_ms": round(_pct(load.latencies_s, 0.99), 2),
            "achieved_per_s": round(load.achieved_per_s, 1), "saturated": load.saturated,
            "sender_cpu_ms_per_update": round((after[0] - before[0]) * 1000 / hz / done, 3),
            "receiver_cpu_ms_per_update": round((after[1] - before[1]) * 1000 / hz / done, 3),
            "unloaded_p50_ms": round(_pct(unloaded, 0.5), 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1500)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--profile", default="")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="meterline-single-"))
    _quiet_logs()
    load_before = os.getloadavg()[0]
    companies = start_companies(work, manufacturer_balance=100_000_000, say=None)
    try:
        cid = companies.open_channel(tariff=[TARIFF])
        spies = [subprocess.Popen(
            [shutil.which("py-spy") or "py-spy", "record", "-p", str(handle.process.pid),
             "-r", "200", "--nonblocking", "-o", f"{args.profile}-{role}.svg"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for role, handle in (("sender", companies.manufacturer),
                                 ("receiver", companies.carrier)) if args.profile]
        result = asyncio.run(_run(companies, cid, args))
        for spy in spies:
            spy.send_signal(2)
            spy.wait()
    finally:
        companies.cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    result["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
