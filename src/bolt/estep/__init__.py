"""The E-step: sample K latents per chunk, weight them by p(Z, X) / q(Z | X), resample one.

``stage`` runs it over a corpus; ``sampling`` and ``scoring`` are the model calls,
``importance`` the Monte Carlo math, ``backends`` and ``vllm_backend`` where they run."""
