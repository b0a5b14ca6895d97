"""A causal LM over a 10-token vocabulary, small enough to enumerate every latent exactly."""

from __future__ import annotations

import torch

from bolt.core.special_tokens import EOL, POST, PRIOR, SOL

VOCAB = ["<s>", "</s>", "<pad>", "a", "b", "c", SOL, EOL, PRIOR, POST]


def golden_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(vocab={token: i for i, token in enumerate(VOCAB)}, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tokenizer.add_special_tokens({"additional_special_tokens": [SOL, EOL, PRIOR, POST]})
    return tokenizer


def golden_model(seed: int = 0, sharpness: float = 0.2):
    """A random 1-layer Llama with sharpened output logits, so posteriors differ from proposals."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(sharpness / model.lm_head.weight.std())
    return model
