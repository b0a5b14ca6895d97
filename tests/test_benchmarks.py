"""bolt's lm-evaluation-harness tasks end to end on a tiny model and tiny local data (offline, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="the 'eval' extra is part of the 'test' extra: pip install -e '.[test]'")

from bolt.benchmarks import TASKS  # noqa: E402
from bolt.special_tokens import EOL, LATENT_TOKENS, PRIOR, SOL  # noqa: E402

FEWSHOT = {"gsm8k_cot": 8, "math_cot": 4, "mmlu_stem_cot": 4, "world": 0}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def marker_happy_model(tmp_path_factory):
    """A random tiny model with the markers added and their logits boosted, so it emits markers unless banned."""
    import torch

    from bolt.modeling import preset_model
    from bolt.special_tokens import add_latent_tokens, marker_ids

    model, tokenizer = preset_model("tiny", seed=1)
    add_latent_tokens(tokenizer, model)
    eol = marker_ids(tokenizer).eol
    with torch.no_grad():
        weight = model.lm_head.weight
        weight.mul_(4.0)
        weight[eol] = weight[eol] * 3 + 0.5 * weight.mean(0)
    directory = tmp_path_factory.mktemp("models") / "marker-happy"
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Two questions per dataset in each dataset's own fields (GSM8K-format questions written here, not shipped)."""
    from bolt.world import WorldConfig, world_questions

    root = tmp_path_factory.mktemp("eval-data")
    write_jsonl(root / "gsm8k" / "test.jsonl", [
        {"question": "Ada has 3 pens and buys 4 more. How many pens does she have?", "answer": "She has 3 + 4 = <<3+4=7>>7 pens.\n#### 7"},
        {"question": "A crate holds 5 jars. How many jars are in 6 crates?", "answer": "There are 5 * 6 = <<5*6=30>>30 jars.\n#### 30"},
    ])
    write_jsonl(root / "math" / "test.jsonl", [
        {"problem": "What is $\\frac{1}{2} + \\frac{1}{4}$?", "solution": "We get $\\frac{2}{4} + \\frac{1}{4} = \\boxed{\\frac{3}{4}}$."},
        {"problem": "Solve $2x = 10$.", "solution": "Dividing by 2, $x = \\boxed{5}$."},
    ])
    write_jsonl(root / "mmlu_stem" / "test.jsonl", [
        {"question": "Who wrote Hamlet?", "choices": ["Marlowe", "Shakespeare", "Jonson", "Kyd"], "answer": 1, "subject": "high_school_european_history"},
        {"question": "What is 2 + 2?", "choices": ["3", "4", "5", "6"], "answer": 1, "subject": "elementary_mathematics"},
        {"question": "At sea level, water boils at how many degrees Celsius?", "choices": ["0", "50", "100", "200"], "answer": 2, "subject": "high_school_chemistry"},
    ])
    write_jsonl(root / "world" / "test.jsonl", world_questions(WorldConfig(questions=3), seed=0, exclude=[]))
    return root


@pytest.fixture(scope="module")
def all_tasks_run(marker_happy_model, data_dir, tmp_path_factory):
    from bolt.benchmarks.harness import TaskRunConfig, run_tasks

    output = tmp_path_factory.mktemp("eval-out")
    config = TaskRunConfig(tasks=list(TASKS), data_dir=data_dir, limit=2, max_gen_tokens=12, batch_size=4)
    return output, config, run_tasks(marker_happy_model, output, config)


@pytest.mark.parametrize("task", TASKS)
def test_each_task_end_to_end(task, all_tasks_run):
    output, _, summary = all_tasks_run
    latent = task.endswith("_latent")
    entry = summary[task]
    assert entry["questions"] == 2 and entry["samples_per_question"] == 1
    assert json.loads((output / "tasks.json").read_text())[task] == entry
    for metric in ("exact_match", "maj_at_k", "pass_at_k"):
        assert 0.0 <= entry[metric] <= 1.0
    samples = read_jsonl(output / "tasks" / f"{task}.samples.jsonl")
    assert len(samples) == 2
    shots = FEWSHOT[task.removesuffix("_latent")]
    for sample in samples:
        prompt, gen_kwargs = sample["arguments"][0]
        response = sample["resps"][0][0]
        assert gen_kwargs["max_gen_toks"] == 12
        if latent:
            assert prompt.endswith(SOL + PRIOR)
            assert prompt.count(SOL + PRIOR) == shots + 1 and prompt.count(EOL) == shots  # exemplars: SoL PRIOR reasoning EoL answer
            assert SOL in gen_kwargs["until"] and "bolt_banned_tokens" not in gen_kwargs
            assert SOL not in response  # generation stopped at the next SoL
        else:
            assert not any(token in prompt for token in LATENT_TOKENS)
            assert set(gen_kwargs["bolt_banned_tokens"]) == set(LATENT_TOKENS)
            assert not any(token in response for token in LATENT_TOKENS), response


def test_mmlu_stem_keeps_only_stem_subjects(all_tasks_run):
    output, _, _ = all_tasks_run
    subjects = {row["doc"]["subject"] for row in read_jsonl(output / "tasks" / "mmlu_stem_cot.samples.jsonl")}
    assert subjects == {"elementary_mathematics", "high_school_chemistry"}


def test_a_rerun_skips_finished_tasks(all_tasks_run, marker_happy_model, monkeypatch):
    import bolt.benchmarks.harness as harness

    output, config, summary = all_tasks_run

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished task ran again")

    monkeypatch.setattr(harness, "run_task", must_not_run)
    assert harness.run_tasks(marker_happy_model, output, config) == summary


def test_world_latent_through_the_harness_matches_bolts_own_answers(marker_happy_model, data_dir, tmp_path):
    """The same greedy generation as `bolt eval --questions` (BOS, SoL PRIOR, stop at SoL); the standard variant bans the markers this model loves."""
    from bolt.benchmarks.harness import TaskRunConfig, run_tasks
    from bolt.evaluation import EvalConfig, answer_questions, read_questions
    from bolt.modeling import load_model, load_tokenizer
    from bolt.special_tokens import marker_ids
    from bolt.world import ANSWER_PATTERN

    questions = read_questions(data_dir / "world" / "test.jsonl")
    tokenizer, model = load_tokenizer(marker_happy_model), load_model(marker_happy_model)
    config = EvalConfig(max_answer_tokens=12, answer_pattern=ANSWER_PATTERN)
    run_tasks(marker_happy_model, tmp_path, TaskRunConfig(tasks=["world_latent", "world"], data_dir=data_dir, max_gen_tokens=12, batch_size=1))

    legacy = answer_questions(model, tokenizer, questions, marker_ids(tokenizer), config, latent=True)["outputs"]
    harness = [row["resps"][0][0] for row in read_jsonl(tmp_path / "tasks" / "world_latent.samples.jsonl")]
    assert len(harness) == len(legacy) == 3
    for ours, theirs in zip(legacy, harness):
        expected = ours["latent"] + EOL + ours["answer_text"] if theirs.count(EOL) else ours["latent"]
        assert theirs == expected

    direct = answer_questions(model, tokenizer, questions, marker_ids(tokenizer), config, latent=False)["outputs"]
    assert any(token in o["answer_text"] for o in direct for token in LATENT_TOKENS), "the model must want markers for this check to mean anything"
    for row in read_jsonl(tmp_path / "tasks" / "world.samples.jsonl"):
        assert not any(token in row["resps"][0][0] for token in LATENT_TOKENS)


def test_several_samples_give_maj_and_pass_at_k(marker_happy_model, data_dir, tmp_path):
    from bolt.benchmarks.harness import TaskRunConfig, run_tasks

    summary = run_tasks(marker_happy_model, tmp_path, TaskRunConfig(tasks=["gsm8k_cot_latent"], data_dir=data_dir, limit=1, samples=3, max_gen_tokens=8))
    entry = summary["gsm8k_cot_latent"]
    assert entry["samples_per_question"] == 3 and entry["pass_at_k"] >= entry["exact_match"]
    (row,) = read_jsonl(tmp_path / "tasks" / "gsm8k_cot_latent.samples.jsonl")
    gen_kwargs = row["arguments"][0][1]
    assert gen_kwargs["do_sample"] is True and gen_kwargs["temperature"] == 0.6 and gen_kwargs["top_p"] == 0.9
    assert len(row["resps"][0]) == 3


def test_offline_without_data_dir_says_how_to_fix(marker_happy_model, tmp_path):
    from bolt.benchmarks.harness import TaskRunConfig, run_tasks
    from bolt.errors import BoltError

    with pytest.raises(BoltError, match="--data-dir"):
        run_tasks(marker_happy_model, tmp_path, TaskRunConfig(tasks=["gsm8k_cot"], limit=1))
    with pytest.raises(BoltError, match="no test.jsonl"):
        run_tasks(marker_happy_model, tmp_path, TaskRunConfig(tasks=["math_cot"], data_dir=tmp_path, limit=1))


def test_unknown_task_lists_the_known_ones():
    from bolt.benchmarks.harness import TaskRunConfig
    from bolt.errors import BoltError

    with pytest.raises(BoltError, match="gsm8k_cot_latent"):
        TaskRunConfig(tasks=["gsm8k"]).validate()


def test_prompts_start_with_bos_after_the_left_padding(marker_happy_model):
    from bolt.benchmarks.harness import load_lm

    lm = load_lm(marker_happy_model, batch_size=2)
    tokenizer = lm.tokenizer
    ids, mask = lm.tok_batch_encode(["ab", "abcd" + SOL])
    a, b, c, d = (tokenizer.convert_tokens_to_ids(x) for x in "abcd")
    bos, pad, sol = tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.convert_tokens_to_ids(SOL)
    assert ids.tolist() == [[pad, pad, pad, bos, a, b], [bos, a, b, c, d, sol]]
    assert mask.tolist() == [[0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]]
