"""Exit codes a script can act on, and errors as JSON on stderr with ``--json``.

======  =========================================================================================
 code   meaning
======  =========================================================================================
 0      done
 1      failed here (a bad config or data directory, a file that cannot be written, …)
 2      usage error: an unknown command or option, a missing or malformed argument
 3      refused: the node (or through it the peer, the arbiter, the bank) answered with an error
 4      not running: nothing answers at the node's admin address (or the bank's URL)
 5      timed out waiting — what was asked may still happen (updates may still land); look again
======  =========================================================================================

With ``--json`` anywhere on the command line an error is one JSON object on stderr:
``{"error": {"code": "NOT_ACKNOWLEDGED", "message": "…", "exit": 5}}``; ``code`` is the admin API's
error code when the node answered (specs/admin-api.yaml), else one of ``USAGE``, ``NOT_RUNNING``,
``TIMED_OUT``, ``ALREADY_RUNNING``, ``FAILED``.
"""

from __future__ import annotations

import json
import sys

import click

OK, FAILED, USAGE, REFUSED, NOT_RUNNING, TIMED_OUT = 0, 1, 2, 3, 4, 5

TABLE = """\b
Exit status:
  0  done
  1  failed here (bad config, data directory, file)
  2  usage error (unknown command or option, bad argument)
  3  refused by the node, the peer, the arbiter or the bank
  4  not running (nothing answers at the admin address)
  5  timed out waiting: it may still happen (updates may still land)
With --json, errors are JSON on stderr: {"error": {"code", "message", "exit"}}."""


class CliError(click.ClickException):
    """A failure with a stable code and one of the exit statuses above."""

    def __init__(self, message: str, *, code: str = "FAILED", exit_code: int = FAILED,
                 details: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.details = details or {}
        """More fields of the ``--json`` error object (``pay``: what was acknowledged)."""
        self.exit_code = exit_code  # type: ignore[misc]  # click reads it per instance


def refused(message: str, code: str) -> CliError:
    return CliError(message, code=code, exit_code=TIMED_OUT if code == "NOT_ACKNOWLEDGED"
                    else REFUSED)


def not_running(message: str) -> CliError:
    return CliError(message, code="NOT_RUNNING", exit_code=NOT_RUNNING)


def timed_out(message: str) -> CliError:
    return CliError(message, code="TIMED_OUT", exit_code=TIMED_OUT)


def report(exc: click.ClickException, as_json: bool) -> int:
    """Print `exc` on stderr (a sentence, or JSON) and return its exit status."""
    details: dict[str, object] = {}
    if isinstance(exc, CliError):
        code, details = exc.code, exc.details
    elif isinstance(exc, click.UsageError):
        code = "USAGE"
    else:
        code = "FAILED"
    if as_json:
        click.echo(json.dumps({"error": {"code": code, "message": exc.format_message(),
                                         "exit": exc.exit_code, **details}}), err=True)
    else:
        exc.show(file=sys.stderr)
    return exc.exit_code
