"""Batched ancestral sampling with a KV cache, recording the log-prob of every sampled token.

Design points (they matter for the E-step's importance weights):

- The log-prob recorded for a token is under the distribution actually sampled from,
  after temperature, top-k and top-p (``processed_log_probs``). With temperature 1 and
  no truncation that is the model's own log q.
- Prompts of a batch are left-padded and prefilled once; the cache is then repeated K
  times (``batch_repeat_interleave``), so the K samples of a prompt share one prefill.
- Each of the B*K rows draws its uniforms from its own ``numpy`` generator (inverse-CDF
  sampling), so a sample depends on its own seed, not on which other prompts share the
  batch: sharded and resumed runs reproduce a single run.
- Rows that reached a stop token leave the batch (``batch_select_indices``), so long
  latents do not make every row pay for the longest one.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import torch

from bolt.core.progress import heartbeat
from bolt.errors import BoltError
from bolt.estep.config import SamplingConfig


@dataclass
class Sample:
    """One sampled continuation."""

    token_ids: list[int]
    """Sampled ids, the stop token included when one was reached."""
    log_prob: float
    """Sum of the sampled tokens' log-probs under the distribution sampled from."""
    finished: bool
    """Whether a stop token ended the sample (False: cut at max_new_tokens)."""


def processed_log_probs(logits: torch.Tensor, config: SamplingConfig) -> torch.Tensor:
    """Log-probs of the distribution we sample from: (N, V) logits -> (N, V) float32 log-probs."""
    logits = logits.float()
    if config.temperature != 1.0 and not config.greedy:
        logits = logits / config.temperature
    if config.top_k and config.top_k < logits.shape[-1]:
        kth = torch.topk(logits, config.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if config.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        sorted_probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        drop_sorted = mass_before >= config.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return torch.log_softmax(logits, dim=-1)


def _draw(log_probs: torch.Tensor, rngs: list[np.random.Generator], greedy: bool) -> torch.Tensor:
    """One token per row: argmax, or inverse-CDF with each row's own uniform."""
    if greedy:
        return log_probs.argmax(dim=-1)
    cdf = torch.cumsum(log_probs.double().exp(), dim=-1)  # (N, V)
    uniforms = (
        torch.tensor([rng.random() for rng in rngs], dtype=torch.float64, device=cdf.device).unsqueeze(1) * cdf[:, -1:]
    )
    tokens = torch.searchsorted(cdf, uniforms).squeeze(1)
    return tokens.clamp_(max=log_probs.shape[-1] - 1)


def new_cache(model):
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def cache_argument(model) -> str:
    """transformers 5.x renamed ``past_key_values`` to ``cache``; accept either."""
    parameters = inspect.signature(model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def left_pad(sequences: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq) :] = torch.tensor(seq)
            mask[row, width - len(seq) :] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def sample_continuations(
    model,
    prompts: list[list[int]],
    k: int,
    stop_ids: set[int],
    config: SamplingConfig,
    rngs: list[np.random.Generator] | None = None,
    pad_id: int = 0,
) -> list[list[Sample]]:
    """K continuations of each prompt. ``rngs`` has one generator per (prompt, sample), prompt-major."""
    if any(len(prompt) == 0 for prompt in prompts):
        raise BoltError("cannot sample from an empty prompt.")
    n_rows = len(prompts) * k
    if not config.greedy and (rngs is None or len(rngs) != n_rows):
        raise ValueError(f"need one rng per row ({n_rows}), got {None if rngs is None else len(rngs)}")
    device = next(model.parameters()).device
    input_ids, mask = left_pad(prompts, pad_id, device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = new_cache(model)
    out = model(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,
        **{cache_argument(model): cache},
    )
    if k > 1:
        cache.batch_repeat_interleave(k)
    logits = out.logits[:, -1, :].repeat_interleave(k, dim=0)  # (N, V)
    mask = mask.repeat_interleave(k, dim=0)
    next_position = positions[:, -1:].repeat_interleave(k, dim=0) + 1  # (N, 1)
    active = list(range(n_rows))  # row index of each live batch row
    tokens: list[list[int]] = [[] for _ in range(n_rows)]
    log_prob = [0.0] * n_rows
    finished = [False] * n_rows
    stop = torch.tensor(sorted(stop_ids), device=device)
    for step in range(config.max_new_tokens):
        heartbeat(f"decoding token {step + 1}/{config.max_new_tokens}, {len(active)} of {n_rows} rows still running")
        log_probs = processed_log_probs(logits, config)
        drawn = _draw(log_probs, [rngs[row] for row in active] if rngs else [], config.greedy)
        # One device-to-host copy per list: indexing a CUDA tensor row by row would sync per row.
        drawn_log_probs = log_probs.gather(1, drawn.unsqueeze(1)).squeeze(1).tolist()
        is_stop = torch.isin(drawn, stop).tolist()
        drawn_ids = drawn.tolist()
        for batch_row, row in enumerate(active):
            tokens[row].append(drawn_ids[batch_row])
            log_prob[row] += drawn_log_probs[batch_row]
            finished[row] = is_stop[batch_row]
        keep = [i for i, stopped in enumerate(is_stop) if not stopped]
        if not keep:
            break
        if len(keep) < len(active):
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            drawn, mask, next_position = drawn[index], mask[index], next_position[index]
            active = [active[i] for i in keep]
        mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
        out = model(
            input_ids=drawn.unsqueeze(1),
            attention_mask=mask,
            position_ids=next_position,
            use_cache=True,
            **{cache_argument(model): cache},
        )
        next_position = next_position + 1
        logits = out.logits[:, -1, :]
    samples = [Sample(tokens[row], log_prob[row], finished[row]) for row in range(n_rows)]
    return [samples[i * k : (i + 1) * k] for i in range(len(prompts))]
