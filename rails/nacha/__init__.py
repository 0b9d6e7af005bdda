"""US ACH as NACHA CCD+ files: one credit entry (code 22), one 05 addenda carrying the reference.

Writing and checking are separate, as for SEPA: :mod:`~rails.nacha.records` declares the layouts
and writes files; :mod:`~rails.nacha.checks` reads the bytes the way an ODFI does and reports
each problem as ``line N col M``; :mod:`~rails.nacha.answers` reads what the ODFI sends back
(acknowledgements, returns R01-R85, notifications of change C01-C13); :mod:`~rails.nacha.adapter`
is the :class:`~rails.port.Rail`. The adapter submits only files with no error finding, and
``meterline rails validate`` runs the same checker.

Its names are imported lazily: a daemon that only needs one submodule (the scheme rules
of :mod:`~rails.iso20022.sepa`, the routing check of :mod:`~rails.nacha.records`) does not
pay for the XML schemas and file checkers at startup (issue 13).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rails.lazy import lazy

if TYPE_CHECKING:
    from rails.nacha.adapter import AchCreditRail, check_ach_instruction, effective_date
    from rails.nacha.answers import (
        CHANGE_REASONS,
        RETURN_REASONS,
        AchCorrection,
        AchReturn,
        AnswerFile,
        parse_acknowledgement,
        parse_answer_file,
        parse_return_file,
    )
    from rails.nacha.checks import SAME_DAY_LIMIT_CENTS, check_nacha, originator_findings
    from rails.nacha.records import (
        AchCredit,
        AchFileSpec,
        Originator,
        aba_check_digit,
        aba_valid,
        ach_text,
        build_ccd_plus,
        derive_individual_id,
    )

_WHERE = {
    "AchCreditRail": "rails.nacha.adapter",
    "check_ach_instruction": "rails.nacha.adapter",
    "effective_date": "rails.nacha.adapter",
    "CHANGE_REASONS": "rails.nacha.answers",
    "RETURN_REASONS": "rails.nacha.answers",
    "AchCorrection": "rails.nacha.answers",
    "AchReturn": "rails.nacha.answers",
    "AnswerFile": "rails.nacha.answers",
    "parse_acknowledgement": "rails.nacha.answers",
    "parse_answer_file": "rails.nacha.answers",
    "parse_return_file": "rails.nacha.answers",
    "SAME_DAY_LIMIT_CENTS": "rails.nacha.checks",
    "check_nacha": "rails.nacha.checks",
    "originator_findings": "rails.nacha.checks",
    "AchCredit": "rails.nacha.records",
    "AchFileSpec": "rails.nacha.records",
    "Originator": "rails.nacha.records",
    "aba_check_digit": "rails.nacha.records",
    "aba_valid": "rails.nacha.records",
    "ach_text": "rails.nacha.records",
    "build_ccd_plus": "rails.nacha.records",
    "derive_individual_id": "rails.nacha.records",
}
"""Which submodule defines each name: imported when first asked for (PEP 562)."""

__getattr__ = lazy(__name__, _WHERE, globals())

__all__ = [
    "CHANGE_REASONS", "RETURN_REASONS", "SAME_DAY_LIMIT_CENTS", "AchCorrection", "AchCredit",
    "AchCreditRail", "AchFileSpec", "AchReturn", "AnswerFile", "Originator", "aba_check_digit",
    "aba_valid", "ach_text", "build_ccd_plus", "check_ach_instruction", "check_nacha",
    "derive_individual_id", "effective_date", "originator_findings", "parse_acknowledgement",
    "parse_answer_file", "parse_return_file",
]
