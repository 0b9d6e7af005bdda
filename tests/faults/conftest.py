"""Options of the fault suite: how long the simulation and the fuzzers run, and from which seed.

`--sim-steps N` (or METERLINE_SIM_STEPS) sets the simulated steps (CI: 500,000),
`--sim-seed N` (or METERLINE_SIM_SEED; "random" for a fresh one) the run's seed, and
`--fuzz-seconds S` (or METERLINE_FUZZ_SECONDS) how long the coverage-guided decoder fuzzer runs
(CI: 20). Every failure prints the seed that replays it.

The crash suite (tests/faults/test_crash.py): `--soak N` (or METERLINE_CRASH_CYCLES) runs N
kill -9 cycles instead of CI's 50, `--seed S` (or METERLINE_CRASH_SEED; "random" for a fresh
one) picks its moments, victims and delays.
"""

from __future__ import annotations

import os
import random

import pytest

from tests.adversarial.conftest import loop  # noqa: F401  (one server loop per module)
from tests.faults.figures import RESULTS_ENV

DEFAULT_SIM_STEPS = 500_000
DEFAULT_SIM_SEED = 20261202
DEFAULT_FUZZ_SECONDS = 20.0
DEFAULT_CRASH_CYCLES = 50
DEFAULT_CRASH_SEED = 20261202


def pytest_configure(config: pytest.Config) -> None:
    """The figures go to a known place unless told otherwise (tests/faults/report.py reads
    them): .pytest_cache/faults under the repository."""
    os.environ.setdefault(RESULTS_ENV, str(config.rootpath / ".pytest_cache" / "faults"))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("faults", "tests/faults: simulation and fuzzing budgets")
    group.addoption("--sim-steps", type=int, default=None,
                    help=f"simulated steps to run (default {DEFAULT_SIM_STEPS:,})")
    group.addoption("--sim-seed", default=None,
                    help=f"seed of the simulation run, or 'random' (default {DEFAULT_SIM_SEED})")
    group.addoption("--fuzz-seconds", type=float, default=None,
                    help=f"seconds of coverage-guided decoder fuzzing (default "
                         f"{DEFAULT_FUZZ_SECONDS:g})")
    group.addoption("--soak", type=int, default=None, metavar="N",
                    help=f"kill -9 cycles of the crash suite (default {DEFAULT_CRASH_CYCLES})")
    group.addoption("--seed", default=None, metavar="S",
                    help=f"seed of the crash suite's choices, or 'random' (default "
                         f"{DEFAULT_CRASH_SEED})")


def _option(config: pytest.Config, name: str, env: str) -> str | None:
    value = config.getoption(name)
    return str(value) if value is not None else os.environ.get(env)


@pytest.fixture(scope="session")
def sim_steps(pytestconfig: pytest.Config) -> int:
    value = _option(pytestconfig, "--sim-steps", "METERLINE_SIM_STEPS")
    return int(value) if value else DEFAULT_SIM_STEPS


@pytest.fixture(scope="session")
def sim_seed(pytestconfig: pytest.Config) -> int:
    value = _option(pytestconfig, "--sim-seed", "METERLINE_SIM_SEED")
    if value == "random":
        return random.SystemRandom().getrandbits(48)
    return int(value) if value else DEFAULT_SIM_SEED


@pytest.fixture(scope="session")
def fuzz_seconds(pytestconfig: pytest.Config) -> float:
    value = _option(pytestconfig, "--fuzz-seconds", "METERLINE_FUZZ_SECONDS")
    return float(value) if value else DEFAULT_FUZZ_SECONDS


@pytest.fixture(scope="session")
def crash_cycles(pytestconfig: pytest.Config) -> int:
    value = _option(pytestconfig, "--soak", "METERLINE_CRASH_CYCLES")
    return int(value) if value else DEFAULT_CRASH_CYCLES


@pytest.fixture(scope="session")
def crash_seed(pytestconfig: pytest.Config) -> int:
    value = _option(pytestconfig, "--seed", "METERLINE_CRASH_SEED")
    if value == "random":
        return random.SystemRandom().getrandbits(48)
    return int(value) if value else DEFAULT_CRASH_SEED
