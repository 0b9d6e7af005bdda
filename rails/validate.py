"""Validate a payment file the way the adapters do before it leaves: same functions, same rules.

:func:`validate_file` sniffs the format (a NACHA file starts with a ``101`` file header; anything
starting with ``<`` is XML and must be pain.001.001.09) and returns every finding. The SEPA rail
gates on :func:`rails.iso20022.pain001.check_pain001` and the ACH rail on
:func:`rails.nacha.check_nacha`; this module only dispatches, so the CLI cannot drift from them.
"""

from __future__ import annotations

import enum

from rails.errors import Finding
from rails.iso20022.pain001 import check_pain001
from rails.nacha import check_nacha


class FileFormat(enum.StrEnum):
    PAIN001 = "pain.001.001.09"
    NACHA = "nacha"
    UNKNOWN = "unknown"


def detect(data: bytes) -> FileFormat:
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"101"):
        return FileFormat.NACHA
    if head.startswith(b"<"):
        return FileFormat.PAIN001
    return FileFormat.UNKNOWN


def validate_file(data: bytes) -> tuple[FileFormat, list[Finding]]:
    """The file's format and every finding (errors and warnings) about it."""
    fmt = detect(data)
    if fmt is FileFormat.NACHA:
        return fmt, check_nacha(data)
    if fmt is FileFormat.PAIN001:
        return fmt, check_pain001(data)
    return fmt, [Finding("/", "FF01", "neither a pain.001 XML file nor a NACHA file "
                                      "(which starts with a 101 file header)")]


def is_clean(findings: list[Finding]) -> bool:
    """No error finding; warnings do not stop a file."""
    return not any(f.severity == "error" for f in findings)
