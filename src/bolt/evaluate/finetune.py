"""``bolt finetune-eval``: fine-tune on a task's training split, then evaluate by sampling.

The paper's less noisy protocol for small models. For each seed:

1. supervised fine-tuning on ``DIR/<dataset>/train.jsonl`` with the loss only on the
   answer: the prompt is the task's own zero-shot prompt (for GSM8K, MATH and MMLU lm-eval's,
   as step 2 shows it), the target the row's solution in the form of the task's exemplars
   (for a ``_latent`` task the reasoning sits inside ``SoL PRIOR ... EoL``, so the model
   learns to reason in latent space), then EOS;
2. the task through lm-evaluation-harness, zero-shot, with several sampled answers per
   question (temperature 0.6, top-p 0.9): accuracy of the first sample, maj@k, pass@k.

``finetune_eval.json`` holds each metric's per-seed values, mean and standard error.
Every seed's model and evaluation are kept and skipped on a rerun.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from bolt.core.layouts import encode
from bolt.core.modeling import load_model, load_tokenizer, model_fingerprint
from bolt.core.progress import progress_bar
from bolt.core.records import write_json
from bolt.core.rundir import RunDir
from bolt.errors import BoltError
from bolt.evaluate.config import FinetuneConfig
from bolt.report.tables import summarize


def training_pairs(task: str, data_dir: Path, limit: int | None) -> list[tuple[str, str]]:
    """(prompt, target) texts of the task's training split: the prompt exactly as the evaluation
    after fine-tuning shows the task's test questions (zero-shot), the target in its exemplars' form.
    GSM8K, MATH and MMLU: ``bolt.evaluate.tasks.upstream.finetune_pairs``; the world: its hooks."""
    from bolt.evaluate.tasks import dataset_of, hooks, upstream

    family, latent = task.removesuffix("_latent"), task.endswith("_latent")
    if family != "world":
        return upstream.finetune_pairs(task, data_dir, limit)
    splits = hooks.load(dataset_of(task), data_dir=str(data_dir))
    if "train" not in splits:
        raise BoltError(f"{Path(data_dir) / 'world'}: no train.jsonl (or train.json / train.parquet) to fine-tune on.")
    return [
        (hooks.world_text(row, latent=latent), hooks.world_target(row, latent=latent))
        for row in list(splits["train"])[:limit]
    ]


def supervised_batches(tokenizer, pairs: list[tuple[str, str]], batch_size: int, rng: np.random.Generator):
    """Padded (input_ids, labels, attention_mask) batches; labels are -100 except on the target and EOS."""
    order = rng.permutation(len(pairs))
    for begin in range(0, len(order), batch_size):
        rows = []
        for index in order[begin : begin + batch_size]:
            prompt, target = pairs[index]
            start = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
            prompt_ids = start + encode(tokenizer, prompt)
            target_ids = encode(tokenizer, target) + [tokenizer.eos_token_id]
            rows.append((prompt_ids + target_ids, [-100] * len(prompt_ids) + target_ids))
        width = max(len(ids) for ids, _ in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, (row_ids, row_labels) in enumerate(rows):
            ids[row, : len(row_ids)] = torch.tensor(row_ids)
            labels[row, : len(row_labels)] = torch.tensor(row_labels)
            mask[row, : len(row_ids)] = 1
        yield ids, labels, mask


def finetune(model_dir: Path, pairs: list[tuple[str, str]], config: FinetuneConfig, seed: int, output: Path) -> dict:
    """SFT with the loss on the answer only, through bolt's training loop (``bolt.train.training.optimise``):
    AdamW without weight decay at a constant learning rate, gradients clipped at 1; saves an HF model
    directory at ``output``."""
    from bolt.train.training import Steps, new_accelerator, optimise

    torch.manual_seed(seed)
    tokenizer = load_tokenizer(model_dir)
    accelerator = new_accelerator()
    model = load_model(model_dir, device="auto").train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    constant = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    model, optimizer = accelerator.prepare(model, optimizer)
    rng = np.random.default_rng(seed)
    total = max(1, math.ceil(config.epochs * math.ceil(len(pairs) / config.batch_size)))

    def epochs():
        """Batches of every epoch, each in a new order."""
        while True:
            for ids, labels, mask in supervised_batches(tokenizer, pairs, config.batch_size, rng):
                yield {
                    "input_ids": ids.to(accelerator.device),
                    "attention_mask": mask.to(accelerator.device),
                    "labels": labels.to(accelerator.device),
                }

    losses = []
    with progress_bar(total=total, desc=f"fine-tune seed {seed}", unit="step", disable=None) as progress:
        optimise(
            accelerator,
            model,
            model,
            optimizer,
            constant,
            epochs(),
            Steps(first=0, total=total),
            progress,
            lambda step, loss: losses.append(loss),
        )
    model = accelerator.unwrap_model(model)
    model.eval().save_pretrained(output)
    tokenizer.save_pretrained(output)
    summary = {"steps": total, "first_loss": losses[0], "last_loss": losses[-1], "examples": len(pairs)}
    write_json(output / "finetune.json", summary)
    return summary


def mean_and_stderr(values: list[float]) -> dict:
    stats = summarize(values)
    return {"mean": stats["mean"], "stderr": stats["stderr"], "values": [float(v) for v in values]}


def finetune_eval(model_dir: Path, output: Path, config: FinetuneConfig) -> dict:
    """``bolt finetune-eval``: every seed's fine-tuned model and evaluation, then mean ± standard error."""
    from bolt.evaluate.config import TaskRunConfig
    from bolt.evaluate.tasks.harness import run_tasks

    config.validate()
    run = RunDir(output)
    run.start(
        "finetune-eval",
        {"model": str(model_dir), "model_fingerprint": model_fingerprint(model_dir), "finetune": config},
        seed=config.first_seed,
    )
    pairs = training_pairs(config.task, config.data_dir, config.max_train_examples)
    # what makes a seed's fine-tuned model: the base model and the training settings (not the evaluation's)
    identity = {
        "model_fingerprint": model_fingerprint(model_dir),
        "finetune": dataclasses.replace(config, seeds=0, limit=None, samples=0),
    }
    per_seed = []
    for seed in range(config.first_seed, config.first_seed + config.seeds):
        tuned = output / f"seed-{seed}" / "model"
        seed_run = RunDir(tuned)
        if not seed_run.is_complete(identity | {"seed": seed}):
            seed_run.start("finetune", identity | {"seed": seed}, seed=seed)
            seed_run.finish(**finetune(model_dir, pairs, config, seed, tuned))
        evaluation = TaskRunConfig(
            tasks=[config.task],
            data_dir=config.data_dir,
            limit=config.limit,
            samples=config.samples,
            temperature=config.temperature,
            top_p=config.top_p,
            max_gen_tokens=config.max_gen_tokens,
            seed=seed,
            num_fewshot=0,
        )
        metrics = run_tasks(tuned, output / f"seed-{seed}" / "eval", evaluation)[config.task]
        per_seed.append(metrics)
        run.log_metrics(seed=seed, **metrics)
    names = [name for name in ("exact_match", "exact_match_flexible", "maj_at_k", "pass_at_k") if name in per_seed[0]]
    result = {
        "task": config.task,
        "seeds": config.seeds,
        "samples_per_question": config.samples,
        "questions": per_seed[0]["questions"],
    }
    result |= {name: mean_and_stderr([m[name] for m in per_seed]) for name in names}
    write_json(output / "finetune_eval.json", result)
    run.finish(**{name: result[name]["mean"] for name in names})
    return result
