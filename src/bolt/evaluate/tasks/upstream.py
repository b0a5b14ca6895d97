"""bolt's GSM8K, MATH and MMLU-STEM tasks, built from lm-evaluation-harness's own task configs.

The standard variants *are* the installed harness's tasks, read from its YAMLs at run time
(so prompts, exemplars, stops, generation budget and metrics follow lm-eval upgrades):

- ``gsm8k_cot``: lm-eval's ``gsm8k_cot`` (``gsm8k/gsm8k-cot.yaml``);
- ``math_cot``: lm-eval's ``minerva_math`` (the ``minerva_math_<subject>`` tasks; one task over
  all subjects when the data is one local file, with the same prompt and metrics);
- ``mmlu_stem_cot``: the STEM subjects of lm-eval's ``mmlu_flan_cot_fewshot`` (one task per subject,
  with its description and Flan CoT exemplars), averaged over questions as upstream's group does.

bolt changes only what a latent model needs and where the data comes from: local files
(``dataset_path: json``, ``dataset_kwargs.data_files``) when ``--data-dir`` is given, and the
generation kwarg ``bolt_banned_tokens`` (the latent markers, banned for the standard variants).

The latent variants (``<task>_latent``) are derived from those configs by code: the test
prompt gains ``SoL PRIOR`` at its end, each upstream exemplar's reasoning moves inside
``SoL PRIOR ... EoL`` with its answer sentence after EoL (``latent_exemplar``), generation also
stops at SoL, and grading reads the text after EoL with upstream's own filters and metrics.
"""

from __future__ import annotations

import copy
import re
from functools import partial
from pathlib import Path
from typing import Any

from bolt.core.special_tokens import EOL, LATENT_TOKENS, PRIOR, SOL
from bolt.errors import BoltError

LATENT_OPEN = SOL + PRIOR
STEM_SUBJECTS = (
    "abstract_algebra anatomy astronomy college_biology college_chemistry college_computer_science "
    "college_mathematics college_physics computer_security conceptual_physics electrical_engineering "
    "elementary_mathematics high_school_biology high_school_chemistry high_school_computer_science "
    "high_school_mathematics high_school_physics high_school_statistics machine_learning"
).split()
"""lm-eval's ``mmlu_flan_cot_fewshot_stem`` subjects."""
MATH_SUBJECTS = (
    "algebra",
    "counting_and_prob",
    "geometry",
    "intermediate_algebra",
    "num_theory",
    "prealgebra",
    "precalc",
)
"""lm-eval's ``minerva_math`` subtasks."""

UPSTREAM_NAMES = {
    "gsm8k_cot": "gsm8k_cot",
    "math_cot": "minerva_math",
    "mmlu_stem_cot": "mmlu_flan_cot_fewshot (STEM subjects)",
}
"""The lm-eval task each bolt standard variant is."""
MAJORITY_FILTER = "maj@k"
"""The filter added for several samples per question; its metric is reported as ``maj_at_k``."""
DATASET_DIRS = {"gsm8k_cot": "gsm8k", "math_cot": "math", "mmlu_stem_cot": "mmlu_stem"}


def tasks_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


def upstream_yaml(task: str, subject: str | None = None) -> Path:
    """The installed lm-eval YAML behind a bolt family (and subject)."""
    if task == "gsm8k_cot":
        return tasks_dir() / "gsm8k" / "gsm8k-cot.yaml"
    if task == "math_cot":
        return tasks_dir() / "minerva_math" / f"minerva_math_{subject or 'algebra'}.yaml"
    if task == "mmlu_stem_cot":
        return tasks_dir() / "mmlu" / "flan_cot_fewshot" / f"mmlu_{subject}.yaml"
    raise KeyError(task)


def upstream_config(task: str, subject: str | None = None) -> dict[str, Any]:
    """lm-eval's own config (includes and ``!function`` resolved, as the harness loads it)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    path = upstream_yaml(task, subject)
    if task == "math_cot":
        return _math_config(path)
    if not path.is_file():
        raise BoltError(
            f"lm-evaluation-harness has no {path.relative_to(tasks_dir())}; "
            f"bolt's {task} needs the upstream task (lm-eval 0.4.13 or a compatible version)."
        )
    config = copy.deepcopy(load_yaml(path, resolve_func=True))
    for key in ("tag", "group", "task_list"):
        config.pop(key, None)
    return config


def _antlr_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("antlr4-python3-runtime")
    except PackageNotFoundError:
        return ""


def _latex_to_sympy(text: str):
    from latex2sympy2_extended import latex2sympy

    return latex2sympy(text)


def _math_config(path: Path) -> dict[str, Any]:
    """lm-eval's Minerva config. Its utils.py asserts antlr4 4.11 (sympy's LaTeX parser), while
    math-verify 0.9 needs antlr4 4.13; with 4.13 installed, the module is imported past that
    check and its ``exact_match`` parses LaTeX with latex2sympy2_extended (math-verify's parser)
    instead of ``sympy.parsing.latex.parse_latex``. Everything else is upstream's code."""
    import importlib.metadata
    from unittest import mock

    from lm_eval.tasks._yaml_loader import load_yaml

    real = importlib.metadata.version
    shim = not _antlr_version().startswith("4.11")
    with mock.patch.object(
        importlib.metadata,
        "version",
        lambda name: "4.11.0" if shim and name == "antlr4-python3-runtime" else real(name),
    ):
        config = copy.deepcopy(load_yaml(path, resolve_func=True))
    if shim:
        config["process_results"].__globals__["parse_latex"] = _latex_to_sympy
    for key in ("tag", "group", "task_list"):
        config.pop(key, None)
    return config


# --- data ---------------------------------------------------------------------------


def _local_file(data_dir: Path, family: str, split: str = "test") -> Path:
    directory = Path(data_dir) / DATASET_DIRS[family]
    for suffix in (".jsonl", ".json", ".parquet"):
        if (directory / f"{split}{suffix}").is_file():
            return directory / f"{split}{suffix}"
    raise BoltError(
        f"{directory}: no {split}.jsonl (or {split}.json / {split}.parquet) for the {family} tasks. "
        f"Put the dataset's {split} split there."
    )


def _local_data(config: dict, path: Path) -> dict:
    """Point a config at one local file, read as its test split (the exemplars come from the config, so no
    other split is read)."""
    builder = "parquet" if path.suffix == ".parquet" else "json"
    return config | {
        "dataset_path": builder,
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {"test": str(path)}},
        "test_split": "test",
        "training_split": None,
        "validation_split": None,
        "fewshot_split": None,
    }


def _subject_docs(dataset, subject: str, process=None):
    dataset = dataset.filter(lambda row: row.get("subject") == subject)
    return process(dataset) if process else dataset


def _subjects_in(path: Path) -> set[str]:
    from bolt.core.records import _iter_rows

    return {row.get("subject") for _, row in _iter_rows(path)}


# --- configs ------------------------------------------------------------------------


def standard_configs(family: str, data_dir: Path | None, split: str = "test", samples: int = 1) -> list[dict[str, Any]]:
    """The configs of a bolt standard variant: upstream's, with local data and the markers banned.
    ``split``: the local file the tasks read as their documents (``train`` for ``finetune_pairs``).
    With ``samples`` > 1, a ``maj@k`` filter as upstream's self-consistency tasks write it (the
    last filter's extraction, then ``majority_vote``); MATH grades inside its ``process_results``
    and gets none."""
    if family == "gsm8k_cot":
        configs = [upstream_config(family)]
        if data_dir is not None:
            configs = [_local_data(configs[0], _local_file(data_dir, family, split))]
    elif family == "math_cot":
        # one local file holds every subject; the prompt and metrics are the same for all
        if data_dir is not None:
            configs = [_local_data(upstream_config(family, "algebra"), _local_file(data_dir, family, split))]
        else:
            configs = [upstream_config(family, subject) for subject in MATH_SUBJECTS]
    elif family == "mmlu_stem_cot":
        if data_dir is not None:
            path = _local_file(data_dir, family, split)
            present = _subjects_in(path)
            configs = []
            for subject in (s for s in STEM_SUBJECTS if s in present):
                config = _local_data(upstream_config(family, subject), path)
                config["process_docs"] = partial(_subject_docs, subject=subject, process=config.get("process_docs"))
                configs.append(config)
            if not configs:
                raise BoltError(f"{path}: no row has a STEM 'subject' ({', '.join(STEM_SUBJECTS)}).")
        else:
            configs = [upstream_config(family, subject) for subject in STEM_SUBJECTS]
    else:
        raise KeyError(family)
    for config in configs:
        if samples > 1 and config.get("filter_list"):
            extraction = [step for step in config["filter_list"][-1]["filter"] if step["function"] != "take_first"]
            vote = {
                "name": MAJORITY_FILTER,
                "filter": [*extraction, {"function": "majority_vote"}, {"function": "take_first"}],
            }
            config["filter_list"] = [*config["filter_list"], vote]
        generation = dict(config.get("generation_kwargs") or {})
        generation["bolt_banned_tokens"] = list(LATENT_TOKENS)
        config["generation_kwargs"] = generation
        config["metadata"] = dict(config.get("metadata") or {}) | {"bolt_task": family, "upstream_task": config["task"]}
    return configs


def split_exemplar(family: str, exemplar: dict) -> tuple[str, str, str]:
    """(cue, reasoning, answer) of an upstream exemplar's target: the cue stays before SoL, the answer goes
    after EoL."""
    if family == "math_cot":
        text, marker = exemplar["solution"], "\nFinal Answer:"
    else:
        text, marker = exemplar["target"], "The answer is"
    cue = ""
    if family == "mmlu_stem_cot" and text.startswith("Let's think step by step."):
        cue, text = "Let's think step by step.", text[len("Let's think step by step.") :]
    at = text.rfind(marker)
    if at < 0:
        raise BoltError(
            f"an upstream {family} exemplar has no {marker.strip()!r} to split its reasoning from its answer: "
            f"{text[:80]!r}."
        )
    return cue, text[:at].strip(), text[at:].strip()


def latent_exemplar(family: str, exemplar: dict) -> dict:
    """An upstream exemplar with its reasoning inside ``SoL PRIOR ... EoL`` and its answer after EoL."""
    cue, reasoning, answer = split_exemplar(family, exemplar)
    target = f"{' ' + cue if cue else ''}{LATENT_OPEN} {reasoning}{EOL} {answer}"
    return exemplar | {"solution" if family == "math_cot" else "target": target, "bolt_exemplar": True}


def exemplars_of(config: dict) -> list[dict]:
    samples = (config.get("fewshot_config") or {}).get("samples") or []
    return list(samples() if callable(samples) else samples)


def _latent_text(doc: dict, template) -> str:
    if callable(template):
        text = template(doc)
    else:
        from lm_eval import utils

        text = utils.apply_template(template, doc)
    return text if doc.get("bolt_exemplar") else text + LATENT_OPEN


def _after_latent_filter(responses, docs):
    from bolt.evaluate.grading import after_latent

    return [[after_latent(r) or "" for r in entry] for entry in responses]


def _after_latent_results(doc: dict, results: list[str], process_results=None):
    from bolt.evaluate.grading import after_latent

    return process_results(doc, [after_latent(r) or "" for r in results])


def latent_config(family: str, config: dict) -> dict:
    """The latent variant of one standard config (see the module docstring)."""
    config = dict(config)
    config["task"] = f"{config['task']}_latent"
    config["doc_to_text"] = partial(_latent_text, template=config["doc_to_text"])
    config["target_delimiter"] = ""  # the exemplar target starts with its own space or SoL
    fewshot = dict(config.get("fewshot_config") or {})
    fewshot["samples"] = [latent_exemplar(family, sample) for sample in exemplars_of(config)]
    config["fewshot_config"] = fewshot
    generation = {k: v for k, v in (config.get("generation_kwargs") or {}).items() if k != "bolt_banned_tokens"}
    generation["until"] = [SOL, *generation.get("until", [])]
    config["generation_kwargs"] = generation
    if config.get("filter_list"):
        config["filter_list"] = [
            entry | {"filter": [{"function": "custom", "filter_fn": _after_latent_filter}, *entry["filter"]]}
            for entry in config["filter_list"]
        ]
    if callable(config.get("process_results")):
        config["process_results"] = partial(_after_latent_results, process_results=config["process_results"])
    elif not config.get("filter_list"):
        config["filter_list"] = [
            {
                "name": "none",
                "filter": [{"function": "custom", "filter_fn": _after_latent_filter}, {"function": "take_first"}],
            }
        ]
    return config


def task_configs(task: str, data_dir: Path | None, split: str = "test", samples: int = 1) -> list[dict[str, Any]]:
    """Configs of a bolt task (standard or ``_latent``); several for a task made of per-subject tasks."""
    family = task.removesuffix("_latent")
    configs = standard_configs(family, data_dir, split, samples)
    return [latent_config(family, c) for c in configs] if task.endswith("_latent") else configs


def build_tasks(task: str, data_dir: Path | None, split: str = "test", samples: int = 1) -> list:
    """The harness Task objects of a bolt task; a dataset that cannot be loaded is one BoltError naming
    --data-dir."""
    from lm_eval.api.task import ConfigurableTask

    tasks = []
    for config in task_configs(task, data_dir, split, samples):
        try:
            tasks.append(ConfigurableTask(config=config))
        except BoltError:
            raise
        except Exception as exc:
            if data_dir is not None:
                raise
            dataset = DATASET_DIRS[task.removesuffix("_latent")]
            raise BoltError(
                f"cannot load {config.get('dataset_path')} ({config.get('dataset_name')}) "
                f"for {task} ({type(exc).__name__}). "
                f"Offline, pass --data-dir DIR with DIR/{dataset}/test.jsonl."
            ) from None
    return tasks


# --- fine-tuning pairs ----------------------------------------------------------------


def _one_line(text: str) -> str:
    """A GSM8K solution as upstream's exemplars write theirs: one paragraph, no ``<<...>>`` calculator notes."""
    return re.sub(r"\s+", " ", re.sub(r"<<[^>]*>>", "", text)).strip()


def solution_parts(family: str, doc: dict) -> tuple[str, str, str]:
    """(reasoning, joiner, answer sentence) of a dataset row, in the form of the task's upstream
    exemplars: GSM8K ``<reasoning> The answer is N.``; MATH ``<solution>\\nFinal Answer: The final
    answer is $X$. I hope it is correct.``; MMLU ``<reasoning> The answer is (B).`` (the hub's MMLU
    has no reasoning, a row's optional ``reasoning`` field is used)."""
    if family == "gsm8k_cot":
        reasoning, _, gold = doc["answer"].rpartition("####")
        return _one_line(reasoning), " ", f"The answer is {gold.strip()}."
    if family == "math_cot":
        return (
            doc["solution"].strip(),
            "\n",
            f"Final Answer: The final answer is ${doc['answer']}$. I hope it is correct.",
        )
    from bolt.evaluate.tasks.hooks import mmlu_gold

    letter = mmlu_gold(doc)
    return str(doc.get("reasoning") or "").strip(), " ", f"The answer is ({letter})."


def finetune_pairs(task: str, data_dir: Path, limit: int | None = None) -> list[tuple[str, str]]:
    """(prompt, target) of each row of ``DIR/<dataset>/train.jsonl`` for ``bolt finetune-eval``.

    The prompt is the task's own zero-shot prompt for that row (what the evaluation after
    fine-tuning shows the model: upstream's template and description, with ``SoL PRIOR`` at
    its end for a latent variant); the target is the row's solution in the form of the task's
    exemplars (``solution_parts``), after upstream's target delimiter, or for a latent variant
    `` <reasoning> EoL <answer>``, as ``latent_exemplar`` writes the exemplars. For a task made
    of per-subject tasks the rows come subject by subject; ``limit`` keeps the first N."""
    family, latent = task.removesuffix("_latent"), task.endswith("_latent")
    pairs = []
    for harness_task in build_tasks(task, data_dir, split="train"):
        delimiter = harness_task.config.target_delimiter
        for doc in harness_task.test_docs():
            reasoning, joiner, answer = solution_parts(family, doc)
            if latent:
                target = f" {reasoning}{EOL} {answer}" if reasoning else f"{EOL} {answer}"
            else:
                target = delimiter + (f"{reasoning}{joiner}{answer}" if reasoning else answer)
            pairs.append((harness_task.fewshot_context(doc, num_fewshot=0), target))
    return pairs[:limit]
