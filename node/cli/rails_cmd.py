"""`meterline rails ...`: offline checks of bank files, with the adapters' own rules.

This noun does not talk to the daemon: validating a file needs nothing but the file, and running
the exact functions the adapters gate on is the point (a file this passes, the adapter sends).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from rails.validate import is_clean, validate_file


@click.group(name="rails")
def rails() -> None:
    """Bank-rail tools: validate payment files before they reach a bank.

    \b
    Example:
      meterline rails validate payout.xml
      meterline rails validate --json payout.ach
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
