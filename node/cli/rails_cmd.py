"""`meterline rails ...`: checks of bank files, the statement reconciliation, and the account
holder's authorisation of payments at the bank.

``validate`` does not talk to the daemon: validating a file needs nothing but the file, and
running the exact functions the adapters gate on is the point (a file this passes, the adapter
sends). ``reconcile`` and ``authorise`` are thin clients of the admin API
(``GET /api/rails/reconcile``, ``/api/rails/consents``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import click

from node.cli.client import Admin, data_dir_option, emit, json_option
from node.cli.render import table
from rails.money import format_minor
from rails.validate import is_clean, validate_file


@click.group(name="rails")
def rails() -> None:
    """Bank-rail tools: validate payment files, reconcile the bank's statement.

    \b
    Example:
      meterline rails validate payout.xml
      meterline rails reconcile --since 2026-10-01
      meterline rails authorise
    """


@rails.command(name="validate")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print findings as a JSON list.")
def validate(file: Path, as_json: bool) -> None:
    """Check FILE (pain.001.001.09 or NACHA) with the rules the adapters apply.

    Prints every finding: where (element path or line/column), reason code, message. Exit
    status is 0 only when there is no error finding (warnings alone pass).

    \b
    Example:
      meterline rails validate payout.xml
      meterline rails validate --json payout.ach | jq '.[].code'
    """
    fmt, findings = validate_file(file.read_bytes())
    if as_json:
        click.echo(json.dumps(
            [{"format": fmt.value, "path": f.path, "code": f.code, "severity": f.severity,
              "message": f.message} for f in findings],
            indent=2, sort_keys=True))
    else:
        errors = sum(1 for f in findings if f.severity == "error")
        click.echo(f"{file}: {fmt.value}, {errors} error(s), "
                   f"{len(findings) - errors} warning(s)")
        for f in findings:
            click.echo(f"{f.severity} {f.code} at {f.path}: {f.message}")
    sys.exit(0 if is_clean(findings) else 1)


def _money(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return ""
    return f"{format_minor(int(entry['amount_minor']), entry['currency'])} {entry['currency']}"


@rails.command(name="reconcile")
@click.option("--since", metavar="YYYY-MM-DD", help="First booking/submission day (inclusive).")
@click.option("--until", metavar="YYYY-MM-DD", help="Last booking/submission day (inclusive).")
@data_dir_option
@json_option
def reconcile(since: str | None, until: str | None, data_dir: Path | None,
              as_json: bool) -> None:
    """Match the bank's statement to this node's payments for a period.

    Asks the running node, which asks its rail: every payment the statement shows booked
    (by end-to-end id, amount and currency), every difference (another amount, no booking by
    the deadline, a debit nobody here made), and the payments still waiting. Exit status is 1
    when there is any difference.

    \b
    Example:
      meterline rails reconcile --since 2026-10-01 --until 2026-10-31
      meterline rails reconcile --json | jq '.differences'
    """
    query = urlencode({k: v for k, v in (("since", since), ("until", until)) if v})
    data = Admin(data_dir).call("GET", "/api/rails/reconcile" + (f"?{query}" if query else ""))
    rows = [(m["outcome"], m["key"], m["entry"]["end_to_end_id"] or "",
             _money(m["entry"]), m["entry"]["booking_date"] or "") for m in data["matches"]]
    lines = [f"rail {data['rail']}, {data['since'] or 'start'} to {data['until'] or 'now'}"]
    lines.append(table(["MATCH", "PAYMENT", "END-TO-END ID", "AMOUNT", "BOOKED"], rows)
                 if rows else "no payment matched")
    if data["differences"]:
        lines.append(table(["DIFFERENCE", "PAYMENT", "AMOUNT", "REASON"], [
            (d["kind"], d["key"] or "", _money(d["entry"]), d["reason"])
            for d in data["differences"]]))
    else:
        lines.append("no differences")
    if data["outstanding"]:
        lines.append("waiting for a booking: " + ", ".join(data["outstanding"]))
    emit(data, as_json, "\n".join(lines))
    sys.exit(1 if data["differences"] else 0)


@rails.command(name="authorise")
@click.option("--redirect", metavar="URL",
              help="The URL the bank sent the account holder back to (with code and state).")
@data_dir_option
@json_option
def authorise(redirect: str | None, data_dir: Path | None, as_json: bool) -> None:
    """Authorise payments at the bank as the account holder (Open Banking consents).

    Without --redirect: lists the payments waiting for the account holder, each with the
    bank's authorisation URL. Open it in a browser, log in at the bank and approve (or
    decline); the bank then sends the browser to the rail's redirect_uri with a code. Give
    that whole URL with --redirect and the node trades the code and makes the payment (a
    declined one is rejected). A URL that is not the redirect_uri, or whose state this node
    did not give out, is refused and changes nothing (exit 3).

    \b
    Example:
      meterline rails authorise
      meterline rails authorise --redirect 'https://tpp.example/cb?code=...&state=...'
    """
    admin = Admin(data_dir)
    if redirect is None:
        data = admin.call("GET", "/api/rails/consents")
        rows = [(c["key"], f"{format_minor(int(c['amount_minor']), c['currency'])} "
                           f"{c['currency']}", c["authorisation_url"]) for c in data["consents"]]
        emit(data, as_json, table(["PAYMENT", "AMOUNT", "AUTHORISE AT"], rows) if rows
             else "no payment is waiting for the account holder")
        return
    record = admin.call("POST", "/api/rails/consents/authorise", {"redirect": redirect})
    money = f"{format_minor(int(record['amount_minor']), record['currency'])} {record['currency']}"
    why = f" ({record['reason_code']}: {record['reason']})" if record["reason_code"] else ""
    emit(record, as_json, f"{record['key']}: {money} {record['status']}{why}")
