"""The four latent-marker tokens and how they enter a tokenizer and a model.

The strings are the reference implementation's, so data and checkpoints interoperate
with the paper's released data. New embedding rows (input, and output when untied)
start small: N(0, 1/d) truncated at 3 sigma, as in the reference, so the markers
do not disturb a pretrained model's predictions before training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bolt.errors import BoltError

SOL = "<|START_OF_LATENT|>"
EOL = "<|END_OF_LATENT|>"
PRIOR = "<|PRIOR_PREFIX|>"
POST = "<|POSTERIOR_PREFIX|>"
LATENT_TOKENS = (SOL, EOL, PRIOR, POST)


@dataclass(frozen=True)
class MarkerIds:
    """Token ids of the latent markers and of the document delimiters."""

    sol: int
    eol: int
    prior: int
    post: int
    bos: int | None
    eos: int

    @property
    def latent_ids(self) -> tuple[int, int, int, int]:
        return (self.sol, self.eol, self.prior, self.post)


def has_latent_tokens(tokenizer) -> bool:
    vocab = tokenizer.get_vocab()
    return all(token in vocab for token in LATENT_TOKENS)


def marker_ids(tokenizer) -> MarkerIds:
    """Ids of the markers in a tokenizer that already has them (see ``add_latent_tokens``)."""
    if not has_latent_tokens(tokenizer):
        raise BoltError(
            "the tokenizer has no latent marker tokens: this model was never trained with latents. "
            "Train it first with `bolt train` (which adds the tokens)."
        )
    if tokenizer.eos_token_id is None:
        raise BoltError("the tokenizer has no EOS token; set `eos_token` in its tokenizer_config.json.")
    ids = [tokenizer.convert_tokens_to_ids(token) for token in LATENT_TOKENS]
    return MarkerIds(*ids, bos=tokenizer.bos_token_id, eos=tokenizer.eos_token_id)


def add_latent_tokens(tokenizer, model) -> int:
    """Add the markers to ``tokenizer`` and grow ``model``'s embeddings; return how many were new."""
    missing = [token for token in LATENT_TOKENS if token not in tokenizer.get_vocab()]
    if missing:
        try:
            tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
        except Exception as exc:
            raise BoltError(
                f"cannot add the latent marker tokens to this tokenizer ({type(tokenizer).__name__}: {exc}). "
                "bolt needs a Hugging Face tokenizer that accepts added special tokens (any fast tokenizer does)."
            ) from None
    for token in LATENT_TOKENS:
        ids = tokenizer.encode(token, add_special_tokens=False)
        if len(ids) != 1:
            raise BoltError(
                f"the tokenizer splits {token!r} into {len(ids)} tokens; it must be a single special token."
            )
    old_rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > old_rows:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        _init_new_rows(model, old_rows)
    return len(missing)


@torch.no_grad()
def _init_new_rows(model, first_new_row: int) -> None:
    matrices = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != matrices[0].data_ptr():
        matrices.append(output.weight)
    for weight in matrices:
        std = 1.0 / math.sqrt(weight.shape[1])
        rows = weight[first_new_row:]
        torch.nn.init.trunc_normal_(rows, mean=0.0, std=std, a=-3 * std, b=3 * std)
