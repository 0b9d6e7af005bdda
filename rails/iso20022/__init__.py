"""ISO 20022 file rails: SEPA credit transfers as pain.001.001.09 out; pain.002, camt.054,
camt.053 and pacs.004 in.

:class:`SepaCreditTransferRail` is the adapter; :func:`check_pain001` is the pre-submission gate
(official XSD + SEPA profile) that ``meterline rails validate`` shares.

Its names are imported lazily: a daemon that only needs one submodule (the scheme rules
of :mod:`~rails.iso20022.sepa`, the routing check of :mod:`~rails.nacha.records`) does not
pay for the XML schemas and file checkers at startup (issue 13).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rails.lazy import lazy

if TYPE_CHECKING:
    from rails.iso20022.adapter import SepaCreditTransferRail, check_instruction
    from rails.iso20022.pain001 import build_pain001, check_pain001

_WHERE = {
    "SepaCreditTransferRail": "rails.iso20022.adapter",
    "check_instruction": "rails.iso20022.adapter",
    "build_pain001": "rails.iso20022.pain001",
    "check_pain001": "rails.iso20022.pain001",
}
"""Which submodule defines each name: imported when first asked for (PEP 562)."""

__getattr__ = lazy(__name__, _WHERE, globals())

__all__ = ["SepaCreditTransferRail", "build_pain001", "check_instruction", "check_pain001"]
