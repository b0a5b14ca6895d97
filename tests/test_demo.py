"""`bolt demo` end to end in a tiny configuration: outputs complete and well formed.
The claims themselves are checked by the demo run reported in README, not here."""

from __future__ import annotations

import dataclasses
import json

import pytest

from bolt.apps.world.demo import DemoConfig, _prepare_seed, run_demo
from bolt.apps.world.world import REPHRASE_STYLES, WorldConfig, latent_is_correct, with_reasoning
from bolt.core.records import read_documents
from bolt.em.loop import LoopConfig, demo_loop

pytestmark = pytest.mark.slow


def test_tiny_demo_writes_every_model_metric_and_plot(tmp_path):
    config = DemoConfig(
        world=WorldConfig(
            warm_documents=3, bootstrap_documents=3, heldout_documents=1, questions=6, problems_per_document=3
        ),
        loop=dataclasses.replace(demo_loop(), iterations=2, samples=2, max_latent_tokens=8),
        sweep=[1, 2],
        seeds=2,
        m_step_steps=0,
    )
    config.train = dataclasses.replace(config.train, steps=3, batch_size=2, seq_len=128, warmup_steps=1, precision="no")
    config.eval = dataclasses.replace(config.eval, iwae_samples=[1, 2], max_latent_tokens=8, max_answer_tokens=8)
    results = run_demo(config, tmp_path)
    models = json.loads((tmp_path / "results.json").read_text())["models"]
    assert models == json.loads(json.dumps(results["models"]))
    expected = {
        "warm_start",
        "raw_warm",
        "warm_long",
        "em_1",
        "em_2",
        "em_1_k1",
        "raw_token_matched",
        "raw_flops_matched",
        "wrap_cot",
    }
    assert set(models) == expected
    for name, entry in models.items():
        assert len(entry["accuracy"]) == 2 and all(0 <= a <= 1 for a in entry["accuracy"])
        assert len(entry["nll_per_token"]) == 2 and all(v > 0 for v in entry["nll_per_token"])
        latent = not name.startswith(("raw", "wrap"))
        assert ("latent_correct_share" in entry) == latent and ("iwae_per_token" in entry) == latent
        for seed in (0, 1):  # per-seed lists in seed order, whichever seed finished first
            logged = [
                json.loads(line)
                for line in (tmp_path / f"seed-{seed}" / "models" / name / "metrics.jsonl").read_text().splitlines()
            ]
            assert entry["final_loss"][seed] == [row["loss"] for row in logged if "loss" in row][-1]
            assert (
                entry["accuracy"][seed]
                == json.loads((tmp_path / f"seed-{seed}" / "eval" / name / "eval.json").read_text())["accuracy"]
            )
    assert models["warm_start"]["latent_correct_share"] == [1.0, 1.0]
    # warm_long: the warm start's data with the chain's compute (3 + 2 M-steps of 6 steps)
    assert models["warm_long"]["train_tokens"][0] == 5 * models["warm_start"]["train_tokens"][0]
    verdicts = json.loads((tmp_path / "results.json").read_text())["claims"]
    assert set(verdicts) == {"1", "2", "3"} and all(
        c["verdict"] in ("pass", "fail", "not tested") for c in verdicts.values()
    )
    assert [c["differences"] for c in verdicts["1"]["comparisons"] if c["lower"] == "raw_warm"] == [
        [w - r for w, r in zip(models["warm_start"]["accuracy"], models["raw_warm"]["accuracy"])]
    ]
    # the K sweep shares iteration 1's random numbers, the chain's next iteration does not
    seeds = {
        name: json.loads((tmp_path / "seed-1" / "latents" / f"{name}.jsonl.run" / "manifest.json").read_text())[
            "config"
        ]["estep"]["seed"]
        for name in ("em_1", "em_1_k1", "em_2")
    }
    assert seeds == {"em_1": 1, "em_1_k1": 1, "em_2": 2}
    assert (
        models["raw_flops_matched"]["train_tokens"]
        == models["em_2"]["train_tokens"]
        == models["wrap_cot"]["train_tokens"]
    )
    wrap_cot = read_documents(tmp_path / "seed-0" / "data" / "warm+bootstrap.wrap-cot.jsonl")
    assert all(d.meta["synthetic"] == with_reasoning(d.text) for d in wrap_cot), (
        "the oracle's derivations inline, as plain text"
    )
    assert (
        json.loads((tmp_path / "seed-0" / "models" / "wrap_cot" / "manifest.json").read_text())["config"]["layout"]
        == "pure"
    )
    assert models["raw_token_matched"]["raw_tokens_seen"][0] < models["raw_flops_matched"]["raw_tokens_seen"][0]
    for png in ("accuracy_per_iteration.png", "accuracy_vs_k.png", "data_efficiency.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "results.md").read_text()
    assert "| warm_start |" in table and "±" in table
    assert json.loads((tmp_path / "manifest.json").read_text())["status"] == "complete"


def _two_step_config(bootstrap_documents: int = 2, **overrides) -> DemoConfig:
    """Two warm-start documents, 2-step trainings, two EM iterations at K = 2, no K sweep."""
    world = WorldConfig(
        warm_documents=2,
        bootstrap_documents=bootstrap_documents,
        heldout_documents=1,
        questions=4,
        problems_per_document=3,
    )
    loop = dataclasses.replace(demo_loop(), iterations=2, samples=2, max_latent_tokens=8, **overrides)
    config = DemoConfig(world=world, loop=loop, sweep=[2], m_step_steps=0, warm_long=False, wrap_cot=False)
    config.train = dataclasses.replace(config.train, steps=2, batch_size=2, seq_len=128, warmup_steps=1, precision="no")
    config.eval = dataclasses.replace(config.eval, iwae_samples=[1], max_latent_tokens=8, max_answer_tokens=8)
    return config


def test_continued_em_matches_the_whole_chain_in_the_flops_baseline(tmp_path):
    config = _two_step_config(continue_from_previous=True, proposal="prior", temperature=1.5)
    config.wrap = True
    models = run_demo(config, tmp_path)["models"]
    assert "em_1_k1" not in models
    # warm start (2 steps) + 2 M-steps of 4 steps each (data budget: twice the warm start's documents)
    assert models["em_2"]["train_tokens"] == [2 * models["warm_start"]["train_tokens"][0]]
    assert models["raw_flops_matched"]["train_tokens"] == [
        models["warm_start"]["train_tokens"][0] + 2 * models["em_2"]["train_tokens"][0]
    ]
    manifest = json.loads((tmp_path / "seed-0" / "models" / "em_2" / "manifest.json").read_text())
    assert manifest["config"]["model"].endswith("em_1")
    estep = json.loads((tmp_path / "seed-0" / "latents" / "em_2.jsonl.run" / "manifest.json").read_text())
    assert (
        estep["config"]["estep"]["proposal"] == "prior" and estep["config"]["estep"]["sampling"]["temperature"] == 1.5
    )
    # each iteration's E-step draws fresh random numbers
    first = json.loads((tmp_path / "seed-0" / "latents" / "em_1.jsonl.run" / "manifest.json").read_text())
    assert (first["config"]["estep"]["seed"], estep["config"]["estep"]["seed"]) == (0, 1)
    # the WRAP-like baseline: a raw model with the chain's compute, trained on raw text and its rephrasings
    assert "iwae_per_token" not in models["wrap"] and "latent_correct_share" not in models["wrap"]
    assert models["wrap"]["train_tokens"] == models["raw_flops_matched"]["train_tokens"]
    wrap_config = json.loads((tmp_path / "seed-0" / "models" / "wrap" / "manifest.json").read_text())["config"]
    assert (wrap_config["layout"], wrap_config["raw_ratio"]) == ("pure", 0.5)
    rephrased = read_documents(tmp_path / "seed-0" / "data" / "warm+bootstrap.wrap.jsonl")
    assert len(rephrased) == 4 and all(
        d.meta["synthetic_style"] in REPHRASE_STYLES and d.meta["synthetic"] != d.text for d in rephrased
    )
    assert "| wrap |" in (tmp_path / "results.md").read_text()


def test_the_raw_baselines_input_does_not_depend_on_the_estep_context(tmp_path):
    """--estep-context changes the bootstrap chunks' prefixes, which raw layouts never read:
    the raw and WRAP files stay byte-identical, so their finished trainings are reused."""
    files = {}
    for context in (1, 3):
        config = DemoConfig(
            world=WorldConfig(
                warm_documents=2, bootstrap_documents=2, heldout_documents=1, questions=2, estep_context=context
            ),
            wrap=True,
        )
        files[context] = _prepare_seed(config, 0, tmp_path / f"c{context}")
    assert files[1]["bootstrap_chunks"].read_bytes() != files[3]["bootstrap_chunks"].read_bytes()
    for key in ("raw_all", "wrap"):
        assert files[1][key].read_bytes() == files[3][key].read_bytes()
    one_sentence = read_documents(files[1]["warm_chunks"]) + read_documents(files[1]["bootstrap_chunks"])
    assert read_documents(files[3]["raw_all"]) == one_sentence


def test_demo_refuses_an_unknown_proposal():
    from bolt.errors import BoltError

    with pytest.raises(BoltError, match="--proposal must be one of posterior, prior"):
        DemoConfig(loop=LoopConfig(proposal="likelihood")).validate()


def test_m_step_steps_fixes_every_m_step_and_scales_fold_models_by_their_data():
    from bolt.apps.world.demo import m_step_steps
    from bolt.errors import BoltError

    config = DemoConfig(world=WorldConfig(warm_documents=50, bootstrap_documents=150), m_step_steps=0)
    assert m_step_steps(config) == 3 * config.train.steps, (
        "the data rule on the bootstrap latents alone (the paper's M-step data)"
    )
    config.loop.m_step_data = "teacher+bootstrap"
    assert m_step_steps(config) == 4 * config.train.steps, (
        "the data rule: as many epochs of warm-start + bootstrap latents as the warm start"
    )
    config.m_step_steps = 1600
    assert m_step_steps(config) == 1600
    config.m_step_budget = "steps"
    assert m_step_steps(config) == 1600, "an explicit count wins over the budget rule"
    config.m_step_steps = -1
    with pytest.raises(BoltError, match="--m-step-steps"):
        config.validate()


def test_cross_fitted_estep_reads_every_fold_with_a_model_that_did_not_train_on_it(tmp_path):
    models = run_demo(_two_step_config(bootstrap_documents=3, estep_folds=2), tmp_path)["models"]
    assert set(models) == {"warm_start", "raw_warm", "em_1", "em_2", "raw_token_matched", "raw_flops_matched"}, (
        "fold models are helpers, not results"
    )
    seed = tmp_path / "seed-0"
    bootstrap = [d.id for d in read_documents(seed / "data" / "bootstrap.chunks.jsonl")]
    em_1 = {d.id: d for d in read_documents(seed / "latents" / "em_1.jsonl")}
    for fold, held_out in enumerate([bootstrap[0::2], bootstrap[1::2]]):
        model = seed / "models" / "crossfit" / f"em_1-without-fold-{fold}"
        manifest = json.loads((model / "manifest.json").read_text())
        trained_on = read_documents(manifest["inputs"]["data"]["path"])
        warm = read_documents(seed / "data" / "warm.latents.jsonl")
        assert trained_on == warm + [em_1[i] for i in bootstrap if i not in held_out]
        # same epochs as an M-step: the warm start's 2 steps per 2 documents
        assert manifest["config"]["steps"] == round(2 * len(trained_on) / 2)
        estep = json.loads(
            (seed / "latents" / "crossfit" / f"em_2.fold-{fold}.jsonl.run" / "manifest.json").read_text()
        )["config"]
        assert estep["model"] == str(model) and [d.id for d in read_documents(estep["input"])] == held_out
    merged = seed / "latents" / "em_2.crossfit.jsonl"
    assert [d.id for d in read_documents(merged)] == bootstrap
    assert not (seed / "latents" / "em_2.jsonl").exists(), "a plain E-step's output name stays free"
    m_step_data = read_documents(
        json.loads((seed / "models" / "em_2" / "manifest.json").read_text())["inputs"]["data"]["path"]
    )
    assert m_step_data == read_documents(seed / "data" / "warm.latents.jsonl") + read_documents(merged)
    judged = [
        [
            latent_is_correct(c.prefix, c.text, c.latent or "")
            for d in read_documents(seed / "latents" / "crossfit" / f"em_2.fold-{fold}.jsonl")
            for c in d.chunks
        ]
        for fold in (0, 1)
    ]
    assert models["em_2"]["latent_correct_share_by_fold"] == [
        [sum(v for v in fold if v is not None) / len([v for v in fold if v is not None]) for fold in judged]
    ]
    assert "latent_correct_share_by_fold" not in models["em_1"]
    # iteration 1 is not cross-fitted: the warm start never saw the bootstrap split
    assert json.loads((seed / "latents" / "em_1.jsonl.run" / "manifest.json").read_text())["config"]["model"] == str(
        seed / "models" / "warm_start"
    )


def test_cross_fitted_graph_waits_for_every_fold_model(tmp_path):
    from bolt.apps.world.demo import demo_jobs

    loop = dataclasses.replace(demo_loop(), iterations=3, estep_folds=3)
    config = DemoConfig(
        world=WorldConfig(warm_documents=2, bootstrap_documents=3, heldout_documents=1, questions=2),
        loop=loop,
        sweep=[1],
    )
    config.validate()
    jobs = demo_jobs(config, tmp_path)
    folds = [f"seed-0/crossfit/em_{i}-without-fold-{f}" for i in (1, 2) for f in range(3)]
    assert set(folds) <= set(jobs) and not any("crossfit/warm_start" in name for name in jobs)
    for i in (1, 2):
        for f in range(3):
            assert jobs[f"seed-0/crossfit/em_{i}-without-fold-{f}"].after == (f"seed-0/estep/em_{i}",)
        assert set(jobs[f"seed-0/estep/em_{i + 1}"].after) == {
            f"seed-0/crossfit/em_{i}-without-fold-{f}" for f in range(3)
        }
    assert jobs["seed-0/estep/em_1"].after == ("seed-0/warm_start",)
    assert jobs["seed-0/estep/em_1_k1"].after == ("seed-0/warm_start",)
