"""Evaluation: held-out likelihood bounds and answers (``stage``), grading, contamination checks,
fine-tune-then-evaluate (``finetune``) and the lm-evaluation-harness tasks (``tasks``)."""
