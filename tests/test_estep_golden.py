"""Golden tests of the E-step against exact enumeration of every latent.

The model has a 10-token vocabulary and latents are cut at L = 2 tokens, so the sample
space of the posterior sampler is finite (91 latents: finished ones of length <= 1 plus
EoL, unfinished ones of length 2) and every probability can be summed exactly.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from golden_model import VOCAB, golden_model, golden_tokenizer

from bolt.core.records import Chunk, Document
from bolt.core.special_tokens import marker_ids
from bolt.estep.importance import logsumexp
from bolt.estep.sampling import SamplingConfig
from bolt.estep.scoring import score
from bolt.estep.stage import (
    ChunkContext,
    EStepConfig,
    chunk_jobs,
    joint_sequence,
    posterior_prompt,
    prior_prompt,
    run_batch,
)

MAX_LATENT = 2
PREFIX, TEXT = "a b", "c a"


@pytest.fixture(scope="module")
def golden():
    tokenizer, model = golden_tokenizer(), golden_model()
    m = marker_ids(tokenizer)
    context = ChunkContext(
        prefix=tokenizer.encode(PREFIX, add_special_tokens=False), text=tokenizer.encode(TEXT, add_special_tokens=False)
    )
    alphabet = [i for i in range(len(VOCAB)) if i != m.eol]
    space = [(z, True) for n in range(MAX_LATENT) for z in itertools.product(alphabet, repeat=n)]
    space += [(z, False) for z in itertools.product(alphabet, repeat=MAX_LATENT)]
    prompt = posterior_prompt(context, m)
    log_q = score(
        model, [prompt + list(z) + ([m.eol] if done else []) for z, done in space], [len(prompt)] * len(space)
    )
    joints = [joint_sequence(context, list(z), m) for z, _ in space]
    log_p = score(model, [seq for seq, _ in joints], [start for _, start in joints])
    table = {(z, done): (q, p) for (z, done), q, p in zip(space, log_q, log_p)}
    log_px = logsumexp(log_p)
    posterior = {key: np.exp(p - log_px) for key, (_, p) in table.items()}
    prompt = prior_prompt(context, m)
    log_prior = score(
        model, [prompt + list(z) + ([m.eol] if done else []) for z, done in space], [len(prompt)] * len(space)
    )
    prior = dict(zip(space, log_prior))
    return dict(tokenizer=tokenizer, model=model, m=m, table=table, log_px=log_px, posterior=posterior, prior=prior)


def _run(golden, k: int, repeats: int, seed: int = 0, keep_candidates: bool = False, proposal: str = "posterior"):
    documents = [Document(id=f"doc-{i}", chunks=[Chunk(text=TEXT, prefix=PREFIX)]) for i in range(repeats)]
    config = EStepConfig(
        samples=k,
        seed=seed,
        sampling=SamplingConfig(max_new_tokens=MAX_LATENT),
        batch_prompts=max(1, 2048 // k),
        keep_candidates=keep_candidates,
        proposal=proposal,
    )
    jobs = list(chunk_jobs(documents, golden["tokenizer"], config, window=64))
    results = []
    for start in range(0, len(jobs), config.batch_prompts):
        results += run_batch(
            golden["model"], golden["tokenizer"], jobs[start : start + config.batch_prompts], golden["m"], config
        )
    return results


def _key(golden, latent: str, finished: bool):
    return tuple(golden["tokenizer"].encode(latent, add_special_tokens=False)), finished


def test_enumerated_sample_space_is_complete(golden):
    log_q = [q for q, _ in golden["table"].values()]
    assert logsumexp(log_q) == pytest.approx(0.0, abs=1e-5)


def test_recorded_log_q_and_log_p_are_exact(golden):
    results = _run(golden, k=4, repeats=30, keep_candidates=True)
    checked = 0
    for result in results:
        assert result["latent_retokenizes"]
        for candidate in result["candidates"]:
            q, p = golden["table"][_key(golden, candidate["latent"], candidate["finished"])]
            assert candidate["log_q"] == pytest.approx(q, abs=1e-4)
            assert candidate["log_p_joint"] == pytest.approx(p, abs=1e-4)
            assert candidate["log_w"] == pytest.approx(p - q, abs=2e-4)
            checked += 1
    assert checked == 120


def test_prior_proposal_records_exact_prior_log_q(golden):
    assert logsumexp(list(golden["prior"].values())) == pytest.approx(0.0, abs=1e-5)
    checked = 0
    for result in _run(golden, k=4, repeats=30, keep_candidates=True, proposal="prior"):
        for candidate in result["candidates"]:
            key = _key(golden, candidate["latent"], candidate["finished"])
            assert candidate["log_q"] == pytest.approx(golden["prior"][key], abs=1e-4)
            assert candidate["log_p_joint"] == pytest.approx(golden["table"][key][1], abs=1e-4)
            checked += 1
    assert checked == 120


def test_joint_score_counts_the_sol_token(golden):
    m = golden["m"]
    context = ChunkContext(prefix=[3], text=[4])
    sequence, start = joint_sequence(context, [5], m)
    assert sequence[start] == m.sol
    without_sol = score(golden["model"], [sequence], [start + 1])[0]
    with_sol = score(golden["model"], [sequence], [start])[0]
    assert with_sol < without_sol  # log p(SoL | prefix) < 0 is included


def test_iwae_is_below_exact_log_px_and_tightens_with_k(golden):
    means, errors = {}, {}
    for k, repeats in ((1, 2000), (4, 1000), (64, 300)):
        bounds = np.array([r["iwae"] for r in _run(golden, k, repeats)])
        means[k], errors[k] = bounds.mean(), bounds.std(ddof=1) / np.sqrt(repeats)
    for k in means:
        assert means[k] - 3 * errors[k] <= golden["log_px"], (k, means[k], golden["log_px"])
    gaps = {k: golden["log_px"] - means[k] for k in means}
    assert gaps[1] - 3 * (errors[1] + errors[4]) > gaps[4] > gaps[64] + 3 * (errors[4] + errors[64])
    assert gaps[64] < 0.3


@pytest.mark.parametrize("proposal", ["posterior", "prior"])
def test_resampling_matches_exact_posterior(golden, proposal):
    """With K = 64, resampled latents follow p(Z | X) whichever proposal drew them; the proposal alone is far
    from it."""
    repeats = 800
    counts: dict = {}
    for result in _run(golden, k=64, repeats=repeats, seed=1, proposal=proposal):
        key = _key(golden, result["latent"], result["latent_finished"])
        counts[key] = counts.get(key, 0) + 1
    posterior = golden["posterior"]
    chosen_tv = 0.5 * sum(abs(counts.get(key, 0) / repeats - p) for key, p in posterior.items())
    log_q = {key: q for key, (q, _) in golden["table"].items()} if proposal == "posterior" else golden["prior"]
    proposal_tv = 0.5 * sum(abs(np.exp(log_q[key]) - p) for key, p in posterior.items())
    assert proposal_tv > {"posterior": 0.6, "prior": 0.45}[proposal]  # the prior is about 0.5 away
    assert chosen_tv < 0.2


def test_sampling_is_independent_of_batching(golden):
    alone = _run(golden, k=4, repeats=3)
    together = _run(golden, k=4, repeats=40)[:3]
    assert [r["latent"] for r in alone] == [r["latent"] for r in together]
    assert [r["log_w"] for r in alone] == pytest.approx([r["log_w"] for r in together], abs=1e-4)
