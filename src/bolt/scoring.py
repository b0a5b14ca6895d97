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
def score(model, sequences: list[list[int]], starts: list[int], max_batch_tokens: int = 16384, pad_id: int = 0) -> list[float]:
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
