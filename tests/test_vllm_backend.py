"""The vLLM backend against the HF reference backend.

The agreement tests need vLLM and a CUDA GPU and are skipped elsewhere (CI included: they
are never counted as passed there). Tolerances, for float32 weights on both engines:
a sequence's summed log-prob within 1e-3 nats per token (+1e-3); the chosen latents'
mean log p(Z, X) and mean ESS within 5 standard errors of each other.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from bolt.errors import BoltError
from bolt.estep.backends import HFBackend, make_backend
from bolt.estep.vllm_backend import token_budget_batches

HAS_VLLM_GPU = importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()
needs_vllm_gpu = pytest.mark.skipif(not HAS_VLLM_GPU, reason="needs vLLM and a CUDA GPU")


def test_token_budget_batches_keep_order_and_budget():
    lengths = [5, 5, 5, 20, 1, 1, 9]
    batches = token_budget_batches(lengths, max_batch_tokens=10)
    assert [i for batch in batches for i in batch] == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) == 1 or sum(lengths[i] for i in batch) <= 10
    assert batches == [[0, 1], [2], [3], [4, 5], [6]]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_backend_without_vllm_says_how_to_install(tiny_trained_model):
    from bolt.core.modeling import load_tokenizer

    with pytest.raises(BoltError, match=r"bolt-latent\[vllm\]"):
        make_backend("vllm", tiny_trained_model, load_tokenizer(tiny_trained_model))


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """A random-init Llama whose head size every vLLM attention kernel takes, as an HF directory, in both engines."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from bolt.core.modeling import byte_tokenizer
    from bolt.core.special_tokens import add_latent_tokens
    from bolt.estep.vllm_backend import VLLMBackend

    tokenizer = byte_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=256,
        eos_token_id=257,
        pad_token_id=258,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    add_latent_tokens(tokenizer, model)
    directory = tmp_path_factory.mktemp("vllm-model")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    hf = HFBackend(model.to("cuda"), tokenizer.pad_token_id)
    vllm = VLLMBackend(directory, dtype=torch.float32, gpu_memory_utilization=0.3, enforce_eager=True)
    return tokenizer, hf, vllm


def _close(a: list[float], b: list[float], lengths: list[int]) -> None:
    for x, y, n in zip(a, b, lengths):
        assert abs(x - y) <= 1e-3 * n + 1e-3, (x, y, n)


@needs_vllm_gpu
def test_joint_scores_agree(engines):
    _, hf, vllm = engines
    rng = np.random.default_rng(0)
    sequences = [rng.integers(0, 256, size=int(n)).tolist() for n in rng.integers(8, 200, size=24)]
    starts = [int(rng.integers(1, len(s))) for s in sequences]
    _close(
        hf.score_sequences(sequences, starts),
        vllm.score_sequences(sequences, starts),
        [len(s) - t for s, t in zip(sequences, starts)],
    )


@needs_vllm_gpu
@pytest.mark.parametrize("temperature, top_p, top_k", [(1.0, 1.0, 0), (0.7, 0.9, 0), (1.3, 1.0, 20)])
def test_log_q_is_that_of_the_distribution_sampled_from(engines, temperature, top_p, top_k):
    """vLLM's summed sampled-token log-probs equal HF's processed log-probs of the same tokens."""
    from bolt.estep.sampling import SamplingConfig, processed_log_probs

    tokenizer, hf, vllm = engines
    sampling = SamplingConfig(temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=24)
    prompts = [
        tokenizer.encode(text, add_special_tokens=False) for text in ("1 + 2 = 3.", "x = 4 * 5", "so the answer is")
    ]
    rngs = [np.random.default_rng(i) for i in range(len(prompts) * 3)]
    samples = vllm.sample_latents(prompts, 3, {tokenizer.eos_token_id}, sampling, rngs)
    for prompt, prompt_samples in zip(prompts, samples):
        for sample in prompt_samples:
            ids = torch.tensor([prompt + sample.token_ids], device="cuda")
            with torch.no_grad():
                logits = hf.model(ids).logits[0, len(prompt) - 1 : -1]  # (L, V): the steps that drew each sampled token
            log_probs = processed_log_probs(logits, sampling).gather(1, ids[0, len(prompt) :].unsqueeze(1))
            _close([float(log_probs.sum())], [sample.log_prob], [len(sample.token_ids)])


@needs_vllm_gpu
def test_chosen_latents_agree_in_distribution(engines):
    from bolt.core.records import Chunk, Document
    from bolt.core.special_tokens import marker_ids
    from bolt.estep.sampling import SamplingConfig
    from bolt.estep.stage import EStepConfig, chunk_jobs, run_batch

    tokenizer, hf, vllm = engines
    m = marker_ids(tokenizer)
    config = EStepConfig(samples=4, sampling=SamplingConfig(max_new_tokens=6), batch_prompts=64)
    documents = [Document(id=f"d{i}", chunks=[Chunk(text="then 3 + 4 = 7.", prefix="we add.")]) for i in range(400)]
    jobs = list(chunk_jobs(documents, tokenizer, config, window=512))
    stats = {}
    for name, backend in (("hf", hf), ("vllm", vllm)):
        rows = [r for i in range(0, len(jobs), 64) for r in run_batch(backend, tokenizer, jobs[i : i + 64], m, config)]
        stats[name] = {key: np.array([r[key] for r in rows]) for key in ("log_p_joint", "ess")}
    for key in ("log_p_joint", "ess"):
        a, b = stats["hf"][key], stats["vllm"][key]
        standard_error = np.sqrt(a.var() / len(a) + b.var() / len(b))
        assert abs(a.mean() - b.mean()) <= 5 * standard_error + 1e-6, (key, a.mean(), b.mean(), standard_error)
