"""ISO 20022 file rails: SEPA credit transfers as pain.001.001.09 out; pain.002, camt.054,
camt.053 and pacs.004 in.

:class:`SepaCreditTransferRail` is the adapter; :func:`check_pain001` is the pre-submission gate
(official XSD + SEPA profile) that ``meterline rails validate`` shares.
"""

from rails.iso20022.adapter import SepaCreditTransferRail, check_instruction
from rails.iso20022.pain001 import build_pain001, check_pain001

__all__ = ["SepaCreditTransferRail", "build_pain001", "check_instruction", "check_pain001"]
