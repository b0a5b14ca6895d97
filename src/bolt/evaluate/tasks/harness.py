"""``bolt eval --tasks``: bolt's tasks through lm-evaluation-harness's HF model backend.

The model is the harness's ``HFLM`` with three changes a latent model needs:

- generations are decoded with the latent markers kept (the harness drops special
  tokens), so the latent variants can stop at SoL and read the answer after EoL;
- the generation kwarg ``bolt_banned_tokens`` (set by the standard variants) becomes
  HF ``suppress_tokens``, so those variants never emit a marker;
- prompts start with BOS when the tokenizer has one, as in bolt's training data.

Each task writes ``OUT/tasks/<task>.json`` (metrics, the harness's config and versions)
and ``<task>.samples.jsonl`` (every prompt, generation and grade); ``OUT/tasks.json``
holds one entry per task. Finished tasks are skipped on a rerun, and the harness's
request cache (``OUT/tasks/cache``) resumes an interrupted task.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from tqdm.auto import tqdm

from bolt.core.modeling import model_fingerprint, resolve_device
from bolt.core.records import write_json, write_jsonl
from bolt.core.rundir import RunDir, config_to_json, file_sha256
from bolt.errors import BoltError
from bolt.evaluate.config import TaskRunConfig
from bolt.evaluate.tasks import TASK_DIR, dataset_of
from bolt.evaluate.tasks.hooks import MATH_TIMEOUT_ENV
from bolt.evaluate.tasks.upstream import MAJORITY_FILTER, UPSTREAM_NAMES, build_tasks

TASK_FORMAT = 2
"""Revision of bolt's task definitions, part of a finished task's key (a rerun after a change re-evaluates)."""


@register_model("bolt-hf")
class BoltHFLM(HFLM):
    """The harness's HF backend, keeping latent markers in generations (see the module docstring)."""

    def tok_decode(self, tokens, skip_special_tokens: bool = False):
        tokens = [tokens] if isinstance(tokens, int) else list(tokens)
        pad = self.tokenizer.pad_token_id
        if pad is not None and pad != self.eot_token_id:
            tokens = [t for t in tokens if t != pad]
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    def tok_batch_encode(self, strings, padding_side="left", left_truncate_len=None, truncation=False):
        """The harness's encoding, with BOS inserted before each prompt's first token (after the left padding)."""
        bos = self.tokenizer.bos_token_id
        add_bos = bos is not None and self.add_bos_token and padding_side == "left"
        if add_bos and left_truncate_len:
            left_truncate_len -= 1
        ids, mask = super().tok_batch_encode(
            strings, padding_side=padding_side, left_truncate_len=left_truncate_len, truncation=truncation
        )
        lengths = mask.sum(dim=1).tolist()
        if not add_bos or all(ids[row, -length] == bos for row, length in enumerate(lengths) if length):
            return ids, mask
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else bos
        new_ids = torch.full((ids.shape[0], ids.shape[1] + 1), pad, dtype=ids.dtype, device=ids.device)  # (B, T+1)
        new_mask = torch.zeros_like(new_ids, dtype=mask.dtype)
        for row, length in enumerate(lengths):
            new_ids[row, -length - 1] = bos
            new_ids[row, new_ids.shape[1] - length :] = ids[row, ids.shape[1] - length :]
            new_mask[row, -length - 1 :] = 1
        return new_ids, new_mask

    def _model_generate(self, context, max_length, stop, **generation_kwargs):
        banned = generation_kwargs.pop("bolt_banned_tokens", None)
        if banned:
            vocab = self.tokenizer.get_vocab()
            ids = [vocab[token] for token in banned if token in vocab]
            if ids:
                generation_kwargs["suppress_tokens"] = ids
        return super()._model_generate(context, max_length, stop, **generation_kwargs)


def _data_files(config: TaskRunConfig, task: str) -> list[Path]:
    if config.data_dir is None:
        return []
    return sorted(p for p in (Path(config.data_dir) / dataset_of(task)).glob("*") if p.is_file())


def _task_key(model_dir: Path, fingerprint: str, task: str, config: TaskRunConfig) -> str:
    """Identifies a finished task: model weights, task, settings and data bytes."""
    settings = config_to_json(config) | {"tasks": None}
    from importlib.metadata import version

    # the task definitions: bolt's format revision (2: GSM8K/MATH/MMLU are lm-eval's own tasks) and the harness
    # version
    payload = [
        fingerprint,
        task,
        settings,
        [(p.name, file_sha256(p)) for p in _data_files(config, task)],
        TASK_FORMAT,
        version("lm_eval"),
    ]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _gen_kwargs(config: TaskRunConfig) -> dict | None:
    kwargs: dict = {}
    if config.samples > 1:
        kwargs |= {"do_sample": True, "temperature": config.temperature, "top_p": config.top_p}
    if config.max_gen_tokens is not None:
        kwargs["max_gen_toks"] = config.max_gen_tokens
    return kwargs or None


def _metrics(task_results: dict) -> dict:
    """The harness's ``"metric,filter"`` keys as bolt's names: ``exact_match,strict-match`` -> ``exact_match``,
    ``exact_match,flexible-extract`` -> ``exact_match_flexible``, ``exact_match,maj@k`` -> ``maj_at_k``,
    ``x_stderr,f`` -> ``x_stderr``."""
    metrics = {}
    for key, value in task_results.items():
        if "," not in key or value == "N/A":
            continue
        metric, filter_name = key.split(",", 1)
        stderr = "_stderr" if metric.endswith("_stderr") else ""
        name = metric.removesuffix("_stderr") + ("_flexible" if filter_name == "flexible-extract" else "")
        if filter_name == MAJORITY_FILTER:  # upstream's tasks voting over the samples (bolt.evaluate.tasks.upstream)
            name = "maj_at_k"
        metrics[name + stderr] = value
    return metrics


def _combine(per_task: list[dict], sizes: list[int]) -> dict:
    """Subtask metrics averaged over questions (upstream's group aggregation, ``weight_by_size``)."""
    from lm_eval.api.metrics import pooled_sample_stderr

    if len(per_task) == 1:
        return per_task[0]
    combined = {}
    for name in per_task[0]:
        if name.endswith("_stderr") or not all(name in m for m in per_task):
            continue
        combined[name] = sum(m[name] * n for m, n in zip(per_task, sizes)) / max(sum(sizes), 1)
        stderrs = [m.get(name + "_stderr") for m in per_task]
        if all(isinstance(e, (int, float)) for e in stderrs) and sum(sizes) > len(sizes):
            combined[name + "_stderr"] = pooled_sample_stderr(stderrs, sizes)
    return combined


def _plain(value):
    return json.loads(json.dumps(value, default=str))


def run_task(lm, task: str, config: TaskRunConfig, cache: Path) -> tuple[dict, list[dict]]:
    """One task through ``lm_eval.simple_evaluate``: its metrics entry and its per-question samples.

    GSM8K, MATH and MMLU-STEM are lm-eval's own tasks (bolt.evaluate.tasks.upstream), possibly
    several per-subject tasks whose metrics are averaged over questions; the world tasks are
    bolt's YAMLs in this folder.
    """
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    metadata = {"data_dir": str(config.data_dir) if config.data_dir else None}
    manager = TaskManager(include_path=str(TASK_DIR), include_defaults=False, metadata=metadata)
    if task.removesuffix("_latent") in UPSTREAM_NAMES:
        loaded = build_tasks(task, config.data_dir, samples=config.samples)
    else:
        loaded = [manager.load(task)["tasks"][task]]
    for one in loaded:
        one.set_config(key="repeats", value=config.samples)
    seed = config.seed
    results = simple_evaluate(
        model=lm,
        tasks=loaded,
        task_manager=manager,
        limit=config.limit,
        gen_kwargs=_gen_kwargs(config),
        num_fewshot=config.num_fewshot,
        log_samples=True,
        use_cache=str(cache),
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
    )
    names = [one.config.task for one in loaded]
    sizes = [results["n-samples"][name]["effective"] for name in names]
    entry = _combine([_metrics(results["results"][name]) for name in names], sizes) | {
        "questions": sum(sizes),
        "samples_per_question": config.samples,
        "harness_config": _plain(
            results["configs"][names[0]] if len(names) == 1 else {name: results["configs"][name] for name in names}
        ),
        "versions": _plain(results.get("versions", {})),
    }
    if task.removesuffix("_latent") in UPSTREAM_NAMES:
        entry["upstream_task"] = UPSTREAM_NAMES[task.removesuffix("_latent")]
    samples = [
        row | ({"task": name} if len(names) > 1 else {}) for name in names for row in _plain(results["samples"][name])
    ]
    return entry, samples


def load_lm(model_dir: Path, batch_size: int) -> BoltHFLM:
    device = str(resolve_device("auto"))
    return BoltHFLM(
        pretrained=str(model_dir),
        device=device,
        dtype="float32" if device == "cpu" else "bfloat16",
        batch_size=batch_size,
        add_bos_token=True,
    )


def run_tasks(model_dir: Path, output_dir: Path, config: TaskRunConfig) -> dict:
    """Every task of ``config`` on ``model_dir``; returns ``{task: metrics}`` (also in ``OUT/tasks.json``)."""
    config.validate()
    if not (Path(model_dir) / "config.json").is_file():
        raise BoltError(f"{model_dir}: not a Hugging Face model directory (no config.json).")
    fingerprint = model_fingerprint(model_dir)
    run = RunDir(output_dir / "tasks")
    run.start(
        "eval --tasks", {"model": str(model_dir), "model_fingerprint": fingerprint, "run": config}, seed=config.seed
    )
    os.environ[MATH_TIMEOUT_ENV] = str(config.math_timeout)
    lm = None
    summary: dict[str, dict] = {}
    for task in tqdm(config.tasks, desc="tasks", unit="task", disable=None):
        key = _task_key(model_dir, fingerprint, task, config)
        path = output_dir / "tasks" / f"{task}.json"
        if path.is_file() and json.loads(path.read_text(encoding="utf-8")).get("key") == key:
            entry = json.loads(path.read_text(encoding="utf-8"))
        else:
            lm = lm or load_lm(model_dir, config.batch_size)
            entry, samples = run_task(lm, task, config, output_dir / "tasks" / "cache" / key)
            entry["key"] = key
            write_jsonl(output_dir / "tasks" / f"{task}.samples.jsonl", samples)
            write_json(path, entry)
        summary[task] = {
            name: value for name, value in entry.items() if name not in ("harness_config", "versions", "key")
        }
        run.log_metrics(task=task, **summary[task])
    write_json(output_dir / "tasks.json", summary)
    run.finish(tasks=summary)
    return summary
