"""The E-step's Monte Carlo math (docs/METHOD.md, "E-step").

For K latents Z^(k) sampled from q(Z | X):

    log w_k = log p(Z^(k), X | prefix) - log q(Z^(k) | X, prefix)
    IWAE_n  = logsumexp(log w_1..n) - log n      (a lower bound on log p(X | prefix); n=1 is the ELBO)
    ESS     = 1 / sum_k wbar_k^2,  wbar = softmax(log w)

and one latent is resampled with probability wbar_k (self-normalised importance
resampling), never the argmax.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def log_importance_weights(log_p_joint: Sequence[float], log_q: Sequence[float]) -> np.ndarray:
    return np.asarray(log_p_joint, dtype=np.float64) - np.asarray(log_q, dtype=np.float64)


def logsumexp(values: Sequence[float]) -> float:
    values = np.asarray(values, dtype=np.float64)
    top = float(np.max(values))
    if not math.isfinite(top):
        return top
    return top + math.log(float(np.sum(np.exp(values - top))))


def normalized_weights(log_weights: Sequence[float]) -> np.ndarray:
    log_weights = np.asarray(log_weights, dtype=np.float64)
    return np.exp(log_weights - logsumexp(log_weights))


def iwae_bound(log_weights: Sequence[float], n: int | None = None) -> float:
    """IWAE bound from the first ``n`` weights (all of them by default)."""
    log_weights = np.asarray(log_weights, dtype=np.float64)
    n = len(log_weights) if n is None else n
    if not 1 <= n <= len(log_weights):
        raise ValueError(f"need 1 <= n <= {len(log_weights)} samples, got n={n}")
    return logsumexp(log_weights[:n]) - math.log(n)


def effective_sample_size(log_weights: Sequence[float]) -> float:
    weights = normalized_weights(log_weights)
    return float(1.0 / np.sum(weights**2))


def resample_index(log_weights: Sequence[float], rng: np.random.Generator) -> int:
    """Draw one index with probability softmax(log_weights)."""
    weights = normalized_weights(log_weights)
    return int(rng.choice(len(weights), p=weights / weights.sum()))
