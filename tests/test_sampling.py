"""The batched KV-cache sampler: log-probs are those of the distribution sampled from."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bolt.core.modeling import preset_model
from bolt.estep.sampling import SamplingConfig, processed_log_probs, sample_continuations
from bolt.estep.scoring import score

STOP = {ord(".")}


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = preset_model("tiny", seed=3)
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)  # sharper than at init, so truncation matters
    return model.eval(), tokenizer


def _prompts(tokenizer):
    return [tokenizer.encode(text, add_special_tokens=False) for text in ("The sum of", "x", "Seven times eight is")]


def _rngs(n, seed=0):
    return [np.random.default_rng([seed, i]) for i in range(n)]


def reference_log_probs(logits: torch.Tensor, temperature: float, top_p: float, top_k: int) -> torch.Tensor:
    """An independent, per-row, loop-based implementation of the sampled distribution:
    temperature, then top-k, then top-p on the renormalised top-k distribution (the order
    of transformers and vLLM)."""
    out = torch.empty_like(logits, dtype=torch.float64)
    for row, values in enumerate(logits.double() / temperature):
        order = torch.argsort(values, descending=True).tolist()
        if top_k:
            order = order[:top_k]
        probs = torch.softmax(values[order], 0).tolist()
        keep = torch.zeros_like(values, dtype=torch.bool)
        mass = 0.0
        for index, prob in zip(order, probs):
            if mass >= top_p:
                break
            keep[index] = True
            mass += prob
        out[row] = torch.log_softmax(values.masked_fill(~keep, float("-inf")), 0)
    return out


def test_log_prob_equals_teacher_forced_score_at_temperature_one(tiny):
    model, tokenizer = tiny
    prompts = _prompts(tokenizer)
    samples = sample_continuations(
        model, prompts, 4, STOP, SamplingConfig(max_new_tokens=20), _rngs(12), pad_id=tokenizer.pad_token_id
    )
    sequences = [p + s.token_ids for p, group in zip(prompts, samples) for s in group]
    starts = [len(p) for p, group in zip(prompts, samples) for _ in group]
    scored = score(model, sequences, starts)
    recorded = [s.log_prob for group in samples for s in group]
    assert recorded == pytest.approx(scored, abs=1e-4)
    assert any(s.finished for g in samples for s in g) and any(not s.finished for g in samples for s in g)
    for group in samples:
        for sample in group:
            assert sample.finished == (sample.token_ids[-1] in STOP)
            assert sample.finished or len(sample.token_ids) == 20


@pytest.mark.parametrize("temperature,top_p,top_k", [(0.7, 1.0, 0), (1.3, 0.8, 0), (1.0, 1.0, 5), (0.8, 0.9, 20)])
def test_log_q_is_under_the_processed_distribution(tiny, temperature, top_p, top_k):
    model, tokenizer = tiny
    prompts = _prompts(tokenizer)
    config = SamplingConfig(temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=12)
    samples = sample_continuations(model, prompts, 3, STOP, config, _rngs(9, seed=5), pad_id=tokenizer.pad_token_id)
    for prompt, group in zip(prompts, samples):
        for sample in group:
            ids = torch.tensor([prompt + sample.token_ids])
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1]
            reference = reference_log_probs(logits, temperature, top_p, top_k)
            expected = reference[torch.arange(len(sample.token_ids)), torch.tensor(sample.token_ids)].sum().item()
            assert np.isfinite(expected), "sampled a token outside the truncated support"
            assert sample.log_prob == pytest.approx(expected, abs=1e-3)


def test_processed_log_probs_normalise_and_truncate():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, -3.0]])
    for config in (SamplingConfig(top_p=0.5), SamplingConfig(top_k=2), SamplingConfig(temperature=0.5)):
        log_probs = processed_log_probs(logits, config)
        assert torch.exp(log_probs).sum().item() == pytest.approx(1.0, abs=1e-6)
        assert log_probs.argmax().item() == 0
    assert torch.isinf(processed_log_probs(logits, SamplingConfig(top_k=2))[0, 2:]).all()
    assert torch.isinf(processed_log_probs(logits, SamplingConfig(top_p=0.5))[0, 1:]).all()


def test_greedy_matches_transformers_generate(tiny):
    model, tokenizer = tiny
    prompt = tokenizer.encode("The sum of", add_special_tokens=False)
    ours = sample_continuations(
        model, [prompt], 1, {-1}, SamplingConfig(max_new_tokens=15, greedy=True), pad_id=tokenizer.pad_token_id
    )[0][0]
    theirs = model.generate(
        torch.tensor([prompt]),
        max_new_tokens=15,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=None,
    )
    assert ours.token_ids == theirs[0, len(prompt) :].tolist()


def test_shared_prefill_matches_separate_runs_with_padding(tiny):
    """Left padding and the repeated cache give the same samples as one prompt at a time."""
    model, tokenizer = tiny
    prompts = _prompts(tokenizer)
    config = SamplingConfig(max_new_tokens=10)
    batched = sample_continuations(model, prompts, 2, STOP, config, _rngs(6, seed=9), pad_id=tokenizer.pad_token_id)
    rngs = _rngs(6, seed=9)
    for index, prompt in enumerate(prompts):
        alone = sample_continuations(
            model, [prompt], 2, STOP, config, rngs[2 * index : 2 * index + 2], pad_id=tokenizer.pad_token_id
        )[0]
        assert [s.token_ids for s in alone] == [s.token_ids for s in batched[index]]
        assert [s.log_prob for s in alone] == pytest.approx([s.log_prob for s in batched[index]], abs=1e-4)


def test_sampling_frequencies_follow_the_distribution(tiny):
    """Inverse-CDF draws with per-row generators reproduce the next-token distribution."""
    model, tokenizer = tiny
    prompt = tokenizer.encode("x", add_special_tokens=False)
    n = 4000
    samples = sample_continuations(
        model, [prompt], n, set(), SamplingConfig(max_new_tokens=1), _rngs(n, seed=2), pad_id=tokenizer.pad_token_id
    )[0]
    counts = np.bincount([s.token_ids[0] for s in samples], minlength=len(tokenizer))
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=torch.tensor([prompt])).logits[0, -1], -1).numpy()
    assert 0.5 * np.abs(counts / n - probs).sum() < 0.06


@pytest.mark.parametrize("budget", [16384, 40], ids=["one batch", "token budget splits it"])
def test_scoring_shared_beginnings_once_gives_the_full_forward_sums(tiny, budget):
    """The E-step's joint scores with each chunk's BOS + prefix run once and its KV cache shared by
    the K candidates: the same sums as scoring every full sequence (float rounding apart)."""
    from bolt.estep.scoring import score_shared_beginnings

    model, tokenizer = tiny
    rng = np.random.default_rng(0)
    sequences, starts = [], []
    for prefix_length in (
        1,
        3,
        17,
        6,
    ):  # beginnings of different lengths (left padding), K = 4 ends each of different lengths
        beginning = rng.integers(3, 200, size=prefix_length).tolist()
        for _ in range(4):
            sequences.append(beginning + rng.integers(3, 200, size=int(rng.integers(1, 12))).tolist())
            starts.append(prefix_length)
    sequences.append(sequences[0][: starts[0]])  # a sequence with nothing to score
    starts.append(starts[0])
    order = rng.permutation(len(sequences))  # rows sharing a beginning need not be next to each other
    sequences, starts = [sequences[i] for i in order], [starts[i] for i in order]
    expected = score(model, sequences, starts)
    shared = score_shared_beginnings(model, sequences, starts, max_batch_tokens=budget, pad_id=tokenizer.pad_token_id)
    assert shared == pytest.approx(expected, abs=1e-4)
    assert 0.0 in shared and min(shared) < -1.0
