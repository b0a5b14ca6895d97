"""Where the shards of a stage run: in this process (local) or on a Ray cluster (ray).

A stage splits its unfinished items into shards (``split_shards``: contiguous, in input
order, a pure function of the item list and the worker count) and hands a shard function
and one argument tuple per shard to ``run_shards``. The shard function writes its finished
items to its own partial file as it goes and returns a small summary; the stage merges
the partial files in input order. A worker that dies therefore loses only the items it
was working on: Ray retries its task, and the retry skips what the partial file holds.

Ray is an optional extra (``pip install 'bolt-latent[ray]'``), imported only here and only
for ``--executor ray``. ``ray.init`` joins the cluster named by ``RAY_ADDRESS`` when set,
otherwise it starts a small local one (no dashboard, worker logs kept off the terminal).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bolt.core.choices import EXECUTORS, ExecutorKind
from bolt.core.progress import progress_bar
from bolt.errors import BoltError


@dataclass
class ExecutorConfig:
    """How a sharded stage is run."""

    kind: ExecutorKind = "local"
    """Where shards run: local (this process, one after another) or ray (a Ray task per shard;
    RAY_ADDRESS joins a cluster)."""
    workers: int = 1
    """Shards of the input, run at once on Ray; the output does not depend on it."""
    gpus_per_worker: float = 0.0
    """GPUs Ray reserves per worker (1 on a GPU cluster: one model per GPU)."""
    max_retries: int = 3
    """Times Ray restarts the task of a worker that died."""

    def validate(self) -> None:
        if self.kind not in EXECUTORS:
            raise BoltError(f"unknown --executor {self.kind!r}; choose from {', '.join(EXECUTORS)}.")
        if self.workers < 1:
            raise BoltError(f"--workers must be at least 1, got {self.workers}.")
        if self.gpus_per_worker < 0:
            raise BoltError(f"--gpus-per-worker must be >= 0, got {self.gpus_per_worker}.")


def split_shards(items: Sequence[Any], shards: int) -> list[list[Any]]:
    """``shards`` contiguous runs of ``items`` whose sizes differ by at most one (empty ones dropped)."""
    base, extra = divmod(len(items), shards)
    runs, start = [], 0
    for index in range(shards):
        size = base + (index < extra)
        runs.append(list(items[start : start + size]))
        start += size
    return [run for run in runs if run]


def run_shards(
    function: Callable[..., Any], shard_args: list[tuple], config: ExecutorConfig, desc: str = "shards"
) -> list[Any]:
    """``function(*args)`` for every tuple of ``shard_args``; results in shard order."""
    config.validate()
    if config.kind == "local" or not shard_args:
        return [function(*args) for args in shard_args]
    return _run_on_ray(function, shard_args, config, desc)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise BoltError("--executor ray needs Ray: pip install 'bolt-latent[ray]'.") from None
    return ray


def _run_on_ray(function, shard_args, config: ExecutorConfig, desc: str) -> list[Any]:
    import os

    ray = _import_ray()
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(log_to_driver=False)
        else:
            ray.init(num_cpus=config.workers, include_dashboard=False, log_to_driver=False)
    remote = ray.remote(num_cpus=1, num_gpus=config.gpus_per_worker, max_retries=config.max_retries)(function)
    pending = {remote.remote(*args): index for index, args in enumerate(shard_args)}
    results: list[Any] = [None] * len(shard_args)
    with progress_bar(total=len(shard_args), desc=desc, unit="shard", disable=None) as progress:
        waiting = list(pending)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            try:
                results[pending[ready[0]]] = ray.get(ready[0])
            except ray.exceptions.RayError as exc:
                raise BoltError(
                    f"shard {pending[ready[0]]} failed on Ray after {config.max_retries} retries: {exc}. "
                    "Rerun the same command to resume."
                ) from None
            progress.update(1)
    return results
