"""bolt: reasoning to learn from latent thoughts.

The package mirrors the pipeline of METHOD.md, one module per stage:

- ``chunking``     corpus -> chunked documents
- ``synthesize``   chunked documents -> teacher latents (backends in ``teachers/``)
- ``training``     latent data -> trained HF model (the M-step), layouts in ``layouts``
- ``estep``        model + chunks -> resampled latents (the E-step), math in ``importance``
- ``evaluation``   model + held-out docs -> NLL, ELBO/IWAE, latent-space answers
- ``em``           the BoLT loop wiring the stages together

Nothing here imports a GPU-only dependency at module load.
"""

__version__ = "0.1.0"
