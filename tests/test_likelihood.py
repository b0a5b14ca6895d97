"""Held-out likelihood: NLL by its definition, IWAE bounds equal to the E-step's own numbers, resumable bounds."""

from __future__ import annotations

import json

import pytest
import torch
from golden_model import golden_model, golden_tokenizer

from bolt.core.layouts import encode
from bolt.core.modeling import load_model, load_tokenizer
from bolt.core.records import Chunk, Document
from bolt.core.special_tokens import marker_ids
from bolt.estep.importance import iwae_bound
from bolt.estep.sampling import SamplingConfig
from bolt.estep.stage import EStepConfig, estep_stage
from bolt.evaluate.stage import EvalConfig, likelihood_bounds, load_eval_documents, nll


def test_nll_is_the_token_by_token_log_loss():
    """Against one forward pass per position (no batching, no padding): -sum log p(x_t | BOS x_<t)."""
    tokenizer, model = golden_tokenizer(), golden_model()
    m = marker_ids(tokenizer)
    documents = [
        Document(id="d0", chunks=[Chunk(text="a b c", prefix=""), Chunk(text=" c a", prefix="a b c")]),
        Document(id="d1", chunks=[Chunk(text="b", prefix="")]),
    ]
    total, tokens = 0.0, 0
    with torch.no_grad():
        for document in documents:
            ids = [m.bos] + [t for chunk in document.chunks for t in encode(tokenizer, chunk.text)]
            for position in range(1, len(ids)):
                logits = model(input_ids=torch.tensor([ids[:position]])).logits[0, -1]
                total -= torch.log_softmax(logits.double(), dim=-1)[ids[position]].item()
                tokens += 1
    result = nll(model, tokenizer, documents, m, documents_per_step=1)
    assert result["tokens"] == tokens == 6
    assert result["nll_per_token"] == pytest.approx(total / tokens, rel=1e-5)
    assert result["nll_per_char"] == pytest.approx(total / sum(len(d.text) for d in documents), rel=1e-5)


@pytest.fixture(scope="module")
def heldout(tiny_trained_model, tiny_latents):
    tokenizer = load_tokenizer(tiny_trained_model)
    model = load_model(tiny_trained_model).eval()
    documents = load_eval_documents(tiny_latents["heldout_chunks"], uniform_units=8)
    return tokenizer, model, marker_ids(tokenizer), documents


@pytest.mark.filterwarnings("ignore:.*never reached")
def test_iwae_bounds_are_the_estep_numbers_on_the_same_chunks(heldout, tiny_trained_model, tiny_latents, tmp_path):
    """`bolt estep -k 4 --keep-candidates` and the evaluation's bounds, same seed:
    bound_n = -sum_chunks IWAE_n(log w_1..n) / tokens."""
    tokenizer, model, m, documents = heldout
    output = tmp_path / "latents.jsonl"
    estep = EStepConfig(
        samples=4, seed=3, sampling=SamplingConfig(max_new_tokens=8), batch_prompts=8, keep_candidates=True
    )
    estep_stage(tiny_trained_model, tiny_latents["heldout_chunks"], output, estep)
    chunks = [chunk for line in output.read_text().splitlines() for chunk in json.loads(line)["chunks"]]
    tokens = sum(len(encode(tokenizer, chunk["text"])) for chunk in chunks)
    log_weights = [[candidate["log_w"] for candidate in chunk["candidates"]] for chunk in chunks]
    assert sum(c["iwae"] for c in chunks) == pytest.approx(sum(iwae_bound(w) for w in log_weights), rel=1e-9)

    bounds = likelihood_bounds(
        model, tokenizer, documents, m, EvalConfig(iwae_samples=[1, 2, 4], max_latent_tokens=8, seed=3, batch_prompts=8)
    )
    assert bounds["bound_tokens"] == tokens
    for n in (1, 2, 4):
        expected = -sum(iwae_bound(w, n) for w in log_weights) / tokens
        assert bounds[f"iwae{n}_nll_per_token"] == pytest.approx(expected, rel=1e-5), n


def test_bounds_resume_after_an_interruption(heldout, tmp_path, monkeypatch):
    import bolt.evaluate.stage as evaluation

    tokenizer, model, m, documents = heldout
    config = EvalConfig(iwae_samples=[1, 2], max_latent_tokens=6, seed=1, batch_prompts=4)
    uninterrupted = likelihood_bounds(model, tokenizer, documents, m, config)
    first_document_batches = -(-len(documents[0].chunks) // config.batch_prompts)
    real_run_batch = evaluation.run_batch
    calls = []

    def interrupted(*args, **kwargs):
        if len(calls) == first_document_batches:
            raise KeyboardInterrupt
        calls.append(1)
        return real_run_batch(*args, **kwargs)

    partial = tmp_path / "bounds.partial.jsonl"
    monkeypatch.setattr(evaluation, "run_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        likelihood_bounds(model, tokenizer, documents, m, config, partial, "key-1")
    assert [json.loads(line)["document"]["id"] for line in partial.read_text().splitlines()] == [documents[0].id]

    calls.clear()
    monkeypatch.setattr(evaluation, "run_batch", lambda *a, **k: calls.append(1) or real_run_batch(*a, **k))
    resumed = likelihood_bounds(model, tokenizer, documents, m, config, partial, "key-1")
    # the E-step's fixed windows: only those wholly inside the finished first document are skipped,
    # and every chunk is scored in the batch it had before, so the bounds are the same to the bit
    total = sum(len(d.chunks) for d in documents)
    assert len(calls) == -(-total // config.batch_prompts) - len(documents[0].chunks) // config.batch_prompts
    assert resumed == uninterrupted
    # Another config's partial results are not reused.
    calls.clear()
    likelihood_bounds(model, tokenizer, documents, m, config, partial, "key-2")
    assert len(calls) == -(-sum(len(d.chunks) for d in documents) // config.batch_prompts)
