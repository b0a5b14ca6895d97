"""The throughput benchmarks run (tiny sizes) and print the ratios README quotes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_estep_benchmark_prints_in_process_and_whole_process_ratios():
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "estep.py"),
            "--preset",
            "tiny",
            "--chunks",
            "4",
            "-k",
            "2",
            "--max-new-tokens",
            "4",
            "--batch-prompts",
            "2",
            "--processes",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(ROOT / "src")},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert any(line.startswith("bolt / batched generate: ") and line.endswith("x (chunks/s)") for line in lines), lines
    assert any(line.startswith("bolt estep (whole process)") for line in lines), lines
    assert any(line.startswith("bolt estep / batched generate script (whole processes): ") for line in lines), lines
