"""The E-step on vLLM's offline engine (optional extra ``vllm``; GPU only).

Written to vLLM's documented offline API (``LLM``, ``SamplingParams``, ``TokensPrompt``):

- log q: every sampled token's log-prob (``SamplingParams(logprobs=0)``: the sampled token
  only). The engine is built with ``logprobs_mode="processed_logprobs"`` so that these are
  the log-probs *after* temperature and top-k/top-p, i.e. of the distribution actually
  sampled from (vLLM's default, ``raw_logprobs``, returns the model's own, which would bias
  the importance weights whenever sampling is tempered or truncated). The setting exists
  from vLLM 0.10.2; older versions are refused.
- log p: prompt log-probs (``prompt_logprobs=0``) of the joint sequence, requested with
  temperature 1 and no truncation, so the processed values equal the model's own. Prompt
  log-probs cost memory per prompt token: requests go in batches of at most
  ``max_batch_tokens`` tokens.
- Randomness: each of the K samples of a chunk is its own request seeded from that row's
  numpy generator, so a sample does not depend on which other chunks share the batch.
  vLLM's kernels may still round differently with batch composition; set
  ``VLLM_BATCH_INVARIANT=1`` where the installed vLLM supports it for bitwise repeatability.
- Stops: only the latent's end marker ends a sample (``ignore_eos``), as in the HF backend.

CI never runs this file (no vLLM wheel on CPU); ``tests/test_vllm_backend.py`` checks it
against the HF backend wherever vLLM and a GPU are present.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bolt.errors import BoltError
from bolt.estep.config import SamplingConfig
from bolt.estep.sampling import Sample

_DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def _import_vllm():
    try:
        import vllm
    except ImportError:
        raise BoltError("--backend vllm needs vLLM on a machine with a GPU: pip install 'bolt-latent[vllm]'.") from None
    return vllm


def _token_log_prob(entry, token_id: int) -> float:
    """The log-prob of ``token_id`` in one position's ``{token id: Logprob}`` mapping."""
    if entry is None or token_id not in entry:
        raise BoltError(
            f"vLLM returned no log-prob for token {token_id}; "
            "this vLLM version does not include the sampled/prompt token in its log-probs."
        )
    return float(entry[token_id].logprob)


def token_budget_batches(lengths: list[int], max_batch_tokens: int) -> list[list[int]]:
    """Consecutive index groups whose summed lengths stay within the budget (one item at least)."""
    batches: list[list[int]] = [[]]
    used = 0
    for index, length in enumerate(lengths):
        if batches[-1] and used + length > max_batch_tokens:
            batches.append([])
            used = 0
        batches[-1].append(index)
        used += length
    return [batch for batch in batches if batch]


class VLLMBackend:
    """A vLLM engine holding the model at ``model_dir`` (one per GPU worker)."""

    def __init__(
        self, model_dir: str | Path, dtype: torch.dtype = torch.float32, max_batch_tokens: int = 16384, **engine_args
    ):
        from transformers import AutoConfig

        vllm = _import_vllm()
        self._vllm = vllm
        self.context_window = int(getattr(AutoConfig.from_pretrained(model_dir), "max_position_embeddings", 2048))
        try:
            self.llm = vllm.LLM(
                model=str(model_dir),
                dtype=_DTYPES.get(dtype, "auto"),
                max_model_len=self.context_window,
                logprobs_mode="processed_logprobs",
                seed=0,
                **engine_args,
            )
        except TypeError as exc:
            if "logprobs_mode" in str(exc):
                raise BoltError(
                    f"vLLM {vllm.__version__} has no logprobs_mode setting, "
                    "so its log q would ignore temperature and top-p: use vLLM >= 0.10.2."
                ) from None
            raise
        self.max_batch_tokens = max_batch_tokens

    def _prompt(self, token_ids: list[int]):
        from vllm.inputs import TokensPrompt

        return TokensPrompt(prompt_token_ids=list(token_ids))

    def sample_latents(
        self,
        prompts: list[list[int]],
        k: int,
        stop_ids: set[int],
        sampling: SamplingConfig,
        rngs: list[np.random.Generator],
    ) -> list[list[Sample]]:
        requests, params = [], []
        for row in range(len(prompts) * k):
            params.append(
                self._vllm.SamplingParams(
                    n=1,
                    seed=None if sampling.greedy else int(rngs[row].integers(2**31 - 1)),
                    temperature=0.0 if sampling.greedy else sampling.temperature,
                    top_p=sampling.top_p,
                    top_k=sampling.top_k if sampling.top_k > 0 else -1,
                    max_tokens=sampling.max_new_tokens,
                    stop_token_ids=sorted(stop_ids),
                    ignore_eos=True,
                    logprobs=0,
                    detokenize=False,
                )
            )
            requests.append(self._prompt(prompts[row // k]))
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        samples = []
        for output in outputs:
            completion = output.outputs[0]
            token_ids = list(completion.token_ids)
            finished = completion.finish_reason == "stop"
            if finished and (not token_ids or token_ids[-1] not in stop_ids):
                raise BoltError(
                    "vLLM stopped a sample without returning its stop token; "
                    "the E-step needs it (check the installed vLLM version)."
                )
            log_prob = sum(_token_log_prob(entry, token) for entry, token in zip(completion.logprobs, token_ids))
            samples.append(Sample(token_ids=token_ids, log_prob=log_prob, finished=finished))
        return [samples[i * k : (i + 1) * k] for i in range(len(prompts))]

    def score_sequences(self, sequences: list[list[int]], starts: list[int]) -> list[float]:
        if any(start < 1 for start in starts):
            raise ValueError("the first scored position must be >= 1 (the first token has no context)")
        params = self._vllm.SamplingParams(
            max_tokens=1, temperature=1.0, top_p=1.0, top_k=-1, prompt_logprobs=0, detokenize=False
        )
        totals = [0.0] * len(sequences)
        for batch in token_budget_batches([len(s) for s in sequences], self.max_batch_tokens):
            outputs = self.llm.generate([self._prompt(sequences[i]) for i in batch], params, use_tqdm=False)
            for index, output in zip(batch, outputs):
                sequence = sequences[index]
                totals[index] = sum(
                    _token_log_prob(output.prompt_logprobs[t], sequence[t]) for t in range(starts[index], len(sequence))
                )
        return totals
