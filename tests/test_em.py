"""`bolt em` with cross-fitted E-steps on a tiny embedded world."""

from __future__ import annotations

import dataclasses
import json

import pytest

from bolt.apps.world.config import EM_WORLD
from bolt.apps.world.world import WorldConfig, em_inputs
from bolt.core.records import read_documents
from bolt.em.engine import EMConfig, run_em
from bolt.em.loop import LoopConfig
from bolt.errors import BoltError


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*never reached")
def test_cross_fitted_em_infers_each_fold_with_a_model_that_did_not_train_on_it(tmp_path):
    config = EMConfig(
        loop=LoopConfig(iterations=2, samples=2, max_latent_tokens=8, estep_folds=2),
        world=WorldConfig(
            warm_documents=2, bootstrap_documents=3, heldout_documents=1, questions=2, problems_per_document=3
        ),
    )
    config.train = dataclasses.replace(config.train, epochs=0.2, seq_len=128, batch_size=2, warmup_steps=1)
    config.eval = dataclasses.replace(config.eval, max_latent_tokens=8, max_answer_tokens=8, iwae_samples=[1])
    rows = run_em(config, tmp_path, prepare_inputs=em_inputs)
    assert [row["iteration"] for row in rows] == [0, 1, 2]
    assert 1.0 <= rows[2]["estep_mean_ess"] <= 2.0
    previous = read_documents(tmp_path / "latents" / "em_1.jsonl")
    bootstrap = [d.id for d in previous]
    for fold in range(2):
        held_out = bootstrap[fold::2]
        model = tmp_path / "models" / "crossfit" / f"em_1-without-fold-{fold}"
        trained_on = json.loads((model / "manifest.json").read_text())["inputs"]["data"]["path"]
        # the paper's M-step data: the bootstrap latents alone, here less the held-out fold
        assert read_documents(trained_on) == [d for d in previous if d.id not in held_out]
        estep = json.loads(
            (tmp_path / "latents" / "crossfit" / f"em_2.fold-{fold}.jsonl.run" / "manifest.json").read_text()
        )["config"]
        assert estep["model"] == str(model)
        assert [d.id for d in read_documents(estep["input"])] == held_out
    merged = tmp_path / "latents" / "em_2.crossfit.jsonl"
    assert [d.id for d in read_documents(merged)] == bootstrap
    assert json.loads((tmp_path / "models" / "em_2" / "manifest.json").read_text())["inputs"]["data"]["path"] == str(
        merged
    )
    assert not (tmp_path / "latents" / "em_2.jsonl").exists(), "a plain E-step's output name stays free"
    # iteration 1 reads the warm start, which never saw the bootstrap corpus
    assert json.loads((tmp_path / "latents" / "em_1.jsonl.run" / "manifest.json").read_text())["config"][
        "model"
    ] == str(tmp_path / "models" / "warm_start")


def test_cross_fitting_refuses_continued_m_steps_and_too_many_folds():
    with pytest.raises(BoltError, match="drop --continue-from-previous"):
        EMConfig(loop=LoopConfig(estep_folds=2, continue_from_previous=True)).validate()
    with pytest.raises(BoltError, match="--estep-folds must be at least 1"):
        EMConfig(loop=LoopConfig(estep_folds=0)).validate()
    with pytest.raises(BoltError, match="more than the embedded world's 24 bootstrap documents"):
        EMConfig(loop=LoopConfig(estep_folds=25), world=EM_WORLD).validate()
    with pytest.raises(BoltError, match="give --warm-start and --bootstrap"):
        EMConfig().validate()


def test_more_folds_than_bootstrap_documents_fail_before_any_training(tmp_path):
    from bolt.core.records import Chunk, Document, write_jsonl

    corpus = tmp_path / "boot.chunks.jsonl"
    write_jsonl(corpus, [Document(id=f"d{i}", chunks=[Chunk(text=f"c {i}.")]) for i in range(2)])
    config = EMConfig(warm_start=str(tmp_path / "absent.jsonl"), bootstrap=str(corpus), loop=LoopConfig(estep_folds=3))
    with pytest.raises(BoltError, match=r"--estep-folds 3 is more than the 2 documents of .*boot.chunks.jsonl"):
        run_em(config, tmp_path / "em")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*never reached")
def test_bolt_em_and_the_demo_run_one_engine_same_m_step_data_and_latents(tmp_path):
    """The same world, seed, loop and training give `bolt em` and the demo's EM chain the same
    E-step latents and the same M-step data, iteration after iteration."""
    from bolt.apps.world.demo import DemoConfig, run_demo

    world = WorldConfig(
        warm_documents=2, bootstrap_documents=2, heldout_documents=1, questions=2, problems_per_document=3
    )
    loop = LoopConfig(iterations=2, samples=2, max_latent_tokens=8)
    em = EMConfig(loop=loop, world=world)
    em.train = dataclasses.replace(
        em.train, model="world", epochs=None, steps=3, seq_len=128, batch_size=2, warmup_steps=1, lr=1e-3
    )
    em.eval = dataclasses.replace(em.eval, max_latent_tokens=8, max_answer_tokens=8, iwae_samples=[1])
    run_em(em, tmp_path / "em", prepare_inputs=em_inputs)
    demo = DemoConfig(
        world=world,
        loop=loop,
        sweep=[2],
        m_step_steps=3,
        train=em.train,
        eval=dataclasses.replace(em.eval, answer_pattern=DemoConfig().eval.answer_pattern),
        workers=1,
    )
    run_demo(demo, tmp_path / "demo")
    chains = (tmp_path / "em", tmp_path / "demo" / "seed-0")
    for name in ("em_1", "em_2"):
        latents = [read_documents(chain / "latents" / f"{name}.jsonl") for chain in chains]
        assert latents[0] == latents[1] and any(c.latent for d in latents[0] for c in d.chunks)
        data = [
            read_documents(
                json.loads((chain / "models" / name / "manifest.json").read_text())["inputs"]["data"]["path"]
            )
            for chain in chains
        ]
        assert data[0] == data[1] == latents[0], "the paper's M-step: the bootstrap latents alone"
