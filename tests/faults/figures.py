"""The figures a fault-suite run leaves for its report (issue 14: "written from the last run").

With METERLINE_FAULTS_RESULTS set to a directory, each test writes `<name>.json` there (steps
and episodes simulated, faults injected by kind, fuzz executions, hostile requests and their
answers, log lines read); without it nothing is written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

RESULTS_ENV = "METERLINE_FAULTS_RESULTS"


def record(name: str, figures: dict[str, Any]) -> None:
    directory = os.environ.get(RESULTS_ENV)
    if not directory:
        return
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    (path / f"{name}.json").write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
