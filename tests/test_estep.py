"""E-step plumbing: context fitting, the importance math, resumable runs, warnings."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bolt.core.records import read_documents
from bolt.errors import BoltError
from bolt.estep.importance import effective_sample_size, iwae_bound, resample_index
from bolt.estep.sampling import SamplingConfig
from bolt.estep.stage import EStepConfig, estep_stage, fit_context


def test_fit_context_cuts_prefix_first_then_end_of_text():
    fitted = fit_context(list(range(10)), [100, 101, 102], window=20, reserved=10)
    assert fitted.prefix == list(range(3, 10)) and fitted.text == [100, 101, 102]
    assert (fitted.prefix_tokens_cut, fitted.text_tokens_cut) == (3, 0)
    fitted = fit_context(list(range(10)), list(range(100, 108)), window=15, reserved=10)
    assert fitted.prefix == [] and fitted.text == [100, 101, 102, 103, 104]
    assert (fitted.prefix_tokens_cut, fitted.text_tokens_cut) == (10, 3)
    untouched = fit_context([1, 2], [3], window=100, reserved=10)
    assert (untouched.prefix, untouched.text, untouched.prefix_tokens_cut, untouched.text_tokens_cut) == (
        [1, 2],
        [3],
        0,
        0,
    )
    with pytest.raises(BoltError, match="max-new-tokens"):
        fit_context([1], [2], window=10, reserved=10)


def test_iwae_bound_and_ess_by_hand():
    log_w = [math.log(1.0), math.log(3.0)]
    assert iwae_bound(log_w, 1) == pytest.approx(0.0)
    assert iwae_bound(log_w) == pytest.approx(math.log(2.0))
    assert effective_sample_size(log_w) == pytest.approx(1 / (0.25**2 + 0.75**2))
    assert effective_sample_size([5.0] * 4) == pytest.approx(4.0)
    assert iwae_bound([-1e4, -1e4 + 1]) == pytest.approx(-1e4 + math.log((1 + math.e) / 2))
    with pytest.raises(ValueError):
        iwae_bound(log_w, 3)


def test_resample_index_frequencies():
    log_w = np.log([0.1, 0.6, 0.3])
    rng = np.random.default_rng(0)
    counts = np.bincount([resample_index(log_w, rng) for _ in range(20000)], minlength=3) / 20000
    assert counts == pytest.approx([0.1, 0.6, 0.3], abs=0.015)


def _config(**overrides):
    base = dict(samples=2, seed=0, sampling=SamplingConfig(max_new_tokens=12), batch_prompts=3)
    return EStepConfig(**{**base, **overrides})


def test_estep_stage_writes_every_field(tiny_trained_model, tiny_latents, tmp_path):
    output = tmp_path / "latents.jsonl"
    summary = estep_stage(tiny_trained_model, tiny_latents["bootstrap_chunks"], output, _config())
    documents = read_documents(output, require_latents=True)
    inputs = read_documents(tiny_latents["bootstrap_chunks"])
    assert [d.id for d in documents] == [d.id for d in inputs]
    for document, source in zip(documents, inputs):
        assert document.text == source.text
        for chunk in document.chunks:
            assert set(chunk.extra) >= {
                "log_p_joint",
                "log_q",
                "log_w",
                "k",
                "ess",
                "iwae",
                "latent_finished",
                "latent_retokenizes",
                "prefix_tokens_cut",
                "text_tokens_cut",
            }
            assert chunk.extra["log_w"] == pytest.approx(chunk.extra["log_p_joint"] - chunk.extra["log_q"])
            assert 1.0 <= chunk.extra["ess"] <= 2.0 + 1e-9 and chunk.extra["k"] == 2
    assert summary["chunks"] == sum(len(d.chunks) for d in inputs)
    manifest = json.loads((tmp_path / "latents.jsonl.run" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["inputs"]["chunks"]["sha256"]
    assert not (tmp_path / "latents.jsonl.run" / "partial.jsonl").exists()


def test_estep_resumes_after_interruption(tiny_trained_model, tiny_latents, tmp_path, monkeypatch):
    import bolt.estep.stage as estep

    reference = tmp_path / "reference.jsonl"
    estep_stage(tiny_trained_model, tiny_latents["bootstrap_chunks"], reference, _config())

    calls = {"n": 0}
    original = estep.run_batch

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    output = tmp_path / "resumed.jsonl"
    monkeypatch.setattr(estep, "run_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        estep_stage(tiny_trained_model, tiny_latents["bootstrap_chunks"], output, _config())
    assert not output.exists()
    partial = (tmp_path / "resumed.jsonl.run" / "partial.jsonl").read_text().splitlines()
    assert partial, "finished documents were not saved before the interruption"

    done_before = calls["n"]
    monkeypatch.setattr(estep, "run_batch", original)
    estep_stage(tiny_trained_model, tiny_latents["bootstrap_chunks"], output, _config())
    assert output.read_text() == reference.read_text()
    assert done_before == 3


def test_a_resumed_estep_batches_every_chunk_as_the_uninterrupted_run(
    tiny_trained_model, tiny_latents, tmp_path, monkeypatch
):
    """Batches are fixed windows over the input: a rerun after an interruption in the middle of a
    window that spans two documents recomputes that same window, so every chunk is sampled and
    scored with the same neighbours (the same padding), and the output is the same bytes."""
    import bolt.estep.stage as estep

    config = _config()
    config.batch_prompts = 4  # windows straddle documents (each has several chunks)
    original = estep.run_batch
    seen: list[list[tuple[int, str]]] = []

    def recording(model, tokenizer, jobs, *args, **kwargs):
        seen.append([(job.chunk_index, job.seeds.entropy[1]) for job in jobs])
        if kill_at is not None and len(seen) == kill_at:
            raise KeyboardInterrupt
        return original(model, tokenizer, jobs, *args, **kwargs)

    monkeypatch.setattr(estep, "run_batch", recording)
    kill_at = None
    reference = tmp_path / "reference.jsonl"
    estep_stage(tiny_trained_model, tiny_latents["bootstrap_chunks"], reference, config)
    windows = [tuple(batch) for batch in seen]
    chunks_per_document = [len(d.chunks) for d in read_documents(tiny_latents["bootstrap_chunks"])]
    assert any(sum(chunks_per_document[:i]) % 4 for i in range(1, len(chunks_per_document))), (
        "no window spans two documents"
    )

    for kill in range(2, len(windows)):
        seen.clear()
        kill_at = kill
        output = tmp_path / f"resumed-{kill}.jsonl"
        with pytest.raises(KeyboardInterrupt):
            estep_stage(tiny_trained_model, tiny_latents["bootstrap_chunks"], output, config)
        seen.clear()
        kill_at = None
        estep_stage(tiny_trained_model, tiny_latents["bootstrap_chunks"], output, config)
        assert seen and all(tuple(batch) in windows for batch in seen), kill
        assert output.read_bytes() == reference.read_bytes()


def test_estep_warns_for_a_model_without_bolt_training(tmp_path, tiny_latents):
    from bolt.core.modeling import preset_model
    from bolt.core.special_tokens import add_latent_tokens

    model, tokenizer = preset_model("tiny")
    add_latent_tokens(tokenizer, model)
    model.save_pretrained(tmp_path / "untrained")
    tokenizer.save_pretrained(tmp_path / "untrained")
    with pytest.warns(UserWarning, match="never trained on latent data|noise"):
        estep_stage(
            tmp_path / "untrained",
            tiny_latents["bootstrap_chunks"],
            tmp_path / "out.jsonl",
            _config(samples=1, sampling=SamplingConfig(max_new_tokens=4)),
        )


def test_estep_config_validation():
    with pytest.raises(BoltError, match="samples"):
        _config(samples=0).validate()
    with pytest.raises(BoltError, match="temperature"):
        _config(sampling=SamplingConfig(temperature=0)).validate()
    with pytest.raises(BoltError, match="unknown --proposal 'likelihood'"):
        _config(proposal="likelihood").validate()


def test_estimate_times_chunks_spread_over_the_input_and_projects_the_whole(
    tiny_trained_model, tiny_latents, tmp_path, monkeypatch, capsys
):
    import bolt.estep.stage as estep_module
    from bolt.cli import main

    inputs = read_documents(tiny_latents["bootstrap_chunks"])
    total = sum(len(d.chunks) for d in inputs)
    timed, sampled = [], []
    real, real_jobs = estep_module.run_batch, estep_module.chunk_jobs
    monkeypatch.setattr(
        estep_module,
        "run_batch",
        lambda backend, tokenizer, jobs, m, config: timed.extend(jobs) or real(backend, tokenizer, jobs, m, config),
    )
    monkeypatch.setattr(
        estep_module, "chunk_jobs", lambda documents, *a: sampled.extend(documents) or real_jobs(documents, *a)
    )
    result = estep_module.estimate(
        tiny_trained_model, tiny_latents["bootstrap_chunks"], _config(), workers=2, sample_chunks=3
    )
    assert result["chunks_timed"] == 3 and len(timed) == 1 + 3  # one warm-up chunk, then the timed ones
    every = [(d.id, c.text) for d in inputs for c in d.chunks]
    assert [(d.id, d.chunks[0].text) for d in sampled] == [every[0], every[round((total - 1) / 2)], every[-1]]
    assert (sampled[0].id, sampled[-1].id) == (inputs[0].id, inputs[-1].id), (
        "chunks spread over the input, first to last"
    )
    assert result["input_chunks"] == total
    assert result["projected_device_hours"] == pytest.approx(total / result["chunks_per_second"] / 3600)
    assert result["projected_wall_hours"] == pytest.approx(result["projected_device_hours"] / 2)
    output = tmp_path / "never.jsonl"
    assert (
        main(
            [
                "estep",
                str(tiny_latents["bootstrap_chunks"]),
                "--model",
                str(tiny_trained_model),
                "-k",
                "2",
                "--max-new-tokens",
                "4",
                "--estimate",
                "2",
                "-o",
                str(output),
            ]
        )
        == 0
    )
    assert f"The whole input, {total:,} chunks" in capsys.readouterr().out
    assert not output.exists() and not (tmp_path / "never.jsonl.run").exists(), "an estimate writes nothing"


def test_strict_refuses_latents_mostly_cut_and_a_rerun_keeps_what_was_sampled(
    tiny_trained_model, tiny_latents, tmp_path, capsys, monkeypatch
):
    import bolt.estep.stage as estep_module
    from bolt.cli import main

    output = tmp_path / "latents.jsonl"
    argv = [
        "estep",
        str(tiny_latents["bootstrap_chunks"]),
        "--model",
        str(tiny_trained_model),
        "-k",
        "2",
        "--max-new-tokens",
        "2",
        "-o",
        str(output),
    ]
    assert main([*argv, "--strict"]) == 2
    assert "never reached <|END_OF_LATENT|>" in capsys.readouterr().err and not output.exists()
    monkeypatch.setattr(estep_module, "run_batch", lambda *a, **k: pytest.fail("the rerun sampled again"))
    assert main(argv) == 0 and output.exists()
