"""CI's share of the fault-injection soak (tests/faults/soak.py): one SIGKILL/resume trial per stage.

Each trial kills the real command at a random time, reruns it, and compares the output with an
uninterrupted run: nothing lost, duplicated, reordered or changed, the weights within tolerance.
Long soaks: ``python tests/faults/soak.py --stage all --trials 20``.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import soak


@pytest.fixture(scope="module")
def soak_inputs(tmp_path_factory):
    work = tmp_path_factory.mktemp("soak")
    return work, soak.prepare(work / "data")


@pytest.mark.parametrize("stage", soak.STAGES)
def test_a_killed_run_resumes_to_the_uninterrupted_output(soak_inputs, stage):
    work, inputs = soak_inputs
    trials = soak.soak(
        stage, 1, work, inputs, random.Random(soak.STAGES.index(stage)), tolerance=1e-4, echo=lambda line: None
    )
    for trial in trials:
        assert trial.resumed, trial.notes
        assert (trial.lost, trial.duplicated, trial.reordered, trial.differ) == (0, 0, False, 0), trial
        assert trial.weights is None or trial.weights <= 1e-4, trial
