"""Sharded ``bolt synthesize`` (local and on Ray) writes exactly what one process writes.

The oracle teacher is a pure function of each chunk's seed, and the fake API server's
answers a pure function of each request, so sharded and single-process outputs must be
byte-identical; each shard builds its own teacher from a picklable spec.
"""

from __future__ import annotations

import json
import pickle
import uuid

import pytest

import bolt.teachers.synthesize as synthesize
from bolt.cli import main
from bolt.core.executors import ExecutorConfig
from bolt.core.records import read_documents
from bolt.errors import BoltError
from bolt.teachers import TeacherSpec, make_teacher
from bolt.teachers.synthesize import SynthesizeConfig, synthesize_stage

ORACLE = TeacherSpec("oracle", {"error_rate": 0.3, "seed": 2})
KEY = f"sk-test-{uuid.uuid4().hex}"


def _config() -> SynthesizeConfig:
    return SynthesizeConfig(batch_size=12)  # a world document has 12 chunks: each batch finishes one document


@pytest.fixture(scope="module")
def chunks(tiny_latents):
    return tiny_latents["warm_chunks"]


@pytest.fixture(scope="module")
def reference(chunks, tmp_path_factory):
    """One process, one shard: the output every sharded run must reproduce byte for byte."""
    output = tmp_path_factory.mktemp("reference") / "latents.jsonl"
    synthesize_stage(ORACLE, chunks, output, _config())
    return output


def test_local_shards_merge_to_the_single_process_output(chunks, reference, tmp_path, monkeypatch):
    built = []
    real_build = TeacherSpec.build
    monkeypatch.setattr(TeacherSpec, "build", lambda spec: built.append(real_build(spec)) or built[-1])
    output = tmp_path / "latents.jsonl"
    summary = synthesize_stage(ORACLE, chunks, output, _config(), executor=ExecutorConfig(workers=3))
    assert output.read_bytes() == reference.read_bytes()
    assert summary["documents"] == len(read_documents(chunks))
    assert len({id(teacher) for teacher in built}) == 1 + 3, "the driver's teacher (to describe it) and one per shard"
    assert not list((tmp_path / "latents.jsonl.run").glob("partial*.jsonl"))


def test_a_teacher_object_cannot_be_sharded(chunks, tmp_path):
    with pytest.raises(BoltError, match="TeacherSpec"):
        synthesize_stage(
            make_teacher("oracle"), chunks, tmp_path / "l.jsonl", _config(), executor=ExecutorConfig(workers=2)
        )
    with pytest.raises(BoltError, match="no API key"):
        TeacherSpec("openai", {"model": "m", "api_key": KEY})


def test_a_shard_interrupted_mid_way_keeps_its_finished_documents_and_resumes_with_another_worker_count(
    chunks, reference, tmp_path, monkeypatch
):
    from bolt.apps.world.world import OracleTeacher

    documents = read_documents(chunks)
    real_write, real_shard = OracleTeacher.write_latents, synthesize.synthesize_shard
    calls, results = [], []

    def dies_in_its_sixth_batch(self, requests):
        calls.append(len(requests))
        if len(calls) == 6:  # shards of 3, 3, 2 documents: the second shard's third document
            raise KeyboardInterrupt
        return real_write(self, requests)

    output = tmp_path / "latents.jsonl"
    monkeypatch.setattr(OracleTeacher, "write_latents", dies_in_its_sixth_batch)
    with pytest.raises(KeyboardInterrupt):
        synthesize_stage(ORACLE, chunks, output, _config(), executor=ExecutorConfig(workers=3))
    run = tmp_path / "latents.jsonl.run"
    assert [len((run / f"partial-{i:04d}.jsonl").read_text().splitlines()) for i in range(2)] == [3, 2]
    assert not (run / "partial-0002.jsonl").exists()

    def recording(*args):
        results.append(real_shard(*args))
        return results[-1]

    monkeypatch.setattr(OracleTeacher, "write_latents", real_write)
    monkeypatch.setattr(synthesize, "synthesize_shard", recording)
    synthesize_stage(ORACLE, chunks, output, _config(), executor=ExecutorConfig(workers=2))
    assert output.read_bytes() == reference.read_bytes()
    assert sum(r["computed"] for r in results) == len(documents) - 5  # the 5 finished documents were not redone


def test_a_resumed_run_gives_the_teacher_the_batches_of_the_uninterrupted_run(chunks, tmp_path, monkeypatch):
    """A local teacher (HF, vLLM) pads a batch together: batches are fixed windows of the input, so
    after an interruption inside a window that spans two documents the rerun sends that same window."""
    from bolt.apps.world.world import OracleTeacher

    real_write = OracleTeacher.write_latents
    seen, kill = [], {"at": None}

    def recording(self, requests):
        seen.append(tuple((r.document_id, r.chunk_index) for r in requests))
        if len(seen) == kill["at"]:
            raise KeyboardInterrupt
        return real_write(self, requests)

    monkeypatch.setattr(OracleTeacher, "write_latents", recording)
    config = SynthesizeConfig(batch_size=5)  # documents of 12 chunks: most windows span two documents
    reference = tmp_path / "reference.jsonl"
    synthesize_stage(ORACLE, chunks, reference, config)
    windows = set(seen)
    for at in (7, 11):  # after 2 and 3 finished documents
        seen.clear()
        kill["at"] = at
        output = tmp_path / f"resumed-{at}.jsonl"
        with pytest.raises(KeyboardInterrupt):
            synthesize_stage(ORACLE, chunks, output, config)
        seen.clear()
        kill["at"] = None
        synthesize_stage(ORACLE, chunks, output, config)
        assert seen and set(seen) <= windows
        assert len(seen) < len(windows), "finished documents were sent again"
        assert output.read_bytes() == reference.read_bytes()


def test_a_local_teacher_streams_the_corpus(chunks, reference, tmp_path, monkeypatch):
    """No list of the corpus is built: shards read their range of the file, and the output is
    merged from the partial files one record at a time (benchmarks/memory.py measures the RSS)."""

    def must_not_run(*args, **kwargs):
        raise AssertionError("the corpus was read into memory")

    monkeypatch.setattr(synthesize, "read_inputs", must_not_run)
    monkeypatch.setattr(synthesize, "read_documents", must_not_run)
    for workers in (1, 3):
        output = tmp_path / f"latents-{workers}.jsonl"
        synthesize_stage(ORACLE, chunks, output, _config(), executor=ExecutorConfig(workers=workers))
        assert output.read_bytes() == reference.read_bytes()


def test_the_cli_shards_the_oracle_teacher(chunks, tmp_path, capsys):
    output = tmp_path / "cli.jsonl"
    code = main(
        ["synthesize", str(chunks), "-o", str(output), "--teacher", "oracle", "--batch-size", "12", "--workers", "3"]
    )
    assert code == 0, capsys.readouterr().err
    oracle_reference = tmp_path / "plain.jsonl"
    assert (
        main(["synthesize", str(chunks), "-o", str(oracle_reference), "--teacher", "oracle", "--batch-size", "5"]) == 0
    )
    assert output.read_bytes() == oracle_reference.read_bytes()


def test_hf_teacher_shards_merge_to_the_single_process_output(tiny_trained_model, chunks, tmp_path):
    """Sampling (temperature 1) is seeded per chunk, so shards with other batch sizes write the same latents."""
    spec = TeacherSpec("hf", {"model": str(tiny_trained_model), "max_new_tokens": 8, "temperature": 1.0, "seed": 4})
    synthesize_stage(spec, chunks, tmp_path / "one.jsonl", SynthesizeConfig(batch_size=8))
    synthesize_stage(
        spec, chunks, tmp_path / "three.jsonl", SynthesizeConfig(batch_size=5), executor=ExecutorConfig(workers=3)
    )
    assert (tmp_path / "three.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    latents = [c.latent for row in read_documents(tmp_path / "one.jsonl") for c in row.chunks]
    assert len(set(latents)) > 1, "the tiny model must write varied latents for this test to mean anything"


# --- API teachers against the fake server ------------------------------------------------

pytest.importorskip("openai")
pytest.importorskip("anthropic")

from fake_llm_server import FakeLLMServer, Faults, answer_text, item_of  # noqa: E402
from test_api_teachers import FAST, KEY_VARIABLE, TIMEOUT_FAULTS, files_containing, make_chunks  # noqa: E402


def _api_argv(family: str, server: FakeLLMServer, chunks, output, *extra) -> list[str]:
    base = server.url + "/v1" if family == "openai" else server.url
    return [
        "synthesize",
        str(chunks),
        "-o",
        str(output),
        "--teacher",
        family,
        "--teacher-model",
        "test-model",
        "--base-url",
        base,
        *FAST,
        "--concurrency",
        "2",
        "--max-bad-replies",
        "10",
        *map(str, extra),
    ]


def _run(capsys, argv) -> dict:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert KEY not in captured.out + captured.err
    return json.loads(captured.out)


@pytest.mark.parametrize("family", ["openai", "anthropic"])
def test_api_shards_share_the_cache_and_sum_their_spend(family, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE[family], KEY)
    make_chunks(tmp_path / "chunks.jsonl", documents=7, chunks=3)
    with FakeLLMServer(Faults(seed=3)) as server:
        single = _run(capsys, _api_argv(family, server, tmp_path / "chunks.jsonl", tmp_path / "one.jsonl"))

    shipped = []
    real_run_shards = synthesize.run_shards

    def pickled(function, shard_args, config, desc):
        shipped.append(pickle.dumps(shard_args))  # what Ray would put in its object store
        return real_run_shards(function, shard_args, config, desc)

    monkeypatch.setattr(synthesize, "run_shards", pickled)
    with FakeLLMServer(Faults(rate=0.2, seed=5, hang_seconds=TIMEOUT_FAULTS["hang_seconds"])) as server:
        sharded = _run(
            capsys,
            _api_argv(
                family,
                server,
                tmp_path / "chunks.jsonl",
                tmp_path / "three.jsonl",
                "--workers",
                "3",
                *TIMEOUT_FAULTS["client"],
            ),
        )
    assert (tmp_path / "three.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert set(server.log.answered.values()) == {1}, (
        "each request answered once: the shards share nothing but the cache, and it holds every answer"
    )
    assert shipped and all(KEY.encode() not in blob for blob in shipped)
    assert files_containing(tmp_path, KEY) == []

    # spend.json: the shards' spend summed (it matches the server's own count), the answers used counted once.
    this_run, faults = sharded["spend"]["this_run"], server.log.faults
    assert sum(faults.values()) > 0, "the seed must inject some faults for this test to mean anything"
    assert (
        this_run["requests"]
        == sum(server.log.seen.values()) - faults["429"] - faults["500"] - faults["timeout"] - faults["malformed"]
    )
    assert (
        this_run["errors"].get("rate_limited", 0) == faults["429"]
        and this_run["errors"].get("http_500", 0) == faults["500"]
    )
    for kind in ("empty", "truncated", "refused"):
        assert this_run["bad_replies"].get(kind, 0) == faults[kind]
    assert sharded["spend"]["answers"] == single["spend"]["answers"]
    assert json.loads((tmp_path / "three.jsonl.run" / "spend.json").read_text()) == sharded["spend"]


def test_api_shard_interrupted_then_resumed_sends_nothing_twice(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    documents = make_chunks(tmp_path / "chunks.jsonl", documents=6, chunks=2)
    real_shard, shards = synthesize.synthesize_shard, []

    def second_shard_dies(*args):
        shards.append(args[1])
        if len(shards) == 2:
            raise KeyboardInterrupt
        return real_shard(*args)

    monkeypatch.setattr(synthesize, "synthesize_shard", second_shard_dies)
    with FakeLLMServer(Faults(seed=1)) as server:
        assert (
            main(_api_argv("openai", server, tmp_path / "chunks.jsonl", tmp_path / "out.jsonl", "--workers", "3"))
            == 130
        )  # interrupted
        capsys.readouterr()
        assert sum(server.log.answered.values()) == 2 * len(shards[0])
        monkeypatch.setattr(synthesize, "synthesize_shard", real_shard)
        summary = _run(
            capsys, _api_argv("openai", server, tmp_path / "chunks.jsonl", tmp_path / "out.jsonl", "--workers", "2")
        )
    assert set(server.log.answered.values()) == {1} and len(server.log.answered) == 2 * len(documents)
    assert summary["spend"]["this_run"]["requests"] == 2 * (len(documents) - len(shards[0]))
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    from bolt.teachers.prompts import LATENT_V1

    assert [c["latent"] for row in rows for c in row["chunks"]] == [
        answer_text(item_of(LATENT_V1.messages(c.prefix, c.text)[1]["content"])) for d in documents for c in d.chunks
    ]


# --- Ray ---------------------------------------------------------------------------------


def crash_once(marker, *shard_args):
    """A shard whose first attempt kills its worker process in its second batch (module level: Ray imports it)."""
    import os

    from bolt.apps.world.world import OracleTeacher

    if not os.path.exists(marker):
        open(marker, "w").close()
        real_write, batches = OracleTeacher.write_latents, []

        def dying_write(self, requests):
            batches.append(1)
            if len(batches) == 2:
                os._exit(1)
            return real_write(self, requests)

        OracleTeacher.write_latents = dying_write
    return synthesize.synthesize_shard(*shard_args)


@pytest.mark.slow
def test_ray_with_two_workers_matches_one_process_and_survives_a_dead_worker(
    local_ray, chunks, reference, tmp_path, monkeypatch
):
    output = tmp_path / "ray.jsonl"
    synthesize_stage(ORACLE, chunks, output, _config(), executor=ExecutorConfig(kind="ray", workers=2))
    assert output.read_bytes() == reference.read_bytes()

    # A worker that dies mid-shard: Ray restarts the task, which keeps what its partial file holds.
    from test_synthesize_sharding import crash_once as importable_crash_once

    marker = tmp_path / "crashed-once"
    results = []
    real_run_shards = synthesize.run_shards

    def shards_with_a_crash(function, shard_args, config, desc):
        results.append(real_run_shards(importable_crash_once, [(str(marker), *shard_args[0])], config, desc)[0])
        results.extend(real_run_shards(function, shard_args[1:], config, desc))
        return results

    monkeypatch.setattr(synthesize, "run_shards", shards_with_a_crash)
    output = tmp_path / "crash.jsonl"
    synthesize_stage(ORACLE, chunks, output, _config(), executor=ExecutorConfig(kind="ray", workers=2))
    assert marker.exists(), "the first attempt did not run"
    assert output.read_bytes() == reference.read_bytes()
    assert results[0]["computed"] == results[0]["documents"] - 1, (
        "the document of the first batch was kept from the crashed attempt"
    )


@pytest.mark.slow
def test_ray_workers_read_the_key_from_the_env_file(local_ray, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    env_file = tmp_path / "secrets.env"
    env_file.write_text(f"ANTHROPIC_API_KEY={KEY}\n")
    make_chunks(tmp_path / "chunks.jsonl", documents=4, chunks=2)
    with FakeLLMServer(Faults(seed=2)) as server:
        _run(
            capsys,
            _api_argv("anthropic", server, tmp_path / "chunks.jsonl", tmp_path / "one.jsonl", "--env-file", env_file),
        )
    with FakeLLMServer(Faults(seed=2)) as server:  # only Ray's workers talk to this one
        _run(
            capsys,
            _api_argv(
                "anthropic",
                server,
                tmp_path / "chunks.jsonl",
                tmp_path / "ray.jsonl",
                "--env-file",
                env_file,
                "--executor",
                "ray",
                "--workers",
                "2",
            ),
        )
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert len(server.log.api_keys) == 1 and KEY in server.log.api_keys.pop(), (
        "the workers sent the key they read from the env file"
    )
    assert files_containing(tmp_path, KEY) == [env_file]
