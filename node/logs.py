"""structlog, configured once at the entry point: readable on a TTY, JSON otherwise."""

from __future__ import annotations

import logging
import os
import sys

import structlog

NO_LOCALS = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False))
"""Tracebacks as JSON without each frame's local variables: those hold whatever the code had in
hand (a request's credentials, a client's keys), and a log line must never carry them (the crash
suite's log scan found a bank client's key material in an `unhandled` line's locals)."""
PRETTY_NO_LOCALS = (structlog.dev.RichTracebackFormatter(show_locals=False)
                    if getattr(structlog.dev, "rich", None) is not None  # not re-exported
                    else structlog.dev.plain_traceback)
"""The console renderer's tracebacks, likewise without locals (rich shows them by default)."""


def log_level() -> str:
    """`meterline --log-level` (passed on to a detached daemon), else info."""
    level = os.environ.get("METERLINE_LOG_LEVEL", "info").lower()
    return level if level in ("debug", "info", "warning", "error") else "info"


def configure_logging(*, json: bool | None = None, level: str | None = None) -> None:
    level = level or log_level()
    as_json = (not sys.stderr.isatty()) if json is None else json
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: list[structlog.types.Processor] = (
        [NO_LOCALS, structlog.processors.JSONRenderer()]
        if as_json
        else [structlog.dev.ConsoleRenderer(exception_formatter=PRETTY_NO_LOCALS)]
    )
    structlog.configure(
        processors=shared + renderer,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
