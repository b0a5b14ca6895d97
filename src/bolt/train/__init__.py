"""The training loop: warm start, M-steps and baselines (accelerate, one process or many)."""
