"""US ACH as NACHA CCD+ files: one credit entry (code 22), one 05 addenda carrying the reference.

Writing and checking are separate, as for SEPA: :mod:`~rails.nacha.records` declares the layouts
and writes files; :mod:`~rails.nacha.checks` reads the bytes the way an ODFI does and reports
each problem as ``line N col M``; :mod:`~rails.nacha.answers` reads what the ODFI sends back
(acknowledgements, returns R01-R85, notifications of change C01-C13); :mod:`~rails.nacha.adapter`
is the :class:`~rails.port.Rail`. The adapter submits only files with no error finding, and
``meterline rails validate`` runs the same checker.
"""

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

__all__ = [
    "CHANGE_REASONS", "RETURN_REASONS", "SAME_DAY_LIMIT_CENTS", "AchCorrection", "AchCredit",
    "AchCreditRail", "AchFileSpec", "AchReturn", "AnswerFile", "Originator", "aba_check_digit",
    "aba_valid", "ach_text", "build_ccd_plus", "check_ach_instruction", "check_nacha",
    "derive_individual_id", "effective_date", "originator_findings", "parse_acknowledgement",
    "parse_answer_file", "parse_return_file",
]
