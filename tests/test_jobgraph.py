"""The job graph: dependencies first, results handed on, the same answers on 1 or 2 workers."""

from __future__ import annotations

import os

import pytest

from bolt.core.jobgraph import Job, run_graph
from bolt.errors import BoltError


def _square(x: int, done: dict) -> int:
    return x * x


def _total(done: dict) -> int:
    return sum(done.values())


def _whoami(done: dict) -> int:
    return os.getpid()


def _graph() -> dict[str, Job]:
    return {
        "sum": Job(_total, after=("a", "b", "c")),
        "a": Job(_square, (2,)),
        "b": Job(_square, (3,)),
        "c": Job(_square, (4,), after=("a",)),
    }


def test_dependencies_run_first_and_pass_their_results_on():
    finished = []
    results = run_graph(_graph(), workers=1, report=lambda name, result, seconds: finished.append(name))
    assert results == {"a": 4, "b": 9, "c": 16, "sum": 29}
    assert finished.index("a") < finished.index("c") < finished.index("sum")


def test_two_workers_give_the_same_results_in_other_processes():
    assert run_graph(_graph(), workers=2) == {"a": 4, "b": 9, "c": 16, "sum": 29}
    pids = run_graph({"x": Job(_whoami), "y": Job(_whoami)}, workers=2)
    assert os.getpid() not in pids.values()


def test_unknown_or_circular_dependencies_are_refused():
    with pytest.raises(BoltError, match="unknown or circular"):
        run_graph({"a": Job(_square, (1,), after=("missing",))})
    with pytest.raises(BoltError, match="unknown or circular"):
        run_graph({"a": Job(_square, (1,), after=("b",)), "b": Job(_square, (1,), after=("a",))})


def test_the_job_that_starts_the_longest_chain_goes_first():
    jobs = {
        "baseline": Job(_square, (1,)),
        "root": Job(_square, (2,)),
        "middle": Job(_square, (3,), after=("root",)),
        "end": Job(_square, (4,), after=("middle",)),
    }
    finished = []
    run_graph(jobs, workers=1, report=lambda name, result, seconds: finished.append(name))
    assert finished[:2] == ["root", "middle"]
