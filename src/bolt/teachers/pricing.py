"""Token prices and cost estimates for API teachers (``bolt synthesize --dry-run``).

Prices are US dollars per million tokens, list prices at the time of writing; they
change, so check your provider's page and pass your own table with ``--pricing FILE``:
a JSON object mapping a model name (or a prefix of it) to
``{"input": USD, "output": USD, "batch_discount": 0.5}``. A model matches the longest
entry its name starts with, so ``gpt-4o-mini-2024-07-18`` uses ``gpt-4o-mini``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bolt.errors import BoltError


@dataclass(frozen=True)
class Price:
    input: float
    """USD per million input tokens."""
    output: float
    """USD per million output tokens."""
    batch_discount: float = 0.5
    """Share of the online price a batch request costs."""

    def cost(self, input_tokens: int, output_tokens: int, batched: bool) -> float:
        scale = self.batch_discount if batched else 1.0
        return scale * (input_tokens * self.input + output_tokens * self.output) / 1e6


DEFAULT_PRICES = {
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1": Price(2.00, 8.00),
    "claude-3-5-haiku": Price(0.80, 4.00),
    "claude-haiku-4-5": Price(1.00, 5.00),
    "claude-sonnet-4": Price(3.00, 15.00),
}


def load_prices(path: str | Path | None) -> dict[str, Price]:
    """The built-in table, with the entries of ``path`` added or replacing built-in ones."""
    prices = dict(DEFAULT_PRICES)
    if path is None:
        return prices
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        for model, entry in raw.items():
            prices[str(model)] = Price(
                float(entry["input"]), float(entry["output"]), float(entry.get("batch_discount", 0.5))
            )
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BoltError(
            f"{path}: not a pricing table ({exc}). Expected a JSON object like "
            '{"my-model": {"input": 0.15, "output": 0.6, "batch_discount": 0.5}} (USD per million tokens).'
        ) from None
    return prices


def price_for(model: str, prices: dict[str, Price]) -> Price | None:
    matches = [name for name in prices if model.startswith(name)]
    return prices[max(matches, key=len)] if matches else None


def estimate_tokens(text: str) -> int:
    """A rough token count (about 4 characters per token for English); dry runs only."""
    return (len(text) + 3) // 4
