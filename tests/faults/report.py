"""Write specs/reliability.md from the figures the last fault-suite run left.

    python -m tests.faults.report [--results DIR] [--out specs/reliability.md]

The suites write `<name>.json` to METERLINE_FAULTS_RESULTS while they run (tests/faults/
figures.py; tests/faults/conftest.py defaults it to ``.pytest_cache/faults`` under the
repository); this reads them and writes the page. A suite that did not run says so on the page:
nothing is filled in from anywhere else.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

from tests.faults.figures import RESULTS_ENV

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RESULTS = ROOT / ".pytest_cache" / "faults"
DEFAULT_OUT = ROOT / "specs" / "reliability.md"
FOUND = (
    ("a close left in a party's outbox by a kill during a cooperative close was refused "
     "INVALID_STATE by the settled peer and retried every 2 s for ever; a settled channel now "
     "retires its pending messages",
     "test_a_settled_channel_leaves_no_message_retried_for_ever"),
    ("a payer killed just after proposing lost the acceptance carried in the answer and kept "
     "the channel `proposed` for ever while the payee had paid its deposit into escrow; the "
     "watch now asks again once the arbiter knows the channel",
     "test_an_acceptance_lost_in_the_answer_is_asked_for_again"),
    ("two copies of one proposal at once made the payee answer 500 (a failed second insert); "
     "they now get one acceptance", "test_two_copies_of_one_proposal_at_once_get_one_acceptance"),
    ("`pay --repeat` killed in its first chunk said nothing of what was acknowledged, and later "
     "only the chunks; it now reports the receipts' nonce and the updates in flight",
     "tests/faults/test_crash_cli.py"),
    ("a client gone while the sandbox bank held a checkpoint payout's answer made its "
     "`unhandled` log line render every frame's local variables, a bank client's key material "
     "among them; a daemon's JSON traceback now carries the frames without their locals",
     "test_a_logged_traceback_carries_no_local_variable"),
)
"""Bugs the crash suite found, fixed in node/, each pinned by a test (ADR 0240)."""
VICTIMS = ("payer", "payee", "arbiter", "bank")
MOMENTS = ("funding", "stream", "checkpoint", "close", "payout", "dispute")


def load(results: Path) -> dict[str, dict[str, Any]]:
    figures: dict[str, dict[str, Any]] = {}
    for path in sorted(results.glob("*.json")):
        data = json.loads(path.read_text())
        data["_recorded"] = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
        figures[path.stem] = data
    return figures


def _when(data: dict[str, Any]) -> str:
    stamp: dt.datetime = data["_recorded"]
    return stamp.strftime("%Y-%m-%d %H:%M UTC")


def _not_run(name: str) -> list[str]:
    return [f"*Not in the last run* (no `{name}.json`): run `pytest tests/faults`, then "
            f"this command again.", ""]


def crash_section(f: dict[str, dict[str, Any]]) -> list[str]:
    out = ["## Crash suite (kill -9 of real processes)", "",
           "tests/faults/test_crash.py: one cluster (sandbox bank, arbiter, payer, payee, each "
           "a real `meterline` process), a seeded choice of moment and victim per cycle, "
           "kill -9, restart of that process only, and the checks of tests/faults/crash.py "
           "after every cycle and at the end.", ""]
    c = f.get("crash")
    if c is None:
        return out + _not_run("crash")
    grid = c["by_victim_and_moment"]
    out += [f"Seed {c['seed']}, {c['cycles']} cycles over {c['channels']} channels in "
            f"{c['seconds']} s (recorded {_when(c)}).", "",
            "| killed \\ moment | " + " | ".join(MOMENTS) + " | all |",
            "|---|" + "---:|" * (len(MOMENTS) + 1)]
    for victim in VICTIMS:
        row = [str(grid.get(f"{victim}/{m}", 0) or "–") for m in MOMENTS]
        out.append(f"| {victim} | " + " | ".join(row) + f" | {c['by_victim'].get(victim, 0)} |")
    out.append("| all | " + " | ".join(str(c["by_moment"].get(m, 0)) for m in MOMENTS)
               + f" | {c['cycles']} |")
    checks = c.get("checks", {})
    spent = c.get("seconds_in", {})
    out += ["", "Checks made: " + ", ".join(f"{k} {v}" for k, v in sorted(checks.items())
                                             if not k.startswith("kill ")) + "."]
    if spent:
        out.append("Time spent: " + ", ".join(f"{k} {v:g} s" for k, v in spent.items())
                   + f" of {c['seconds']} s (a restart is a new Python process: it dominates, "
                   "and grows with the machine's load).")
    out += ["",
            "The checkpoint moment settles without closing by hand (`POST "
            "/api/channels/{id}/settle`) and kills the payer or payee while it is co-signed, "
            "or the arbiter or bank while its payout is at the bank with the answer held back; "
            "at the end each checkpoint payout is booked once, at the amount both nodes "
            "recorded, and checkpoints plus the close sum to the deposits. The bank is "
            "not killed during a dispute window (it holds nothing of it) and the payer and "
            "payee are not killed in the payout moment (the arbiter's request to the bank is "
            "the moment).", ""]
    out += ["Found by this suite and fixed (each pinned by a test in tests/faults/):", ""]
    out += [f"- {what} (`{test}`)." for what, test in FOUND]
    out.append("")
    cli = [v for k, v in sorted(f.items()) if k.startswith("crash_cli")]
    if cli:
        out += ["`meterline pay --repeat` killed under it (tests/faults/test_crash_cli.py): "
                + "; ".join(f"{d['acknowledged']:,} of {d['repeat']:,} acknowledged as "
                            f"reported, payee committed {d['payee_committed']:,}, "
                            f"{d['delivered_after_restart']:,} after the restart"
                            for d in cli) + ".", ""]
    return out


def simulation_section(f: dict[str, dict[str, Any]]) -> list[str]:
    out = ["## Deterministic simulation", ""]
    s = f.get("simulation")
    if s is None:
        return out + _not_run("simulation")
    out += [f"Seed {s['seed']}: {s['steps']:,} steps, {s['episodes']:,} episodes in "
            f"{s['seconds']} s (recorded {_when(s)}); invariants checked after every step.",
            "", "| fault injected | count |", "|---|---:|"]
    out += [f"| {k} | {v:,} |" for k, v in sorted(s["faults"].items())]
    out += ["", "Endings: " + ", ".join(f"{k} {v:,}" for k, v in sorted(s["endings"].items()))
            + ".", f"Failures outside the known gaps: {len(s['failures'])}."]
    for gap, text in sorted(s.get("known_gaps", {}).items()):
        out.append(f"Known gap `{gap}`: {text}")
    return [*out, ""]


def hostile_section(f: dict[str, dict[str, Any]]) -> list[str]:
    out = ["## Hostile input", ""]
    fuzz = f.get("decoder_fuzz")
    out += ([f"- Wire decoder under atheris: {fuzz['executions']:,} executions in "
             f"{fuzz['seconds']:g} s, {fuzz['crashes']} crashes (recorded {_when(fuzz)})."]
            if fuzz else ["- Wire decoder under atheris: *not in the last run*."])
    posts, gets, stream = f.get("peer_posts"), f.get("peer_gets"), f.get("stream")
    if posts:
        answers = ", ".join(f"{k}: {v:,}" for k, v in sorted(posts["answers"].items()))
        out.append(f"- Peer POST endpoints: {posts['bodies']:,} hostile bodies (answers "
                   f"{answers}), {posts['wrong']} wrong.")
    else:
        out.append("- Peer POST endpoints: *not in the last run*.")
    out.append(f"- Peer GET endpoints: {gets['requests']:,} hostile requests, {gets['wrong']} "
               f"wrong." if gets else "- Peer GET endpoints: *not in the last run*.")
    out.append(f"- The WebSocket stream: {stream['connections']:,} connections, "
               f"{stream['frames']:,} hostile frames, {stream['wrong']} wrong." if stream
               else "- The WebSocket stream: *not in the last run*.")
    logs = f.get("logs")
    if logs and logs.get("admin_cases"):
        cases = logs["admin_cases"]
        out.append(f"- Admin API under schemathesis: {sum(cases.values()):,} cases over "
                   f"{len(cases)} operations.")
    else:
        out.append("- Admin API under schemathesis: *not in the last run*.")
    return [*out, ""]


def logs_section(f: dict[str, dict[str, Any]]) -> list[str]:
    out = ["## Secrets in logs", "",
           "Every line of every daemon's log grepped for the admin tokens, the key bytes (hex, "
           "HEX, base64, base64url), the TPP signing keys and credential shapes (bearer "
           "tokens, JWS/JWT, 43-character tokens; tests/faults/crash_logs.py).", "",
           "| run | files | lines | secrets looked for | hits |", "|---|---:|---:|---:|---:|"]
    for name, what in (("crash_logs", "the crash run"), ("demo_logs", "`meterline demo`"),
                       ("logs", "the hostile-input run")):
        d = f.get(name)
        out.append(f"| {what} | {d['files']} | {d['lines']:,} | {d['secrets']} | "
                   f"{d['leaks']} |" if d else f"| {what} | – | – | – | not run |")
    return [*out, ""]


def totals(f: dict[str, dict[str, Any]]) -> dict[str, int | None]:
    crash = f.get("crash")
    posts = f.get("peer_posts")
    five = None
    if crash is not None or posts is not None:
        five = (crash or {}).get("server_errors", 0) + sum(
            v for k, v in (posts or {}).get("answers", {}).items() if int(k) >= 500)
    return {"lost updates": None if crash is None else crash["lost_updates"],
            "double payouts": None if crash is None else crash["double_payouts"],
            "5xx answers": five,
            "secrets in logs": sum(f[n]["leaks"] for n in ("crash_logs", "demo_logs", "logs")
                                   if n in f) if any(n in f for n in ("crash_logs", "demo_logs",
                                                                      "logs")) else None}


def render(f: dict[str, dict[str, Any]]) -> str:
    t = totals(f)
    out = ["# Reliability: what the fault suite broke on purpose, and what was lost", "",
           "<!-- generated by `python -m tests.faults.report` from the figures of the last "
           "`pytest tests/faults` run; do not edit by hand -->", "",
           "| lost updates | double payouts | 5xx answers | secrets in logs |",
           "|---:|---:|---:|---:|",
           "| " + " | ".join("not run" if v is None else str(v) for v in t.values()) + " |",
           "",
           "Lost updates: receipted updates missing from the payee's committed state. Double "
           "payouts: a deposit or payout reference booked twice at the bank. 5xx answers: the "
           "crash suite's admin calls and the peer-endpoint fuzz (the admin API's schemathesis "
           "run fails on any 5xx but a documented 502 PEER_UNAVAILABLE).", ""]
    out += crash_section(f) + simulation_section(f) + hostile_section(f) + logs_section(f)
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.report",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=None,
                        help=f"the figures' directory (default ${RESULTS_ENV}, else "
                             f"{DEFAULT_RESULTS.relative_to(ROOT)})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"the page to write (default {DEFAULT_OUT.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    results = args.results or Path(os.environ.get(RESULTS_ENV) or DEFAULT_RESULTS)
    if not results.is_dir():
        print(f"no figures at {results}: run `pytest tests/faults` first", file=sys.stderr)
        return 1
    figures = load(results)
    if not figures:
        print(f"no figures at {results}: run `pytest tests/faults` first", file=sys.stderr)
        return 1
    args.out.write_text(render(figures))
    print(f"wrote {args.out} from {len(figures)} figure files in {results}")
    bad = {k: v for k, v in totals(figures).items() if v}
    if bad:
        print(f"not zero: {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
