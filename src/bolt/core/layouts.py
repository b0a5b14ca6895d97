"""How a document with latents becomes one training token sequence (docs/METHOD.md, "Training text").

Every piece is tokenised on its own (``encode``) and the pieces are joined as token ids,
never as strings: training, the E-step and evaluation then see exactly the same ids for
the same chunk, and a special token can never merge with its neighbours.

Per-chunk forms (X = chunk text, Z = latent)::

    joint           SoL PRIOR Z EoL X          one model as p(Z, X)
    posterior       SoL EoL X SoL POST Z EoL   one model as q(Z | X)
    prior-only      SoL Z EoL X                the reference's unmarked variants
    posterior-only  X SoL Z EoL
    raw             X

A document is ``BOS form(chunk_1) ... form(chunk_N) EOS`` (BOS only if the tokenizer has
one). ``random`` picks joint or posterior per chunk with probability 1/2; ``pure`` is the
synthetic text alone (a document-level ``synthetic`` field, else the latents joined).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import NoReturn

import numpy as np

from bolt.core.records import Document
from bolt.core.special_tokens import MarkerIds
from bolt.errors import BoltError


class Layout(str, Enum):
    RANDOM = "random"
    JOINT = "joint"
    POSTERIOR = "posterior"
    PRIOR_ONLY = "prior-only"
    POSTERIOR_ONLY = "posterior-only"
    PURE = "pure"
    RAW = "raw"

    @property
    def needs_latents(self) -> bool:
        return self is not Layout.RAW


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of a piece of text, with no special tokens added."""
    return tokenizer.encode(text, add_special_tokens=False) if text else []


@dataclass
class TokenizedDocument:
    """A document's chunk texts and latents as token ids, tokenised once and rendered many times."""

    id: str
    texts: list[list[int]]
    latents: list[list[int]] | None
    synthetic: list[int] | None = None

    @property
    def n_text_tokens(self) -> int:
        return sum(len(ids) for ids in self.texts)


def tokenize_document(tokenizer, document: Document, with_latents: bool) -> TokenizedDocument:
    latents = None
    if with_latents:
        # The E-step stores the sampled ids when the latent text does not re-tokenise to them.
        latents = [
            chunk.extra.get("latent_token_ids") or encode(tokenizer, chunk.latent or "") for chunk in document.chunks
        ]
    synthetic = document.meta.get("synthetic")
    return TokenizedDocument(
        id=document.id,
        texts=[encode(tokenizer, chunk.text) for chunk in document.chunks],
        latents=latents,
        synthetic=encode(tokenizer, synthetic) if isinstance(synthetic, str) else None,
    )


def joint_form(x: list[int], z: list[int], m: MarkerIds) -> list[int]:
    return [m.sol, m.prior, *z, m.eol, *x]


def posterior_form(x: list[int], z: list[int], m: MarkerIds) -> list[int]:
    return [m.sol, m.eol, *x, m.sol, m.post, *z, m.eol]


_FORMS = {
    Layout.JOINT: joint_form,
    Layout.POSTERIOR: posterior_form,
    Layout.PRIOR_ONLY: lambda x, z, m: [m.sol, *z, m.eol, *x],
    Layout.POSTERIOR_ONLY: lambda x, z, m: [*x, m.sol, *z, m.eol],
    Layout.RAW: lambda x, z, m: list(x),
}


def render(
    document: TokenizedDocument, layout: Layout, markers: MarkerIds, rng: np.random.Generator, raw_ratio: float = 0.0
) -> list[int]:
    """One training sequence for ``document``; coins come from ``rng`` (re-drawn every epoch)."""
    if raw_ratio > 0 and rng.random() < raw_ratio:
        layout = Layout.RAW
    body: list[int] = []
    if layout is Layout.PURE:
        if document.synthetic is not None:
            body = list(document.synthetic)
        else:
            body = [token for latent in _latents(document) for token in latent]
    else:
        latents = _latents(document) if layout.needs_latents else [[]] * len(document.texts)
        for x, z in zip(document.texts, latents):
            form = layout
            if layout is Layout.RANDOM:
                form = Layout.JOINT if rng.random() < 0.5 else Layout.POSTERIOR
            body.extend(_FORMS[form](x, z, markers))
    start = [markers.bos] if markers.bos is not None else []
    return start + body + [markers.eos]


def _latents(document: TokenizedDocument) -> list[list[int]]:
    if document.latents is None:
        _no_latents(document.id)
    return document.latents


def _no_latents(document_id: str) -> NoReturn:
    raise BoltError(f"document {document_id!r} has no latents; this layout needs latent data.")


def _markers_per_chunk(form: Layout, markers: MarkerIds) -> int:
    return len(_FORMS[form]([], [], markers))


def rendered_length(
    document_id: str,
    chunks: int,
    text_tokens: int,
    latent_tokens: int | None,
    synthetic_tokens: int | None,
    layout: Layout,
    markers: MarkerIds,
    rng: np.random.Generator | None,
    raw_ratio: float = 0.0,
) -> int:
    """``len(render(...))`` from the document's piece lengths alone, drawing the same coins from ``rng``.

    ``latent_tokens``/``synthetic_tokens`` are None where the document has none; ``rng``
    may be None when no coin is drawn (no ``raw_ratio`` and a layout other than random).
    Every form adds a fixed number of markers to its X and Z; random draws one coin per
    chunk, in order, as ``render`` does.
    """
    if raw_ratio > 0 and rng.random() < raw_ratio:
        layout = Layout.RAW
    ends = (markers.bos is not None) + 1
    if layout is Layout.PURE:
        if synthetic_tokens is not None:
            return ends + synthetic_tokens
        return ends + (latent_tokens if latent_tokens is not None else _no_latents(document_id))
    if layout is Layout.RAW:
        return ends + text_tokens
    body = text_tokens + (latent_tokens if latent_tokens is not None else _no_latents(document_id))
    if layout is Layout.RANDOM:
        posterior = int(np.count_nonzero(rng.random(chunks) >= 0.5))  # render: joint if a coin < 0.5
        return (
            ends
            + body
            + (chunks - posterior) * _markers_per_chunk(Layout.JOINT, markers)
            + posterior * _markers_per_chunk(Layout.POSTERIOR, markers)
        )
    return ends + body + chunks * _markers_per_chunk(layout, markers)
