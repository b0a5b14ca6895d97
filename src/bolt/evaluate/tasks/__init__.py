"""bolt's benchmark tasks for lm-evaluation-harness (the optional ``eval`` extra).

GSM8K, MATH and MMLU-STEM (``gsm8k_cot``, ``math_cot``, ``mmlu_stem_cot``) are lm-eval's own
``gsm8k_cot``, ``minerva_math`` and ``mmlu_flan_cot_fewshot`` STEM tasks, built from the installed
harness's configs, and their ``_latent`` variants are derived from those by code
(``upstream.py``). The world task YAMLs in this folder are registered with the harness through
its ``include_path``; ``hooks.py`` holds the Python they call, ``harness.py`` the model wrapper
and the runner behind ``bolt eval --tasks``.
"""

from __future__ import annotations

from pathlib import Path

TASK_DIR = Path(__file__).parent
TASKS = (
    "gsm8k_cot",
    "gsm8k_cot_latent",
    "math_cot",
    "math_cot_latent",
    "mmlu_stem_cot",
    "mmlu_stem_cot_latent",
    "world",
    "world_latent",
)
DATASETS = {"gsm8k_cot": "gsm8k", "math_cot": "math", "mmlu_stem_cot": "mmlu_stem", "world": "world"}
"""Dataset directory (under --data-dir) of each task family; the latent variant reads the same."""


def dataset_of(task: str) -> str:
    return DATASETS[task.removesuffix("_latent")]
