"""bolt's lm-evaluation-harness tasks end to end on a tiny model and tiny local data (offline, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="the 'eval' extra is part of the 'test' extra: pip install -e '.[test]'")

from bolt.core.special_tokens import EOL, LATENT_TOKENS, PRIOR, SOL
from bolt.evaluate.tasks import TASKS

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

    from bolt.core.modeling import preset_model
    from bolt.core.special_tokens import add_latent_tokens, marker_ids

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
    from bolt.apps.world.world import WorldConfig, world_questions

    root = tmp_path_factory.mktemp("eval-data")
    write_jsonl(
        root / "gsm8k" / "test.jsonl",
        [
            {
                "question": "Ada has 3 pens and buys 4 more. How many pens does she have?",
                "answer": "She has 3 + 4 = <<3+4=7>>7 pens.\n#### 7",
            },
            {
                "question": "A crate holds 5 jars. How many jars are in 6 crates?",
                "answer": "There are 5 * 6 = <<5*6=30>>30 jars.\n#### 30",
            },
        ],
    )
    write_jsonl(
        root / "math" / "test.jsonl",
        [
            {
                "problem": "What is $\\frac{1}{2} + \\frac{1}{4}$?",
                "solution": "We get $\\frac{2}{4} + \\frac{1}{4} = \\boxed{\\frac{3}{4}}$.",
            },
            {"problem": "Solve $2x = 10$.", "solution": "Dividing by 2, $x = \\boxed{5}$."},
        ],
    )
    write_jsonl(
        root / "mmlu_stem" / "test.jsonl",
        [
            {
                "question": "Who wrote Hamlet?",
                "choices": ["Marlowe", "Shakespeare", "Jonson", "Kyd"],
                "answer": 1,
                "subject": "high_school_european_history",
            },
            {
                "question": "What is 2 + 2?",
                "choices": ["3", "4", "5", "6"],
                "answer": 1,
                "subject": "elementary_mathematics",
            },
            {
                "question": "At sea level, water boils at how many degrees Celsius?",
                "choices": ["0", "50", "100", "200"],
                "answer": 2,
                "subject": "high_school_chemistry",
            },
        ],
    )
    write_jsonl(root / "world" / "test.jsonl", world_questions(WorldConfig(questions=3), seed=0, exclude=[]))
    return root


@pytest.fixture(scope="module")
def all_tasks_run(marker_happy_model, data_dir, tmp_path_factory):
    from bolt.evaluate.tasks.harness import TaskRunConfig, run_tasks

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
    family = task.removesuffix("_latent")
    metrics = {"world": ("exact_match", "maj_at_k", "pass_at_k"), "math_cot": ("exact_match", "math_verify")}.get(
        family, ("exact_match",)
    )
    for metric in metrics:
        assert 0.0 <= entry[metric] <= 1.0
    samples = read_jsonl(output / "tasks" / f"{task}.samples.jsonl")
    assert (
        len({(sample.get("task"), sample["doc_id"]) for sample in samples}) == 2
    )  # a row per question and filter (gsm8k: strict and flexible)
    shots = FEWSHOT[task.removesuffix("_latent")]
    for sample in samples:
        prompt, gen_kwargs = sample["arguments"][0]
        response = sample["resps"][0][0]
        assert gen_kwargs["max_gen_toks"] == 12
        if latent:
            assert prompt.endswith(SOL + PRIOR)
            assert (
                prompt.count(SOL + PRIOR) == shots + 1 and prompt.count(EOL) == shots
            )  # exemplars: SoL PRIOR reasoning EoL answer
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
    import bolt.evaluate.tasks.harness as harness

    output, config, summary = all_tasks_run

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished task ran again")

    monkeypatch.setattr(harness, "run_task", must_not_run)
    assert harness.run_tasks(marker_happy_model, output, config) == summary


def test_world_latent_through_the_harness_matches_bolts_own_answers(marker_happy_model, data_dir, tmp_path):
    """The same greedy generation as `bolt eval --questions` (BOS, SoL PRIOR, stop at SoL); the standard
    variant bans the markers this model loves."""
    from bolt.apps.world.world import ANSWER_PATTERN
    from bolt.core.modeling import load_model, load_tokenizer
    from bolt.core.special_tokens import marker_ids
    from bolt.evaluate.stage import EvalConfig, answer_questions, read_questions
    from bolt.evaluate.tasks.harness import TaskRunConfig, run_tasks

    questions = read_questions(data_dir / "world" / "test.jsonl")
    tokenizer, model = load_tokenizer(marker_happy_model), load_model(marker_happy_model)
    config = EvalConfig(max_answer_tokens=12, answer_pattern=ANSWER_PATTERN)
    run_tasks(
        marker_happy_model,
        tmp_path,
        TaskRunConfig(tasks=["world_latent", "world"], data_dir=data_dir, max_gen_tokens=12, batch_size=1),
    )

    legacy = answer_questions(model, tokenizer, questions, marker_ids(tokenizer), config, latent=True)["outputs"]
    harness = [row["resps"][0][0] for row in read_jsonl(tmp_path / "tasks" / "world_latent.samples.jsonl")]
    assert len(harness) == len(legacy) == 3
    for ours, theirs in zip(legacy, harness):
        expected = ours["latent"] + EOL + ours["answer_text"] if theirs.count(EOL) else ours["latent"]
        assert theirs == expected

    direct = answer_questions(model, tokenizer, questions, marker_ids(tokenizer), config, latent=False)["outputs"]
    assert any(token in o["answer_text"] for o in direct for token in LATENT_TOKENS), (
        "the model must want markers for this check to mean anything"
    )
    for row in read_jsonl(tmp_path / "tasks" / "world.samples.jsonl"):
        assert not any(token in row["resps"][0][0] for token in LATENT_TOKENS)


def test_several_samples_give_maj_and_pass_at_k(marker_happy_model, data_dir, tmp_path):
    from bolt.evaluate.tasks.harness import TaskRunConfig, run_tasks

    summary = run_tasks(
        marker_happy_model,
        tmp_path,
        TaskRunConfig(tasks=["world_latent"], data_dir=data_dir, limit=1, samples=3, max_gen_tokens=8),
    )
    entry = summary["world_latent"]
    assert entry["samples_per_question"] == 3 and entry["pass_at_k"] >= entry["exact_match"]
    (row,) = read_jsonl(tmp_path / "tasks" / "world_latent.samples.jsonl")
    gen_kwargs = row["arguments"][0][1]
    assert gen_kwargs["do_sample"] is True and gen_kwargs["temperature"] == 0.6 and gen_kwargs["top_p"] == 0.9
    assert len(row["resps"][0]) == 3


def test_offline_without_data_dir_says_how_to_fix(marker_happy_model, tmp_path):
    from bolt.errors import BoltError
    from bolt.evaluate.tasks.harness import TaskRunConfig, run_tasks

    with pytest.raises(BoltError, match="--data-dir"):
        run_tasks(marker_happy_model, tmp_path, TaskRunConfig(tasks=["gsm8k_cot"], limit=1))
    with pytest.raises(BoltError, match=r"no test.jsonl"):
        run_tasks(marker_happy_model, tmp_path, TaskRunConfig(tasks=["math_cot"], data_dir=tmp_path, limit=1))


def test_unknown_task_lists_the_known_ones():
    from bolt.errors import BoltError
    from bolt.evaluate.tasks.harness import TaskRunConfig

    with pytest.raises(BoltError, match="gsm8k_cot_latent"):
        TaskRunConfig(tasks=["gsm8k"]).validate()


def test_prompts_start_with_bos_after_the_left_padding(marker_happy_model):
    from bolt.evaluate.tasks.harness import load_lm

    lm = load_lm(marker_happy_model, batch_size=2)
    tokenizer = lm.tokenizer
    ids, mask = lm.tok_batch_encode(["ab", "abcd" + SOL])
    a, b, c, d = (tokenizer.convert_tokens_to_ids(x) for x in "abcd")
    bos, pad, sol = tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.convert_tokens_to_ids(SOL)
    assert ids.tolist() == [[pad, pad, pad, bos, a, b], [bos, a, b, c, d, sol]]
    assert mask.tolist() == [[0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]]


# --- the standard variants are lm-eval's own tasks; the latent ones are derived from them ---

GOLDEN = {  # bolt task -> (lm-eval task, dataset folder, one document in that dataset's fields)
    "gsm8k_cot": (
        "gsm8k_cot",
        "gsm8k",
        {
            "question": "Ada has 3 pens and buys 4 more. How many pens does she have?",
            "answer": "She has 3 + 4 = <<3+4=7>>7 pens.\n#### 7",
        },
    ),
    "math_cot": (
        "minerva_math_algebra",
        "math",
        {"problem": "Solve $2x = 10$.", "solution": "Dividing by 2, $x = \\boxed{5}$."},
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
    ),
}


@pytest.fixture(scope="module")
def upstream_manager():
    """lm-eval's default task index (its own YAMLs, found by task name)."""
    from lm_eval.tasks import TaskManager

    return TaskManager()


def _upstream_task(manager, name: str, path: Path):
    """lm-eval's own task by name, with only its dataset replaced by a local file (so it runs offline)."""
    import importlib.metadata
    from unittest import mock

    from lm_eval.tasks._factory import TaskFactory

    real = importlib.metadata.version
    data = {
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {"test": str(path)}},
        "test_split": "test",
        "validation_split": None,
    }
    # minerva_math/utils.py asserts antlr4 4.11 at import; this venv has 4.13 (math-verify's). Prompts do not use antlr.
    with mock.patch.object(
        importlib.metadata, "version", lambda n: "4.11.0" if n == "antlr4-python3-runtime" else real(n)
    ):
        return TaskFactory().build(manager.task_index[name], overrides=data, registry=manager.task_index)


def _first_request(task):
    task.build_all_requests(limit=1)
    return task.instances[0].arguments


@pytest.mark.parametrize("task", sorted(GOLDEN))
def test_standard_variant_renders_the_upstream_prompt(task, upstream_manager, tmp_path):
    from bolt.evaluate.tasks.upstream import build_tasks

    name, folder, doc = GOLDEN[task]
    write_jsonl(tmp_path / folder / "test.jsonl", [doc])
    ours = build_tasks(task, tmp_path)
    assert len(ours) == 1
    prompt, gen_kwargs = _first_request(ours[0])
    upstream_prompt, upstream_gen_kwargs = _first_request(
        _upstream_task(upstream_manager, name, tmp_path / folder / "test.jsonl")
    )
    assert prompt == upstream_prompt
    assert set(gen_kwargs.pop("bolt_banned_tokens")) == set(LATENT_TOKENS)
    assert gen_kwargs == upstream_gen_kwargs  # stops, greedy decoding and the (default) generation budget
    assert ours[0].config.metric_list == upstream_task_config(upstream_manager, name)["metric_list"]


def upstream_task_config(manager, name):
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(manager.task_index[name].yaml_path, resolve_func=False)


def test_mmlu_stem_is_upstreams_stem_subjects_each_with_its_own_description(tmp_path):
    from bolt.evaluate.tasks.upstream import STEM_SUBJECTS, build_tasks

    write_jsonl(
        tmp_path / "mmlu_stem" / "test.jsonl",
        [
            {"question": "q1", "choices": ["a", "b", "c", "d"], "answer": 0, "subject": "anatomy"},
            {"question": "q2", "choices": ["a", "b", "c", "d"], "answer": 0, "subject": "astronomy"},
            {"question": "q3", "choices": ["a", "b", "c", "d"], "answer": 0, "subject": "philosophy"},
        ],
    )
    tasks = build_tasks("mmlu_stem_cot", tmp_path)
    assert [t.config.task for t in tasks] == ["mmlu_flan_cot_fewshot_anatomy", "mmlu_flan_cot_fewshot_astronomy"]
    assert [len(t.eval_docs) for t in tasks] == [1, 1]
    assert tasks[0].config.description.startswith(
        "The following are multiple choice questions (with answers) about anatomy"
    )
    assert len(STEM_SUBJECTS) == 19


@pytest.mark.parametrize("task", sorted(GOLDEN))
def test_latent_exemplars_are_the_upstream_ones_transformed(task, tmp_path):
    from bolt.evaluate.tasks.upstream import build_tasks, exemplars_of, task_configs, upstream_config

    _name, folder, doc = GOLDEN[task]
    write_jsonl(tmp_path / folder / "test.jsonl", [doc])
    subject = {"math_cot": "algebra", "mmlu_stem_cot": "college_physics"}.get(task)
    upstream = exemplars_of(upstream_config(task, subject))
    (latent,) = build_tasks(task + "_latent", tmp_path)
    key = "solution" if task == "math_cot" else "target"
    (config,) = task_configs(task + "_latent", tmp_path)
    transformed = [sample[key] for sample in exemplars_of(config)]
    assert len(transformed) == len(upstream) >= latent.config.num_fewshot
    for before, after in zip(upstream, transformed):
        # the latent target with the markers removed is upstream's target, up to the whitespace around the markers
        assert after.count(SOL + PRIOR) == 1 and after.count(EOL) == 1
        assert after.replace(SOL + PRIOR, " ").replace(EOL, " ").split() == before[key].split()
        _reasoning, answer = after.split(EOL)
        assert (
            answer.strip()
            == before[key][before[key].rfind("Final Answer:" if task == "math_cot" else "The answer is") :].strip()
        )
        if task == "mmlu_stem_cot":
            assert after.startswith(" Let's think step by step." + SOL + PRIOR)
        else:
            assert after.startswith(SOL + PRIOR + " ")
    # the rendered latent prompt: upstream's exemplars transformed, and the test question ending in SoL PRIOR
    prompt, gen_kwargs = _first_request(latent)
    assert prompt.endswith(SOL + PRIOR) and prompt.count(EOL) == latent.config.num_fewshot
    assert gen_kwargs["until"][0] == SOL and "bolt_banned_tokens" not in gen_kwargs
    assert all(after in prompt for after in transformed[: latent.config.num_fewshot])


def test_latent_grading_reads_the_answer_after_eol_with_upstreams_metrics(tmp_path):
    from bolt.evaluate.tasks.upstream import build_tasks

    write_jsonl(tmp_path / "math" / "test.jsonl", [GOLDEN["math_cot"][2]])
    (standard,) = build_tasks("math_cot", tmp_path)
    (latent,) = build_tasks("math_cot_latent", tmp_path)
    doc = standard.eval_docs[0]
    right = " Divide by 2." + EOL + " Final Answer: The final answer is $5$. I hope it is correct."
    assert standard.process_results(doc, ["Final Answer: The final answer is $5$. I hope it is correct."]) == {
        "exact_match": 1,
        "math_verify": 1,
    }
    assert latent.process_results(doc, [right]) == {"exact_match": 1, "math_verify": 1}
    assert latent.process_results(doc, [" x = 5, Final Answer: The final answer is $5$. I hope it is correct."]) == {
        "exact_match": 0,
        "math_verify": 0,
    }  # no EoL
