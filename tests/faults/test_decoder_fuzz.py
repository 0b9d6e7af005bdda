"""The wire decoder under atheris for `--fuzz-seconds` (tests/faults/fuzz_decoder.py says what
it checks): only typed decoding errors, canonical round trips, no hang."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris", reason="atheris is in the dev extras (pip install -e '.[dev]')")

from tests.faults.figures import record
from tests.faults.fuzz_decoder import write_seeds

HARNESS = Path(__file__).with_name("fuzz_decoder.py")
ROOT = HARNESS.parents[2]


def _fuzz(tmp: Path, seconds: float, env: dict[str, str] | None = None,
          ) -> tuple[subprocess.CompletedProcess[str], Path]:
    corpus = tmp / "corpus"
    write_seeds(corpus)
    artifacts = tmp / "artifacts"
    artifacts.mkdir()
    fuzz = [sys.executable, str(HARNESS), f"-max_total_time={int(seconds)}", "-timeout=5",
            "-rss_limit_mb=1024", "-max_len=16400", "-print_final_stats=1",
            f"-artifact_prefix={artifacts}/", str(corpus)]
    # libFuzzer's RSS limit reads the peak RSS, which Linux keeps across execve: started
    # straight from a test worker that has grown past 1 GB, the harness is "out of memory"
    # before its first input (seen in CI). Forked from a small shell, it starts from its own.
    result = subprocess.run(
        ["/bin/sh", "-c", '"$@"; exit $?', "sh", *fuzz],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True, text=True, timeout=seconds + 120, check=False,
    )
    return result, artifacts


def _executions(output: str) -> int:
    found = re.search(r"stat::number_of_executed_units:\s*(\d+)", output)
    return int(found.group(1)) if found else 0


def test_the_decoder_raises_only_typed_errors(tmp_path: Path, fuzz_seconds: float) -> None:
    result, artifacts = _fuzz(tmp_path, fuzz_seconds)
    output = result.stdout + result.stderr
    crashes = sorted(artifacts.iterdir())
    detail = "".join(f"\n{c.name}: {c.read_bytes().hex()}" for c in crashes)
    assert result.returncode == 0, f"atheris found a crash:{detail}\n{output[-4000:]}"
    executions = _executions(output)
    record("decoder_fuzz", {"seconds": fuzz_seconds, "executions": executions,
                            "crashes": len(crashes)})
    print(f"\natheris: {executions:,} executions of the decoder in {fuzz_seconds:g} s")
    assert executions > 1_000, output[-2000:]


def test_the_harness_reports_a_broken_property(tmp_path: Path) -> None:
    """With INVALID_FIELD (5) declared untyped, the fuzzer must find an input that raises it."""
    result, artifacts = _fuzz(tmp_path, 10, {"METERLINE_FUZZ_FORBID": "5"})
    assert result.returncode != 0
    assert any(p.name.startswith("crash-") for p in artifacts.iterdir())
    assert "INVALID_FIELD" in result.stdout + result.stderr


def test_a_large_test_worker_does_not_make_the_fuzzer_run_out_of_memory(tmp_path: Path) -> None:
    """Linux keeps the peak RSS across execve: the harness must not inherit a worker's."""
    ballast = bytearray(1200 * 1024 * 1024)  # a worker that grew past the fuzzer's 1 GB limit
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    try:
        result, artifacts = _fuzz(tmp_path, 3)
    finally:
        del ballast
    output = result.stdout + result.stderr
    assert "out-of-memory" not in output, output[-2000:]
    assert result.returncode == 0, output[-2000:]
    assert not list(artifacts.iterdir())
