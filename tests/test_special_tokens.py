"""Adding the latent markers: clear errors for tokenizers that cannot take them."""

from __future__ import annotations

import pytest

from bolt.core.modeling import byte_tokenizer, preset_model
from bolt.core.special_tokens import LATENT_TOKENS, add_latent_tokens, marker_ids
from bolt.errors import BoltError


class RefusingTokenizer:
    """Stands in for a slow/legacy tokenizer that rejects added special tokens."""

    def __init__(self):
        self.inner = byte_tokenizer()

    def get_vocab(self):
        return self.inner.get_vocab()

    def add_special_tokens(self, *args, **kwargs):
        raise ValueError("this tokenizer does not support added tokens")


class SplittingTokenizer(RefusingTokenizer):
    """Accepts the call but keeps splitting the marker strings into bytes."""

    def add_special_tokens(self, *args, **kwargs):
        return 0

    def encode(self, text, add_special_tokens=False):
        return self.inner.encode(text, add_special_tokens=False)


def test_refusing_tokenizer_gets_a_clear_error():
    model, _ = preset_model("tiny")
    with pytest.raises(BoltError, match=r"cannot add the latent marker tokens.*fast tokenizer"):
        add_latent_tokens(RefusingTokenizer(), model)


def test_tokenizer_that_splits_markers_is_rejected():
    model, _ = preset_model("tiny")
    with pytest.raises(BoltError, match="single special token"):
        add_latent_tokens(SplittingTokenizer(), model)


def test_markers_are_single_ids_and_distinct():
    model, tokenizer = preset_model("tiny")
    assert add_latent_tokens(tokenizer, model) == 4
    m = marker_ids(tokenizer)
    assert len(set(m.latent_ids)) == 4 and m.bos != m.eos
    for token, token_id in zip(LATENT_TOKENS, m.latent_ids):
        assert tokenizer.encode(token, add_special_tokens=False) == [token_id]
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)


def test_marker_ids_without_markers_says_train_first():
    with pytest.raises(BoltError, match="bolt train"):
        marker_ids(byte_tokenizer())
