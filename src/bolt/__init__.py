"""bolt: reasoning to learn from latent thoughts.

The library follows the pipeline of docs/METHOD.md, one package per stage:

- ``core``       record formats, chunking, special tokens, layouts, token store, models, run dirs
- ``teachers``   chunked documents -> teacher latents (``synthesize``; API, HF and vLLM backends)
- ``train``      latent data -> trained HF model (warm start, M-steps, baselines)
- ``estep``      model + chunks -> resampled latents (the E-step), math in ``importance``
- ``evaluate``   model + held-out docs -> NLL, ELBO/IWAE, latent-space answers, benchmark tasks
- ``em``         the BoLT loop wiring the stages together
- ``report``     statistics, tables, claims with confidence intervals, plots, ``bolt report``
- ``apps``       built on the library: the embedded world and its demo, the latent viewer

Nothing here imports a GPU-only dependency at module load.
"""

__version__ = "0.1.0"
