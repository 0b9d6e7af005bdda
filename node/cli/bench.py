"""`meterline bench`: DESIGN §8's figures, measured on this machine."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from node.cli.client import json_option
from node.cli.render import table


def _progress(started: float) -> Any:
    tty = sys.stderr.isatty()

    def say(text: str) -> None:
        line = f"[{time.monotonic() - started:5.1f} s] {text}"
        if tty:
            click.echo(f"\r\x1b[2K{line}", nl=False, err=True)
        else:
            click.echo(line, err=True)

    return say


def _num(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:,.2f} ms"
    if unit in ("s",):
        return f"{value:,.2f} s"
    if unit == "MB":
        return f"{value:,.1f} MB"
    if unit == "channels":
        return f"{value:,.0f}"
    return f"{value:,.0f}/s"


def _verdict(fig: dict[str, Any]) -> str:
    return {True: "met", False: "NOT met", None: "-"}[fig["met"]]


def _maybe(value: float | None, unit: str) -> str:
    return "-" if value is None else _num(value, unit)


def targets_table(report: dict[str, Any]) -> str:
    """Issue 13's targets: each figure, its target, the ratio and the status (missed ones too)."""
    rows = []
    for row in report["targets"]:
        unit = row["unit"]
        tgt = row["target"]
        target = tgt["text"] if tgt["value"] is None else \
            f"{tgt['op'].replace('>=', '≥').replace('<=', '≤')} {_num(tgt['value'], unit)}"
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:,.3f} (vs {row['factor']:g})"
        rows.append((row["name"], _maybe(row["figure"], unit), target, ratio, row["status"]))
    return table(["FIGURE", "MEASURED", "TARGET", "RATIO", "STATUS"], rows)


def render(report: dict[str, Any]) -> str:
    f = report["figures"]
    ceil, upd, units = f["verify_ceiling"], f["signed_updates"], f["metered_units"]
    floor = f["latency_floor"]
    lat, adm = f["latency"], f["admin_latency"]
    cmp_ = report["comparison"]
    rows: list[tuple[str, str, str, str]] = [
        ("1 Ed25519 verify ceiling (1 core)", _num(ceil["value"], ""), "reference", "-"),
        ("  latency floor (sign+verify+2 commits+WS)", _num(floor["value"], "ms"),
         "reported", "-"),
        ("2 signed updates/s (1 unit each)", _num(upd["value"], ""),
         f"≥ {_num(upd['target']['value'], '')}", _verdict(upd)),
        ("  … ratio to verify ceiling", f"{upd['ratio_to_ceiling']:.2f} ×",
         f"≥ {upd['ratio_target']['value']:.2f} ×", "met" if upd["ratio_met"] else "NOT met"),
        (f"3 metered units/s ({units['units_per_update']:,} per update)",
         f"{units['value']:,.0f}/s", "≥ 1,000,000/s", _verdict(units)),
    ]
    for name, block in (("stream, in-node", lat), ("admin API", adm)):
        sat = " (saturated)" if block["saturated"] else ""
        rows += [
            (f"4 latency p50 @1,000/s, {name}", _num(block["p50"]["value"], "ms"),
             f"≤ {_num(block['p50']['target']['value'], 'ms')}", _verdict(block["p50"])),
            (f"  latency p99 @1,000/s, {name}", _num(block["p99"]["value"], "ms"),
             f"≤ {_num(block['p99']['target']['value'], 'ms')}", _verdict(block["p99"])),
            (f"  achieved rate while paced{sat}", f"{block['achieved_rate_per_s']:,.0f}/s",
             "1,000/s", "-"),
            (f"  unloaded p50 / p99, {name}",
             f"{block['unloaded_p50_ms']:,.2f} / {block['unloaded_p99_ms']:,.2f} ms",
             "-", "-"),
        ]
    ev = f["events_per_s"]
    rows += [
        (f"7 usage events/s (batches of {ev['batch']})", _num(ev["value"], ""),
         "≥ 10,000/s", _verdict(ev)),
        ("  … one request per event", _num(ev["single_request_per_s"], ""), "-", "-"),
    ]
    rows += [
        ("5 vs Lightning best (89/s, published)", f"{cmp_['ratio_to_lightning']:,.1f} ×",
         "-", "-"),
        ("  vs Raiden (164/s, simulated, published)", f"{cmp_['ratio_to_raiden']:,.1f} ×",
         "-", "-"),
    ]
    scale = report["scale"]
    if scale["measured"]:
        rss, restart = scale["rss"], scale["restart"]
        rows += [
            (f"6 receiver RSS, {scale['channels_open']} open channels",
             _num(rss["value"], "MB"), "10k in ≤ 300 MB", _verdict(rss)),
            ("  per channel / linear guess at 10k",
             f"{rss['per_channel_kb']:,.1f} KB / " + (
                 "-" if rss["extrapolated_10k_mb"] is None
                 else f"{rss['extrapolated_10k_mb']:,.0f} MB"),
             "≤ 300 MB", "indicative"),
            (f"  restart to first update, {scale['channels_open']} channels",
             _maybe(restart["value"], "s"), "10k in ≤ 3 s",
             restart.get("reason") or _verdict(restart)),
        ]
        rows += [(f"  aggregate, {p['channels']} channel(s) streaming",
                  _num(p["updates_per_s"], ""), "≥ 0.8 × 1 channel" if p["channels"] > 1
                  else "reference", f"{p['ratio_to_one']:.2f} ×")
                 for p in report["curve"]["points"]]
    else:
        rows.append(("6 scale", "skipped", "-", scale["reason"]))
    pg = report["postgresql"]
    if pg["measured"]:
        rows += [("8 PostgreSQL signed updates/s", _num(pg["signed_updates_per_s"], ""),
                  "≥ 0.3 × SQLite", f"{pg['ratio_to_sqlite']:.2f} ×"),
                 ("  PostgreSQL latency p50 / p99 @1,000/s",
                  f"{pg['admin_latency']['p50']['value']:,.2f} / "
                  f"{pg['admin_latency']['p99']['value']:,.2f} ms", "-", "-")]
    else:
        rows.append(("8 PostgreSQL", "skipped", "-", pg["reason"]))
    m = report["machine"]
    lines = [
        f"meterline bench: {m['cpus']} CPUs, Python {m['python']}, {m['platform']}",
        f"setup: {report['setup']}",
        "",
        table(["FIGURE", "MEASURED", "TARGET (DESIGN §8)", "VERDICT"], rows),
        "",
        "targets (issue 13), in this run:",
        targets_table(report),
        "",
        "what was measured:",
    ]
    for key, label in (("verify_ceiling", "1"), ("signed_updates", "2"),
                       ("metered_units", "3")):
        lines.append(f"  {label}. {f[key]['measured']}")
    lines.append(f"  floor: {floor['measured']}")
    lines.append(f"  4. {lat['p50']['measured']}")
    lines.append(f"     admin API: {adm['p50']['measured']}")
    lines.append(f"     unloaded = {lat['unloaded_count']} single updates one after another")
    lines.append(f"  5. {cmp_['sources']['lightning']}; {cmp_['sources']['raiden']}; "
                 f"{cmp_['note']}")
    if scale["measured"]:
        lines.append(f"  6. {scale['measured_how']}; {scale['rss']['note']}")
    lines.append(f"  7. {ev['measured']}; beside it {ev['single_events']:,} events one "
                 f"request each ({ev['batch_speedup']} × slower)")
    lines.append(f"run took {report['run_seconds']} s")
    return "\n".join(lines)


@click.command()
@click.option("--updates", type=click.IntRange(100, 1_000_000), default=None,
              help="Updates for the signed-updates figure [default: 20,000; 3,000 with --quick].")
@click.option("--quick", is_flag=True, help="Small counts: the whole run takes about a minute.")
@click.option("--no-scale", "no_scale", is_flag=True, help="Skip opening extra channels (6).")
@click.option("--scale-channels", type=click.IntRange(1, 10_000), default=None,
              help="Extra channels to open for the scale figure and the curve [default: 100; "
                   "10 with --quick].")
@click.option("--pg", "pg", metavar="URL", default=None,
              help="Also measure signed updates and latency with every daemon on this "
                   "PostgreSQL server (a fresh database each, dropped after) "
                   "[default: $METERLINE_BENCH_PG_URL].")
@json_option
def bench(updates: int | None, quick: bool, no_scale: bool, scale_channels: int | None,
          pg: str | None, as_json: bool) -> None:
    """Measure DESIGN §8's figures on this machine: verify ceiling, signed updates/s, metered
    units/s, latency at 1,000 updates/s and its floor, scale and the channel curve, and
    optionally PostgreSQL; every figure beside its target (issue 13), missed ones included.

    Starts a sandbox bank, an arbiter and two nodes (real processes) in a temporary directory,
    opens a channel, measures through the admin API and the channel's stream, and stops
    everything at the end. Progress goes to stderr; --json prints one stable JSON object.

    \b
    Example:
      meterline bench --quick
      meterline bench --updates 50000 --json > bench.json
      meterline bench --pg postgresql+asyncpg://postgres@127.0.0.1:5432/postgres
    """
    from node.bench import run
    from node.bench_pg import pg_url
    from node.cluster import ClusterError

    started = time.monotonic()
    say = _progress(started)
    try:
        report = run(quick=quick, updates=updates, scale=not no_scale,
                     scale_channels=scale_channels, pg_url=pg_url(pg), say=say)
    except ClusterError as exc:
        raise click.ClickException(f"could not run the benchmark: {exc}") from None
    finally:
        if sys.stderr.isatty():
            click.echo("\r\x1b[2K", nl=False, err=True)
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        click.echo(render(report))
