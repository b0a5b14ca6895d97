"""Run a graph of jobs (trainings, E-steps) over a few worker processes.

On a small CPU machine two single-threaded trainings side by side get more done than one
training on two threads, and the demo's models form a graph (the EM chain waits for the
warm start; the raw baselines wait for nothing). ``run_graph`` starts every job whose
dependencies are done, ``workers`` at a time, each worker a fresh (spawned) process whose
PyTorch uses ``threads`` threads. With ``workers=1`` the jobs run in this process, in
order. Each job is resumable on its own (it writes a run directory), so an interrupted
graph continues where it stopped when run again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

from bolt.errors import BoltError


@dataclass
class Job:
    """``function(*args, done)``: ``done`` maps each dependency's name to its result.

    ``function`` must be importable by name (a module-level function) so that a spawned
    worker can run it.
    """

    function: Callable[..., Any]
    args: tuple = ()
    after: tuple[str, ...] = ()


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    os.environ["TQDM_DISABLE"] = "1"  # bars of parallel workers would interleave; the parent reports


def _call(function: Callable, args: tuple, done: dict) -> Any:
    return function(*args, done)


def _order(jobs: dict[str, Job]) -> list[str]:
    ordered, placed = [], set()
    while len(ordered) < len(jobs):
        ready = [name for name, job in jobs.items() if name not in placed and set(job.after) <= placed]
        if not ready:
            missing = {
                name: [d for d in job.after if d not in jobs] for name, job in jobs.items() if name not in placed
            }
            raise BoltError(f"job graph: jobs wait on unknown or circular dependencies: {missing}.")
        ordered += ready
        placed.update(ready)
    return ordered


def _depths(jobs: dict[str, Job]) -> dict[str, int]:
    """Length of the longest chain of jobs that starts at each job (1 for a job nothing waits on)."""
    depths: dict[str, int] = {}

    def depth(name: str) -> int:
        if name not in depths:
            depths[name] = 1 + max((depth(other) for other, job in jobs.items() if name in job.after), default=0)
        return depths[name]

    for name in jobs:
        depth(name)
    return depths


def run_graph(
    jobs: dict[str, Job],
    workers: int = 1,
    threads: int | None = None,
    report: Callable[[str, Any, float], None] | None = None,
) -> dict[str, Any]:
    """Run every job after its dependencies; return name -> result.

    Among the jobs that are ready, the one that starts the longest chain goes first (the
    critical path), so that e.g. one seed's EM chain is not kept waiting behind every
    seed's baselines."""
    order = _order(jobs)  # refuses unknown or circular dependencies first
    depths = _depths(jobs)
    order.sort(key=lambda name: -depths[name])
    results: dict[str, Any] = {}
    started: dict[str, float] = {}

    def finish(name: str, result: Any) -> None:
        results[name] = result
        if report:
            report(name, result, time.monotonic() - started[name])

    if workers <= 1:
        for name in order:
            started[name] = time.monotonic()
            finish(name, _call(jobs[name].function, jobs[name].args, {d: results[d] for d in jobs[name].after}))
        return results
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    running: dict[Future, str] = {}
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(threads,)
    ) as pool:
        while len(results) < len(jobs):
            for name in order:
                job = jobs[name]
                if name in results or name in running.values() or not set(job.after) <= set(results):
                    continue
                if len(running) >= workers:
                    break
                started[name] = time.monotonic()
                running[pool.submit(_call, job.function, job.args, {d: results[d] for d in job.after})] = name
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                finish(running.pop(future), future.result())
    return results
