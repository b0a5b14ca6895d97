"""`bolt finetune-eval`: answer-only SFT, then sampled evaluation over seeds (tiny model, tiny local data)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("lm_eval", reason="the 'eval' extra is part of the 'test' extra: pip install -e '.[test]'")

from bolt.core.special_tokens import EOL, PRIOR, SOL
from bolt.evaluate.finetune import FinetuneConfig, finetune_eval, supervised_batches, training_pairs


@pytest.fixture(scope="module")
def world_data(tmp_path_factory):
    from bolt.apps.world.world import WorldConfig, world_questions

    root = tmp_path_factory.mktemp("ft-data")
    questions = world_questions(WorldConfig(questions=10), seed=5, exclude=[])
    (root / "world").mkdir()
    for name, rows in (("train", questions[:8]), ("test", questions[8:])):
        (root / "world" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_training_pairs_use_the_task_format(world_data):
    (prompt, target), *_ = training_pairs("world_latent", world_data, limit=1)
    assert prompt.endswith(SOL + PRIOR) and prompt.startswith("Let ")
    derivation, answer = target.split(EOL)
    assert derivation.count("=") == 4 and answer.startswith(" So ")
    ((plain_prompt, plain_target),) = training_pairs("world", world_data, limit=1)
    assert plain_prompt + SOL + PRIOR == prompt and plain_target == answer


def test_loss_is_only_on_the_answer_and_eos(tiny_trained_model):
    from bolt.core.modeling import load_tokenizer

    tokenizer = load_tokenizer(tiny_trained_model)
    pairs = [("Q: 1+1?", " 2."), ("Q: long question?", f" 1+1=2{EOL} 2.")]
    ((ids, labels, mask),) = supervised_batches(tokenizer, pairs, batch_size=2, rng=np.random.default_rng(0))
    for row in range(2):
        length = int(mask[row].sum())
        kept = [int(t) for t in labels[row] if t != -100]
        target = [t for t in ids[row, :length].tolist()][-len(kept) :]
        assert kept == target and kept[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(kept[:-1]) in (" 2.", f" 1+1=2{EOL} 2.")
        assert int(ids[row, 0]) == tokenizer.bos_token_id


def test_finetune_eval_over_seeds_and_rerun(tiny_trained_model, world_data, tmp_path, monkeypatch):
    import bolt.evaluate.finetune as finetune

    config = FinetuneConfig(
        task="world_latent",
        data_dir=world_data,
        seeds=2,
        epochs=3,
        lr=3e-3,
        batch_size=2,
        samples=2,
        limit=2,
        max_gen_tokens=8,
    )
    result = finetune_eval(tiny_trained_model, tmp_path, config)
    per_seed = [
        json.loads((tmp_path / f"seed-{s}" / "eval" / "tasks.json").read_text())["world_latent"] for s in (0, 1)
    ]
    for name in ("exact_match", "maj_at_k", "pass_at_k"):
        values = [m[name] for m in per_seed]
        assert result[name]["values"] == values
        assert result[name]["mean"] == pytest.approx(np.mean(values))
        assert result[name]["stderr"] == pytest.approx(np.std(values, ddof=1) / np.sqrt(2))
    assert result["questions"] == 2 and result["samples_per_question"] == 2
    for seed in (0, 1):
        summary = json.loads((tmp_path / f"seed-{seed}" / "model" / "finetune.json").read_text())
        assert summary["steps"] == 12 and summary["last_loss"] < summary["first_loss"]
        (row, *_) = [
            json.loads(line)
            for line in (tmp_path / f"seed-{seed}" / "eval" / "tasks" / "world_latent.samples.jsonl")
            .read_text()
            .splitlines()
        ]
        prompt, gen_kwargs = row["arguments"][0]
        assert EOL not in prompt  # zero-shot after fine-tuning
        assert gen_kwargs["do_sample"] and gen_kwargs["temperature"] == 0.6 and gen_kwargs["top_p"] == 0.9
    assert json.loads((tmp_path / "finetune_eval.json").read_text()) == result

    manifest = json.loads((tmp_path / "seed-0" / "model" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["summary"]["steps"] == 12 and manifest["seed"] == 0

    monkeypatch.setattr(finetune, "finetune", lambda *a, **k: pytest.fail("a finished seed was fine-tuned again"))
    assert finetune_eval(tiny_trained_model, tmp_path, config) == result


def test_finetune_eval_needs_local_data(tiny_trained_model, tmp_path):
    from bolt.errors import BoltError

    with pytest.raises(BoltError, match="--data-dir"):
        finetune_eval(tiny_trained_model, tmp_path, FinetuneConfig(task="world"))


# --- GSM8K, MATH and MMLU: the evaluation's own zero-shot prompt, the exemplars' target form ---

FINETUNE_GOLDEN = {  # bolt task -> (lm-eval task, folder, a training row, its standard target, its latent target)
    "gsm8k_cot": (
        "gsm8k_cot",
        "gsm8k",
        {
            "question": "Ada has 3 pens and buys 4 more. How many pens does she have?",
            "answer": "She has\n3 + 4 = <<3+4=7>>7 pens.\n#### 7",
        },
        " She has 3 + 4 = 7 pens. The answer is 7.",
        f" She has 3 + 4 = 7 pens.{EOL} The answer is 7.",
    ),
    "math_cot": (
        "minerva_math_algebra",
        "math",
        {"problem": "Solve $2x = 10$.", "solution": "Dividing by 2, $x = \\boxed{5}$."},
        " Dividing by 2, $x = \\boxed{5}$.\nFinal Answer: The final answer is $5$. I hope it is correct.",
        f" Dividing by 2, $x = \\boxed{{5}}$.{EOL} Final Answer: The final answer is $5$. I hope it is correct.",
    ),
    "mmlu_stem_cot": (
        "mmlu_flan_cot_fewshot_college_physics",
        "mmlu_stem",
        {
            "question": "What is the SI unit of force?",
            "choices": ["joule", "newton", "watt", "pascal"],
            "answer": 1,
            "subject": "college_physics",
        },
        " The answer is (B).",
        f"{EOL} The answer is (B).",
    ),
}


def _graded(harness_task, response: str) -> dict:
    """Each of the task's own filters with its metrics, applied to one response to its first document."""
    harness_task.build_all_requests(limit=1)
    instance = harness_task.instances[0]
    instance.resps = [response]
    harness_task.apply_filters()
    return {
        f"{name}/{metric}": value
        for name, filtered in instance.filtered_resps.items()
        for metric, value in harness_task.process_results(instance.doc, [filtered]).items()
    }


@pytest.mark.parametrize("latent", [False, True], ids=["standard", "latent"])
@pytest.mark.parametrize("task", sorted(FINETUNE_GOLDEN))
def test_finetune_pairs_are_the_evaluations_prompt_and_a_target_it_grades_right(task, latent, tmp_path):
    """The fine-tuning prompt is lm-eval's own zero-shot prompt for the row (what the evaluation after
    fine-tuning shows), the target has the exemplars' form, and upstream's metrics grade it right."""
    from lm_eval.tasks import TaskManager
    from test_benchmarks import _upstream_task

    from bolt.core.records import write_jsonl
    from bolt.evaluate.tasks.upstream import build_tasks

    name, folder, row, standard_target, latent_target = FINETUNE_GOLDEN[task]
    for split in ("train", "test"):
        write_jsonl(tmp_path / folder / f"{split}.jsonl", [row])
    bolt_task = task + ("_latent" if latent else "")
    ((prompt, target),) = training_pairs(bolt_task, tmp_path, limit=None)
    assert target == (latent_target if latent else standard_target)
    upstream = _upstream_task(TaskManager(), name, tmp_path / folder / "test.jsonl")
    upstream_prompt = upstream.fewshot_context(upstream.eval_docs[0], num_fewshot=0)
    assert prompt == upstream_prompt + (SOL + PRIOR if latent else "")
    (evaluation,) = build_tasks(bolt_task, tmp_path)
    metrics = _graded(evaluation, target)
    assert metrics and all(value == 1 for value in metrics.values()), metrics
    assert not all(
        value == 1
        for value in _graded(
            build_tasks(bolt_task, tmp_path)[0], target.replace("(B)", "(C)").replace("7", "8").replace("5$", "6$")
        ).values()
    )


@pytest.mark.parametrize("latent", [False, True], ids=["standard", "latent"])
@pytest.mark.parametrize("task", ["gsm8k_cot", "mmlu_stem_cot"])
def test_several_samples_add_upstreams_majority_vote(task, latent, tmp_path):
    """With K samples per question the upstream tasks gain upstream's self-consistency filter (the
    last filter's extraction, then majority_vote): a first sample that is wrong, a majority that is right."""
    from bolt.core.records import write_jsonl
    from bolt.evaluate.tasks.harness import _metrics
    from bolt.evaluate.tasks.upstream import build_tasks

    _, folder, row, standard_target, latent_target = FINETUNE_GOLDEN[task]
    write_jsonl(tmp_path / folder / "test.jsonl", [row])
    right = latent_target if latent else standard_target
    wrong = right.replace("(B)", "(C)").replace("is 7", "is 8")
    (evaluation,) = build_tasks(task + ("_latent" if latent else ""), tmp_path, samples=3)
    evaluation.build_all_requests(limit=1)
    instance = evaluation.instances[0]
    instance.resps = [wrong, right, right]
    evaluation.apply_filters()
    graded = {
        f"{metric},{name}": value
        for name, filtered in instance.filtered_resps.items()
        for metric, value in evaluation.process_results(instance.doc, [filtered]).items()
    }
    metrics = _metrics(graded)
    assert metrics["maj_at_k"] == 1 and metrics["exact_match"] == 0
    (single,) = build_tasks(task, tmp_path)
    assert "maj@k" not in [f["name"] for f in single.config.filter_list], "one sample: upstream's filters only"
