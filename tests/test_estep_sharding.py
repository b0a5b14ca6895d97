"""Sharded E-steps (local and on Ray) write exactly what one process writes with the same seeds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import bolt.estep.stage as estep
from bolt.core.executors import ExecutorConfig, split_shards
from bolt.core.records import read_documents
from bolt.errors import BoltError
from bolt.estep.sampling import SamplingConfig
from bolt.estep.stage import EStepConfig, estep_stage


def _config() -> EStepConfig:
    return EStepConfig(samples=2, seed=3, sampling=SamplingConfig(max_new_tokens=10), batch_prompts=3)


@pytest.fixture(scope="module")
def reference(tiny_trained_model, tiny_latents, tmp_path_factory):
    """One process, one shard: the output every sharded run must reproduce byte for byte."""
    output = tmp_path_factory.mktemp("reference") / "latents.jsonl"
    estep_stage(tiny_trained_model, tiny_latents["bootstrap_chunks"], output, _config())
    return output


@given(st.lists(st.integers(), max_size=40), st.integers(min_value=1, max_value=9))
def test_split_shards_is_a_balanced_ordered_partition(items, shards):
    runs = split_shards(items, shards)
    assert [x for run in runs for x in run] == items
    assert len(runs) <= shards and all(runs)
    if runs:
        assert max(map(len, runs)) - min(map(len, runs)) <= 1
    assert split_shards(items, shards) == runs


def test_executor_config_names_the_bad_flag():
    with pytest.raises(BoltError, match="--executor"):
        ExecutorConfig(kind="slurm").validate()
    with pytest.raises(BoltError, match="--workers"):
        ExecutorConfig(workers=0).validate()
    with pytest.raises(BoltError, match="--backend"):
        EStepConfig(backend="tgi").validate()


def test_local_shards_merge_to_the_single_process_output(tiny_trained_model, tiny_latents, reference, tmp_path):
    output = tmp_path / "latents.jsonl"
    estep_stage(
        tiny_trained_model, tiny_latents["bootstrap_chunks"], output, _config(), executor=ExecutorConfig(workers=3)
    )
    assert output.read_bytes() == reference.read_bytes()
    assert not list((tmp_path / "latents.jsonl.run").glob("partial*.jsonl"))


def test_the_estep_streams_the_corpus(tiny_trained_model, tiny_latents, reference, tmp_path, monkeypatch):
    """No list of the corpus is built: shards read their range of the file, and the output is
    merged from the partial files one record at a time (benchmarks/memory.py measures the RSS)."""

    def must_not_run(*args, **kwargs):
        raise AssertionError("the corpus was read into memory")

    monkeypatch.setattr(estep, "read_documents", must_not_run)
    for workers in (1, 3):
        output = tmp_path / f"latents-{workers}.jsonl"
        estep_stage(
            tiny_trained_model,
            tiny_latents["bootstrap_chunks"],
            output,
            _config(),
            executor=ExecutorConfig(workers=workers),
        )
        assert output.read_bytes() == reference.read_bytes()


def test_interrupted_sharded_run_resumes_with_another_worker_count(
    tiny_trained_model, tiny_latents, reference, tmp_path, monkeypatch
):
    documents = read_documents(tiny_latents["bootstrap_chunks"])
    original = estep.estep_shard
    calls = []

    def second_shard_dies(*args):
        calls.append(len(args[1]))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args)

    output = tmp_path / "latents.jsonl"
    monkeypatch.setattr(estep, "estep_shard", second_shard_dies)
    with pytest.raises(KeyboardInterrupt):
        estep_stage(
            tiny_trained_model, tiny_latents["bootstrap_chunks"], output, _config(), executor=ExecutorConfig(workers=2)
        )
    first_shard = calls[0]
    assert (tmp_path / "latents.jsonl.run" / "partial-0000.jsonl").read_text().count("\n") == first_shard

    results = []

    def recording(*args):
        results.append(original(*args))
        return results[-1]

    monkeypatch.setattr(estep, "estep_shard", recording)
    estep_stage(
        tiny_trained_model, tiny_latents["bootstrap_chunks"], output, _config(), executor=ExecutorConfig(workers=3)
    )
    assert output.read_bytes() == reference.read_bytes()
    assert (
        sum(r["computed"] for r in results) == len(documents) - first_shard
    )  # the first shard's documents were not redone


# --- Ray ------------------------------------------------------------------------------


def crash_once(marker, *shard_args):
    """A shard whose first attempt kills its worker process in its second batch (module level: Ray imports it)."""
    import os

    import bolt.estep.stage as module

    if not os.path.exists(marker):
        open(marker, "w").close()
        real_batch, batches = module.run_batch, []

        def dying_batch(*args, **kwargs):
            batches.append(1)
            if len(batches) == 2:
                os._exit(1)
            return real_batch(*args, **kwargs)

        module.run_batch = dying_batch
    return module.estep_shard(*shard_args)


def _same_up_to_float_rounding(a, b) -> bool:
    """Equal, except that floats may differ in their last bits: Ray's workers run PyTorch on
    one thread, and reductions on another thread count round differently. Token ids,
    texts and chosen latents must still match exactly."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and a == pytest.approx(b, rel=1e-5, abs=1e-6)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_up_to_float_rounding(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same_up_to_float_rounding(x, y) for x, y in zip(a, b))
    return a == b


def _same_output(path, reference) -> bool:
    import json

    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return _same_up_to_float_rounding(rows, [json.loads(line) for line in reference.read_text().splitlines()])


@pytest.mark.slow
def test_ray_with_two_workers_matches_one_process_and_survives_a_dead_worker(
    local_ray, tiny_trained_model, tiny_latents, reference, tmp_path, monkeypatch
):
    output = tmp_path / "ray.jsonl"
    estep_stage(
        tiny_trained_model,
        tiny_latents["bootstrap_chunks"],
        output,
        _config(),
        executor=ExecutorConfig(kind="ray", workers=2),
    )
    assert _same_output(output, reference)

    # A worker that dies mid-shard: Ray restarts the task, which keeps what its partial file holds.
    from test_estep_sharding import crash_once as importable_crash_once

    marker = tmp_path / "crashed-once"
    results = []
    real_run_shards = estep.run_shards

    def shards_with_a_crash(function, shard_args, config, desc):
        results.append(real_run_shards(importable_crash_once, [(str(marker), *shard_args[0])], config, desc)[0])
        results.extend(real_run_shards(function, shard_args[1:], config, desc))
        return results

    monkeypatch.setattr(estep, "run_shards", shards_with_a_crash)
    output = tmp_path / "crash.jsonl"
    estep_stage(
        tiny_trained_model,
        tiny_latents["bootstrap_chunks"],
        output,
        _config(),
        executor=ExecutorConfig(kind="ray", workers=2),
    )
    assert marker.exists(), "the first attempt did not run"
    assert _same_output(output, reference)
    first = results[0]
    # The first batch (a whole document) was saved before the crash; the retry computed only the rest.
    assert 0 < first["computed"] < first["documents"], first


def test_a_shard_reads_its_range_twice_to_count_and_to_work(reference, tiny_trained_model, tiny_latents, tmp_path):
    """A shard streams its documents from the file: one pass counts what is left, one does the work."""
    from bolt.core.records import DocumentRange

    passes = []
    original = DocumentRange.__iter__

    def counted(self):
        passes.append((self.start, self.stop))
        return original(self)

    DocumentRange.__iter__ = counted
    try:
        output = tmp_path / "latents.jsonl"
        estep_stage(tiny_trained_model, tiny_latents["bootstrap_chunks"], output, _config())
    finally:
        DocumentRange.__iter__ = original
    assert len(passes) == 2 and len(set(passes)) == 1
    assert output.read_bytes() == reference.read_bytes()
