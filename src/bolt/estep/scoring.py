"""Teacher-forced log-probabilities of token sequences, batched.

``score`` is the one place that turns a model and token ids into log p: the E-step's
joint scores, evaluation's NLL and IWAE, and the golden tests all go through it.
"""

from __future__ import annotations

import torch


def _batches(order: list[int], lengths: list[int], max_batch_tokens: int):
    batch: list[int] = []
    width = 0
    for index in order:
        new_width = max(width, lengths[index])
        if batch and new_width * (len(batch) + 1) > max_batch_tokens:
            yield batch
            batch, new_width = [], lengths[index]
        batch.append(index)
        width = new_width
    if batch:
        yield batch


@torch.no_grad()
def score(
    model, sequences: list[list[int]], starts: list[int], max_batch_tokens: int = 16384, pad_id: int = 0
) -> list[float]:
    """Sum of log p(ids[t] | ids[:t]) over t >= starts[i], for each sequence (start >= 1)."""
    if any(start < 1 for start in starts):
        raise ValueError("the first scored position must be >= 1 (the first token has no context)")
    device = next(model.parameters()).device
    lengths = [len(seq) for seq in sequences]
    order = sorted(range(len(sequences)), key=lambda i: -lengths[i])
    totals = [0.0] * len(sequences)
    for batch in _batches(order, lengths, max_batch_tokens):
        width = max(lengths[i] for i in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, index in enumerate(batch):
            ids[row, : lengths[index]] = torch.tensor(sequences[index])
            mask[row, : lengths[index]] = 1
        ids, mask = ids.to(device), mask.to(device)
        logits = model(input_ids=ids, attention_mask=mask).logits.float()  # (B, T, V)
        log_probs = torch.log_softmax(logits[:, :-1], dim=-1).gather(2, ids[:, 1:].unsqueeze(2)).squeeze(2)  # (B, T-1)
        positions = torch.arange(1, width, device=device).unsqueeze(0)
        wanted = torch.tensor([starts[i] for i in batch], device=device).unsqueeze(1)
        keep = (positions >= wanted) & (mask[:, 1:] == 1)
        sums = (log_probs * keep).sum(dim=1).tolist()
        for row, index in enumerate(batch):
            totals[index] = sums[row]
    return totals


@torch.no_grad()
def score_shared_beginnings(
    model, sequences: list[list[int]], starts: list[int], max_batch_tokens: int = 16384, pad_id: int = 0
) -> list[float]:
    """``score`` for sequences whose unscored beginnings ``ids[:start]`` repeat, as the K candidates
    of one E-step chunk share their BOS and prefix: each distinct beginning goes through the model
    once, its KV cache is copied to every row that shares it, and only the scored ends ``ids[start:]``
    are run. The same sums as ``score`` up to float rounding, for a fraction of the compute when the
    prefixes are long."""
    from bolt.estep.sampling import cache_argument, left_pad, new_cache

    if any(start < 1 for start in starts):
        raise ValueError("the first scored position must be >= 1 (the first token has no context)")
    device = next(model.parameters()).device
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, (sequence, start) in enumerate(zip(sequences, starts)):
        if start < len(sequence):  # an empty end scores 0
            groups.setdefault(tuple(sequence[:start]), []).append(index)
    totals = [0.0] * len(sequences)

    def run(batch: list[tuple[int, ...]]) -> None:
        ids, mask = left_pad([list(beginning) for beginning in batch], pad_id, device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = new_cache(model)
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{cache_argument(model): cache},
        )
        first = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)  # (G, V): the first scored token's distribution
        rows = [index for beginning in batch for index in groups[beginning]]
        owner = torch.tensor([g for g, beginning in enumerate(batch) for _ in groups[beginning]], device=device)
        cache.batch_select_indices(owner)
        ends = [sequences[index][starts[index] :] for index in rows]
        width = max(len(end) for end in ends)
        end_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        end_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, end in enumerate(ends):
            end_ids[row, : len(end)] = torch.tensor(end)
            end_mask[row, : len(end)] = 1
        end_ids, end_mask = end_ids.to(device), end_mask.to(device)
        end_positions = positions[owner, -1:] + 1 + torch.arange(width, device=device).unsqueeze(0)
        logits = model(
            input_ids=end_ids,
            attention_mask=torch.cat([mask[owner], end_mask], dim=1),
            position_ids=end_positions,
            use_cache=True,
            **{cache_argument(model): cache},
        ).logits.float()
        later = torch.log_softmax(logits[:, :-1], dim=-1).gather(2, end_ids[:, 1:].unsqueeze(2)).squeeze(2)  # (R, W-1)
        sums = (later * (end_mask[:, 1:] == 1)).sum(dim=1) + first[owner].gather(1, end_ids[:, :1]).squeeze(1)
        for row, index in enumerate(rows):
            totals[index] = float(sums[row])

    batch: list[tuple[int, ...]] = []
    for beginning in sorted(groups, key=lambda b: -max(len(sequences[i]) for i in groups[b])):
        candidate = batch + [beginning]
        rows = sum(len(groups[b]) for b in candidate)
        width = max(len(b) for b in candidate) + max(
            len(sequences[i]) - starts[i] for b in candidate for i in groups[b]
        )
        if batch and rows * width > max_batch_tokens:
            run(batch)
            candidate = [beginning]
        batch = candidate
    if batch:
        run(batch)
    return totals
